"""Crash injection: SIGKILL at random moments and at chosen points; the store always recovers."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore import LayerStore
from layerstore.drivers.mountinfo import mount_points
from layerstore.faults import FAULT_POINT_VARIABLE

from ..conftest import overlay_usable
from .invariants import assert_consistent

ROOT_DIRECTORY = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def unmount_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    for point in sorted(mount_points(), key=len, reverse=True):
        if point.startswith(str(tmp_path)):
            subprocess.run(["umount", "-l", point], check=False)


def start_worker(
    store: LayerStore, seed: int, journal: Path, operation: str = "", fault: str = ""
) -> subprocess.Popen[bytes]:
    environment = dict(os.environ)
    if fault:
        environment[FAULT_POINT_VARIABLE] = fault
    command = [
        sys.executable, "-m", "tests.reliability.crash_worker", store.root, store.run_root,
        store.driver.name, store.engine.name, str(seed), str(journal),
    ]  # fmt: skip
    if operation:
        command.append(operation)
    return subprocess.Popen(command, cwd=ROOT_DIRECTORY, env=environment, stderr=subprocess.PIPE)


def reopen(store: LayerStore) -> LayerStore:
    return LayerStore(store.root, run_root=store.run_root, driver=store.driver.name,
                      engine=store.engine)  # fmt: skip


def test_random_kills(store: LayerStore, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if store.driver.name == "overlay" and not overlay_usable():
        pytest.skip("overlay mounts need root")
    kills = 1000 if request.config.getoption("--long") else 30
    per_combination = max(kills // 4, 8)  # four driver x engine combinations share the total
    rng = random.Random(20261129)
    journal = tmp_path / "journal"
    for round_number in range(per_combination):
        worker = start_worker(store, rng.randrange(1 << 30), journal)
        time.sleep(rng.uniform(0.02, 0.4))
        worker.send_signal(signal.SIGKILL)
        _, errors = worker.communicate()
        assert worker.returncode == -signal.SIGKILL, errors.decode(errors="replace")
        assert_consistent(reopen(store), journal)
        if round_number % 5 == 4:
            # Keep the store small: what survives is checked, then cleared.
            survivor = reopen(store)
            for layer in survivor.layers():
                if layer.mount_count:
                    survivor.unmount(layer.id, force=True)
            for image in survivor.images():
                survivor.delete_image(image.id, keep_layers=True)
            survivor.wipe()
            journal.unlink(missing_ok=True)


FAULTS = {
    "create:record-saved": "create",
    "put:reserved": "put",
    "put:staged": "put",
    "put:renamed": "put",
    "put:applied": "put-mapped",  # a put applied in place (other id maps than its parent's)
    "chain:committed": "chain",  # one layer of a chain committed, the others staged
    "apply:before-tar-split": "put",
    "delete:marked": "delete",
    "delete:files-removed": "delete",
    "set-big-data:written": "big-data",
    "mount:mounted": "mount",
    # A mounted layer (MOUNTED_FIRST): its count written but the kernel mount still there,
    # and a delete whose layers.json is written but not yet the mount table.
    "unmount:uncounted": "unmount",
    "save:layers-written": "delete",
    "image:big-data-written": "image",
    "rmi:record-removed": "rmi",
}
MOUNTED_FIRST = {"unmount:uncounted", "save:layers-written"}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_kill_at_a_chosen_point(store: LayerStore, tmp_path: Path, fault: str) -> None:
    if store.driver.name == "overlay" and not overlay_usable():
        pytest.skip("overlay mounts need root")
    journal = tmp_path / "journal"
    setup = start_worker(store, 1, journal, "put")
    assert setup.wait() == 0
    if FAULTS[fault] == "rmi":
        assert start_worker(store, 1, journal, "image").wait() == 0
    if fault in MOUNTED_FIRST:
        assert start_worker(store, 1, journal, "mount").wait() == 0
        assert reopen(store).layers()[0].mount_count == 1
    worker = start_worker(store, 2, journal, FAULTS[fault], fault)
    _, errors = worker.communicate()
    assert worker.returncode == -signal.SIGKILL, (
        f"the worker did not reach {fault}: {errors.decode(errors='replace')}"
    )
    recovered = reopen(store)
    assert_consistent(recovered, journal)
    assert not [point for point in mount_points() if point.startswith(str(store.root))], (
        "a kernel mount that no count records was left behind"
    )
    if fault == "mount:mounted":
        # The kernel mount exists but no count records it: it is the one leak a kill here
        # leaves, and mounting again adopts it instead of stacking a second mount.
        layer = recovered.layers()[0]
        path = recovered.mount(layer.id)
        assert recovered.mounted(layer.id) == 1
        recovered.unmount(layer.id)
        assert not os.path.ismount(path) or store.driver.name == "vfs"
