"""The mount table: ``mountpoints.json``, which layers are mounted where and how often.

Mount counts live in the run root (a tmpfs on real systems), apart from ``layers.json``, because
they describe this boot, not the layers. Only layers with a count above zero are written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .. import gojson
from ..errors import InvalidStoreData

__all__ = ["MountPoint", "decode_mounts", "encode_mounts"]


@dataclass(frozen=True, slots=True)
class MountPoint:
    """Where a layer is mounted and how many users hold the mount."""

    path: str
    count: int


def decode_mounts(data: bytes, *, source: str) -> dict[str, MountPoint]:
    """Parse ``mountpoints.json``; an empty file is an empty table."""
    if not data.strip():
        return {}
    try:
        entries: Any = json.loads(data)
        if not isinstance(entries, list):
            raise TypeError("expected a JSON array")
        table = {}
        for entry in entries:
            layer_id, path, count = entry["id"], entry.get("path", ""), entry.get("count", 0)
            if not isinstance(layer_id, str) or not isinstance(path, str):
                raise TypeError(f"bad entry {entry!r:.120}")
            if not isinstance(count, int) or isinstance(count, bool):
                raise TypeError(f"bad count in {entry!r:.120}")
            if count > 0:
                table[layer_id] = MountPoint(path, count)
        return table
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidStoreData(f"{source}: cannot parse the mount table: {exc}") from None


def encode_mounts(table: dict[str, MountPoint], layer_order: list[str]) -> bytes:
    """``mountpoints.json`` for ``table``, entries in the order of the layers (as Go writes)."""
    entries = [
        {"id": layer_id, "path": table[layer_id].path, "count": table[layer_id].count}
        for layer_id in layer_order
        if layer_id in table and table[layer_id].count > 0
    ]
    return gojson.dumps(entries).encode("utf-8")
