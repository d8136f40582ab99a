"""Deterministic data sets for the benchmarks."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def write_store_of_layers(root: Path, count: int, driver: str = "vfs") -> list[str]:
    """A store whose layers.json holds ``count`` realistic records (a chain of ten-layer images).

    Only the records are written, as a store of that size would hold them: ids, names, parents,
    digests, sizes and uid/gid sets. Returns the ids in file order.
    """
    layers_dir = root / f"{driver}-layers"
    layers_dir.mkdir(parents=True, exist_ok=True)
    records = []
    ids = []
    for number in range(count):
        layer_id = hashlib.sha256(f"layer {number}".encode()).hexdigest()
        digest = hashlib.sha256(f"diff {number}".encode()).hexdigest()
        record: dict[str, object] = {"id": layer_id}
        if number % 3 == 0:
            record["names"] = [f"image-{number // 10}-layer-{number % 10}"]
        if number % 10:
            record["parent"] = ids[-1]
        record |= {
            "created": "2026-11-29T18:54:39.772935181Z",
            "compressed-diff-digest": f"sha256:{hashlib.sha256(digest.encode()).hexdigest()}",
            "compressed-size": 1000 + number,
            "diff-digest": f"sha256:{digest}",
            "diff-size": 10240 + number,
            "compression": 2,
            "uidset": [0],
            "gidset": [0],
        }
        records.append(record)
        ids.append(layer_id)
    (layers_dir / "layers.json").write_text(json.dumps(records, separators=(",", ":")))
    return ids


def scratch_directory() -> Path:
    """Where benchmarks put their files: tmpfs, whose speed does not drift as files come and go."""
    base = Path(os.environ.get("LAYERSTORE_BENCH_DIR", "/dev/shm"))
    return base if base.is_dir() else Path("/tmp")
