"""The native engine: thin wrappers over the Rust extension ``layerstore._native``."""

from __future__ import annotations

import os
from typing import BinaryIO, cast

from .. import _native
from ..layer import Compression
from . import ApplyResult, DiffSource

__all__ = ["NativeEngine"]


class NativeEngine:
    """Byte work done in Rust, detached from the interpreter while it runs."""

    name = "native"

    def copy_tree(self, source: str, destination: str) -> None:
        _native.copy_tree(os.fspath(source), os.fspath(destination))

    def apply_layer(
        self,
        source: DiffSource,
        destination: str,
        tar_split_path: str,
        *,
        whiteout_format: str,
        trusted_compressed_digest: str | None = None,
        trusted_uncompressed_digest: str | None = None,
    ) -> ApplyResult:
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        elif isinstance(source, memoryview):
            source = source.tobytes()  # the extension reads bytes and bytearray without a copy
        (
            compressed_digest,
            compressed_size,
            uncompressed_digest,
            uncompressed_size,
            compression,
            uids,
            gids,
            size,
        ) = _native.apply_layer(
            source,
            os.fspath(destination),
            os.fspath(tar_split_path),
            whiteout_format,
            trusted_compressed_digest,
            trusted_uncompressed_digest,
        )
        return ApplyResult(
            compressed_digest=compressed_digest,
            compressed_size=compressed_size,
            uncompressed_digest=uncompressed_digest,
            uncompressed_size=uncompressed_size,
            compression=Compression(compression),
            uids=tuple(uids),
            gids=tuple(gids),
            size=size,
        )

    def open_diff(self, tar_split_path: str, layer_dir: str, compression: Compression) -> BinaryIO:
        reader = _native.open_diff(
            os.fspath(tar_split_path), os.fspath(layer_dir), int(compression)
        )
        return cast(BinaryIO, reader)

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
