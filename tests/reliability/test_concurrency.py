"""Many processes, and many threads in one process, on one store: no lost update, no lost name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from layerstore import LayerStore

from ..conftest import overlay_usable
from .invariants import assert_consistent

ROOT_DIRECTORY = Path(__file__).resolve().parents[2]


def run_workers(store: LayerStore, tmp_path: Path, processes: int, operations: int,
                threads: int = 1) -> dict[str, Any]:  # fmt: skip
    outputs = [tmp_path / f"worker{number}.json" for number in range(processes)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.concurrency_worker",
                store.root,
                store.run_root,
                store.driver.name,
                store.engine.name,
                str(number),
                str(operations),
                str(output),
                str(threads),
            ],
            cwd=ROOT_DIRECTORY,
            stderr=subprocess.PIPE,
        )
        for number, output in enumerate(outputs)
    ]
    for worker in workers:
        _, errors = worker.communicate(timeout=600)
        assert worker.returncode == 0, errors.decode(errors="replace")
    expected: dict[str, Any] = {}
    for output in outputs:
        expected.update(json.loads(output.read_text()))
    return expected


def assert_state(store: LayerStore, expected: dict[str, Any]) -> None:
    layers = {layer.id: layer for layer in store.layers()}
    assert set(layers) == set(expected), "layers lost or left behind"
    all_names = [name for layer in layers.values() for name in layer.names]
    assert len(all_names) == len(set(all_names)), "a name is duplicated"
    for layer_id, state in expected.items():
        layer = layers[layer_id]
        assert list(layer.names) == state["names"], "a name update was lost"
        assert layer.metadata == state["metadata"], "a metadata update was lost"
        assert sorted(layer.big_data_names) == sorted(state["big_data"])
        for key, value in state["big_data"].items():
            assert store.big_data(layer_id, key) == value.encode()
        assert store.mounted(layer_id) == 0
    assert_consistent(store)


def test_eight_processes(store: LayerStore, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if store.driver.name == "overlay" and not overlay_usable():
        pytest.skip("overlay mounts need root")
    operations = 100 if request.config.getoption("--long") else 25
    expected = run_workers(store, tmp_path, processes=8, operations=operations)
    assert_state(store, expected)


def test_threads_in_one_process(store: LayerStore, tmp_path: Path) -> None:
    if store.driver.name == "overlay" and not overlay_usable():
        pytest.skip("overlay mounts need root")
    expected = run_workers(store, tmp_path, processes=1, operations=40, threads=6)
    assert_state(store, expected)
