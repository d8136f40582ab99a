"""Staged puts and chains beside the Go tools: the same ids as skopeo, and Go readers and
writers working on the store while layerstore applies layers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from layerstore import LayerStore

from ..reliability.invariants import assert_consistent
from ..test_staging import ROOT_DIRECTORY, WAIT, PutInThread, blob_of
from .clients import IMAGE, IMAGE_REF, Clients, image_layers, small_tar
from .conftest import GoStore


def test_chain_ids_are_skopeos(
    clients: Clients, oci_layout: Path, tmp_path: Path, engine_name: str
) -> None:
    clients.copy_in(oci_layout, IMAGE_REF, IMAGE)
    theirs = clients.chain(clients.top_layer(IMAGE))
    ours = LayerStore(tmp_path / "ours", run_root=tmp_path / "ours-run",
                      driver=clients.driver, engine=engine_name)  # fmt: skip
    layers = ours.put_chain([blob for _, blob in image_layers()])
    assert [layer.id for layer in layers] == theirs
    go_records = {record["id"]: record for record in clients._records("layers")}
    for layer in layers:
        record = go_records[layer.id]
        assert layer.uncompressed_digest == record["diff-digest"]
        assert layer.compressed_digest == record["compressed-diff-digest"]
        assert layer.uncompressed_size == record["diff-size"]
    # And on the store skopeo filled, every layer is reused: nothing is applied again.
    shared = clients.open(engine_name)
    assert [layer.id for layer in shared.put_chain([blob for _, blob in image_layers()])] == theirs
    assert sorted(clients.layer_ids()) == sorted(theirs)


def test_go_deletes_a_staged_record_and_the_put_makes_it_again(
    go: GoStore, ours: Callable[[], LayerStore]
) -> None:
    store = ours()
    base = blob_of("base")
    store.put(base, names=["base"])
    put = PutInThread(store, parent="base", names=["staged"])
    try:
        # Go opens the store read-write, takes the reservation for a dead process's leftover
        # and deletes its record; it must not touch the staging nor the base layer.
        assert [layer["names"] for layer in go.layers()] == [["base"]]
        go.import_layer(small_tar("from-go"), "from-go", parent="base")
        records = json.loads(Path(store.layers_dir, "layers.json").read_bytes())
        assert [record.get("names") for record in records] == [["base"], ["from-go"]]
    finally:
        layer_id = put.finish()
    assert store.get("staged").id == layer_id
    assert {tuple(layer["names"]) for layer in go.layers()} == {
        ("base",),
        ("from-go",),
        ("staged",),
    }
    assert go.diff("staged") == put.blob_bytes()
    assert_consistent(ours())


WRITER = """
import sys
from layerstore import LayerStore
from tests.test_staging import blob_of
root, run_root, driver, engine, number = sys.argv[1:6]
store = LayerStore(root, run_root=run_root, driver=driver, engine=engine)
for index in range(6):
    store.put(blob_of(f"p{number}-{index}", 200 << 10), parent="base", names=[f"p{number}-{index}"])
"""


def test_four_processes_put_while_go_reads_and_imports(
    go: GoStore, ours: Callable[[], LayerStore]
) -> None:
    store = ours()
    store.put(blob_of("base"), names=["base"])
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(WRITER),
                str(go.root),
                str(go.run_root),
                go.driver,
                store.engine.name,
                str(number),
            ],
            cwd=ROOT_DIRECTORY,
            env={**os.environ, "PYTHONPATH": f"{ROOT_DIRECTORY}/python:{ROOT_DIRECTORY}"},
        )
        for number in range(4)
    ]
    go_names = []
    deadline = time.monotonic() + WAIT * 4
    while any(writer.poll() is None for writer in writers):
        assert time.monotonic() < deadline, "the writers never finished"
        go.layers()
        name = f"go-{len(go_names)}"
        go.import_layer(small_tar(name), name, parent="base")
        go_names.append(name)
    assert [writer.wait() for writer in writers] == [0, 0, 0, 0]
    expected = {"base", *go_names, *(f"p{n}-{i}" for n in range(4) for i in range(6))}
    assert {name for layer in go.layers() for name in layer["names"]} == expected
    reopened = ours()
    assert {name for layer in reopened.layers() for name in layer.names} == expected
    for number in range(4):
        layer = reopened.get(f"p{number}-0")
        assert go.diff(layer.id) == reopened_diff(reopened, layer.id)
    assert_consistent(reopened)


def reopened_diff(store: LayerStore, layer_id: str) -> bytes:
    with store.diff(layer_id, compression="none") as stream:
        return stream.read()
