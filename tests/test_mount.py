"""Drivers and mounts: merged views, counts shared between processes, deep chains, maps."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore import (
    LayerNotMounted,
    LayerStore,
    MountError,
    NotSupported,
    StoreIsReadOnly,
)
from layerstore.drivers.mountinfo import is_mount_point, mount_points

from .conftest import overlay_usable
from .tarballs import Entry, build_tar

needs_overlay = pytest.mark.skipif(
    not overlay_usable(), reason="overlay mounts need root and a kernel with overlay"
)


@pytest.fixture(autouse=True)
def no_mount_left_behind(tmp_path: Path) -> Iterator[None]:
    """Whatever a test does, nothing stays mounted under its directory."""
    yield
    for point in sorted(mount_points(), key=len, reverse=True):
        if point.startswith(str(tmp_path)):
            subprocess.run(["umount", "-l", point], check=False)


BASE = [
    Entry(b"etc", "dir", mode=0o755),
    Entry(b"etc/keep", "file", data=b"keep"),
    Entry(b"etc/doomed", "file", data=b"doomed"),
    Entry(b"var", "dir", mode=0o755),
    Entry(b"var/old", "file", data=b"old"),
    Entry(b"var/sub", "dir", mode=0o755),
    Entry(b"var/sub/deep", "file", data=b"deep"),
]
MIDDLE = [
    Entry(b"etc", "dir", mode=0o755),
    Entry(b"etc/.wh.doomed", "file"),
    Entry(b"etc/added", "file", data=b"added"),
    Entry(b"var", "dir", mode=0o755),
    Entry(b"var/.wh..wh..opq", "file"),
    Entry(b"var/new", "file", data=b"new"),
]


def merged_listing(root: str) -> dict[str, tuple[int, bytes]]:
    """Path -> (type, content) of a merged tree, as a container sees it."""
    listing: dict[str, tuple[int, bytes]] = {}
    for directory, subdirectories, files in os.walk(root):
        for name in (*subdirectories, *files):
            path = os.path.join(directory, name)
            info = os.lstat(path)
            content = Path(path).read_bytes() if stat.S_ISREG(info.st_mode) else b""
            listing[os.path.relpath(path, root)] = (stat.S_IFMT(info.st_mode), content)
    return listing


def three_layers(store: LayerStore) -> tuple[str, str, str]:
    base, _ = store.put(build_tar(BASE), names=["base"])
    middle, _ = store.put(build_tar(MIDDLE), parent="base", names=["middle"])
    top = store.create(parent="middle", names=["top"], writeable=True)
    return base.id, middle.id, top.id


def test_a_chain_mounts_to_the_merged_view(store: LayerStore) -> None:
    if store.driver.name == "overlay" and not overlay_usable():
        pytest.skip("overlay mounts need root")
    _, _, top = three_layers(store)
    path = store.mount(top)
    try:
        listing = merged_listing(path)
        assert "etc/doomed" not in listing, "a whiteout hides the parent's file"
        assert listing["etc/keep"] == (stat.S_IFREG, b"keep")
        assert listing["etc/added"] == (stat.S_IFREG, b"added")
        assert sorted(name for name in listing if name.startswith("var/")) == ["var/new"]
        Path(path, "written").write_text("by the container")
        assert Path(store.driver.layer_dir(top), "written").read_text() == "by the container"
    finally:
        assert store.unmount(top) is False
    assert store.mounted(top) == 0
    if store.driver.name == "overlay":
        assert not is_mount_point(path)


@needs_overlay
def test_overlay_and_vfs_show_the_same_tree(tmp_path: Path) -> None:
    listings = []
    for driver in ("overlay", "vfs"):
        store = LayerStore(tmp_path / driver, driver=driver)
        _, _, top = three_layers(store)
        path = store.mount(top, ["ro"] if driver == "overlay" else ())
        try:
            listings.append(merged_listing(path))
        finally:
            store.unmount(top)
    assert listings[0] == listings[1]


def mounts_json(store: LayerStore) -> list[dict[str, object]]:
    return json.loads(Path(store.mounts_dir, "mountpoints.json").read_text() or "[]")


def run_in_other_process(store: LayerStore, code: str) -> str:
    script = textwrap.dedent(
        f"""
        from layerstore import LayerStore
        store = LayerStore({store.root!r}, run_root={store.run_root!r},
                           driver={store.driver.name!r}, engine={store.engine.name!r})
        """
    ) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_counts_are_shared_between_processes(store: LayerStore) -> None:
    if store.driver.name == "overlay" and not overlay_usable():
        pytest.skip("overlay mounts need root")
    layer, _ = store.put(build_tar([Entry(b"f", "file", data=b"x")]))
    path = store.mount(layer.id)
    other_path = run_in_other_process(store, f"print(store.mount({layer.id!r}))")
    assert other_path == path
    assert store.mounted(layer.id) == 2
    assert run_in_other_process(store, f"print(store.mounted({layer.id!r}))") == "2"
    assert mounts_json(store) == [{"id": layer.id, "path": path, "count": 2}]

    assert run_in_other_process(store, f"print(store.unmount({layer.id!r}))") == "True"
    assert store.mounted(layer.id) == 1
    assert mounts_json(store) == [{"id": layer.id, "path": path, "count": 1}]
    if store.driver.name == "overlay":
        assert is_mount_point(path)
    assert store.unmount(path) is False  # by mount path this time
    assert mounts_json(store) == []
    assert not is_mount_point(path)
    with pytest.raises(LayerNotMounted):
        store.unmount(layer.id)


@needs_overlay
def test_a_mount_dropped_behind_our_back_is_mounted_again(tmp_path: Path) -> None:
    store = LayerStore(tmp_path / "store", driver="overlay")
    layer, _ = store.put(build_tar([Entry(b"f", "file", data=b"x")]))
    path = store.mount(layer.id)
    subprocess.run(["umount", path], check=True)
    assert not is_mount_point(path)
    assert store.mount(layer.id) == path
    assert is_mount_point(path)
    assert Path(path, "f").read_bytes() == b"x"
    assert store.mounted(layer.id) == 2, "the dropped mount's user still has to unmount"
    assert store.unmount(layer.id, force=True) is False
    assert not is_mount_point(path)


@needs_overlay
def test_read_only_check_reports_stale_counts_as_read_write_does(tmp_path: Path) -> None:
    """Issue 14, defect 4: a read-only check sees the mount table too."""
    store = LayerStore(tmp_path / "store", tmp_path / "run", driver="overlay")
    layer, _ = store.put(build_tar([Entry(b"f", "file", data=b"x")]))
    path = store.mount(layer.id)
    subprocess.run(["umount", path], check=True)
    reader = LayerStore(store.root, store.run_root, driver="overlay", read_only=True)
    assert [problem.kind for problem in reader.check()] == ["stale-mount"]
    assert reader.check() == store.check()
    assert reader.get(layer.id).mount_count == 1
    store.repair()
    assert reader.check() == []


@needs_overlay
def test_the_home_bind_is_made_and_removed_as_go_does(tmp_path: Path) -> None:
    """Issue 14, defect 1: ROOT/overlay is bind-mounted onto itself (private) before the first
    mount, so a Go process that opens the store later covers nothing, and the bind goes with
    the last count; check() reports a layer mount that something else covers."""
    store = LayerStore(tmp_path / "store", tmp_path / "run", driver="overlay")
    home = os.path.join(store.root, "overlay")
    layer, _ = store.put(build_tar([Entry(b"f", "file", data=b"x")]))
    other, _ = store.put(build_tar([Entry(b"g", "file", data=b"y")]))
    assert not is_mount_point(home)
    path = store.mount(layer.id)
    assert is_mount_point(home)
    assert " shared:" not in _mountinfo_line(home), "the bind is private"
    store.mount(other.id)
    store.unmount(layer.id)
    assert is_mount_point(home), "a layer is still counted as mounted"
    store.unmount(other.id)
    assert not is_mount_point(home)
    assert not is_mount_point(path)

    path = store.mount(layer.id)
    subprocess.run(["mount", "--bind", home, home], check=True)  # covers the layer's mount
    try:
        assert [problem.kind for problem in store.check()] == ["hidden-mount"]
    finally:
        subprocess.run(["umount", home], check=True)
    assert store.check() == []
    store.unmount(layer.id)


def _mountinfo_line(path: str) -> str:
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        return [line for line in table if line.split(" ", 5)[4] == path][-1]


@needs_overlay
def test_a_deep_chain_mounts(tmp_path: Path) -> None:
    store = LayerStore(tmp_path / "store", driver="overlay")
    parent = None
    for number in range(200):
        layer, _ = store.put(
            build_tar([Entry(f"layer{number:03d}".encode(), "file", data=str(number).encode())]),
            parent=parent,
        )
        parent = layer.id
    assert parent is not None
    path = store.mount(parent)
    try:
        names = sorted(os.listdir(path))
        assert names == [f"layer{number:03d}" for number in range(200)]
        assert Path(path, "layer000").read_text() == "0"
        assert Path(path, "layer199").read_text() == "199"
    finally:
        store.unmount(parent)


@needs_overlay
def test_mount_failures_carry_errno_and_data(tmp_path: Path) -> None:
    store = LayerStore(tmp_path / "store", driver="overlay")
    base, _ = store.put(build_tar([Entry(b"f", "file", data=b"x")]))
    child = store.create(parent=base.id)
    link = Path(store.driver.home, "l", Path(store.driver.home, base.id, "link").read_text())
    link.unlink()  # a parent's short link gone: the lower directory cannot be found
    with pytest.raises(MountError) as caught:
        store.mount(child.id)
    assert caught.value.errno
    assert str(link) in caught.value.data
    assert store.mounted(child.id) == 0
    assert mounts_json(store) == []


def test_delete_unmounts_first(store: LayerStore) -> None:
    if store.driver.name == "overlay" and not overlay_usable():
        pytest.skip("overlay mounts need root")
    layer, _ = store.put(build_tar([Entry(b"f", "file", data=b"x")]))
    path = store.mount(layer.id)
    store.mount(layer.id)
    store.delete(layer.id)
    assert not is_mount_point(path)
    assert mounts_json(store) == []
    assert not store.driver.exists(layer.id)


def test_read_only_stores_mount_read_only(store: LayerStore, tmp_path: Path) -> None:
    if store.driver.name == "overlay" and not overlay_usable():
        pytest.skip("overlay mounts need root")
    layer, _ = store.put(build_tar([Entry(b"f", "file", data=b"x")]))
    reader = LayerStore(
        store.root, run_root=tmp_path / "reader-run", driver=store.driver.name, read_only=True
    )
    with pytest.raises(StoreIsReadOnly):
        reader.mount(layer.id)
    path = reader.mount(layer.id, ["ro"])
    try:
        assert Path(path, "f").read_bytes() == b"x"
        if store.driver.name == "overlay":
            with pytest.raises(OSError, match="Read-only"):
                Path(path, "g").write_text("no")
    finally:
        reader.unmount(layer.id)


def test_template_layers_copy_contents_digests_and_tar_split(store: LayerStore) -> None:
    base, _ = store.put(build_tar([Entry(b"a", "file", data=b"a")]))
    layer, _ = store.put(build_tar([Entry(b"b", "file", data=b"b" * 3000)]), parent=base.id)
    copy = store.create(parent=base.id, template=layer.id)
    assert copy.uncompressed_digest == layer.uncompressed_digest
    assert (copy.uids, copy.compression) == (layer.uids, layer.compression)
    assert Path(store.driver.layer_dir(copy.id), "b").read_bytes() == b"b" * 3000
    with store.diff(copy.id) as stream:
        assert stream.read() == build_tar([Entry(b"b", "file", data=b"b" * 3000)])


def test_id_maps_shift_owners_and_guard_mounts(store: LayerStore) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing owners needs root")
    base, _ = store.put(
        build_tar([Entry(b"f", "file", data=b"x", uid=0, gid=0), Entry(b"g", "file", uid=5)])
    )
    maps = [(0, 100000, 65536)]
    mapped = store.create(parent=base.id, uid_map=maps, gid_map=maps)
    path = store.mount(mapped.id, uid_map=maps, gid_map=maps)
    try:
        assert (os.stat(Path(path, "f")).st_uid, os.stat(Path(path, "f")).st_gid) == (
            100000,
            100000,
        )
        assert os.stat(Path(path, "g")).st_uid == 100005
    finally:
        store.unmount(mapped.id)
    assert os.stat(Path(store.driver.layer_dir(base.id), "f")).st_uid == 0, "the parent keeps"
    with pytest.raises(NotSupported, match="id maps"):
        store.mount(mapped.id, uid_map=[(0, 200000, 65536)], gid_map=maps)


def test_status_says_which_driver_and_why(tmp_path: Path) -> None:
    store = LayerStore(tmp_path / "auto")
    status = dict(store.status())
    assert status["Driver"] in ("overlay", "vfs")
    reason = status["Driver chosen because"]
    assert ("works" in reason) == (status["Driver"] == "overlay")
