"""Go writes, layerstore reads: records, names, metadata, big data, diffs, mounts, trees."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from layerstore import Compression, LayerStore

from .conftest import GoStore, requires_mounts
from .layers import BASE_BLOB, BASE_TAR, WHITEOUT_BLOB, WHITEOUT_TAR
from .trees import merged_tree


def make_go_store(go: GoStore) -> dict[str, str]:
    """What podman would leave: named layers, metadata, big data, a chain, whiteouts."""
    base = go.import_layer(BASE_BLOB, "base", "base-alias")
    upper = go.import_layer(WHITEOUT_BLOB, "upper", parent=base)
    empty = go.create_layer("scratch", parent=upper)
    go.run("set-metadata", "-m", "built by <go> & friends", base)
    go.run("set-layer-data", base, "manifest-sha256:abc", stdin=b'{"schemaVersion":2}')
    go.run("set-layer-data", upper, "plain", stdin=b"\x00\xffbinary")
    return {"base": base, "upper": upper, "empty": empty}


def test_records_read_as_go_wrote_them(go: GoStore, ours: Callable[[], LayerStore]) -> None:
    ids = make_go_store(go)
    store = ours()
    go_records = {record["id"]: record for record in go.layers()}
    assert [layer.id for layer in store.layers()] == list(go_records)
    for layer in store.layers():
        record = go_records[layer.id]
        assert layer.to_json() == record  # every key, in Go's order, with Go's values
    base = store.get("base-alias")
    assert base.id == ids["base"]
    assert base.metadata == "built by <go> & friends"
    assert base.compression is Compression.GZIP
    assert base.uncompressed_digest == "sha256:" + hashlib.sha256(BASE_TAR).hexdigest()
    assert base.compressed_digest == "sha256:" + hashlib.sha256(BASE_BLOB).hexdigest()
    assert store.big_data("base", "manifest-sha256:abc") == b'{"schemaVersion":2}'
    assert store.big_data(ids["upper"], "plain") == b"\x00\xffbinary"
    assert store.get(ids["empty"]).parent == ids["upper"]
    assert store.size(ids["empty"]) == -1


def test_diffs_equal_go_diffs(go: GoStore, ours: Callable[[], LayerStore]) -> None:
    ids = make_go_store(go)
    store = ours()
    for layer, applied in (("base", BASE_TAR), ("upper", WHITEOUT_TAR)):
        # Read ours whole and close it first: Go's diff takes the store's exclusive lock.
        with store.diff(ids[layer], compression="none") as stream:
            ours_bytes = stream.read()
        assert ours_bytes == go.diff(ids[layer]) == applied


def test_changes_agree(go: GoStore, ours: Callable[[], LayerStore]) -> None:
    ids = make_go_store(go)
    kinds = {0: "modify", 1: "add", 2: "delete"}
    go_changes = sorted(
        (change["Path"], kinds[change["Kind"]]) for change in go.json("changes", ids["upper"])
    )
    ours_changes = sorted((change.path, change.kind) for change in ours().changes(ids["upper"]))
    # Both drivers follow Go's rules (overlay: an untouched directory is no change, an opaque
    # directory over a lower one is a deleted directory): the same list (issue 14, defect 2).
    assert ours_changes == go_changes


def test_mount_counts_and_trees(go: GoStore, ours: Callable[[], LayerStore]) -> None:
    requires_mounts(go.driver)
    ids = make_go_store(go)
    go_path = go.run("mount", ids["upper"]).decode().strip()
    try:
        store = ours()
        assert store.mounted(ids["upper"]) == 1
        assert store.get(ids["upper"]).mount_point == go_path
        path = store.mount(ids["upper"])  # one more user of Go's mount
        assert path == go_path
        assert store.mounted(ids["upper"]) == 2
        assert store.unmount(ids["upper"]) is True
    finally:
        go.run("unmount", ids["upper"])
    store = ours()
    assert store.mounted(ids["upper"]) == 0
    # Our own mount of Go's layers shows the tree Go's mount showed.
    go_tree = tree_through_go(go, ids["upper"])
    path = store.mount(ids["upper"])
    try:
        assert merged_tree(path) == go_tree
        assert not os.path.exists(os.path.join(path, "etc", "doomed"))
        assert sorted(os.listdir(os.path.join(path, "var", "cache"))) == ["fresh"]
    finally:
        store.unmount(ids["upper"])


def tree_through_go(go: GoStore, layer: str) -> dict[str, tuple[object, ...]]:
    path = go.run("mount", layer).decode().strip()
    try:
        return merged_tree(path)
    finally:
        go.run("unmount", layer)


def test_we_can_change_and_delete_go_layers(go: GoStore, ours: Callable[[], LayerStore]) -> None:
    ids = make_go_store(go)
    store = ours()
    store.set_names(ids["empty"], ["renamed"])
    store.set_metadata(ids["upper"], "changed by layerstore")
    store.delete(ids["empty"])
    records = {record["id"]: record for record in go.layers()}
    assert ids["empty"] not in records
    assert records[ids["upper"]]["metadata"] == "changed by layerstore"
    assert not Path(go.root, f"{go.driver}-layers", ids["empty"] + ".tar-split.gz").exists()
