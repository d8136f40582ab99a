"""ApplyDiff (``store.put``) of the small-file and large-file gzip layers, per engine and driver.

Run: ``python -m pytest benches/bench_apply.py --benchmark-enable`` (tmpfs scratch space; set
LAYERSTORE_BENCH_DIR to measure elsewhere). ``benches/compare.py`` puts the Go CLI beside it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from layerstore import LayerStore

from datasets import LAYERS, scratch_directory, uncompressed_size

DRIVERS = ["vfs", "overlay"] if os.geteuid() == 0 else ["vfs"]


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("layer", sorted(LAYERS))
@pytest.mark.parametrize("engine", ["native", "pure"])
def test_put(benchmark: BenchmarkFixture, engine: str, layer: str, driver: str) -> None:
    blob = LAYERS[layer]()
    roots: list[str] = []

    def fresh_store() -> tuple[tuple[LayerStore, Path], dict[str, object]]:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
        root = tempfile.mkdtemp(prefix="layerstore-bench-", dir=scratch_directory())
        roots.append(root)
        return (LayerStore(root, driver=driver, engine=engine), blob), {}

    def put(store: LayerStore, source: Path) -> int:
        _layer, size = store.put(source)
        return size

    benchmark.group = f"put {layer} ({driver})"
    benchmark.extra_info["uncompressed_bytes"] = uncompressed_size(blob)
    size = benchmark.pedantic(put, setup=fresh_store, rounds=3, iterations=1)
    benchmark.extra_info["correct"] = size > 0
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)
