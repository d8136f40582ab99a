"""The native engine: thin wrappers over the Rust extension ``layerstore._native``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import BinaryIO, cast

from .. import _native
from ..layer import Compression
from . import ApplyRequest, ApplyResult, Engine, TreeEntry

__all__ = ["NativeEngine"]


class NativeEngine(Engine):
    """Byte work done in Rust, detached from the interpreter while it runs."""

    name = "native"

    def copy_tree(self, source: str, destination: str) -> None:
        _native.copy_tree(source, destination)

    def _apply_layer(self, request: ApplyRequest) -> ApplyResult:
        applied = _native.apply_layer(
            request.source,
            request.destination,
            request.tar_split_path,
            request.tar_split_temporary_path,
            request.whiteout_format,
            request.trusted_compressed_digest,
            request.trusted_uncompressed_digest,
            request.force_mask,
            request.ignore_chown_errors,
        )
        return ApplyResult(
            compressed_digest=applied.compressed_digest,
            compressed_size=applied.compressed_size,
            uncompressed_digest=applied.uncompressed_digest,
            uncompressed_size=applied.uncompressed_size,
            compression=Compression(applied.compression),
            uids=tuple(applied.uids),
            gids=tuple(applied.gids),
            size=applied.size,
        )

    def _open_diff(self, tar_split_path: str, layer_dir: str, compression: Compression) -> BinaryIO:
        return cast(BinaryIO, _native.open_diff(tar_split_path, layer_dir, int(compression)))

    def _open_tree_diff(
        self,
        entries: Iterable[TreeEntry],
        compression: Compression,
        override_stat: bool,
        original_modes: Mapping[tuple[int, int], int],
    ) -> BinaryIO:
        members = [
            (os.fsencode(name), None if path is None else os.fsencode(path))
            for name, path in entries
        ]
        modes = [(device, inode, mode) for (device, inode), mode in original_modes.items()]
        return cast(
            BinaryIO, _native.open_tree_diff(members, int(compression), override_stat, modes)
        )

    def mount_overlay(
        self,
        lowers: list[str],
        upper: str | None,
        work: str | None,
        target: str,
        options: list[str],
    ) -> None:
        _native.mount_overlay(lowers, upper, work, target, options)

    def unmount(self, target: str, detach: bool = False) -> None:
        _native.unmount(target, detach)

    def make_private_mount(self, path: str, bind: bool = False) -> None:
        _native.make_private_mount(path, bind)
