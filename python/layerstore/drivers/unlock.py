"""Reading a layer whose files shut out their own owner (issue 19), without root.

A layer may hold a mode-000 file (Fedora's ``/etc/shadow``), a write-only or execute-only
file, or a directory without ``u+r`` or ``u+x``. Root reads them through CAP_DAC_OVERRIDE; the
store's unprivileged owner cannot, but it may chmod its own files. :func:`unlocked` grants
``u+r`` (files) and ``u+rx`` (directories) for as long as a reader needs the tree, and then puts
back the exact modes the tar gave (chmod touches no mtime, only the ctime, which no diff, copy
or check looks at). Root's path is unchanged: it never chmods anything.

Why a grant for the whole read and not around each open: a directory must stay searchable
while anything below it is looked up (the check is made at every lookup, not when its fd was
opened), and a diff is a stream read at the caller's pace, so the grant has to last until it
is closed.

Several processes may read one layer at once, so the grant is shared and reference-counted
with two flock(2) locks under ``state`` (``<name>.guard`` serialises the transitions,
``<name>.users`` is held shared by every reader): the first reader grants, the last restores.
A reader killed in between drops its locks with its process, so the count never leaks.

Crash safety: each grant is appended to ``<name>.modes`` (fsynced) before the chmod, and the
journal is removed only once every mode is back. A journal found while nobody holds the users
lock is left by a killed reader: the next reader, or ``check``, restores from it first. A
restore only touches an entry still on the same inode with exactly the granted mode, so it
never undoes a change someone else made, and a repeated restore changes nothing.

Hard links share one inode: an inode is granted and recorded once, by the first path met.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Collection, Iterator, Mapping

__all__ = [
    "Grants",
    "ModeMap",
    "abandoned",
    "applied_paths",
    "copy_original_modes",
    "repair",
    "shows_original_modes",
    "unlocked",
    "writable_copy",
]

ModeMap = Mapping[tuple[int, int], int]
"""The modes (``st_mode``, type bits included) the grant replaced, by (device, inode)."""


class Grants(dict[tuple[int, int], int]):
    """The modes a grant replaced, by (device, inode), and by path within the tree
    (``paths``, in the order granted: every directory before what it holds)."""

    def __init__(self, paths: list[tuple[str, int]] | None = None) -> None:
        super().__init__()
        self.paths = paths or []


_FILE_GRANT = stat.S_IRUSR
_DIRECTORY_GRANT = stat.S_IRUSR | stat.S_IXUSR


def _grant_for(mode: int) -> int:
    if stat.S_ISDIR(mode):
        return _DIRECTORY_GRANT
    if stat.S_ISREG(mode):
        return _FILE_GRANT
    return 0  # symlinks, devices and fifos are never opened for their bytes


def _locked_entries(tree: str) -> bool:
    """Whether anything in ``tree`` lacks the permission a reader needs (a walk, no changes)."""
    pending = [tree]
    while pending:
        directory = pending.pop()
        info = os.lstat(directory)
        if info.st_mode & _DIRECTORY_GRANT != _DIRECTORY_GRANT:
            return True
        with os.scandir(directory) as entries:
            for entry in entries:
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    pending.append(entry.path)
                elif mode & _grant_for(mode) != _grant_for(mode):
                    return True
    return False


class _Journal:
    """``<name>.modes``: one line per grant, ``ORIGINAL GRANTED DEV INO HEXPATH``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def entries(self) -> list[tuple[int, int, int, int, str]]:
        try:
            with open(self.path, "rb") as journal:
                lines = journal.read().split(b"\n")
        except FileNotFoundError:
            return []
        found = []
        for line in lines:
            parts = line.split(b" ")
            if len(parts) != 5:
                continue  # the last line of a reader killed while writing it: no chmod followed
            try:
                original, granted = int(parts[0], 8), int(parts[1], 8)
                device, inode = int(parts[2]), int(parts[3])
                path = os.fsdecode(bytes.fromhex(parts[4].decode("ascii")))
            except ValueError:
                continue
            found.append((original, granted, device, inode, path))
        return found

    def grants(self, tree: str) -> Grants:
        entries = self.entries()
        found = Grants([(os.path.relpath(path, tree), original) for original, *_, path in entries])
        found.update({(dev, ino): original for original, _, dev, ino, _ in entries})
        return found

    def restore(self) -> None:
        """Put every recorded mode back (children first: their directories are still open)."""
        for original, granted, device, inode, path in reversed(self.entries()):
            try:
                info = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if (info.st_dev, info.st_ino) == (device, inode) and info.st_mode == granted:
                os.chmod(path, stat.S_IMODE(original), follow_symlinks=False)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def grant(self, tree: str) -> Grants:
        """Make ``tree`` readable, recording each change before making it."""
        granted = Grants()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:

            def open_up(path: str, info: os.stat_result) -> None:
                key = (info.st_dev, info.st_ino)
                need = _grant_for(info.st_mode)
                if key in granted or info.st_mode & need == need:
                    return
                wanted = info.st_mode | need
                line = f"{info.st_mode:o} {wanted:o} {info.st_dev} {info.st_ino} "
                os.write(fd, line.encode() + os.fsencode(path).hex().encode() + b"\n")
                os.fsync(fd)
                os.chmod(path, stat.S_IMODE(wanted), follow_symlinks=False)
                granted[key] = info.st_mode
                granted.paths.append((os.path.relpath(path, tree), info.st_mode))

            pending = [tree]
            while pending:
                directory = pending.pop()
                open_up(directory, os.lstat(directory))
                with os.scandir(directory) as entries:
                    for entry in entries:
                        info = entry.stat(follow_symlinks=False)
                        if stat.S_ISDIR(info.st_mode):
                            pending.append(entry.path)
                        else:
                            open_up(entry.path, info)
        finally:
            os.close(fd)
        return granted


def _open_lock(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _try_exclusive(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            return False
        raise
    return True


@contextlib.contextmanager
def unlocked(tree: str, state: str, name: str) -> Iterator[Grants]:
    """``tree`` readable throughout by its owner; yields the modes the tar gave to what was
    granted, for views that must show them. ``state`` is a directory of the store's that holds
    the locks and the journal, ``name`` the layer's id there."""
    journal = _Journal(os.path.join(state, f"{name}.modes"))
    if os.geteuid() == 0:  # CAP_DAC_OVERRIDE: root reads everything as it is
        yield Grants()
        return
    # Most layers lock nobody out: read them as they are, unless another reader holds a grant
    # (looked for again after the walk, which may have run while a grant was being made).
    if not os.path.exists(journal.path) and not _locked_entries(tree):
        if not os.path.exists(journal.path):
            yield Grants()
            return
    os.makedirs(state, mode=0o700, exist_ok=True)
    guard = _open_lock(os.path.join(state, f"{name}.guard"))
    users = -1
    try:
        users = _open_lock(os.path.join(state, f"{name}.users"))
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            if _try_exclusive(users):  # nobody is reading: a journal left is a killed reader's
                journal.restore()
                try:
                    modes = journal.grant(tree)
                except BaseException:
                    journal.restore()
                    raise
            else:
                modes = journal.grants(tree)
            fcntl.flock(users, fcntl.LOCK_SH)
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)
        try:
            yield modes
        finally:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                if _try_exclusive(users):  # the last reader puts the modes back
                    journal.restore()
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)
    finally:
        if users >= 0:
            os.close(users)
        os.close(guard)


def _abandoned(state: str, name: str, restore: bool) -> bool:
    """Whether ``name``'s journal is left by killed readers (no reader holds it); with
    ``restore``, put its modes back."""
    journal = _Journal(os.path.join(state, f"{name}.modes"))
    if not os.path.exists(journal.path):
        return False
    guard = _open_lock(os.path.join(state, f"{name}.guard"))
    try:
        users = _open_lock(os.path.join(state, f"{name}.users"))
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            if not _try_exclusive(users):
                return False  # a reader is inside: its grant is live
            if restore:
                journal.restore()
            return True
        finally:
            os.close(users)
    finally:
        os.close(guard)


def abandoned(state: str) -> list[str]:
    """The names whose grants no reader holds any more (a reader was killed before it put the
    modes back): their trees show the grant's modes until :func:`repair` or the next reader."""
    try:
        names = sorted(
            entry[: -len(".modes")] for entry in os.listdir(state) if entry.endswith(".modes")
        )
    except FileNotFoundError:
        return []
    return [name for name in names if _abandoned(state, name, restore=False)]


def repair(state: str, name: str) -> bool:
    """Put back the modes of ``name``'s abandoned grant; False if there is none (or a reader
    holds it)."""
    return _abandoned(state, name, restore=True)


def shows_original_modes(found: os.stat_result, modes: ModeMap) -> os.stat_result:
    """``found`` with the mode the tar gave when a grant replaced it."""
    original = modes.get((found.st_dev, found.st_ino))
    if original is None:
        return found
    fields = list(found)
    fields[stat.ST_MODE] = original
    extra = {
        name: getattr(found, name)
        for name in (
            "st_atime_ns",
            "st_mtime_ns",
            "st_ctime_ns",
            "st_blocks",
            "st_blksize",
            "st_rdev",
        )
    }
    return os.stat_result(tuple(fields), extra)


def copy_original_modes(grants: Grants, copy: str, applied: Collection[str] = frozenset()) -> None:
    """Give ``copy``, made from a granted tree (which the copy saw with the grant's modes),
    the modes the tar gave; children first, while their directories are still searchable.

    ``applied``: the paths (relative, clean) a layer applied on the copy since has set itself,
    which keep what that layer gave them; an entry it removed is skipped."""
    for relative, original in reversed(grants.paths):
        if relative in applied:
            continue
        path = os.path.join(copy, relative)
        try:
            os.chmod(path, stat.S_IMODE(original), follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            continue  # the layer applied on the copy removed it
        except PermissionError:
            # The applied layer gave a directory above it a mode without u+x: search through.
            _chmod_through(copy, relative, stat.S_IMODE(original))


def _chmod_through(copy: str, relative: str, mode: int) -> None:
    opened: list[tuple[str, int]] = []
    try:
        parts = relative.split(os.sep)[:-1]
        for depth in range(1, len(parts) + 1):
            ancestor = os.path.join(copy, *parts[:depth])
            info = os.lstat(ancestor)
            if not stat.S_ISDIR(info.st_mode):
                return
            if not info.st_mode & stat.S_IXUSR:
                os.chmod(ancestor, stat.S_IMODE(info.st_mode) | stat.S_IXUSR)
                opened.append((ancestor, stat.S_IMODE(info.st_mode)))
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.chmod(os.path.join(copy, relative), mode, follow_symlinks=False)
    finally:
        for ancestor, ancestor_mode in reversed(opened):
            os.chmod(ancestor, ancestor_mode)


def applied_paths(tar_split: str) -> frozenset[str]:
    """The clean relative paths of the members of the tar a tar-split file describes."""
    from ..engines.pure.gopath import clean
    from ..engines.pure.tarsplit import FILE_TYPE, read_entries

    return frozenset(
        os.fsdecode(clean(b"/" + entry.name).lstrip(b"/") or b".")
        for entry in read_entries(tar_split)
        if entry.type == FILE_TYPE
    )


def writable_copy(grants: Grants, copy: str) -> Grants:
    """Open a fresh copy of a tree up for a layer to be applied on it: every directory gets
    ``u+rwx`` (a child layer may write below a mode-000 or 0555 directory of its parent).
    Returns what :func:`copy_original_modes` puts back afterwards: ``grants``' entries (whose
    modes the copy took from the grant) and the directories opened here, parents first."""
    originals = dict(grants.paths)
    restore: list[tuple[str, int]] = []
    pending = [""]
    while pending:
        relative = pending.pop()
        path = os.path.join(copy, relative) if relative else copy
        info = os.lstat(path)
        key = relative or "."  # the tree's root, as grant() and applied_paths() name it
        original = originals.pop(key, None)
        if original is not None or info.st_mode & stat.S_IRWXU != stat.S_IRWXU:
            restore.append((key, info.st_mode if original is None else original))
        if info.st_mode & stat.S_IRWXU != stat.S_IRWXU:
            os.chmod(path, stat.S_IMODE(info.st_mode) | stat.S_IRWXU)
        with os.scandir(path) as entries:
            for entry in entries:
                name = os.path.join(relative, entry.name) if relative else entry.name
                if entry.is_dir(follow_symlinks=False):
                    pending.append(name)
                elif name in originals:
                    restore.append((name, originals.pop(name)))
    return Grants(restore)
