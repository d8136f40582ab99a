"""User-namespace id mappings: translating owners, and shifting a layer's files to new maps.

A layer may carry uid/gid maps (its files are owned by host ids that stand for container ids).
When a layer is created with other maps than its parent's, its tree is chowned from the old
host ids to the new ones, as containers/storage's naive id-map updater does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..errors import LayerStoreError
from ..layer import IDMap

__all__ = ["OVERFLOW_ID", "shift_ownership", "to_container", "to_host"]

OVERFLOW_ID = 65534  # the kernel's overflowuid: what an unmapped id shows as


def to_container(host_id: int, maps: Sequence[IDMap]) -> int | None:
    """The container id that ``host_id`` stands for (identity without maps; None if unmapped)."""
    if not maps:
        return host_id
    for entry in maps:
        if entry.host_id <= host_id < entry.host_id + entry.size:
            return entry.container_id + host_id - entry.host_id
    return None


def to_host(container_id: int, maps: Sequence[IDMap]) -> int:
    """The host id for ``container_id`` (identity without maps; the overflow id if unmapped)."""
    if not maps:
        return container_id
    for entry in maps:
        if entry.container_id <= container_id < entry.container_id + entry.size:
            return entry.host_id + container_id - entry.container_id
    return OVERFLOW_ID


def _shifted(value: int, old: Sequence[IDMap], new: Sequence[IDMap], path: str) -> int:
    container = to_container(value, old)
    if container is None:
        if value != 0:
            raise LayerStoreError(f"{path}: owner id {value} is not in the layer's old id map")
        container = 0  # a parent that should have been mapped but was not, as Go allows
    return to_host(container, new)


def shift_ownership(
    root: str,
    old: tuple[Sequence[IDMap], Sequence[IDMap]],
    new: tuple[Sequence[IDMap], Sequence[IDMap]],
) -> None:
    """Chown every entry under ``root`` (itself included) from the ``old`` (uid, gid) maps to
    the ``new`` ones; symlinks are changed themselves, never followed."""
    (old_uids, old_gids), (new_uids, new_gids) = old, new
    paths = [root]
    for directory, subdirectories, files in os.walk(root):
        paths.extend(os.path.join(directory, name) for name in (*subdirectories, *files))
    for path in paths:
        info = os.lstat(path)
        uid = _shifted(info.st_uid, old_uids, new_uids, path)
        gid = _shifted(info.st_gid, old_gids, new_gids, path)
        if (uid, gid) != (info.st_uid, info.st_gid):
            mode = info.st_mode
            os.chown(path, uid, gid, follow_symlinks=False)
            if not os.path.islink(path) and mode & 0o6000:
                os.chmod(path, mode & 0o7777)  # chown cleared setuid/setgid: put them back
