"""Copying a layer's tree (the vfs driver's create), in Python."""

from __future__ import annotations

import errno
import fcntl
import os
import stat

__all__ = ["copy_tree"]

_FICLONE = 0x40049409  # ioctl number of FICLONE on Linux (share extents between files)
_COPY_CHUNK = 1 << 30


def copy_tree(source: str, destination: str) -> None:
    """Copy the directory ``source`` to ``destination`` (see Engine.copy_tree)."""
    source_stat = os.lstat(source)
    if not stat.S_ISDIR(source_stat.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), source)
    _copy_directory(source, destination, source_stat, {})


def _copy_directory(
    source: str, destination: str, source_stat: os.stat_result, links: dict[tuple[int, int], str]
) -> None:
    os.mkdir(destination)
    os.chmod(destination, 0o700)  # writable while filling; the real mode is set at the end
    with os.scandir(source) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        target = os.path.join(destination, entry.name)
        entry_stat = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(entry_stat.st_mode):
            _copy_directory(entry.path, target, entry_stat, links)
        else:
            _copy_entry(entry.path, target, entry_stat, links)
    _finish_metadata(source, destination, source_stat)


def _copy_entry(
    source: str, destination: str, source_stat: os.stat_result, links: dict[tuple[int, int], str]
) -> None:
    if source_stat.st_nlink > 1:
        key = (source_stat.st_dev, source_stat.st_ino)
        first = links.get(key)
        if first is not None:
            os.link(first, destination)
            return
        links[key] = destination
    mode = source_stat.st_mode
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(source), destination)
    elif stat.S_ISREG(mode):
        _copy_file_contents(source, destination)
    else:
        os.mknod(destination, stat.S_IFMT(mode) | 0o600, source_stat.st_rdev)
    _finish_metadata(source, destination, source_stat)


def _copy_file_contents(source: str, destination: str) -> None:
    input_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        output_fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.ioctl(output_fd, _FICLONE, input_fd)
                return
            except OSError:
                pass  # no shared extents here: copy the bytes
            length = os.fstat(input_fd).st_size
            copied = 0
            while copied < length:
                try:
                    count = os.copy_file_range(
                        input_fd, output_fd, min(length - copied, _COPY_CHUNK)
                    )
                except OSError:
                    if copied:
                        raise
                    _copy_by_reading(input_fd, output_fd)
                    return
                if count == 0:
                    break  # the file shrank while we copied it
                copied += count
        finally:
            os.close(output_fd)
    finally:
        os.close(input_fd)


def _copy_by_reading(input_fd: int, output_fd: int) -> None:
    while chunk := os.read(input_fd, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(output_fd, view) :]


def _finish_metadata(source: str, destination: str, source_stat: os.stat_result) -> None:
    is_symlink = stat.S_ISLNK(source_stat.st_mode)
    try:
        os.chown(destination, source_stat.st_uid, source_stat.st_gid, follow_symlinks=False)
    except PermissionError:
        # Without privileges a copy keeps the caller as owner, as `cp -a` does.
        if os.geteuid() == 0 and source_stat.st_uid != os.geteuid():
            raise
    # Before the mode: a user.* xattr needs write permission, which a 0555 or 0000 mode takes
    # away even from the owner.
    _copy_xattrs(source, destination, is_symlink)
    if not is_symlink:
        os.chmod(destination, stat.S_IMODE(source_stat.st_mode))  # after chown clears setuid
    os.utime(
        destination,
        ns=(source_stat.st_atime_ns, source_stat.st_mtime_ns),
        follow_symlinks=False,
    )


def _copy_xattrs(source: str, destination: str, is_symlink: bool) -> None:
    try:
        names = os.listxattr(source, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.ENOTSUP:
            return
        raise
    for name in names:
        value = os.getxattr(source, name, follow_symlinks=False)
        try:
            os.setxattr(destination, name, value, follow_symlinks=False)
        except OSError as exc:
            # user.* xattrs cannot sit on symlinks, and some file systems take none at all.
            if exc.errno == errno.ENOTSUP or (is_symlink and exc.errno == errno.EPERM):
                continue
            raise
