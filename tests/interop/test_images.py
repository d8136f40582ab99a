"""Images beside the real clients: what ``store.load`` records is what ``skopeo copy`` records,
podman uses what layerstore loaded, and what ``store.save`` writes skopeo, podman and
layerstore load again (the image store, docs/images.md).

Every test runs for both drivers and both engines on fresh private stores (see clients.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from layerstore import LayerStore
from layerstore.engines import Engine

from ..images import image_diffs
from .clients import (
    IMAGE,
    IMAGE_REF,
    MISSING_BUSYBOX,
    Clients,
    image_layers,
    sha256,
    static_busybox,
    tar_tree,
)
from .trees import merged_tree

BUILT = "localhost/built:1"


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def fresh_clients(tmp_path: Path, driver_name: str) -> Iterator[Callable[[str], Clients]]:
    """Makes more private client stores beside ``clients`` (below ``tmp_path/<name>``); every
    one is cleaned up afterwards."""
    made: list[Clients] = []

    def make(name: str) -> Clients:
        opened = Clients(tmp_path / name, driver_name)
        made.append(opened)
        return opened

    try:
        yield make
    finally:
        for opened in reversed(made):
            opened.cleanup()


@pytest.fixture
def own_store(tmp_path: Path, driver_name: str, engine: Engine) -> Iterator[LayerStore]:
    """A layerstore store no client knows, closed and unmounted afterwards."""
    store = LayerStore(tmp_path / "own", run_root=tmp_path / "own-run", driver=driver_name,
                       engine=engine)  # fmt: skip
    try:
        yield store
    finally:
        for layer in store.layers():
            if store.mounted(layer.id):
                store.unmount(layer.id, force=True)
        store.close()


def image_records(clients: Clients) -> dict[str, dict[str, Any]]:
    return {record["id"]: record for record in clients._records("images")}


def layer_records(clients: Clients) -> list[dict[str, Any]]:
    """layers.json's records, in order, without their creation times."""
    return [
        {key: value for key, value in record.items() if key != "created"}
        for record in clients._records("layers")
    ]


def big_data_files(root: Path, driver: str, image_id: str) -> dict[str, bytes]:
    """The files of an image's big data directory, read directly: file name -> contents."""
    directory = root / f"{driver}-images" / image_id
    return {entry.name: entry.read_bytes() for entry in directory.iterdir() if entry.is_file()}


def layout_image(layout: Path, ref: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest and config of the image ``ref`` in the OCI layout ``layout``."""

    def blob(digest: str) -> bytes:
        return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()

    index = json.loads((layout / "index.json").read_text())
    entries = [
        entry
        for entry in index["manifests"]
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref
    ]
    assert len(entries) == 1, index
    manifest_bytes = blob(entries[0]["digest"])
    assert sha256(manifest_bytes) == entries[0]["digest"]
    manifest = json.loads(manifest_bytes)
    config_bytes = blob(manifest["config"]["digest"])
    assert sha256(config_bytes) == manifest["config"]["digest"]
    for layer in manifest["layers"]:
        assert sha256(blob(layer["digest"])) == layer["digest"]
    return manifest, json.loads(config_bytes)


def diff_ids() -> list[str]:
    return [sha256(tar) for tar, _ in image_layers()]


def store_tree(store: LayerStore, layer: str) -> dict[str, tuple[object, ...]]:
    try:
        return merged_tree(store.mount(layer))
    finally:
        store.unmount(layer)


def podman_load(clients: Clients, archive: Path) -> str:
    """``podman load -i ARCHIVE``, isolated as skopeo is: containers/image writes its blob info
    cache to /var/lib/containers/cache when podman copies an image in (see clients.py)."""
    command = clients._podman_command(("load", "-i", str(archive)))
    return clients._run(clients._isolated(command)).stdout


def podman_tree(clients: Clients, image: str) -> dict[str, tuple[object, ...]]:
    point = clients.podman("image", "mount", image).strip()
    try:
        return merged_tree(point)
    finally:
        clients.podman("image", "unmount", image)


# -- 1: load records what skopeo copy records ---------------------------------------------------


def test_load_is_what_skopeo_copy_records(
    clients: Clients,
    oci_layout: Path,
    engine: Engine,
    fresh_clients: Callable[[str], Clients],
) -> None:
    clients.copy_in(oci_layout, IMAGE_REF, IMAGE)
    other = fresh_clients("b")
    ours = other.open(engine)
    loaded = ours.load(f"oci:{oci_layout}:{IMAGE_REF}", names=[IMAGE])

    # The layers: the same ids, parents, digests and sizes as skopeo's.
    theirs_store = clients.open(engine)
    assert [layer.id for layer in ours.image_layers(IMAGE)] == clients.chain(
        clients.top_layer(IMAGE)
    )
    assert layer_records(other) == layer_records(clients)
    assert [layer.uncompressed_digest for layer in ours.image_layers(IMAGE)] == diff_ids()

    # The image: the same id, names, top layer and big data.
    theirs_records, ours_records = image_records(clients), image_records(other)
    assert list(ours_records) == list(theirs_records) == [loaded.id]
    theirs, recorded = theirs_records[loaded.id], ours_records[loaded.id]
    assert loaded.to_json() == recorded, "the Image is what images.json holds"
    assert recorded["names"] == theirs["names"] == [IMAGE]
    assert recorded["layer"] == theirs["layer"] == clients.top_layer(IMAGE)
    assert recorded["big-data-names"] == theirs["big-data-names"]
    # skopeo takes the creation time from the config, as load does: the records are equal.
    assert recorded == theirs
    assert recorded["names-history"] == [IMAGE]
    assert recorded["created"] == "2024-01-01T00:00:00Z"
    assert loaded == ours.image(IMAGE) == ours.image(loaded.id)
    assert theirs_store.image(IMAGE).id == loaded.id
    assert theirs_store.image(IMAGE).big_data_names == loaded.big_data_names

    # The big data items, byte for byte: the files themselves and as layerstore reads them.
    files = big_data_files(other.root, other.driver, loaded.id)
    assert files == big_data_files(clients.root, clients.driver, loaded.id)
    assert len(files) == len(loaded.big_data_names)
    for key in loaded.big_data_names:
        data = ours.image_big_data(IMAGE, key)
        assert data == theirs_store.image_big_data(IMAGE, key)
        assert len(data) == loaded.big_data_sizes[key]
        if key.startswith("sha256:") or key.startswith("manifest-sha256:"):
            assert sha256(data) == key.removeprefix("manifest-")
    # podman on each store sees the same image.
    inspected, inspected_ours = clients.inspect(IMAGE), other.inspect(IMAGE)
    assert inspected_ours["Id"] == inspected["Id"] == loaded.id
    assert inspected_ours["Digest"] == inspected["Digest"] == loaded.digest
    assert inspected_ours["RootFS"]["Layers"] == inspected["RootFS"]["Layers"] == diff_ids()
    assert ours.check(contents=True) == []


# -- 2: podman uses what layerstore loaded -----------------------------------------------------


def test_podman_uses_an_image_layerstore_loaded(
    clients: Clients, oci_layout: Path, engine: Engine, tmp_path: Path
) -> None:
    store = clients.open(engine)
    loaded = store.load(f"oci:{oci_layout}:{IMAGE_REF}", names=[IMAGE])
    layer_ids = [layer.id for layer in store.image_layers(IMAGE)]

    listed = clients.podman_json("images", "--format", "json")
    assert [(entry["Id"], entry["Names"]) for entry in listed] == [(loaded.id, [IMAGE])]
    inspected = clients.inspect(IMAGE)
    assert inspected["Id"] == loaded.id
    assert inspected["Digest"] == loaded.digest
    assert inspected["RootFS"]["Layers"] == diff_ids()
    assert inspected["Config"]["Cmd"] == ["/bin/busybox", "true"]
    assert clients.top_layer(IMAGE) == loaded.layer == layer_ids[-1]

    assert podman_tree(clients, IMAGE) == store_tree(store, loaded.layer)
    assert clients.mounts_below() == []

    if static_busybox() is not None:
        assert clients.podman_run(IMAGE, "/bin/busybox", "cat", "/opt/app/conf") == "level = 1\n"
        assert clients.podman_run(IMAGE, "/bin/busybox", "true") == ""
        assert clients.podman_json("ps", "--all", "--format", "json") == []

    copied = tmp_path / "copied"
    clients.skopeo("copy", "--quiet", f"{clients.transport}{IMAGE}", f"oci:{copied}:out")
    manifest, config = layout_image(copied, "out")
    assert config["rootfs"]["diff_ids"] == diff_ids()
    assert len(manifest["layers"]) == len(image_layers())

    clients.podman("rmi", IMAGE)
    assert clients.podman_json("images", "--format", "json") == []
    after = clients.open(engine)
    assert after.images() == []
    assert after.layers() == []
    assert not after.image_exists(loaded.id)
    assert after.check(contents=True) == []

    if static_busybox() is None:
        pytest.skip(MISSING_BUSYBOX + " (everything but podman run was checked)")


# -- 3: skopeo and podman load what layerstore saved -------------------------------------------


def test_skopeo_copies_a_saved_oci_layout(
    clients: Clients,
    image: str,
    engine: Engine,
    tmp_path: Path,
    fresh_clients: Callable[[str], Clients],
) -> None:
    store = clients.open(engine)
    original = store.image(image)
    layout = tmp_path / "saved"
    digest = store.save(image, f"oci:{layout}:ref")
    manifest, config = layout_image(layout, "ref")
    index = json.loads((layout / "index.json").read_text())
    assert [entry["digest"] for entry in index["manifests"]] == [digest]
    assert config["rootfs"]["diff_ids"] == diff_ids()
    assert manifest["config"]["digest"] == f"sha256:{original.id}", "the config is kept"

    target = fresh_clients("target")
    target.skopeo("copy", "--quiet", f"oci:{layout}:ref", f"{target.transport}localhost/saved:1")
    inspected = target.inspect("localhost/saved:1")
    assert inspected["Id"] == original.id
    assert inspected["RootFS"]["Layers"] == diff_ids()
    assert target.chain(target.top_layer("localhost/saved:1")) == clients.chain(original.layer)
    assert podman_tree(target, "localhost/saved:1") == store_tree(store, original.layer)
    if static_busybox() is None:
        pytest.skip(MISSING_BUSYBOX)
    assert target.podman_run("localhost/saved:1", "/bin/busybox", "cat", "/etc/motd") == (
        "welcome\n"
    )
    assert target.podman_run("localhost/saved:1", "/bin/busybox", "true") == ""


def test_podman_loads_a_saved_docker_archive(
    clients: Clients,
    image: str,
    engine: Engine,
    tmp_path: Path,
    fresh_clients: Callable[[str], Clients],
) -> None:
    store = clients.open(engine)
    original = store.image(image)
    archive = tmp_path / "saved.tar"
    store.save(image, f"docker-archive:{archive}")
    assert archive.stat().st_size > sum(len(tar) for tar, _ in image_layers())

    target = fresh_clients("target")
    output = podman_load(target, archive)
    assert IMAGE in output
    listed = target.podman_json("images", "--format", "json")
    assert [(entry["Id"], entry["Names"]) for entry in listed] == [(original.id, [IMAGE])]
    assert target.inspect(IMAGE)["RootFS"]["Layers"] == diff_ids()
    assert podman_tree(target, IMAGE) == store_tree(store, original.layer)

    # layerstore reads what podman loaded: the very layers it saved.
    again = target.open(engine)
    assert again.image(IMAGE).id == original.id
    assert image_diffs(again, IMAGE) == [tar for tar, _ in image_layers()]


# -- 4: a buildah image, saved and loaded again -------------------------------------------------


def test_buildah_image_saved_and_loaded_has_the_same_tree(
    clients: Clients, image: str, engine: Engine, tmp_path: Path, own_store: LayerStore
) -> None:
    policy = str(clients.conf / "policy.json")
    clients.buildah("from", "--pull-never", "--signature-policy", policy, "--name", "work", image)
    source = tmp_path / "added"
    source.write_bytes(b"added by buildah\n" * 100)
    clients.buildah("copy", "work", str(source), "/srv/added")
    if static_busybox() is not None:
        clients.buildah("run", "work", "--", "/bin/busybox", "rm", "/etc/motd")
        clients.buildah("run", "work", "--", "/bin/busybox", "sh", "-c", "echo 2 > /opt/app/conf")
    clients.buildah("commit", "--quiet", "--signature-policy", policy, "work", BUILT)
    clients.buildah("rm", "work")

    store = clients.open(engine)
    built = store.image(BUILT)
    assert built.id == clients.inspect(BUILT)["Id"]
    assert len(store.image_layers(BUILT)) == len(image_layers()) + 1
    layout = tmp_path / "built"
    store.save(BUILT, f"oci:{layout}:built", compression="zstd")
    manifest, config = layout_image(layout, "built")
    assert {layer["mediaType"] for layer in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    }
    assert config["rootfs"]["diff_ids"] == clients.inspect(BUILT)["RootFS"]["Layers"]

    loaded = own_store.load(f"oci:{layout}:built")
    assert loaded.id == built.id
    assert loaded.names == (BUILT,), "the layout's io.containerd.image.name names it"
    assert [layer.id for layer in own_store.image_layers(BUILT)] == [
        layer.id for layer in store.image_layers(BUILT)
    ]
    original_diffs, loaded_diffs = image_diffs(store, BUILT), image_diffs(own_store, BUILT)
    assert [tar_tree(diff) for diff in loaded_diffs] == [tar_tree(diff) for diff in original_diffs]
    assert [sha256(diff) for diff in loaded_diffs] == config["rootfs"]["diff_ids"]

    theirs = podman_tree(clients, BUILT)
    original_tree, loaded_tree = store_tree(store, built.layer), store_tree(own_store, loaded.layer)
    assert loaded_tree == original_tree == theirs
    assert "srv/added" in loaded_tree
    if static_busybox() is not None:
        assert "etc/motd" not in loaded_tree
        conf = os.path.join("opt", "app", "conf")
        assert loaded_tree[conf][4] == 2
    assert own_store.check(contents=True) == []
    assert clients.mounts_below() == []
