"""Deterministic data sets for the benchmarks."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
from collections.abc import Iterator
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


# -- layer blobs ---------------------------------------------------------------------------------

DATA_VERSION = 1  # bump when the generators change, so cached blobs are made again


def data_directory() -> Path:
    """Where generated blobs are cached between runs (tmpfs by default)."""
    configured = os.environ.get("LAYERSTORE_BENCH_DATA")
    directory = Path(configured) if configured else scratch_directory() / "layerstore-bench-data"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _compressible(rng: random.Random, size: int) -> bytes:
    """Bytes that gzip to about half their size, like the binaries and text of real images."""
    return rng.randbytes((size + 1) // 2).hex().encode()[:size]


def _write_layer(path: Path, files: Iterator[tuple[str, bytes]]) -> Path:
    temporary = path.with_suffix(".partial")
    with (
        gzip.open(temporary, "wb", compresslevel=6) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        directories: set[str] = set()
        for name, data in files:
            parent = os.path.dirname(name)
            if parent and parent not in directories:
                directories.add(parent)
                info = tarfile.TarInfo(parent)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
                archive.addfile(info)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
    temporary.rename(path)
    return path


def small_files_layer() -> Path:
    """A gzip layer of 20,000 files of 1-16 KiB in 200 directories (about 190 MB of tar)."""
    path = data_directory() / f"small-files-v{DATA_VERSION}.tar.gz"
    if path.exists():
        return path
    rng = random.Random(20_000)

    def files() -> Iterator[tuple[str, bytes]]:
        for number in range(20_000):
            yield (
                f"usr/share/d{number // 100:03d}/f{number:05d}",
                _compressible(rng, rng.randint(1024, 16 * 1024)),
            )

    return _write_layer(path, files())


def large_files_layer() -> Path:
    """A gzip layer of six files of 70 MB each (about 420 MB of tar)."""
    path = data_directory() / f"large-files-v{DATA_VERSION}.tar.gz"
    if path.exists():
        return path
    rng = random.Random(420)

    def files() -> Iterator[tuple[str, bytes]]:
        for number in range(6):
            yield f"opt/blobs/big{number}.bin", _compressible(rng, 70 * 1000 * 1000)

    return _write_layer(path, files())


LAYERS = {"small-files": small_files_layer, "large-files": large_files_layer}


def uncompressed_size(path: Path) -> int:
    """Bytes of tar inside a gzip blob (read once, remembered beside it)."""
    memo = path.with_suffix(".size")
    if memo.exists():
        return int(memo.read_text())
    size = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            size += len(chunk)
    memo.write_text(str(size))
    return size
