"""The store's public API: records, names, metadata, flags, big data, deletion, persistence."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from layerstore import (
    BigDataUnknown,
    DuplicateID,
    DuplicateLayerNames,
    DuplicateName,
    InvalidBigDataName,
    InvalidStoreData,
    Layer,
    LayerHasChildren,
    LayerStore,
    LayerStoreError,
    LayerUnknown,
    LayerUsedByContainer,
    LayerUsedByImage,
    StoreIsReadOnly,
)
from layerstore.engines import Engine


def layers_json(store: LayerStore) -> list[dict[str, object]]:
    return json.loads(Path(store.layers_dir, "layers.json").read_bytes())


def reopen(store: LayerStore, **kwargs: object) -> LayerStore:
    return LayerStore(
        store.root,
        run_root=store.run_root,
        driver=store.driver.name,
        engine=store.engine,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.records_only
def test_create_get_lookup(store: LayerStore) -> None:
    base = store.create(names=["base"])
    child = store.create(parent="base", names=["child", "alias", "child"])
    assert re.fullmatch(r"[0-9a-f]{64}", base.id)
    assert child.parent == base.id
    assert child.names == ("child", "alias")  # duplicates dropped, order kept
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", child.created)
    assert not child.flags
    assert store.get("alias") == child
    assert store.get(child.id[:12]) == child
    assert store.lookup("base") == base.id
    assert store.exists("child")
    assert store.exists(base.id)
    assert not store.exists("nothing")
    assert [layer.id for layer in store.layers()] == [base.id, child.id]
    with pytest.raises(LayerUnknown, match="nothing"):
        store.get("nothing")
    records = layers_json(store)
    assert [record["id"] for record in records] == [base.id, child.id]
    assert "flags" not in records[0], "the incomplete flag is cleared once the layer is whole"


@pytest.mark.records_only
def test_create_with_id_flags_label_and_maps(store: LayerStore) -> None:
    layer = store.create(
        id="mylayer",
        mount_label="system_u:object_r:container_file_t:s0",
        flags={"source": "test", "n": 1},
        uid_map=[(0, 100000, 65536)],
        gid_map=[(0, 100000, 65536)],
    )
    assert layer.id == "mylayer"
    assert dict(layer.flags) == {"source": "test", "n": 1}
    again = reopen(store).get("mylayer")
    assert again == layer
    assert again.uid_map[0].host_id == 100000


@pytest.mark.records_only
def test_create_refusals_leave_nothing_behind(store: LayerStore) -> None:
    store.create(id="a" * 64, names=["taken"])
    with pytest.raises(DuplicateID):
        store.create(id="a" * 64)
    with pytest.raises(DuplicateName, match="taken"):
        store.create(names=["free", "taken"])
    with pytest.raises(LayerUnknown):
        store.create(parent="no-such-parent")
    with pytest.raises(ValueError, match="invalid layer id"):
        store.create(id="../escape")
    with pytest.raises(TypeError):
        store.create(flags={"bad": object()})
    assert [layer.id for layer in store.layers()] == ["a" * 64]
    assert not store.exists("free")
    assert store.driver.layer_ids() == ["a" * 64]


def test_driver_failure_removes_the_half_made_layer(
    store: LayerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_create = store.driver.create

    def failing_create(layer_id: str, parent_id: str, *, writeable: bool) -> None:
        real_create(layer_id, parent_id, writeable=writeable)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.driver, "create", failing_create)
    with pytest.raises(OSError, match="No space"):
        store.create(names=["doomed"])
    assert store.layers() == []
    assert store.driver.layer_ids() == []
    assert layers_json(store) == []
    assert not store.exists("doomed")


@pytest.mark.records_only
def test_returned_layers_are_snapshots(store: LayerStore) -> None:
    before = store.create(names=["one"])
    store.set_names("one", ["two"])
    store.set_metadata("two", "changed")
    assert before.names == ("one",)
    assert before.metadata == ""
    assert store.get("two").metadata == "changed"


@pytest.mark.records_only
def test_names_move_between_layers(store: LayerStore) -> None:
    # Names with letters beyond "f", so none can be taken for an id prefix.
    first = store.create(names=["alpha", "bravo"])
    second = store.create(names=["charlie"])
    store.add_names(second.id, ["bravo", "delta"])
    assert store.get(first.id).names == ("alpha",)
    assert store.get(second.id).names == ("charlie", "bravo", "delta")
    store.set_names(first.id, ["delta", "echo"])
    assert store.get(first.id).names == ("delta", "echo")
    assert store.get(second.id).names == ("charlie", "bravo")
    store.remove_names(second.id, ["charlie", "never-had"])
    assert store.get(second.id).names == ("bravo",)
    assert store.lookup("delta") == first.id
    with pytest.raises(LayerUnknown):
        store.lookup("charlie")
    reopened = reopen(store)
    assert reopened.get(first.id).names == ("delta", "echo")
    assert reopened.get(second.id).names == ("bravo",)


@pytest.mark.records_only
def test_metadata_and_flags_persist(store: LayerStore) -> None:
    layer = store.create(names=["l"])
    store.set_metadata("l", 'text with <html> & "quotes"')
    store.set_flag("l", "keep", True)
    store.set_flag("l", "info", {"b": [1, 2], "a": None})
    store.clear_flag("l", "keep")
    store.clear_flag("l", "never-set")
    assert store.metadata("l") == 'text with <html> & "quotes"'
    record = layers_json(store)[0]
    assert record["flags"] == {"info": {"a": None, "b": [1, 2]}}
    raw = Path(store.layers_dir, "layers.json").read_text()
    assert "\\u003chtml\\u003e \\u0026" in raw
    reopened = reopen(store).get(layer.id)
    assert reopened.metadata == store.metadata("l")
    assert dict(reopened.flags)["info"]["b"] == (1, 2)


@pytest.mark.records_only
def test_big_data(store: LayerStore) -> None:
    layer = store.create(names=["l"])
    store.set_big_data("l", "manifest", b"\x00binary\xff")
    store.set_big_data("l", "sha256:Key", b"second")
    store.set_big_data("l", "manifest", b"replaced")
    assert store.big_data("l", "manifest") == b"replaced"
    assert store.big_data("l", "sha256:Key") == b"second"
    assert store.big_data_names("l") == ["manifest", "sha256:Key"]
    directory = Path(store.layers_dir, layer.id)
    assert sorted(os.listdir(directory)) == ["=c2hhMjU2OktleQ==", "manifest"]
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    assert oct((directory / "manifest").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(BigDataUnknown, match="other"):
        store.big_data("l", "other")
    with pytest.raises(InvalidBigDataName):
        store.set_big_data("l", "", b"x")
    assert reopen(store).big_data("l", "manifest") == b"replaced"


def test_digest_lookups(store_root: Path, driver_name: str, engine: Engine) -> None:
    records = [
        {"id": "1" * 63 + "a", "created": "2026-01-01T00:00:00Z", "diff-digest": "sha256:d1",
         "compressed-diff-digest": "sha256:c1"},
        {"id": "2" * 63 + "a", "created": "2026-01-01T00:00:00Z", "diff-digest": "sha256:d1",
         "compressed-diff-digest": "sha256:c2"},
    ]  # fmt: skip
    layers_dir = store_root / f"{driver_name}-layers"
    layers_dir.mkdir(parents=True)
    (layers_dir / "layers.json").write_text(json.dumps(records))
    store = LayerStore(store_root, driver=driver_name, engine=engine)
    assert [layer.id for layer in store.layers_by_uncompressed_digest("sha256:d1")] == [
        "1" * 63 + "a",
        "2" * 63 + "a",
    ]
    assert [layer.id for layer in store.layers_by_compressed_digest("sha256:c2")] == [
        "2" * 63 + "a"
    ]
    assert store.layers_by_compressed_digest("sha256:none") == []


def test_delete_removes_every_file(store: LayerStore) -> None:
    base = store.create(names=["base"])
    child = store.create(parent="base", names=["child"])
    store.set_big_data("child", "k", b"v")
    tar_split = Path(store.layers_dir, child.id + ".tar-split.gz")
    tar_split.write_bytes(b"")
    with pytest.raises(LayerHasChildren, match=child.id):
        store.delete("base")
    store.delete("child")
    assert not tar_split.exists()
    assert not Path(store.layers_dir, child.id).exists()
    assert not store.driver.exists(child.id)
    assert store.driver.layer_ids() == [base.id]
    assert [record["id"] for record in layers_json(store)] == [base.id]
    with pytest.raises(LayerUnknown):
        store.delete("child")


def test_wipe(store: LayerStore) -> None:
    store.create(names=["a"])
    store.create(parent="a")
    store.create(parent="a")
    store.wipe()
    assert store.layers() == []
    assert store.driver.layer_ids() == []
    if store.driver.name == "overlay":
        assert os.listdir(os.path.join(store.driver.home, "l")) == []


def test_vfs_child_is_a_copy_of_its_parent(store_root: Path, engine: Engine) -> None:
    store = LayerStore(store_root, driver="vfs", engine=engine)
    base = store.create()
    base_dir = Path(store.driver.layer_dir(base.id))
    assert oct(base_dir.stat().st_mode & 0o777) == "0o555"
    os.chmod(base_dir, 0o755)
    (base_dir / "etc").mkdir()
    (base_dir / "etc" / "passwd").write_text("root:x:0:0\n")
    os.chmod(base_dir / "etc" / "passwd", 0o640)
    os.symlink("etc/passwd", base_dir / "link")
    child = store.create(parent=base.id)
    child_dir = Path(store.driver.layer_dir(child.id))
    assert child_dir == store_root / "vfs" / "dir" / child.id
    assert (child_dir / "etc" / "passwd").read_text() == "root:x:0:0\n"
    assert oct((child_dir / "etc" / "passwd").stat().st_mode & 0o777) == "0o640"
    assert os.readlink(child_dir / "link") == "etc/passwd"
    assert oct(child_dir.stat().st_mode & 0o777) == "0o755"


def test_overlay_layout(store_root: Path, engine: Engine) -> None:
    if os.geteuid() != 0:
        pytest.skip("the overlay layout is made the same way without root, but mounts are not")
    store = LayerStore(store_root, driver="overlay", engine=engine)
    base = store.create()
    child = store.create(parent=base.id)
    grandchild = store.create(parent=child.id, writeable=True)
    home = store_root / "overlay"
    links = {}
    for layer in (base, child, grandchild):
        layer_dir = home / layer.id
        link = (layer_dir / "link").read_text()
        assert re.fullmatch(r"[A-Z2-7]{26}", link)
        assert os.readlink(home / "l" / link) == f"../{layer.id}/diff"
        assert (home / "l" / link).resolve() == (layer_dir / "diff").resolve()
        for name in ("diff", "work", "merged"):
            assert (layer_dir / name).is_dir()
        links[layer.id] = link
    assert (home / base.id / "empty").is_dir()
    assert not (home / base.id / "lower").exists()
    assert (home / child.id / "lower").read_text() == f"l/{links[base.id]}"
    assert (home / grandchild.id / "lower").read_text() == (
        f"l/{links[child.id]}:l/{links[base.id]}"
    )
    assert store.driver.layer_dir(child.id) == str(home / child.id / "diff")


def test_mountpoints_json_is_kept(store: LayerStore) -> None:
    store.create()
    mounts = Path(store.run_root, f"{store.driver.name}-layers", "mountpoints.json")
    assert mounts.read_text() == "[]"


@pytest.mark.records_only
def test_status(store: LayerStore) -> None:
    store.create()
    status = dict(store.status())
    assert status["Driver"] == store.driver.name
    assert status["Engine"] == store.engine.name
    assert status["Layers"] == "1"


@pytest.mark.records_only
def test_closed_store_refuses_work(store: LayerStore) -> None:
    store.close()
    with pytest.raises(LayerStoreError, match="closed"):
        store.layers()


# -- read-only stores --------------------------------------------------------------------------


def test_read_only_store(store: LayerStore) -> None:
    store.create(names=["l"])
    store.set_big_data("l", "k", b"v")
    layer = store.get("l")
    lock_before = Path(store.layers_dir, "layers.lock").read_bytes()
    reader = reopen(store, read_only=True)
    assert reader.get("l").read_only
    assert reader.big_data("l", "k") == b"v"
    mutations = [
        lambda: reader.create(),
        lambda: reader.delete("l"),
        lambda: reader.wipe(),
        lambda: reader.add_names("l", ["x"]),
        lambda: reader.remove_names("l", ["l"]),
        lambda: reader.set_names("l", ["x"]),
        lambda: reader.set_metadata("l", "x"),
        lambda: reader.set_flag("l", "k", 1),
        lambda: reader.clear_flag("l", "k"),
        lambda: reader.set_big_data("l", "k", b"x"),
    ]
    for mutate in mutations:
        with pytest.raises(StoreIsReadOnly) as caught:
            mutate()
        assert isinstance(caught.value, PermissionError)
    assert store.get(layer.id) == layer
    assert Path(store.layers_dir, "layers.lock").read_bytes() == lock_before
    # The writer's changes reach the reader.
    store.set_metadata("l", "new")
    assert reader.get("l").metadata == "new"


def test_read_only_open_of_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(LayerStoreError, match="read-only"):
        LayerStore(tmp_path / "nothing", driver="vfs", read_only=True)


# -- recovery ----------------------------------------------------------------------------------


def edit_layers_json(store: LayerStore, edit: object) -> None:
    path = Path(store.layers_dir, "layers.json")
    records = json.loads(path.read_bytes())
    edit(records)  # type: ignore[operator]
    path.write_text(json.dumps(records))


def test_incomplete_layers_are_removed_on_open(store: LayerStore) -> None:
    keep = store.create(names=["keep"])
    doomed = store.create(parent="keep", names=["doomed"])
    store.set_big_data("doomed", "k", b"v")
    Path(store.layers_dir, doomed.id + ".tar-split.gz").write_bytes(b"")

    def mark(records: list[dict[str, object]]) -> None:
        records[1]["flags"] = {"incomplete": True}

    edit_layers_json(store, mark)
    reader = reopen(store, read_only=True)
    assert [layer.id for layer in reader.layers()] == [keep.id], "read-only skips incomplete"
    assert store.driver.exists(doomed.id), "a read-only store never deletes"

    reopened = reopen(store)
    assert [layer.id for layer in reopened.layers()] == [keep.id]
    assert not store.driver.exists(doomed.id)
    assert not Path(store.layers_dir, doomed.id).exists()
    assert not Path(store.layers_dir, doomed.id + ".tar-split.gz").exists()
    assert [record["id"] for record in layers_json(store)] == [keep.id]


def test_incomplete_layers_seen_by_a_running_store_are_cleaned(store: LayerStore) -> None:
    store.create(names=["a"])
    doomed = store.create(names=["b"])

    def mark(records: list[dict[str, object]]) -> None:
        records[1]["flags"] = {"incomplete": True}

    edit_layers_json(store, mark)  # as if another process died half-way
    assert [layer.names for layer in store.layers()] == [("a",)]
    assert not store.driver.exists(doomed.id)


@pytest.mark.records_only
def test_duplicate_names_on_load_are_repaired(store: LayerStore) -> None:
    first = store.create(names=["shared", "first"])
    second = store.create(names=["second"])

    def duplicate(records: list[dict[str, object]]) -> None:
        records[1]["names"] = ["second", "shared"]

    edit_layers_json(store, duplicate)
    with pytest.raises(DuplicateLayerNames):
        reopen(store, read_only=True)
    reopened = reopen(store)
    assert reopened.get(first.id).names == ("first",)
    assert reopened.get(second.id).names == ("second", "shared")
    assert layers_json(store)[0]["names"] == ["first"]


@pytest.mark.records_only
@pytest.mark.parametrize("content", [b"{not json", b'{"id": "x"}', b'[{"names": []}]'])
def test_garbage_layers_json_is_a_clear_error(
    store_root: Path, driver_name: str, content: bytes
) -> None:
    layers_dir = store_root / f"{driver_name}-layers"
    layers_dir.mkdir(parents=True)
    (layers_dir / "layers.json").write_bytes(content)
    with pytest.raises(InvalidStoreData, match=r"layers\.json"):
        LayerStore(store_root, driver=driver_name)


@pytest.mark.records_only
def test_failed_write_leaves_the_old_file(
    store: LayerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = store.create(names=["l"])
    store.set_metadata("l", "old")
    path = Path(store.layers_dir, "layers.json")
    before = path.read_bytes()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("layerstore.atomic.os.fsync", no_space)
        with pytest.raises(OSError, match="No space"):
            store.set_metadata("l", "new")
        with pytest.raises(OSError, match="No space"):
            store.create(names=["never"])
    assert path.read_bytes() == before
    assert [entry.name for entry in Path(store.layers_dir).iterdir() if "tmp" in entry.name] == []
    assert store.get("l").metadata == "old", "memory follows disk after a failed save"
    assert not store.exists("never")
    store.set_metadata("l", "after")
    assert reopen(store).get(layer.id).metadata == "after"


@pytest.mark.records_only
def test_another_process_sees_changes(store: LayerStore) -> None:
    layer = store.create(names=["l"])
    assert store.reload_if_changed() is False
    script = textwrap.dedent(
        f"""
        from layerstore import LayerStore
        store = LayerStore({store.root!r}, run_root={store.run_root!r},
                           driver={store.driver.name!r}, engine={store.engine.name!r})
        store.set_metadata("l", "from the other process")
        store.create(names=["other"])
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert store.reload_if_changed() is True
    assert store.get(layer.id).metadata == "from the other process"
    assert store.exists("other")
    assert store.reload_if_changed() is False


@pytest.mark.records_only
def test_layer_objects_compare_by_value(store: LayerStore) -> None:
    layer = store.create(names=["l"])
    assert isinstance(layer, Layer)
    assert {layer: 1}[store.get("l")] == 1


@pytest.mark.records_only
def test_layers_that_images_or_containers_use_are_not_deleted(store: LayerStore) -> None:
    """As containers/storage's store refuses (issue 14, defect 3): a layer that an image of
    ROOT/<driver>-images or a container of ROOT/<driver>-containers uses stays."""
    base = store.create(names=["base"])
    top = store.create(parent=base.id, names=["top"])
    mapped = store.create(names=["mapped"])
    rw = store.create(parent=top.id, names=["rw"])
    spare = store.create(names=["spare"])
    root, driver = Path(store.root), store.driver.name
    images, containers = root / f"{driver}-images", root / f"{driver}-containers"
    images.mkdir(exist_ok=True)  # the store made it, with images.lock, as Go does
    containers.mkdir()
    (images / "images.json").write_text(
        json.dumps(
            [{"id": "a" * 64, "names": ["img:1"], "layer": top.id, "mapped-layers": [mapped.id]}]
        )
    )
    (containers / "containers.json").write_text(
        json.dumps([{"id": "c" * 64, "names": ["box"], "image": "a" * 64, "layer": rw.id}])
    )
    with pytest.raises(LayerUsedByContainer, match=f"{rw.id} is used by container c{{64}} "):
        store.delete(rw.id)
    store.delete(rw.id, force=True)
    with pytest.raises(LayerUsedByImage, match=r"image a{64} \(img:1\)"):
        store.delete(top.id)
    with pytest.raises(LayerUsedByImage):
        store.delete("mapped")
    with pytest.raises(LayerUsedByImage):
        store.wipe()
    store.delete(spare.id)  # nobody uses it
    assert [layer.id for layer in store.layers()] == [base.id, top.id, mapped.id]
    (images / "images.json").write_text("[]")
    store.delete(top.id)
    store.wipe()
    assert store.layers() == []
