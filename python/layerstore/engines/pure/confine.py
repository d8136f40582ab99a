"""Finding a path inside a layer's directory without ever leaving it (docs/apply.md section 4).

A tar name is cleaned like Go's ``path.Clean``, a leading ``/`` is dropped, and ``..`` escapes
are refused. Directories are then opened one component at a time with ``O_NOFOLLOW``; a symlink
met on the way is resolved as if the layer's directory were the root, the way Go works inside a
chroot, so no name can reach outside the layer. Extraction and reassembly share these rules.
"""

from __future__ import annotations

import errno
import os
import stat

from ...errors import InvalidLayerData
from . import gopath

__all__ = ["DIRECTORY_FLAGS", "MAX_PATH", "Parts", "confine", "open_directory", "shown"]

MAX_PATH = 4096
MAX_SYMLINKS = 40
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Parts = tuple[bytes, ...]


def shown(name: bytes) -> str:
    """A name for messages: Python's repr of it, undecodable bytes escaped."""
    return repr(name.decode("utf-8", "backslashreplace"))


def confine(name: bytes, what: str = "path") -> Parts:
    """The components of ``name`` inside the layer; refuses names that climb out of it.
    ``what`` names it in messages (``path``, ``hard link target``)."""
    cleaned = gopath.clean(name).lstrip(b"/")
    if cleaned == b".." or cleaned.startswith(b"../"):
        raise InvalidLayerData(f"{what} {shown(name)} escapes the layer")
    if len(cleaned) > MAX_PATH:
        raise InvalidLayerData(f"{what} {shown(name[:100])}... is longer than {MAX_PATH} bytes")
    if cleaned in (b"", b"."):
        return ()
    return tuple(cleaned.split(b"/"))


def open_directory(root_fd: int, parts: Parts, create: bool) -> int | None:
    """A new descriptor of directory ``parts`` inside ``root_fd``, or None if it is missing.

    With ``create``, missing directories are made (mode 0755). A component that is neither a
    directory nor a symlink is ``InvalidLayerData``.
    """
    stack = [os.dup(root_fd)]
    pending = list(parts)
    links = 0
    try:
        while pending:
            part = pending.pop(0)
            if part in (b"", b"."):
                continue
            if part == b"..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            current = stack[-1]
            try:
                stack.append(os.open(part, DIRECTORY_FLAGS, dir_fd=current))
                continue
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(part, 0o755, dir_fd=current)
                fd = os.open(part, DIRECTORY_FLAGS, dir_fd=current)
                os.fchmod(fd, 0o755)  # whatever the umask
                stack.append(fd)
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
            info = os.stat(part, dir_fd=current, follow_symlinks=False)
            if not stat.S_ISLNK(info.st_mode):
                if not create:
                    return None
                raise InvalidLayerData(
                    f"{shown(b'/'.join(parts))}: a component of the path is not a directory"
                )
            links += 1
            if links > MAX_SYMLINKS:
                raise InvalidLayerData(
                    f"{shown(b'/'.join(parts))}: too many levels of symbolic links"
                )
            target = os.readlink(part, dir_fd=current)
            if target.startswith(b"/"):
                while len(stack) > 1:
                    os.close(stack.pop())
            pending[:0] = target.split(b"/")
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)
