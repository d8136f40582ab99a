"""Engines: the byte work of the store, in Rust (``native``) or in plain Python (``pure``).

Both engines implement :class:`Engine` with the same functions, arguments, results and
exceptions; the rest of the package never asks which one it has. The choice is made here and
nowhere else: the ``engine=`` argument of :class:`~layerstore.LayerStore`, else the
``LAYERSTORE_ENGINE`` environment variable (``native`` or ``pure``), else native when the
extension is installed.
"""

from __future__ import annotations

import os
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import BinaryIO, Literal, Protocol, TypeAlias

from ..errors import NotSupported
from ..layer import Compression
from ..paths import tar_split_temporary_path

__all__ = [
    "DIFF_COMPRESSIONS",
    "ENGINE_NAMES",
    "WHITEOUT_FORMATS",
    "ApplyRequest",
    "ApplyResult",
    "BlobSource",
    "DiffSource",
    "Engine",
    "Readable",
    "TreeEntry",
    "WhiteoutFormat",
    "blob_source",
    "check_diff_compression",
    "check_force_mask",
    "check_trusted_digest",
    "check_whiteout_format",
    "select_engine",
]

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


WhiteoutFormat: TypeAlias = Literal["overlay", "vfs"]
"""How a driver stores whiteouts: ``overlay`` (0:0 character devices and opaque xattrs) or
``vfs`` (whited-out files are removed from the layer's full copy)."""

WHITEOUT_FORMATS: tuple[WhiteoutFormat, ...] = ("overlay", "vfs")

DIFF_COMPRESSIONS = (Compression.NONE, Compression.GZIP, Compression.ZSTD)
"""What a diff can be written as (Go writes none, gzip and zstd too)."""

TreeEntry: TypeAlias = "tuple[str, str | None]"
"""One member of a diff built from trees: its name in the tar (relative, no trailing slash) and
the path its metadata and bytes are read from, or None for an empty whiteout file (``.wh.*``)."""

BlobSource: TypeAlias = "str | bytes | bytearray | Readable"
"""A :data:`DiffSource` as the engines receive it: a path, a buffer, or a stream."""


@dataclass(frozen=True, slots=True)
class ApplyRequest:
    """The checked arguments of :meth:`Engine.apply_layer`, as the engines receive them."""

    source: BlobSource
    destination: str
    tar_split_path: str
    tar_split_temporary_path: str
    """Where the tar-split is written until it is whole (then renamed to tar_split_path)."""
    whiteout_format: WhiteoutFormat
    trusted_compressed_digest: str | None
    trusted_uncompressed_digest: str | None
    force_mask: int | None = None
    """containers/storage's ``force_mask``: files and directories get this mode, nothing is
    chowned, and what the tar says is recorded in ``user.containers.override_stat``
    (docs/rootless.md)."""
    ignore_chown_errors: bool = False
    """Owners that cannot be set are left as they are, even for root (``ignore_chown_errors``)."""


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def blob_source(source: DiffSource) -> BlobSource:
    """``source`` as one of the three forms an engine reads; TypeError for anything else."""
    if isinstance(source, str):
        return source
    if isinstance(source, os.PathLike):
        path = os.fspath(source)
        if isinstance(path, str):
            return path
    elif isinstance(source, bytes | bytearray):
        return source
    elif isinstance(source, memoryview):
        return source.cast("B").tobytes()  # engines read bytes and bytearray without a copy
    elif callable(getattr(source, "read", None)):
        return source
    raise TypeError(
        f"a diff is a path, a bytes-like object or a binary file object, "
        f"not {type(source).__name__}"
    )


def check_trusted_digest(value: str | None, what: str) -> str | None:
    """``value`` if it is None or a ``sha256:<64 lowercase hex>`` digest, else ValueError."""
    if value is not None and not (isinstance(value, str) and _DIGEST.fullmatch(value)):
        raise ValueError(f"trusted {what} digest {value!r} is not of the form sha256:<64 hex>")
    return value


def check_force_mask(value: int | None) -> int | None:
    """``value`` if it is None or a mode of at most 0o7777 that keeps ``rwx`` for the owner.

    Go takes any octal number; a mask without ``u+rwx`` would shut the store's owner out of
    its own layers (the trouble force_mask is there to avoid), so it is a ValueError here.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o7777:
        raise ValueError(f"force_mask {value!r} is not a file mode between 0 and 0o7777")
    if value & 0o700 != 0o700:
        raise ValueError(
            f"force_mask {value:#o} leaves the owner without rwx: files and directories "
            "stored with it could not be read back (use 0700, 0755 or another u+rwx mode)"
        )
    return value


def check_whiteout_format(value: str) -> WhiteoutFormat:
    """``value`` if it is a whiteout format, else ValueError."""
    for known in WHITEOUT_FORMATS:
        if value == known:
            return known
    raise ValueError(f"unknown whiteout format {value!r}: choose overlay or vfs")


def check_diff_compression(compression: Compression) -> Compression:
    """``compression`` if diffs can be written with it, else NotSupported (as Go refuses)."""
    if compression not in DIFF_COMPRESSIONS:
        raise NotSupported(
            f"diffs cannot be compressed as {compression.name.lower()}: ask for none, gzip or zstd"
        )
    return compression


class Engine(ABC):
    """What an engine does for the store and its drivers.

    The public methods check their arguments here, once; the engines implement the underscored
    ones and only compute.
    """

    name: str

    @abstractmethod
    def copy_tree(self, source: str, destination: str) -> None:
        """Copy the directory ``source`` to ``destination``, which must not exist.

        Owners, modes (setuid, setgid, sticky included), nanosecond times, extended attributes,
        hard links within the tree, symlinks, fifos, sockets and device nodes are reproduced.
        Regular files share extents with the source where the file system allows.
        """

    def apply_layer(
        self,
        source: DiffSource,
        destination: str,
        tar_split_path: str,
        *,
        whiteout_format: str,
        trusted_compressed_digest: str | None = None,
        trusted_uncompressed_digest: str | None = None,
        force_mask: int | None = None,
        ignore_chown_errors: bool = False,
    ) -> ApplyResult:
        """Apply a layer blob to ``destination`` and record its tar-split (docs/apply.md).

        Decompresses, digests, walks and extracts in one pass; writes ``tar_split_path`` (under
        its temporary name first) only when the whole blob was applied. Raises InvalidLayerData
        for bad input, TypeError or ValueError for bad arguments. ``force_mask`` and
        ``ignore_chown_errors`` are containers/storage's options of those names
        (docs/rootless.md).
        """
        return self._apply_layer(
            ApplyRequest(
                source=blob_source(source),
                destination=os.fspath(destination),
                tar_split_path=os.fspath(tar_split_path),
                tar_split_temporary_path=tar_split_temporary_path(os.fspath(tar_split_path)),
                whiteout_format=check_whiteout_format(whiteout_format),
                trusted_compressed_digest=check_trusted_digest(
                    trusted_compressed_digest, "compressed"
                ),
                trusted_uncompressed_digest=check_trusted_digest(
                    trusted_uncompressed_digest, "uncompressed"
                ),
                force_mask=check_force_mask(force_mask),
                ignore_chown_errors=bool(ignore_chown_errors),
            )
        )

    @abstractmethod
    def _apply_layer(self, request: ApplyRequest) -> ApplyResult: ...

    def open_diff(self, tar_split_path: str, layer_dir: str, compression: Compression) -> BinaryIO:
        """The layer's exact tarball rebuilt from its tar-split file and files (docs/diff.md).

        Streams; each file's size and CRC-64 are checked as it is read, and a changed file is
        InvalidLayerData naming it. ``compression`` is NONE, GZIP or ZSTD (else NotSupported).
        """
        return self._open_diff(
            os.fspath(tar_split_path), os.fspath(layer_dir), check_diff_compression(compression)
        )

    @abstractmethod
    def _open_diff(
        self, tar_split_path: str, layer_dir: str, compression: Compression
    ) -> BinaryIO: ...

    def open_tree_diff(
        self,
        entries: Iterable[TreeEntry],
        compression: Compression,
        override_stat: bool = False,
        original_modes: Mapping[tuple[int, int], int] | None = None,
    ) -> BinaryIO:
        """The tar of ``entries``, in the order given (docs/diff.md, "Diffs built from the
        trees"): for each, a header from its ``lstat``, its extended attributes and link target,
        and a regular file's bytes; inodes met again become hard links to their first name.

        Streams; ``compression`` is NONE, GZIP or ZSTD (else NotSupported). A file that cannot
        be read raises OSError naming it. The native engine takes the whole list first; the
        pure one reads ``entries`` as it goes. ``override_stat``: owners, modes, types and
        device numbers come from ``user.containers.override_stat`` where a file has it (a store
        with force_mask), and that xattr is left out of the tar. ``original_modes``: the
        ``st_mode`` a header takes for a (device, inode) in place of the file's own (the modes
        the tar gave, where a reader's grant widened them: ``drivers/unlock.py``).
        """
        return self._open_tree_diff(
            entries,
            check_diff_compression(compression),
            bool(override_stat),
            dict(original_modes or {}),
        )

    @abstractmethod
    def _open_tree_diff(
        self,
        entries: Iterable[TreeEntry],
        compression: Compression,
        override_stat: bool,
        original_modes: Mapping[tuple[int, int], int],
    ) -> BinaryIO: ...

    @abstractmethod
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

    @abstractmethod
    def unmount(self, target: str, detach: bool = False) -> None:
        """Unmount ``target``; ``detach`` lets the last users finish (``MNT_DETACH``)."""

    @abstractmethod
    def make_private_mount(self, path: str, bind: bool = False) -> None:
        """Make the mount at ``path`` private (``MS_PRIVATE``), bind-mounting the directory onto
        itself first when ``bind`` (``MS_BIND``, not recursive), as Go's ``mount.MakePrivate``
        does for the overlay driver's home. Failures raise MountError."""


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
