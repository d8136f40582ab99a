"""Which paths are mount points right now, from ``/proc/self/mountinfo``.

Mount counts in ``mountpoints.json`` say what processes believe; the kernel's table says what is
true (a mount can be dropped behind the store's back, with ``umount`` from a shell).
"""

from __future__ import annotations

import os
import re

__all__ = ["is_mount_point", "mount_points"]

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
