"""A tree's manifest: what must be equal when two trees are "the same"."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in sorted(names)}


def tree_manifest(root: Path | str, *, times: bool = True) -> dict[str, tuple[object, ...]]:
    """Path -> (type, mode, uid, gid, size, content hash or link target or rdev, xattrs, mtime).

    Hard links show as the path of the first name (in sorted order) that shares the inode.
    """
    manifest: dict[str, tuple[object, ...]] = {}
    first_name: dict[tuple[int, int], str] = {}
    root = str(root)
    entries = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        for name in [*subdirectories, *sorted(files)]:
            entries.append(os.path.join(directory, name))
    entries.append(root)
    for path in sorted(entries):
        info = os.lstat(path)
        relative = os.path.relpath(path, root)
        mode = info.st_mode
        if stat.S_ISREG(mode):
            with open(path, "rb") as handle:
                detail: object = hashlib.sha256(handle.read()).hexdigest()
            key = (info.st_dev, info.st_ino)
            if info.st_nlink > 1:
                detail = ("link", first_name.setdefault(key, relative))
        elif stat.S_ISLNK(mode):
            detail = os.readlink(path)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            detail = (os.major(info.st_rdev), os.minor(info.st_rdev))
        else:
            detail = None
        manifest[relative] = (
            stat.S_IFMT(mode),
            stat.S_IMODE(mode) if not stat.S_ISLNK(mode) else 0,
            info.st_uid,
            info.st_gid,
            info.st_size if stat.S_ISREG(mode) else 0,
            detail,
            tuple(xattrs(path).items()),
            info.st_mtime_ns if times else 0,
        )
    return manifest
