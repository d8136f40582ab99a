"""layerstore writes, Go reads: listings, diffs, mounts and deletion by the Go tools."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from layerstore import LayerStore

from ..tarballs import Entry, build_tar
from .conftest import GoStore, requires_mounts
from .layers import BASE_BLOB, BASE_TAR, WHITEOUT_BLOB, WHITEOUT_TAR
from .trees import merged_tree


def make_our_store(store: LayerStore) -> dict[str, str]:
    base, _ = store.put(BASE_BLOB, names=["base", "base-alias"])
    upper, _ = store.put(WHITEOUT_BLOB, parent="base", names=["upper"])
    empty = store.create(parent="upper", names=["scratch"], flags={"source": "layerstore"})
    store.set_metadata("base", "built by <layerstore> & friends")
    store.set_big_data("base", "manifest-sha256:abc", b'{"schemaVersion":2}')
    store.set_big_data("upper", "plain", b"\x00\xffbinary")
    return {"base": base.id, "upper": upper.id, "empty": empty.id}


def test_go_lists_the_same_layers(go: GoStore, ours: Callable[[], LayerStore]) -> None:
    store = ours()
    ids = make_our_store(store)
    records = go.layers()
    assert [record["id"] for record in records] == list(ids.values())
    for layer, record in zip(store.layers(), records, strict=True):
        assert record == layer.to_json()
    one = go.json("layer", "base-alias")[0]
    assert one["id"] == ids["base"]
    assert one["metadata"] == "built by <layerstore> & friends"
    assert go.run("get-layer-data", ids["base"], "manifest-sha256:abc") == b'{"schemaVersion":2}'
    assert go.run("get-layer-data", ids["upper"], "plain") == b"\x00\xffbinary"
    assert sorted(go.json("list-layer-data", ids["base"])) == ["manifest-sha256:abc"]


def test_go_diffs_give_back_our_blobs(go: GoStore, ours: Callable[[], LayerStore]) -> None:
    ids = make_our_store(ours())
    assert go.diff(ids["base"]) == BASE_TAR
    assert go.diff(ids["upper"]) == WHITEOUT_TAR


def test_go_mounts_show_our_tree(go: GoStore, ours: Callable[[], LayerStore]) -> None:
    requires_mounts(go.driver)
    store = ours()
    ids = make_our_store(store)
    path = store.mount(ids["upper"])
    try:
        ours_tree = merged_tree(path)
    finally:
        store.unmount(ids["upper"])
    go_path = go.run("mount", ids["upper"]).decode().strip()
    try:
        assert merged_tree(go_path) == ours_tree
        assert not os.path.exists(os.path.join(go_path, "etc", "doomed"))
        assert ours().mounted(ids["upper"]) == 1, "Go's mount count is ours too"
    finally:
        go.run("unmount", ids["upper"])
    assert ours().mounted(ids["upper"]) == 0


def test_go_deletes_our_layers_cleanly(go: GoStore, ours: Callable[[], LayerStore]) -> None:
    store = ours()
    ids = make_our_store(store)
    go.run("delete-layer", ids["empty"])
    go.run("delete-layer", ids["upper"])
    store = ours()
    assert [layer.id for layer in store.layers()] == [ids["base"]]
    layers_dir = Path(store.layers_dir)
    for layer_id in (ids["empty"], ids["upper"]):
        assert not store.driver.exists(layer_id)
        assert not (layers_dir / f"{layer_id}.tar-split.gz").exists()
        assert not (layers_dir / layer_id).exists(), "big data went with the layer"
    if store.driver.name == "overlay":
        links = os.listdir(Path(store.driver.home, "l"))
        assert links == [Path(store.driver.home, ids["base"], "link").read_text()]


def test_go_imports_our_gzip_diff_with_the_same_diff_id(
    go: GoStore, ours: Callable[[], LayerStore]
) -> None:
    """Our gzip diff of a multi-MiB layer (one gzip member over many parallel blocks) read by
    Go's gzip reader: containers-storage import-layer records the same DiffID."""
    store = ours()
    tar = BASE_TAR
    big = build_tar(
        [Entry(b"blocks", "dir", mode=0o755)]
        + [Entry(f"blocks/{n}".encode(), "file", data=os.urandom(1 << 19) + bytes(1 << 19))
           for n in range(5)]
    )  # fmt: skip
    for source in (tar, big):
        layer, _ = store.put(source)
        with store.diff(layer.id, compression="gzip") as stream:
            blob = stream.read()
        imported = go.import_layer(blob)
        record = next(entry for entry in go.layers() if entry["id"] == imported)
        assert record["diff-digest"] == layer.uncompressed_digest
        assert record["compressed-diff-digest"] == "sha256:" + hashlib.sha256(blob).hexdigest()
