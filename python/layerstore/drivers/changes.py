"""Changes between two trees, and tarballs built from them.

A layer without tar-split metadata (made by ``create`` and written to directly), or a diff
against a layer other than the parent, is computed from the trees themselves, as Go's
containers/storage does with its "naive" diff: walk both trees, compare, and write a tarball of
what was added or modified plus ``.wh.`` whiteouts for what was deleted. Trees are seen through
a :class:`TreeView`, so the overlay driver can offer the merged view of a stack of layers.

The tarballs are deterministic (sorted paths, numeric owners, whiteouts dated 0) and written
with Python's tar header code for both engines, so both give the same bytes.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "Change",
    "ChangeKind",
    "DirectoryView",
    "TreeView",
    "changes_size",
    "compare_trees",
    "tar_entries",
    "tar_of_changes",
]

ChangeKind = Literal["add", "modify", "delete"]
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
BLOCK = 512
_SKIPPED_XATTRS = ("trusted.overlay.", "user.overlay.", "security.selinux")


@dataclass(frozen=True, slots=True, order=True)
class Change:
    """One path that differs between two layers; ``path`` is absolute within the layer."""

    path: str
    kind: ChangeKind


class TreeView(Protocol):
    """A directory tree as a layer's users see it (paths relative, "" is the root)."""

    def lstat(self, path: str) -> os.stat_result | None: ...

    def listdir(self, path: str) -> list[str]: ...

    def real_path(self, path: str) -> str:
        """Where the entry's bytes, link target and xattrs can be read."""
        ...


class DirectoryView:
    """A plain directory (the vfs driver's layers, or an empty tree when ``root`` is None)."""

    def __init__(self, root: str | None) -> None:
        self.root = root

    def lstat(self, path: str) -> os.stat_result | None:
        if self.root is None:
            return None
        try:
            return os.lstat(os.path.join(self.root, path))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def listdir(self, path: str) -> list[str]:
        if self.root is None:
            return []
        return os.listdir(os.path.join(self.root, path))

    def real_path(self, path: str) -> str:
        if self.root is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return os.path.join(self.root, path)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {
        name: os.getxattr(path, name, follow_symlinks=False)
        for name in sorted(names)
        if not name.startswith(_SKIPPED_XATTRS)
    }


def _differs(old: os.stat_result, new: os.stat_result, old_path: str, new_path: str) -> bool:
    """Go's test: type and mode, owner, device, and for non-directories size and mtime."""
    if (old.st_mode, old.st_uid, old.st_gid, old.st_rdev) != (
        new.st_mode,
        new.st_uid,
        new.st_gid,
        new.st_rdev,
    ):
        return True
    if not stat.S_ISDIR(new.st_mode) and (
        old.st_size != new.st_size or old.st_mtime_ns != new.st_mtime_ns
    ):
        return True
    capability = "security.capability"
    return _xattrs(old_path).get(capability) != _xattrs(new_path).get(capability)


def compare_trees(old: TreeView, new: TreeView) -> list[Change]:
    """What changed from ``old`` to ``new``, sorted by path (Go's ``ChangesDirs``).

    A directory whose contents changed is listed as modified even when it did not change
    itself, so its metadata travels with the diff; a deleted directory is listed alone.
    """
    changes: list[Change] = []

    def walk(directory: str) -> bool:
        """Record the changes below ``directory``; True if there were any."""
        changed = False
        new_names = new.listdir(directory)
        old_directory = old.lstat(directory)
        old_names = (
            old.listdir(directory)
            if old_directory is not None and stat.S_ISDIR(old_directory.st_mode)
            else []
        )
        for name in sorted(new_names):
            path = _join(directory, name)
            new_stat = new.lstat(path)
            if new_stat is None:
                continue
            old_stat = old.lstat(path)
            new_is_dir = stat.S_ISDIR(new_stat.st_mode)
            if old_stat is None:
                changes.append(Change("/" + path, "add"))
                changed = True
                if new_is_dir:
                    _add_all(new, path, changes)
                continue
            differs = _differs(old_stat, new_stat, old.real_path(path), new.real_path(path))
            if differs:
                changes.append(Change("/" + path, "modify"))
                changed = True
            if new_is_dir and stat.S_ISDIR(old_stat.st_mode):
                if walk(path):
                    changed = True
                    if not differs:  # contents changed: the directory travels with them
                        changes.append(Change("/" + path, "modify"))
            elif new_is_dir:
                _add_all(new, path, changes)  # a directory now where something else was
        for name in sorted(set(old_names) - set(new_names)):
            changes.append(Change("/" + _join(directory, name), "delete"))
            changed = True
        return changed

    walk("")
    return sorted(changes)


def _add_all(view: TreeView, directory: str, changes: list[Change]) -> None:
    for name in sorted(view.listdir(directory)):
        path = _join(directory, name)
        changes.append(Change("/" + path, "add"))
        info = view.lstat(path)
        if info is not None and stat.S_ISDIR(info.st_mode):
            _add_all(view, path, changes)


def changes_size(view: TreeView, changes: list[Change]) -> int:
    """Bytes of the files added or modified, each inode once (Go's ``ChangesSize``)."""
    seen: set[tuple[int, int]] = set()
    size = 0
    for change in changes:
        if change.kind == "delete":
            continue
        info = view.lstat(change.path[1:])
        if info is None or stat.S_ISDIR(info.st_mode):
            continue
        key = (info.st_dev, info.st_ino)
        if key in seen:
            continue
        seen.add(key)
        size += info.st_size
    return size


# -- tarballs -------------------------------------------------------------------------------------


class _TarWriter:
    """Header blocks and contents of a tar stream, in Python's PAX form, without a full copy."""

    def __init__(self) -> None:
        self._links: dict[tuple[int, int], str] = {}

    @staticmethod
    def _header(info: tarfile.TarInfo) -> bytes:
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

    def whiteout(self, path: str) -> bytes:
        info = tarfile.TarInfo(path)
        info.mode, info.mtime = 0, 0
        info.uname = info.gname = ""
        return self._header(info)

    def entry(self, name: str, real_path: str, info_stat: os.stat_result) -> Iterator[bytes]:
        info = tarfile.TarInfo(name)
        mode = info_stat.st_mode
        info.mode = stat.S_IMODE(mode)
        info.uid, info.gid = info_stat.st_uid, info_stat.st_gid
        info.uname = info.gname = ""
        info.mtime = info_stat.st_mtime_ns // 1_000_000_000
        pax: dict[str, str] = {}
        if info_stat.st_mtime_ns % 1_000_000_000:
            pax["mtime"] = f"{info.mtime}.{info_stat.st_mtime_ns % 1_000_000_000:09d}"
        for attribute, value in _xattrs(real_path).items():
            pax["SCHILY.xattr." + attribute] = value.decode("utf-8", "surrogateescape")
        key = (info_stat.st_dev, info_stat.st_ino)
        content = False
        if stat.S_ISREG(mode) and info_stat.st_nlink > 1 and key in self._links:
            info.type, info.linkname = tarfile.LNKTYPE, self._links[key]
        elif stat.S_ISREG(mode):
            if info_stat.st_nlink > 1:
                self._links[key] = name
            info.type, info.size, content = tarfile.REGTYPE, info_stat.st_size, True
        elif stat.S_ISDIR(mode):
            info.type, info.name = tarfile.DIRTYPE, name + "/"
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.fsdecode(os.readlink(real_path))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor = os.major(info_stat.st_rdev)
            info.devminor = os.minor(info_stat.st_rdev)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        else:
            return  # sockets do not go into layers
        info.pax_headers = pax
        yield self._header(info)
        if content:
            yield from self._content(real_path, info_stat.st_size)

    @staticmethod
    def _content(path: str, size: int) -> Iterator[bytes]:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            left = size
            while left:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    # Shrank while we read it: keep the archive well-formed, as Go pads too.
                    chunk = bytes(min(left, 1 << 20))
                left -= len(chunk)
                yield chunk
        finally:
            os.close(fd)
        if size % BLOCK:
            yield bytes(BLOCK - size % BLOCK)

    @staticmethod
    def end() -> bytes:
        return bytes(2 * BLOCK)


def tar_of_changes(view: TreeView, changes: list[Change]) -> Iterator[bytes]:
    """A tarball of ``changes`` (Go's ``ExportChanges``): entries from ``view`` for additions
    and modifications, ``.wh.NAME`` whiteouts for deletions, in path order."""
    writer = _TarWriter()
    for change in sorted(changes):
        path = change.path[1:]
        if change.kind == "delete":
            parent, _, name = path.rpartition("/")
            yield writer.whiteout(_join(parent, WHITEOUT_PREFIX + name))
            continue
        info = view.lstat(path)
        if info is not None:
            yield from writer.entry(path, view.real_path(path), info)
    yield writer.end()


def tar_entries(
    entries: Iterator[tuple[str, str | None, os.stat_result | None]],
) -> Iterator[bytes]:
    """A tarball of ``(name, real path, stat)`` items in the given order; an item without a
    stat is an empty whiteout file called ``name`` (``.wh.*``)."""
    writer = _TarWriter()
    for name, real_path, info in entries:
        if info is None or real_path is None:
            yield writer.whiteout(name)
        else:
            yield from writer.entry(name, real_path, info)
    yield writer.end()
