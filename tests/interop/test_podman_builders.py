"""skopeo and buildah write the store while layerstore reads and writes it (issue 14)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from layerstore.engines import Engine

from .clients import Clients, sha256, small_tar, tar_tree, write_oci_layout
from .conftest import GO_CLI, MISSING, GoStore

IMAGES = 6
ROUNDS = 30


def test_skopeo_and_layerstore_at_once(clients: Clients, engine: Engine, tmp_path: Path) -> None:
    if GO_CLI is None:
        pytest.skip(MISSING)
    common = small_tar("common")  # every image shares its bottom layer
    layouts = [
        write_oci_layout(
            tmp_path / f"oci-{number}",
            "test",
            [(tar, tar) for tar in (common, small_tar(f"image-{number}", size=1 << 20))],
        )
        for number in range(IMAGES)
    ]
    store = clients.open(engine)  # creates the store's files before both start
    store.put(small_tar("ours"), names=["ours"])
    worker = textwrap.dedent(
        f"""
        from layerstore import LayerStore
        from tests.interop.clients import small_tar
        store = LayerStore({str(clients.root)!r}, run_root={str(clients.run_root)!r},
                           driver={clients.driver!r}, engine={engine.name!r})
        for number in range({ROUNDS}):
            layer, _ = store.put(small_tar(f"py-{{number}}"), parent="ours",
                                 names=[f"py-{{number}}"])
            store.add_names(layer.id, [f"py-{{number}}-alias"])
            if number % 2 == 0:
                store.delete(layer.id)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", worker],
        cwd=Path(__file__).parents[2],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for number, layout in enumerate(layouts):
            clients.copy_in(layout, "test", f"localhost/concurrent:{number}")
    finally:
        _, errors = process.communicate(timeout=300)
    assert process.returncode == 0, errors

    names = {entry["Names"][0] for entry in clients.podman_json("images", "--format", "json")}
    assert names == {f"localhost/concurrent:{number}" for number in range(IMAGES)}
    store = clients.open(engine)
    ours_ids = [layer.id for layer in store.layers()]
    go = GoStore(clients.root, clients.run_root, clients.driver)
    go_ids = [record["id"] for record in go.layers()]
    assert sorted(go_ids) == sorted(ours_ids) == sorted(clients.layer_ids())
    assert len(ours_ids) == 1 + IMAGES + 1 + ROUNDS // 2, "one shared bottom layer, nothing lost"
    for number in range(IMAGES):
        image = f"localhost/concurrent:{number}"
        chain = clients.chain(clients.top_layer(image))
        assert clients.inspect(image)["RootFS"]["Layers"] == [
            store.get(layer).uncompressed_digest for layer in chain
        ]
    expected = {("ours",)} | {
        (f"py-{number}", f"py-{number}-alias") for number in range(1, ROUNDS, 2)
    }
    assert {layer.names for layer in store.layers() if layer.names} == expected
    assert store.check(contents=True) == []


def test_buildah_commit_is_what_layerstore_reads(
    clients: Clients, image: str, engine: Engine, tmp_path: Path
) -> None:
    policy = str(clients.conf / "policy.json")
    clients.buildah("from", "--pull-never", "--signature-policy", policy, "--name", "work", image)
    source = tmp_path / "added"
    source.write_bytes(b"added by buildah\n" * 100)
    clients.buildah("copy", "work", str(source), "/srv/added")
    clients.buildah("commit", "--quiet", "--signature-policy", policy, "work", "localhost/built:1")
    clients.buildah("rm", "work")

    store = clients.open(engine)
    committed = store.get(clients.top_layer("localhost/built:1"))
    assert committed.id in {layer.id for layer in store.layers()}
    assert committed.parent == clients.top_layer(image)
    diff_id = clients.inspect("localhost/built:1")["RootFS"]["Layers"][-1]
    assert committed.uncompressed_digest == diff_id
    with store.diff(committed.id, compression="none") as stream:
        diff = stream.read()
    assert sha256(diff) == diff_id
    assert tar_tree(diff)["srv/added"][4] == source.stat().st_size
    assert ("/srv/added", "add") in {(c.path, c.kind) for c in store.changes(committed.id)}
    assert store.check(contents=True) == []
    assert clients.mounts_below() == []
