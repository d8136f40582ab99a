"""Changes between two trees, and tarballs built from them.

A layer without tar-split metadata (made by ``create`` and written to directly), or a diff
against a layer other than the parent, is computed from the trees themselves, as Go's
containers/storage does with its "naive" diff: walk both trees, compare, and write a tarball of
what was added or modified plus ``.wh.`` whiteouts for what was deleted. Trees are seen through
a :class:`TreeView`, so the overlay driver can offer the merged view of a stack of layers.

The walk and the comparison stay here, in Python (they are driver policy); the members found
go to the engine, which writes the tar (``Engine.open_tree_diff``): deterministic, with sorted
paths, numeric owners and whiteouts dated 0.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from ..engines import TreeEntry
from .unlock import ModeMap, shows_original_modes

__all__ = [
    "Change",
    "ChangeKind",
    "DirectoryView",
    "OriginalModesView",
    "TreeView",
    "changes_size",
    "compare_trees",
    "entries_of_changes",
    "entries_of_directory",
]

ChangeKind = Literal["add", "modify", "delete"]
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_CAPABILITY = "security.capability"


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
    """A plain directory (the vfs driver's layers, or an empty tree when ``root`` is None).

    It remembers what ``lstat`` found: one diff stats every entry while comparing the trees
    and again while listing the tar's members, and a view lives for one operation.
    """

    def __init__(self, root: str | None) -> None:
        self.root = root
        self._stats: dict[str, os.stat_result | None] = {}

    def lstat(self, path: str) -> os.stat_result | None:
        if self.root is None:
            return None
        try:
            return self._stats[path]
        except KeyError:
            pass
        try:
            found: os.stat_result | None = os.lstat(self.real_path(path))
        except (FileNotFoundError, NotADirectoryError):
            found = None
        self._stats[path] = found
        return found

    def listdir(self, path: str) -> list[str]:
        if self.root is None:
            return []
        return os.listdir(self.real_path(path))

    def real_path(self, path: str) -> str:
        if self.root is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        # Paths here are relative and "/"-separated: a join without os.path.join's checks.
        return f"{self.root}/{path}" if path else self.root


class OriginalModesView:
    """A view showing the modes the tar gave to entries whose modes a reader's grant widened
    for the time of a read (``drivers/unlock.py``), so no grant is ever seen as a change."""

    def __init__(self, inner: TreeView, modes: ModeMap) -> None:
        self.inner = inner
        self.modes = modes

    def lstat(self, path: str) -> os.stat_result | None:
        found = self.inner.lstat(path)
        return None if found is None else shows_original_modes(found, self.modes)

    def listdir(self, path: str) -> list[str]:
        return self.inner.listdir(path)

    def real_path(self, path: str) -> str:
        return self.inner.real_path(path)


class OverrideView:
    """A view whose entries show the owner, mode and device numbers their
    ``user.containers.override_stat`` records (a store with ``force_mask``), as
    containers/storage's readers and fuse-overlayfs show them; entries without it show their
    ``lstat``."""

    def __init__(self, inner: TreeView) -> None:
        self.inner = inner

    def lstat(self, path: str) -> os.stat_result | None:
        found = self.inner.lstat(path)
        if found is None or stat.S_ISLNK(found.st_mode):
            return found
        from .override import read_override

        recorded = read_override(self.inner.real_path(path))
        if recorded is None:
            return found
        kind = stat.S_IFMT(recorded.mode)
        fields = list(found)
        fields[stat.ST_MODE] = recorded.mode
        fields[stat.ST_UID], fields[stat.ST_GID] = recorded.uid, recorded.gid
        if kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            fields[stat.ST_SIZE] = 0
        # st_rdev is not one of the 10 fields a stat_result is built from: pass it by name.
        extra = {
            name: getattr(found, name)
            for name in ("st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blocks", "st_blksize")
        }
        extra["st_rdev"] = recorded.device if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0
        return os.stat_result(tuple(fields), extra)

    def listdir(self, path: str) -> list[str]:
        return self.inner.listdir(path)

    def real_path(self, path: str) -> str:
        return self.inner.real_path(path)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _capability(path: str) -> bytes | None:
    try:
        return os.getxattr(path, _CAPABILITY, follow_symlinks=False)
    except OSError:
        return None  # none set (ENODATA), or a file system without xattrs


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
    return _capability(old_path) != _capability(new_path)


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


# -- the members of a diff -----------------------------------------------------------------------


def entries_of_changes(view: TreeView, changes: list[Change]) -> Iterator[TreeEntry]:
    """The members of the tar of ``changes`` (Go's ``ExportChanges``), in path order: entries
    from ``view`` for additions and modifications, ``.wh.NAME`` whiteouts for deletions. The
    engine writes the tar (:meth:`~layerstore.engines.Engine.open_tree_diff`)."""
    for change in sorted(changes):
        path = change.path[1:]
        if change.kind == "delete":
            parent, _, name = path.rpartition("/")
            yield _join(parent, WHITEOUT_PREFIX + name), None
        elif view.lstat(path) is not None:
            yield path, view.real_path(path)


def entries_of_directory(root: str) -> Iterator[TreeEntry]:
    """The members of the tar of a whole directory against an empty tree: every entry is an
    addition, so this gives what :func:`entries_of_changes` gives for :func:`compare_trees`
    from an empty view (the same entries, in the same path order) without the comparison and
    without an ``lstat`` of each entry: the directory's listing tells which entries are
    directories to descend into, and the engine stats each member as it writes it."""
    paths: list[str] = []
    pending = [""]
    while pending:  # a list, not recursion: a tarball may nest deeper than Python's stack
        directory = pending.pop()
        with os.scandir(f"{root}/{directory}" if directory else root) as found:
            for entry in found:
                path = _join(directory, entry.name)
                paths.append(path)
                if entry.is_dir(follow_symlinks=False):
                    pending.append(path)
    paths.sort()
    return ((path, f"{root}/{path}") for path in paths)
