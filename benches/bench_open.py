"""Opening a store of 10,000 layers, and looking layers up in it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from layerstore import LayerStore

from datasets import scratch_directory, write_store_of_layers

LAYER_COUNT = 10_000


@pytest.fixture(scope="module")
def big_store() -> Iterator[tuple[Path, list[str]]]:
    root = Path(tempfile.mkdtemp(prefix="layerstore-bench-", dir=scratch_directory()))
    ids = write_store_of_layers(root, LAYER_COUNT)
    LayerStore(root, driver="vfs").close()  # the first open creates lock files and run dirs
    yield root, ids
    shutil.rmtree(root)


@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
def test_open_store(
    benchmark: BenchmarkFixture, big_store: tuple[Path, list[str]], read_only: bool
) -> None:
    root, ids = big_store
    benchmark.group = f"open a store of {LAYER_COUNT} layers"
    store = benchmark(LayerStore, root, driver="vfs", read_only=read_only)
    benchmark.extra_info["correct"] = len(store.layers()) == len(ids)


@pytest.mark.parametrize("how", ["name", "prefix", "id"])
def test_lookup(benchmark: BenchmarkFixture, big_store: tuple[Path, list[str]], how: str) -> None:
    root, ids = big_store
    store = LayerStore(root, driver="vfs", read_only=True)
    wanted = ids[5001]
    key = {"name": "image-500-layer-1", "prefix": wanted[:12], "id": wanted}[how]
    benchmark.group = f"look up one layer among {LAYER_COUNT}"
    found = benchmark(store.lookup, key)
    benchmark.extra_info["correct"] = found == wanted
