"""A container's layer written through ``podman mount``: layerstore's changes and diff of it
against podman's diff and export (issue 14, defect 2)."""

from __future__ import annotations

import os
from pathlib import Path

from layerstore import LayerStore
from layerstore.engines import Engine

from .clients import Clients, tar_tree
from .trees import merged_tree

KINDS = {"changed": "modify", "added": "add", "deleted": "delete"}


def write_container(clients: Clients, image: str) -> tuple[str, str]:
    """A container whose layer podman mount lets us change: a file in a new directory under
    /var/lib/app/data, two files modified (one in a tree only they are in: /opt/app), one
    deleted. Returns (container id, its layer)."""
    container = clients.podman("create", "--pull", "never", "--network", "none", image).strip()
    root = Path(clients.podman("mount", container).strip())
    try:
        (root / "var/lib/app/data/newdir").mkdir()
        (root / "var/lib/app/data/newdir/file").write_text("new\n")
        (root / "var/lib/app/state").write_text("state 2\n")
        (root / "opt/app/conf").write_text("level = 2\n")
        (root / "var/lib/app/obsolete").unlink()
    finally:
        clients.podman("umount", container)
    return container, clients.container_layer(container)


def test_container_changes_equal_podman_diff(clients: Clients, image: str, engine: Engine) -> None:
    """Go's overlay changes (archive.OverlayChanges) leave out a directory with the size, mode
    and mtime it has in the first lower layer (a copy-up that only holds modified files); ours
    too (issue 14, defect 2)."""
    container, layer = write_container(clients, image)
    podman = clients.podman_json("diff", "--format", "json", container)
    theirs = {(path, KINDS[kind]) for kind, paths in podman.items() for path in paths}
    assert ("/var/lib/app/data/newdir/file", "add") in theirs
    ours = {(change.path, change.kind) for change in clients.open(engine).changes(layer)}
    assert ours == theirs


def test_container_diff_rebuilds_its_tree(
    clients: Clients, image: str, engine: Engine, tmp_path: Path
) -> None:
    container, layer = write_container(clients, image)
    exported = clients.podman_bytes("export", container)
    store = clients.open(engine)
    chain = clients.chain(layer)
    diffs = []
    for layer_id in chain:
        with store.diff(layer_id, compression="none") as stream:
            diffs.append(stream.read())

    with LayerStore(tmp_path / "fresh", driver=clients.driver, engine=engine) as fresh:
        parent = None
        for diff in diffs:
            parent = fresh.put(diff, parent=parent)[0].id
        assert parent is not None
        path = fresh.mount(parent)
        try:
            tree = merged_tree(path)
            assert not os.path.exists(os.path.join(path, "var/lib/app/obsolete"))
        finally:
            fresh.unmount(parent)
    assert tree == tar_tree(exported)
    assert tree["opt/app/conf"][4] == len("level = 2\n")
