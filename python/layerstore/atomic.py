"""Atomic file replacement: readers see the old file or the new one, never a mix.

Every rewrite of store data, and every file the CLI writes with ``-o``, goes through
:func:`write_atomic`: write a temporary file next to the target, fsync it, rename it over the
target, fsync the directory so the rename itself is durable. A failure at any step leaves the
old file in place and removes the temporary one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["fsync_directory", "write_atomic"]


def fsync_directory(path: str) -> None:
    """Make the entries of directory ``path`` (renames, new files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umasked(mode: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def write_atomic(
    path: str, data: bytes | Callable[[BinaryIO], object], mode: int | None = 0o600
) -> None:
    """Replace the file at ``path`` atomically and durably with ``data``, or with what
    ``data(file)`` writes into the file it is given.

    ``mode`` is the new file's mode; None gives what a plain ``open()`` would (0666 less the
    umask).
    """
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    final_mode = _umasked(0o666) if mode is None else mode
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as target:
            if callable(data):
                data(target)
            else:
                target.write(data)
            target.flush()
            os.fchmod(target.fileno(), final_mode)  # the umask may narrow it; an old temp linger
            os.fsync(target.fileno())
        os.rename(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(directory)
