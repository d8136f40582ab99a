"""A tar written from the files of a tree, with Python's ``tarfile`` headers (PAX form): the
diff of a layer without tar-split. Mirrors ``rust/tree_tar.rs``; the members are the same,
and docs/diff.md says where the bytes may differ."""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterable, Iterator, Mapping

from ...drivers.override import OVERRIDE_XATTR, parse_override
from .. import TreeEntry

__all__ = ["tree_tar"]

BLOCK = 512
# Extended attributes that describe the store, not the layer (Go leaves them out too).
SKIPPED_XATTRS = ("trusted.overlay.", "user.overlay.", "security.selinux")
_CHUNK = 1 << 20


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {
        name: os.getxattr(path, name, follow_symlinks=False)
        for name in sorted(names, key=os.fsencode)
        if not name.startswith(SKIPPED_XATTRS)
    }


def _pax_time(nanoseconds: int) -> str:
    """``seconds.nnnnnnnnn`` of a time (before 1970 too: -1.5 s is "-1.500000000")."""
    sign = "-" if nanoseconds < 0 else ""
    seconds, fraction = divmod(abs(nanoseconds), 1_000_000_000)
    return f"{sign}{seconds}.{fraction:09d}"


class _TarWriter:
    """Header blocks and contents of a tar stream, without a full copy of any file."""

    def __init__(
        self,
        override_stat: bool = False,
        original_modes: Mapping[tuple[int, int], int] | None = None,
    ) -> None:
        self._links: dict[tuple[int, int], str] = {}
        self._override_stat = override_stat
        self._original_modes = original_modes or {}

    @staticmethod
    def _header(info: tarfile.TarInfo) -> bytes:
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

    def whiteout(self, name: str) -> bytes:
        info = tarfile.TarInfo(name)
        info.mode, info.mtime = 0, 0
        info.uname = info.gname = ""
        return self._header(info)

    def entry(self, name: str, path: str) -> Iterator[bytes]:
        found = os.lstat(path)
        mode = self._original_modes.get((found.st_dev, found.st_ino), found.st_mode)
        rdev = found.st_rdev
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(mode)
        info.uid, info.gid = found.st_uid, found.st_gid
        xattrs = _xattrs(path)
        if self._override_stat and not stat.S_ISLNK(mode):
            value = xattrs.pop(OVERRIDE_XATTR, None)
            try:
                recorded = None if value is None else parse_override(value)
            except ValueError:
                recorded = None  # as the native engine: a value Go refuses is not used
            if recorded is not None:
                info.uid, info.gid, info.mode = recorded.uid, recorded.gid, recorded.permissions
                if recorded.typed:
                    mode, rdev = recorded.mode, recorded.device
        info.uname = info.gname = ""
        info.mtime = found.st_mtime_ns // 1_000_000_000
        pax: dict[str, str] = {}
        if found.st_mtime_ns % 1_000_000_000:
            pax["mtime"] = _pax_time(found.st_mtime_ns)
        for attribute, value in xattrs.items():
            pax["SCHILY.xattr." + attribute] = value.decode("utf-8", "surrogateescape")
        key = (found.st_dev, found.st_ino)
        content = False
        if stat.S_ISREG(mode) and found.st_nlink > 1 and key in self._links:
            info.type, info.linkname = tarfile.LNKTYPE, self._links[key]
        elif stat.S_ISREG(mode):
            if found.st_nlink > 1:
                self._links[key] = name
            info.type, info.size, content = tarfile.REGTYPE, found.st_size, True
        elif stat.S_ISDIR(mode):
            info.type, info.name = tarfile.DIRTYPE, name + "/"
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor = os.major(rdev)
            info.devminor = os.minor(rdev)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        else:
            return  # sockets do not go into layers
        info.pax_headers = pax
        if not content:
            yield self._header(info)
            return
        # Open before the header goes, so a file that cannot be read fails cleanly.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            yield self._header(info)
            left = found.st_size
            while left:
                chunk = os.read(fd, min(left, _CHUNK))
                if not chunk:
                    # Shrank while we read it: keep the archive well-formed, as Go pads too.
                    chunk = bytes(min(left, _CHUNK))
                left -= len(chunk)
                yield chunk
        finally:
            os.close(fd)
        if found.st_size % BLOCK:
            yield bytes(BLOCK - found.st_size % BLOCK)


def tree_tar(
    entries: Iterable[TreeEntry],
    override_stat: bool = False,
    original_modes: Mapping[tuple[int, int], int] | None = None,
) -> Iterator[bytes]:
    """The tar of ``entries`` (see :data:`~layerstore.engines.TreeEntry`), in order;
    ``override_stat`` and ``original_modes`` as
    :meth:`~layerstore.engines.Engine.open_tree_diff` says."""
    writer = _TarWriter(override_stat, original_modes)
    for name, path in entries:
        if path is None:
            yield writer.whiteout(name)
        else:
            yield from writer.entry(name, path)
    yield bytes(2 * BLOCK)
