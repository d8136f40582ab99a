"""A store on a small file system: running out of space fails cleanly and the store survives."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore import LayerStore

from ..tarballs import Entry, build_tar
from .invariants import assert_consistent


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs, mounted for the test and unmounted after it, whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_put_that_runs_out_of_space(small_disk: Path, driver_name: str, engine_name: str) -> None:
    store = LayerStore(small_disk / "store", driver=driver_name, engine=engine_name)
    small, _ = store.put(build_tar([Entry(b"small", "file", data=b"x" * 1000)]), names=["small"])
    before = Path(store.layers_dir, "layers.json").read_bytes()
    # Incompressible data, so the blob itself is as large as what it expands to.
    too_big = build_tar(
        [Entry(f"big{n}".encode(), "file", data=os.urandom(8 << 20)) for n in range(4)]
    )
    with pytest.raises(OSError, match="No space left") as caught:
        store.put(too_big, names=["too-big"])
    assert caught.value.errno == errno.ENOSPC
    assert Path(store.layers_dir, "layers.json").read_bytes() == before
    assert [record["id"] for record in json.loads(before)] == [small.id]
    reopened = LayerStore(small_disk / "store", driver=driver_name, engine=engine_name)
    assert [layer.id for layer in reopened.layers()] == [small.id]
    assert_consistent(reopened)
    # With the space back (nothing of the failed layer is left to free), the store goes on.
    fits = build_tar([Entry(b"medium", "file", data=os.urandom(4 << 20))])
    layer, _ = reopened.put(fits, parent="small")
    assert reopened.diff_size(layer.id) == 4 << 20
    assert_consistent(reopened)
