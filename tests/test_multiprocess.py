"""Many processes on one store: nothing lost, nothing duplicated."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from layerstore import LayerStore

WORKERS = 4
LAYERS_PER_WORKER = 50


def worker(root: str, driver: str, engine: str, number: int) -> None:
    store = LayerStore(root, driver=driver, engine=engine)
    for index in range(LAYERS_PER_WORKER):
        layer = store.create(names=[f"w{number}-layer{index}"])
        store.add_names(layer.id, [f"w{number}-alias{index}"])
        if index % 2 == 0:
            store.delete(f"w{number}-alias{index}")


@pytest.mark.records_only
def test_four_processes_create_and_delete(
    tmp_path: Path, driver_name: str, engine_name: str
) -> None:
    root = str(tmp_path / "store")
    LayerStore(root, driver=driver_name, engine=engine_name).close()
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=worker, args=(root, driver_name, engine_name, number))
        for number in range(WORKERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0

    store = LayerStore(root, driver=driver_name, engine=engine_name)
    expected = {
        f"w{number}-layer{index}": f"w{number}-alias{index}"
        for number in range(WORKERS)
        for index in range(1, LAYERS_PER_WORKER, 2)
    }
    records = json.loads(Path(store.layers_dir, "layers.json").read_bytes())
    assert len(records) == len(expected)
    assert sorted(name for record in records for name in record["names"]) == sorted(
        [*expected, *expected.values()]
    )
    for name, alias in expected.items():
        layer = store.get(name)
        assert layer.names == (name, alias)
        assert not layer.incomplete
    assert store.driver.layer_ids() == sorted(layer.id for layer in store.layers())
