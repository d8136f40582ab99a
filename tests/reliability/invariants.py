"""What a store must look like after anything happened to it (a crash, a race, a full disk)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from layerstore import LayerStore
from layerstore.drivers import STAGING_DIR_NAME
from layerstore.drivers.mountinfo import is_mount_point
from layerstore.store.check import find_orphans


def _alive(path: Path, made: str, gone: str) -> dict[str, str]:
    """From the journal: what a ``made ID VALUE`` line recorded and no ``gone ID`` line
    since said may be gone, id -> value."""
    alive: dict[str, str] = {}
    if not path.exists():
        return alive
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == made:
            alive[parts[1]] = parts[2]
        elif len(parts) == 2 and parts[0] == gone:
            alive.pop(parts[1], None)
    return alive


def read_journal(path: Path) -> dict[str, str]:
    """Layers whose put returned and whose deletion never started: id -> uncompressed digest."""
    return _alive(path, "put", "deleting")


def read_images(path: Path) -> dict[str, str]:
    """Images whose creation returned and whose deletion never started: id -> top layer."""
    return _alive(path, "image", "deleting-image")


def staging_leftovers(store: LayerStore) -> list[str]:
    """Files of staged puts: none once every put is over and the store was opened again."""
    staging_home = Path(store.driver.home, STAGING_DIR_NAME)
    found = sorted(str(path) for path in staging_home.iterdir()) if staging_home.is_dir() else []
    found += sorted(str(path) for path in Path(store.layers_dir).glob("staging-*"))
    return found


def assert_consistent(store: LayerStore, journal: Path | None = None) -> None:
    """The checks of the reliability issue, on a store just opened read-write."""
    layers_json = Path(store.layers_dir, "layers.json")
    records = json.loads(layers_json.read_bytes() or b"[]") if layers_json.exists() else []
    assert isinstance(records, list)
    assert not [record["id"] for record in records if record.get("flags", {}).get("incomplete")]
    ids = {record["id"] for record in records}
    assert set(store.driver.layer_ids()) == ids, "driver data and records disagree"
    assert find_orphans(store.layers_dir, store.driver, ids) == []
    assert staging_leftovers(store) == [], "a staged put left files behind"
    for layer_id, digest in (read_journal(journal) if journal else {}).items():
        assert layer_id in ids, f"layer {layer_id} was put but is gone"
        with store.diff(layer_id, compression="none") as stream:
            assert "sha256:" + hashlib.sha256(stream.read()).hexdigest() == digest
    mounts_file = Path(store.mounts_dir, "mountpoints.json")
    mounts = json.loads(mounts_file.read_bytes() or b"[]") if mounts_file.exists() else []
    for mount in mounts:
        assert mount["id"] in ids, f"a mount count for a layer that is gone: {mount}"
        assert mount["count"] > 0
        if store.driver.name == "overlay":
            assert is_mount_point(mount["path"]), f"counted but not mounted: {mount}"
    images_json = Path(store.root, f"{store.driver.name}-images", "images.json")
    images = json.loads(images_json.read_bytes() or b"[]") if images_json.exists() else []
    for image in images:
        for layer_id in (image.get("layer"), *image.get("mapped-layers", [])):
            assert not layer_id or layer_id in ids, f"image {image['id']} names a lost layer"
        for key in image.get("big-data-names", []):
            assert store.image_big_data(image["id"], key) is not None
    image_dirs = {path.name for path in images_json.parent.iterdir() if path.is_dir()} if (
        images_json.parent.is_dir()) else set()  # fmt: skip
    assert image_dirs <= {image["id"] for image in images}, "big data of no image was left"
    for image_id, layer_id in (read_images(journal) if journal else {}).items():
        assert image_id in {image["id"] for image in images}, f"image {image_id} is gone"
        assert store.image(image_id).layer == layer_id
    assert store.check(contents=True) == []
