"""Diff of the small-file and large-file layers, uncompressed and gzip, per engine and driver.

Run: ``python -m pytest benches/bench_diff.py --benchmark-enable``; ``benches/compare.py``
puts the Go CLI beside it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from layerstore import LayerStore

from datasets import LAYERS, layer_files, scratch_directory, uncompressed_size

DRIVERS = ["vfs", "overlay"] if os.geteuid() == 0 else ["vfs"]


@pytest.fixture(scope="module", params=[(layer, driver) for layer in LAYERS for driver in DRIVERS],
                ids=lambda param: f"{param[0]}-{param[1]}")  # fmt: skip
def applied(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str, str]]:
    layer, driver = request.param
    root = tempfile.mkdtemp(prefix="layerstore-bench-", dir=scratch_directory())
    applied_layer, _ = LayerStore(root, driver=driver).put(LAYERS[layer]())
    yield root, driver, applied_layer.id, layer
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize("engine", ["native", "pure"])
def test_diff(
    benchmark: BenchmarkFixture,
    applied: tuple[str, str, str, str],
    engine: str,
    compression: str,
) -> None:
    root, driver, layer_id, layer = applied
    store = LayerStore(root, driver=driver, engine=engine)
    buffer = bytearray(1 << 20)

    def read_diff() -> int:
        total = 0
        with store.diff(layer_id, compression=compression) as stream:
            while count := stream.readinto(buffer):
                total += count
        return total

    benchmark.group = f"diff {layer} {compression} ({driver})"
    benchmark.extra_info["uncompressed_bytes"] = uncompressed_size(LAYERS[layer]())
    benchmark.pedantic(read_diff, rounds=3, iterations=1)
    # Checked once more outside the timed rounds: the tar (decompressed if need be) must hash
    # to the data set's DiffID, which is known independently of layerstore.
    benchmark.extra_info["correct"] = tar_digest(store, layer_id, compression) == (
        layer_files(layer).diff_id
    )


def tar_digest(store: LayerStore, layer_id: str, compression: str) -> str:
    digest = hashlib.sha256()
    with store.diff(layer_id, compression=compression) as stream:
        tar = gzip.GzipFile(fileobj=stream) if compression == "gzip" else stream
        while chunk := tar.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()
