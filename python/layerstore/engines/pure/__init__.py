"""The pure engine: the same byte work as the native one, with the standard library only.

(and python-zstandard for zstd). Its modules mirror the Rust ones: ``compress``, ``crc64``,
``tarwalk`` and ``tarsplit``, ``confine``, ``extract``, ``apply``, ``assemble``, ``copy``,
``tree_tar``;
``gopath`` cleans names as Go's ``path.Clean`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import BinaryIO

from ...layer import Compression
from ...streams import compressed_chunks, reader_of
from .. import ApplyRequest, ApplyResult, Engine, TreeEntry
from .apply import apply_layer
from .assemble import open_diff
from .copy import copy_tree
from .mount import make_private_mount, mount_overlay, unmount
from .tree_tar import tree_tar

__all__ = ["PureEngine"]


class PureEngine(Engine):
    """Byte work in Python; slower than native, identical in results."""

    name = "pure"

    def copy_tree(self, source: str, destination: str) -> None:
        copy_tree(source, destination)

    def _apply_layer(self, request: ApplyRequest) -> ApplyResult:
        return apply_layer(request)

    def _open_diff(self, tar_split_path: str, layer_dir: str, compression: Compression) -> BinaryIO:
        return open_diff(tar_split_path, layer_dir, compression)

    def _open_tree_diff(
        self,
        entries: Iterable[TreeEntry],
        compression: Compression,
        override_stat: bool,
        original_modes: Mapping[tuple[int, int], int],
    ) -> BinaryIO:
        chunks = tree_tar(entries, override_stat, original_modes)
        return reader_of(compressed_chunks(chunks, compression))

    def mount_overlay(
        self,
        lowers: list[str],
        upper: str | None,
        work: str | None,
        target: str,
        options: list[str],
    ) -> None:
        mount_overlay(lowers, upper, work, target, options)

    def unmount(self, target: str, detach: bool = False) -> None:
        unmount(target, detach)

    def make_private_mount(self, path: str, bind: bool = False) -> None:
        make_private_mount(path, bind)
