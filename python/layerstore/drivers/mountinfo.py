"""Which paths are mount points right now, from ``/proc/self/mountinfo``.

Mount counts in ``mountpoints.json`` say what processes believe; the kernel's table says what is
true (a mount can be dropped behind the store's back, with ``umount`` from a shell).
"""

from __future__ import annotations

import os
import re

__all__ = ["is_mount_point", "is_visible_mount", "mount_points"]

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as \040, \011, \012, \134.
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def mount_points() -> set[str]:
    """Every mount point of this process's mount namespace."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as table:
        return {_unescape(line.split(" ", 5)[4]) for line in table if line.strip()}


def is_mount_point(path: str) -> bool:
    """Whether ``path`` (made absolute and normalised, symlinks not followed) is mounted on."""
    return os.path.normpath(os.path.abspath(path)) in mount_points()


def is_visible_mount(path: str) -> bool:
    """Whether a file system of its own is what ``path`` shows: its device differs from its
    parent directory's. Right for overlays (each has a device); a mount hidden below another
    mount shows the directory underneath, so it is not visible. Not for binds of one device."""
    try:
        here = os.stat(path)
        above = os.stat(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    return here.st_dev != above.st_dev
