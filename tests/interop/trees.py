"""A tree's contents as a container sees them, for comparing mounts."""

from __future__ import annotations

import hashlib
import os
import stat


def merged_tree(root: str) -> dict[str, tuple[object, ...]]:
    """Path -> (type, mode, owner, size, content hash or link target) below ``root``."""
    tree: dict[str, tuple[object, ...]] = {}
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        for name in sorted((*subdirectories, *files)):
            path = os.path.join(directory, name)
            info = os.lstat(path)
            detail: object = None
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    detail = hashlib.sha256(handle.read()).hexdigest()
            elif stat.S_ISLNK(info.st_mode):
                detail = os.readlink(path)
            tree[os.path.relpath(path, root)] = (
                stat.S_IFMT(info.st_mode),
                stat.S_IMODE(info.st_mode),
                info.st_uid,
                info.st_gid,
                info.st_size if stat.S_ISREG(info.st_mode) else 0,
                detail,
            )
    return tree
