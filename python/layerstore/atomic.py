"""Atomic file replacement: readers see the old file or the new one, never a mix.

Every rewrite of store data goes through :func:`write_atomic`: write a temporary file next to
the target, fsync it, rename it over the target, fsync the directory so the rename itself is
durable. A failure at any step leaves the old file in place and removes the temporary one.
"""

from __future__ import annotations

import os

__all__ = ["fsync_directory", "write_atomic"]


def fsync_directory(path: str) -> None:
    """Make the entries of directory ``path`` (renames, new files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace the file at ``path`` with ``data`` atomically and durably."""
    directory = os.path.dirname(path) or "."
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fchmod(fd, mode)  # the umask may have narrowed it, and an old temp may linger
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(directory)
