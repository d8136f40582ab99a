"""Type stub of the Rust extension ``layerstore._native`` (see rust/lib.rs)."""

from types import TracebackType
from typing import Protocol, Self, final

from typing_extensions import Buffer

__all__ = [
    "ApplyResult",
    "DiffReader",
    "apply_layer",
    "copy_tree",
    "crc64",
    "make_private_mount",
    "mount_overlay",
    "open_diff",
    "open_tree_diff",
    "sha256_digest",
    "tar_split_decode",
    "tar_split_encode",
    "unmount",
]

class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...

@final
class ApplyResult:
    """What applying a layer blob found (docs/apply.md, section 6)."""

    @property
    def compressed_digest(self) -> str: ...
    @property
    def compressed_size(self) -> int: ...
    @property
    def uncompressed_digest(self) -> str: ...
    @property
    def uncompressed_size(self) -> int: ...
    @property
    def compression(self) -> int:
        """0 none, 1 bzip2, 2 gzip, 3 xz, 4 zstd."""
    @property
    def uids(self) -> list[int]: ...
    @property
    def gids(self) -> list[int]: ...
    @property
    def size(self) -> int: ...

def apply_layer(
    source: str | bytes | bytearray | _Readable,
    destination: str,
    tar_split_path: str,
    tar_split_temporary_path: str,
    whiteout_format: str,
    trusted_compressed_digest: str | None,
    trusted_uncompressed_digest: str | None,
    force_mask: int | None = None,
    ignore_chown_errors: bool = False,
) -> ApplyResult:
    """Apply a layer blob (ApplyDiff): detect and undo its compression, compute both digests,
    write tar-split to ``tar_split_temporary_path``, renamed to ``tar_split_path`` when whole,
    and extract into ``destination``; ``force_mask`` and ``ignore_chown_errors`` as
    containers/storage's options (docs/rootless.md). The arguments are checked by
    ``layerstore.engines``."""

def mount_overlay(
    lowers: list[str], upper: str | None, work: str | None, target: str, options: list[str]
) -> None:
    """Mount an overlay of ``lowers`` (topmost first) on ``target``, writable when ``upper``
    and ``work`` are given; raises ``layerstore.errors.MountError``."""

def make_private_mount(path: str, bind: bool) -> None:
    """Make the mount at ``path`` private (``MS_PRIVATE``), bind-mounting it onto itself first
    when ``bind``; raises ``layerstore.errors.MountError``."""

def unmount(target: str, detach: bool) -> None:
    """Unmount ``target`` (lazily with ``detach``); raises ``layerstore.errors.MountError``."""

def copy_tree(source: str, destination: str) -> None:
    """Copy the directory tree ``source`` to ``destination``, which must not exist."""

# Single stages of apply and diff, for the micro benchmarks and the engines' parity tests; the
# pure engine's mirrors: pure.crc64.crc64, pure.digest.sha256_digest, pure.tarsplit.encode and
# pure.tarsplit.decode.

def crc64(data: bytes | bytearray, /) -> int:
    """CRC-64/GO-ISO of ``data``, as tar-split records it for each file."""

def sha256_digest(data: bytes | bytearray, /) -> str:
    """``"sha256:<hex>"`` of ``data``."""

def tar_split_encode(tar: bytes | bytearray, /) -> bytes:
    """The tar-split of the tar archive ``tar``: its JSON lines, uncompressed, exactly as an
    apply records them; a bad archive raises ``InvalidLayerData``."""

def tar_split_decode(tar_split: bytes | bytearray, /) -> list[tuple[int, bytes, int, bytes | None]]:
    """The entries of tar-split JSON lines (uncompressed), in order: ``(type, name, size,
    payload)``. Type 1 is a file (payload: its CRC-64, or None); type 2 a segment (empty name,
    size 0, payload: its bytes)."""

def open_diff(tar_split_path: str, layer_dir: str, compression: int) -> DiffReader:
    """Start the diff of a layer against its parent from its tar-split (docs/diff.md).

    The layer's tar is rebuilt from ``tar_split_path`` and the files in ``layer_dir``, each
    file's size and CRC-64 checked as it is read, and compressed with ``compression`` (0 none,
    2 gzip, 4 zstd; anything else raises ``NotSupported``).
    """

def open_tree_diff(
    entries: list[tuple[bytes, bytes | None]],
    compression: int,
    override_stat: bool = False,
    original_modes: list[tuple[int, int, int]] = ...,
) -> DiffReader:
    """Start the diff of a layer without tar-split: the tar of ``entries``, each a
    ``(name, source)`` pair in the order written (``source`` is where its metadata and bytes are
    read, None for an empty whiteout file), compressed with ``compression`` (0 none, 2 gzip,
    4 zstd; anything else raises ``NotSupported``). ``original_modes``: ``(device, inode,
    st_mode)`` triples whose mode the header takes in place of the file's own.
    """

@final
class DiffReader:
    """A layer's diff as a readable binary file; every read runs detached from the interpreter.

    Closing it, leaving its ``with`` block or dropping it releases the tar-split file, any open
    layer file and every thread.
    """

    def read(self, size: int | None = -1, /) -> bytes:
        """Read up to ``size`` bytes (fewer only at the end); all that is left by default."""

    def readall(self) -> bytes:
        """Read all that is left."""

    def readinto(self, buffer: Buffer, /) -> int:
        """Fill ``buffer`` (writable, contiguous) in place; fewer bytes only at the end."""

    def readable(self) -> bool:
        """True."""

    def seekable(self) -> bool:
        """False: the diff is a stream."""

    def writable(self) -> bool:
        """False."""

    def close(self) -> None:
        """Release the tar-split file, any open layer file and every thread."""

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> bool: ...
