"""Engines: the byte work of the store, in Rust (``native``) or in plain Python (``pure``).

Both engines implement :class:`Engine` with the same functions, arguments, results and
exceptions; the rest of the package never asks which one it has. The choice is made here and
nowhere else: the ``engine=`` argument of :class:`~layerstore.LayerStore`, else the
``LAYERSTORE_ENGINE`` environment variable (``native`` or ``pure``), else native when the
extension is installed.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import BinaryIO, Protocol, TypeAlias

from ..layer import Compression

__all__ = ["ENGINE_NAMES", "ApplyResult", "DiffSource", "Engine", "Readable", "select_engine"]

ENGINE_NAMES = ("native", "pure")


class Readable(Protocol):
    """A binary stream: a file, a pipe, a socket, an HTTP response body."""

    def read(self, size: int, /) -> bytes: ...


DiffSource: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview | Readable"
"""What ApplyDiff reads: a path, bytes in memory, or a binary stream read front to back."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What applying a layer blob found out (docs/apply.md section 6)."""

    compressed_digest: str
    compressed_size: int
    uncompressed_digest: str
    uncompressed_size: int
    compression: Compression
    uids: tuple[int, ...]
    gids: tuple[int, ...]
    size: int


class Engine(Protocol):
    """What an engine does for the store and its drivers."""

    name: str

    def copy_tree(self, source: str, destination: str) -> None:
        """Copy the directory ``source`` to ``destination``, which must not exist.

        Owners, modes (setuid, setgid, sticky included), nanosecond times, extended attributes,
        hard links within the tree, symlinks, fifos, sockets and device nodes are reproduced.
        Regular files share extents with the source where the file system allows.
        """
        ...

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
        """Apply a layer blob to ``destination`` and record its tar-split (docs/apply.md).

        Decompresses, digests, walks and extracts in one pass; writes ``tar_split_path`` only
        when the whole blob was applied. Raises InvalidLayerData for bad input.
        """
        ...

    def open_diff(self, tar_split_path: str, layer_dir: str, compression: Compression) -> BinaryIO:
        """The layer's exact tarball rebuilt from its tar-split file and files (docs/diff.md).

        Streams; each file's size and CRC-64 are checked as it is read, and a changed file is
        InvalidLayerData naming it. ``compression`` is NONE, GZIP or ZSTD.
        """
        ...

    def mount_overlay(
        self,
        lowers: list[str],
        upper: str | None,
        work: str | None,
        target: str,
        options: list[str],
    ) -> None:
        """Mount an overlay of ``lowers`` (topmost first) on ``target``.

        Writable when ``upper`` and ``work`` are given. Lower directories are passed one by one
        (``lowerdir+``, Linux 6.8+), so deep chains are not limited by a page of mount data;
        older kernels get ``mount(2)``. ``options``: ``ro``, ``nodev``, ``nosuid``, ``noexec``,
        ``key=value`` and bare overlay flags. Failures raise MountError with the mount data.
        """
        ...

    def unmount(self, target: str, detach: bool = False) -> None:
        """Unmount ``target``; ``detach`` lets the last users finish (``MNT_DETACH``)."""
        ...


def select_engine(name: str | None = None) -> Engine:
    """The engine called ``name``, else the one ``LAYERSTORE_ENGINE`` names, else native.

    Asking for ``native`` where the extension cannot be imported gives the pure engine and a
    :class:`RuntimeWarning`; an unknown name is a :class:`ValueError`.
    """
    requested = name or os.environ.get("LAYERSTORE_ENGINE") or None
    if requested is not None and requested not in ENGINE_NAMES:
        raise ValueError(f"unknown engine {requested!r}: choose one of {', '.join(ENGINE_NAMES)}")
    if requested != "pure":
        try:
            from .native import NativeEngine
        except ImportError as exc:
            if requested == "native":
                warnings.warn(
                    f"the native engine is not available ({exc}); using the pure engine",
                    RuntimeWarning,
                    stacklevel=2,
                )
        else:
            return NativeEngine()
    from .pure import PureEngine

    return PureEngine()
