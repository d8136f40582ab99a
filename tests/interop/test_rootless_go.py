"""force_mask stores and the Go CLI: Go reads and diffs a vfs layer layerstore stored with
force_mask (its vfs driver refuses the option itself: docs/rootless.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerstore import LayerStore

from ..test_rootless import multi_owner_layer, owner_change_layer
from .conftest import GoStore


def test_go_diffs_a_force_mask_layer(
    go: GoStore, shared_root: tuple[Path, Path], go_driver: str, engine_name: str
) -> None:
    if go_driver != "vfs":
        pytest.skip("force_mask is a vfs option in layerstore")
    root, run_root = shared_root
    base_tar, child_tar = multi_owner_layer(), owner_change_layer()
    with LayerStore(
        root, run_root=run_root, driver="vfs", engine=engine_name, force_mask="private"
    ) as store:
        base, _ = store.put(base_tar)
        child, _ = store.put(child_tar, parent=base.id)
    assert [record["id"] for record in go.layers()] == [base.id, child.id]
    assert go.run("diff", "-u", base.id) == base_tar
    assert go.run("diff", "-u", child.id) == child_tar
    refused = go.run("--storage-opt", "vfs.force_mask=0700", "layers", check=False)
    assert b"does not support vfs.force_mask" in refused  # Go's vfs driver refuses it
