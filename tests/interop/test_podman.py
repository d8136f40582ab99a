"""The real clients and layerstore on one store (issue 14): what skopeo writes layerstore reads,
what layerstore does podman survives, and layers podman uses are not layerstore's to delete.

Every test runs for both drivers and both engines on a fresh private store (see clients.py).
"""

from __future__ import annotations

import hashlib

import pytest

from layerstore import LayerStore, LayerStoreError, LayerUsedByContainer, LayerUsedByImage
from layerstore.engines import Engine

from .clients import (
    IMAGE,
    MISSING_BUSYBOX,
    Clients,
    image_layers,
    sha256,
    small_tar,
    static_busybox,
)
from .trees import merged_tree


def expected_layer_ids() -> list[str]:
    """containers/image's layer ids for the test image: the DiffID for the bottom layer, then
    sha256 of ``PARENT + "+" + DIFFID_HEX``."""
    ids: list[str] = []
    for tar, _ in image_layers():
        diff_id = hashlib.sha256(tar).hexdigest()
        ids.append(hashlib.sha256(f"{ids[-1]}+{diff_id}".encode()).hexdigest() if ids else diff_id)
    return ids


def test_skopeo_copy_is_what_layerstore_reads(clients: Clients, image: str, engine: Engine) -> None:
    store = clients.open(engine)
    inspected = clients.inspect(image)
    layers = store.layers()
    top = clients.top_layer(image)
    assert [layer.id for layer in layers] == expected_layer_ids() == clients.chain(top)
    assert [layer.parent for layer in layers] == ["", *expected_layer_ids()[:-1]]
    assert inspected["RootFS"]["Layers"] == [layer.uncompressed_digest for layer in layers]
    for layer, (tar, blob) in zip(layers, image_layers(), strict=True):
        assert layer.uncompressed_digest == sha256(tar)
        assert layer.compressed_digest == sha256(blob)
        assert layer.uncompressed_size == len(tar)
        with store.diff(layer.id, compression="none") as stream:
            assert sha256(stream.read()) == layer.uncompressed_digest
    assert store.check(contents=True) == []

    ours = merged_tree(store.mount(top))
    store.unmount(top)
    theirs = clients.podman("image", "mount", image).strip()
    try:
        assert merged_tree(theirs) == ours
    finally:
        clients.podman("image", "unmount", image)
    assert store.mounted(top) == 0
    assert clients.mounts_below() == []


def make_own_layers(store: LayerStore, image_top: str) -> dict[str, str]:
    """What a layerstore user does beside podman, on its own layers only: put, create, name,
    mount, unmount and delete, one of them on top of the image's layers."""
    base, _ = store.put(small_tar("base"), names=["ls-base"])
    child = store.create(parent="ls-base", names=["ls-child"])
    store.add_names(child.id, ["ls-child-alias"])
    on_image, _ = store.put(small_tar("on-image"), parent=image_top, names=["ls-on-image"])
    for layer in (child.id, on_image.id):
        path = store.mount(layer)
        assert merged_tree(path), "a mounted layer shows its files"
        store.mount(layer)
        assert store.unmount(layer) is True
        assert store.unmount(layer) is False
    doomed = store.create(parent="ls-base", names=["ls-doomed"])
    store.delete(doomed.id)
    return {"base": base.id, "child": child.id, "on-image": on_image.id}


def test_podman_works_after_layerstore_changes(
    clients: Clients, image: str, engine: Engine
) -> None:
    store = clients.open(engine)
    image_layer_ids = [layer.id for layer in store.layers()]
    top = clients.top_layer(image)
    own = make_own_layers(store, top)

    listed = clients.podman_json("images", "--format", "json")
    assert [entry["Names"] for entry in listed] == [[IMAGE]]
    assert clients.inspect(image)["RootFS"]["Layers"] == [
        store.get(layer).uncompressed_digest for layer in image_layer_ids
    ]
    container = clients.podman("create", "--pull", "never", "--network", "none", image).strip()
    theirs = merged_tree(clients.podman("mount", container).strip())
    ours = merged_tree(store.mount(top))
    store.unmount(top)
    clients.podman("umount", container)
    assert theirs == ours, "a new container's tree is its image's"
    clients.podman("rm", container)

    store.delete(own["on-image"])  # podman rmi keeps layers that have children
    clients.podman("rmi", image)
    assert clients.podman_json("images", "--format", "json") == []
    remaining = {layer.id: layer.names for layer in store.layers()}
    assert remaining == {own["base"]: ("ls-base",), own["child"]: ("ls-child", "ls-child-alias")}
    assert store.check(contents=True) == []
    assert clients.mounts_below() == []


def test_podman_run_after_layerstore_changes(clients: Clients, image: str, engine: Engine) -> None:
    if static_busybox() is None:
        pytest.skip(MISSING_BUSYBOX)
    store = clients.open(engine)
    make_own_layers(store, clients.top_layer(image))
    assert clients.podman_run(image, "/bin/busybox", "cat", "/opt/app/conf") == "level = 1\n"
    assert clients.podman_run(image, "/bin/busybox", "true") == ""
    assert clients.podman_json("ps", "--all", "--format", "json") == []
    assert store.check(contents=True) == []
    assert clients.mounts_below() == []


# -- defect 3: layers podman uses ------------------------------------------------------------


def test_deleting_an_image_layer_is_refused(clients: Clients, image: str, engine: Engine) -> None:
    store = clients.open(engine)
    top = clients.top_layer(image)
    image_id = clients.inspect(image)["Id"]
    for name in (top[:12], top):  # Go 1.43 forgets its checks for an id prefix: we must not
        with pytest.raises(LayerStoreError) as refused:
            store.delete(name)
        assert isinstance(refused.value, LayerUsedByImage)
        assert image_id in str(refused.value) or IMAGE in str(refused.value)
    assert store.exists(top)
    store.delete(top, force=True)
    assert not store.exists(top)


def test_deleting_a_container_layer_is_refused(
    clients: Clients, image: str, engine: Engine
) -> None:
    store = clients.open(engine)
    container = clients.podman("create", "--pull", "never", "--network", "none", image).strip()
    layer = clients.container_layer(container)
    with pytest.raises(LayerStoreError) as refused:
        store.delete(layer)
    assert isinstance(refused.value, LayerUsedByContainer)
    assert container in str(refused.value)
    assert store.exists(layer)
    store.delete(layer, force=True)
    assert not store.exists(layer)
