"""Mount and unmount latency of 1-layer and 100-layer chains; vfs create on a 20,000-file parent.

Run as root: ``python -m pytest benches/bench_mount.py --benchmark-enable``.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from layerstore import LayerStore

from datasets import LAYERS, scratch_directory

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root")


def small_layer(name: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = 4
        archive.addfile(info, io.BytesIO(b"data"))
    return buffer.getvalue()


@pytest.fixture(scope="module", params=[1, 100], ids=lambda depth: f"{depth}-layers")
def chain(request: pytest.FixtureRequest) -> Iterator[tuple[LayerStore, str]]:
    root = tempfile.mkdtemp(prefix="layerstore-bench-", dir=scratch_directory())
    store = LayerStore(root, driver="overlay")
    parent = None
    for number in range(request.param):
        layer, _ = store.put(small_layer(f"file{number}"), parent=parent)
        parent = layer.id
    assert parent is not None
    yield store, parent
    shutil.rmtree(root, ignore_errors=True)


@needs_root
@pytest.mark.parametrize("engine", ["native", "pure"])
def test_mount_and_unmount(
    benchmark: BenchmarkFixture, chain: tuple[LayerStore, str], engine: str
) -> None:
    store, top = chain
    store = LayerStore(store.root, driver="overlay", engine=engine)
    depth = len(store.layers())
    benchmark.group = f"mount + unmount, {depth}-layer overlay chain"

    def cycle() -> bool:
        path = store.mount(top)
        mounted = os.path.exists(os.path.join(path, "file0"))
        store.unmount(top)
        return mounted

    benchmark.extra_info["correct"] = benchmark(cycle)


@pytest.fixture(scope="module")
def big_vfs_parent() -> Iterator[tuple[str, str]]:
    root = tempfile.mkdtemp(prefix="layerstore-bench-", dir=scratch_directory())
    parent, _ = LayerStore(root, driver="vfs").put(LAYERS["small-files"]())
    yield root, parent.id
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("engine", ["native", "pure"])
def test_vfs_create_on_a_20000_file_parent(
    benchmark: BenchmarkFixture, big_vfs_parent: tuple[str, str], engine: str
) -> None:
    root, parent = big_vfs_parent
    store = LayerStore(root, driver="vfs", engine=engine)
    made: list[str] = []

    def clean() -> tuple[tuple[()], dict[str, object]]:
        while made:
            store.delete(made.pop())
        return (), {}

    def create() -> str:
        layer = store.create(parent=parent)
        made.append(layer.id)
        return layer.id

    benchmark.group = "vfs create on a parent of 20,000 files"
    layer_id = benchmark.pedantic(create, setup=clean, rounds=3, iterations=1)
    copied = os.path.join(store.driver.layer_dir(layer_id), "usr", "share", "d199", "f19999")
    benchmark.extra_info["correct"] = os.path.exists(copied)
    clean()
