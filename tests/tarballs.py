"""Layer tarballs for tests: a hypothesis strategy over every entry type, and compressors."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
from dataclasses import dataclass, field

import zstandard
from hypothesis import strategies as st

from layerstore import Compression

ROOT = os.geteuid() == 0


@dataclass
class Entry:
    """One archive entry as the test means it."""

    name: bytes
    kind: str  # file dir symlink hardlink fifo char block
    data: bytes = b""
    target: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 1_700_000_000
    xattrs: dict[str, bytes] = field(default_factory=dict)
    device: tuple[int, int] = (0, 0)


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
}


def build_tar(entries: list[Entry], tar_format: int = tarfile.PAX_FORMAT) -> bytes:
    """The tarball of ``entries`` as Python's tarfile writes it (names as raw bytes)."""
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tar_format, encoding="utf-8", errors="surrogateescape"
    ) as archive:
        for entry in entries:
            info = tarfile.TarInfo(os.fsdecode(entry.name))
            info.type = _TYPES[entry.kind]
            info.mode = entry.mode
            info.uid, info.gid = entry.uid, entry.gid
            info.mtime = entry.mtime
            if entry.kind in ("symlink", "hardlink"):
                info.linkname = os.fsdecode(entry.target)
            if entry.kind in ("char", "block"):
                info.devmajor, info.devminor = entry.device
            if entry.xattrs:
                info.pax_headers = {
                    f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape")
                    for key, value in entry.xattrs.items()
                }
            payload = None
            if entry.kind == "file":
                info.size = len(entry.data)
                payload = io.BytesIO(entry.data)
            archive.addfile(info, payload)
    return buffer.getvalue()


def compress(data: bytes, compression: Compression) -> bytes:
    if compression is Compression.GZIP:
        return gzip.compress(data, mtime=0)
    if compression is Compression.BZIP2:
        return bz2.compress(data)
    if compression is Compression.XZ:
        return lzma.compress(data)
    if compression is Compression.ZSTD:
        return zstandard.ZstdCompressor().compress(data)
    return data


# -- the hypothesis strategy -------------------------------------------------------------------

_SEGMENT = (
    st.one_of(
        st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12),
        st.text(st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1, max_size=8),
        st.sampled_from(["é", "日本", "a<b>&c", "x" * 120]),
    )
    .map(lambda text: text.encode("utf-8"))
    .filter(lambda part: part not in (b".", b".."))
)
_RAW_SEGMENT = st.binary(min_size=1, max_size=6).filter(
    lambda part: b"/" not in part and b"\0" not in part and part not in (b".", b"..")
)
_SEGMENTS = st.one_of(_SEGMENT, _SEGMENT, _SEGMENT, _RAW_SEGMENT).filter(
    lambda part: not part.startswith(b".wh.")
)
_MODES = st.sampled_from([0o644, 0o755, 0o600, 0o4755, 0o2750, 0o1777, 0o444, 0o700])
_DATA = st.one_of(
    st.sampled_from([b"", b"x", b"y" * 511, b"z" * 512, b"w" * 513]),
    st.binary(max_size=3000),
)
_XATTRS = st.dictionaries(
    st.sampled_from(["user.comment", "user.x", "trusted.t"] if ROOT else ["user.comment"]),
    st.binary(min_size=1, max_size=20).filter(lambda value: b"\0" not in value),
    max_size=2,
)


@st.composite
def layer_entries(draw: st.DrawFn, whiteouts: bool = True) -> list[Entry]:
    """A list of entries with unique paths: parents first, every type, optional whiteouts."""
    entries: list[Entry] = []
    directories: list[bytes] = []
    files: list[Entry] = []
    taken: set[bytes] = set()

    def free(name: bytes) -> bool:
        return name not in taken and len(name) < 900

    for _ in range(draw(st.integers(1, 4))):
        parent = draw(st.sampled_from([b"", *directories])) if directories else b""
        name = (parent + b"/" if parent else b"") + draw(_SEGMENTS)
        if free(name):
            taken.add(name)
            directories.append(name)
            entries.append(
                Entry(name, "dir", mode=draw(st.sampled_from([0o755, 0o700, 0o1777, 0o555])))
            )
    kinds = ["file", "file", "file", "symlink", "hardlink", "fifo"]
    if ROOT:
        kinds += ["char", "block"]
    for _ in range(draw(st.integers(1, 12))):
        parent = draw(st.sampled_from([b"", *directories]))
        name = (parent + b"/" if parent else b"") + draw(_SEGMENTS)
        if not free(name):
            continue
        kind = draw(st.sampled_from(kinds))
        if kind == "hardlink" and not files:
            kind = "file"
        entry = Entry(
            name,
            kind,
            mode=draw(_MODES),
            uid=draw(st.sampled_from([0, 0, 1000, 65534, 123456])),
            gid=draw(st.sampled_from([0, 0, 100, 65534])),
            mtime=draw(st.integers(0, 2_000_000_000)),
            xattrs=draw(_XATTRS) if kind in ("file", "dir") else {},
        )
        if kind == "file":
            entry.data = draw(_DATA)
            files.append(entry)
        elif kind == "symlink":
            entry.target = draw(
                st.sampled_from([b"../x", b"/etc/passwd", b"a", b"../../../../outside", b"."])
            )
        elif kind == "hardlink":
            # Same metadata as its target, as a tar made from a real tree has.
            target = draw(st.sampled_from(files))
            entry.target = target.name
            entry.mode, entry.uid, entry.gid = target.mode, target.uid, target.gid
            entry.mtime, entry.xattrs = target.mtime, dict(target.xattrs)
        elif kind in ("char", "block"):
            entry.device = (draw(st.integers(0, 255)), draw(st.integers(0, 255)))
        taken.add(name)
        entries.append(entry)
    if whiteouts and draw(st.booleans()):
        parent = draw(st.sampled_from([b"", *directories]))
        prefix = parent + b"/" if parent else b""
        # A whiteout hides something of the parent layer, never an entry of this one.
        hidden = draw(_SEGMENT.filter(lambda part: prefix + part not in taken))
        entries.append(Entry(prefix + b".wh." + hidden, "file", data=b""))
        if parent and draw(st.booleans()):
            entries.append(Entry(prefix + b".wh..wh..opq", "file", data=b""))
    return entries


def is_whiteout(name: bytes) -> bool:
    return os.path.basename(name).startswith(b".wh.")


@st.composite
def layer_tarballs(draw: st.DrawFn, whiteouts: bool = True) -> tuple[list[Entry], bytes]:
    """(entries, uncompressed tarball), in GNU, PAX or USTAR form, maybe with trailing bytes."""
    entries = draw(layer_entries(whiteouts=whiteouts))
    needs_pax = any(
        entry.xattrs or len(entry.name) > 100 or len(entry.target) > 100 for entry in entries
    )
    formats = [tarfile.PAX_FORMAT] if needs_pax else [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]
    tar_format = draw(st.sampled_from(formats))
    if tar_format == tarfile.GNU_FORMAT and any(entry.xattrs for entry in entries):
        tar_format = tarfile.PAX_FORMAT
    data = build_tar(entries, tar_format)
    trailing = draw(
        st.one_of(st.just(b""), st.just(b""), st.binary(min_size=1, max_size=700), st.just(b"\0"))
    )
    return entries, data + trailing


def describe(mode: int) -> str:
    return stat.filemode(mode)
