"""Type stub of the Rust extension ``layerstore._native`` (see rust/lib.rs)."""

import os
from typing import Protocol

from typing_extensions import Buffer

__all__ = ["apply_layer", "copy_tree"]

class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...

def apply_layer(
    source: str | os.PathLike[str] | Buffer | _Readable,
    destination: str,
    tar_split_path: str,
    whiteout_format: str,
    trusted_compressed_digest: str | None,
    trusted_uncompressed_digest: str | None,
) -> tuple[str, int, str, int, int, list[int], list[int], int]:
    """Apply a layer blob (ApplyDiff): detect and undo its compression, compute both digests,
    write tar-split to ``tar_split_path`` and extract into ``destination``.

    Returns ``(compressed_digest, compressed_size, uncompressed_digest, uncompressed_size,
    compression, uids, gids, size)``; compression is 0 none, 1 bzip2, 2 gzip, 3 xz, 4 zstd.
    """

def copy_tree(source: str, destination: str) -> None:
    """Copy the directory tree ``source`` to ``destination``, which must not exist."""
