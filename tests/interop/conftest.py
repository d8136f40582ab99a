"""Fixtures for the interoperability suite: the Go containers-storage CLI on our store's root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from layerstore import LayerStore
from layerstore.drivers.mountinfo import mount_points

from ..conftest import overlay_usable
from .clients import IMAGE, IMAGE_REF, Clients, image_layers, require_tools, write_oci_layout

GO_CLI = shutil.which("containers-storage")
TAR_SPLIT = shutil.which("tar-split")
MISSING = (
    "the Go reference tools are missing: apt-get update && "
    "apt-get install -y containers-storage tar-split"
)


class GoStore:
    """containers-storage 1.43 pointed at a store root, as podman would be."""

    def __init__(self, root: Path, run_root: Path, driver: str) -> None:
        self.root, self.run_root, self.driver = root, run_root, driver

    def run(self, *arguments: str, stdin: bytes | None = None, check: bool = True) -> bytes:
        assert GO_CLI is not None
        command = [GO_CLI, "--graph", str(self.root), "--run", str(self.run_root),
                   "--storage-driver", self.driver, *arguments]  # fmt: skip
        completed = subprocess.run(command, input=stdin, capture_output=True, check=False)
        if check and completed.returncode != 0:
            raise AssertionError(
                f"{' '.join(arguments)} failed ({completed.returncode}): "
                f"{completed.stderr.decode(errors='replace')}"
            )
        return completed.stdout

    def json(self, verb: str, *arguments: str) -> Any:
        # Go's flag parsing stops at the first positional argument: options go first.
        return json.loads(self.run(verb, "--json", *arguments) or b"null")

    def layers(self) -> list[dict[str, Any]]:
        return self.json("layers") or []

    def import_layer(self, blob: bytes, *names: str, parent: str | None = None) -> str:
        name_options = [option for name in names for option in ("-n", name)]
        parents = [parent] if parent else []
        output = self.run("import-layer", *name_options, *parents, stdin=blob)
        return output.split()[0].decode()

    def create_layer(self, *names: str, parent: str | None = None) -> str:
        name_options = [option for name in names for option in ("-n", name)]
        parents = [parent] if parent else []
        return self.run("create-layer", *name_options, *parents).split()[0].decode()

    def diff(self, layer: str) -> bytes:
        return self.run("diff", "-u", layer)


@pytest.fixture
def go_driver(driver_name: str) -> str:
    if GO_CLI is None or TAR_SPLIT is None:
        pytest.skip(MISSING)
    return driver_name


@pytest.fixture
def shared_root(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A store root and run root that both implementations use; unmounted afterwards."""
    root, run_root = tmp_path / "storage", tmp_path / "run"
    yield root, run_root
    # The Go overlay driver bind-mounts its home onto itself, and mounts may be left over.
    for point in sorted(mount_points(), key=len, reverse=True):
        if point.startswith(str(tmp_path)):
            subprocess.run(["umount", "-l", point], check=False)


@pytest.fixture
def go(shared_root: tuple[Path, Path], go_driver: str) -> GoStore:
    root, run_root = shared_root
    return GoStore(root, run_root, go_driver)


@pytest.fixture
def ours(
    shared_root: tuple[Path, Path], go_driver: str, engine_name: str
) -> Callable[[], LayerStore]:
    """Opens layerstore on the shared root (call it after Go wrote, to read what Go wrote)."""
    root, run_root = shared_root

    def open_store() -> LayerStore:
        return LayerStore(root, run_root=run_root, driver=go_driver, engine=engine_name)

    return open_store


def requires_mounts(driver: str) -> None:
    if driver == "overlay" and not overlay_usable():
        pytest.skip("overlay mounts need root")


# -- podman, skopeo and buildah (issue 14; the wrappers are in clients.py) ---------------------

# Where the real clients keep state when nothing says otherwise: the tests must not create
# (or change) any of these. clients.py points every setting of the tools elsewhere.
MACHINE_PATHS = (
    "/var/lib/containers",
    "/run/containers",
    "/run/libpod",
    "/run/runc",
    "/etc/cni/net.d/cni.lock",
    "/var/cache/containers",
)


def _machine_state() -> dict[str, float | None]:
    state: dict[str, float | None] = {}
    for path in MACHINE_PATHS:
        try:
            state[path] = os.stat(path).st_mtime
        except FileNotFoundError:
            state[path] = None
    return state


MACHINE_BEFORE = _machine_state()  # when pytest collects this suite, before any test


def machine_changes() -> list[str]:
    now = _machine_state()
    return [path for path in MACHINE_PATHS if now[path] != MACHINE_BEFORE[path]]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A failure of an xfail test's teardown counts as its expected failure: this check
    cannot be hidden that way."""
    changed = machine_changes()
    if changed:
        print(f"\nERROR: the tests changed the machine's own container state: {changed}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def oci_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test image (busybox, then the suite's base and whiteout layers) as an OCI layout."""
    return write_oci_layout(tmp_path_factory.mktemp("oci"), IMAGE_REF, image_layers())


@pytest.fixture
def clients(tmp_path: Path, driver_name: str) -> Iterator[Clients]:
    """podman, skopeo and buildah on a fresh private store; everything undone afterwards."""
    require_tools()
    opened = Clients(tmp_path / "clients", driver_name)
    try:
        yield opened
    finally:
        opened.cleanup()
    assert machine_changes() == [], "the real clients changed the machine's own storage"


@pytest.fixture
def image(clients: Clients, oci_layout: Path) -> str:
    """The test image, copied into the clients' store by skopeo; returns its name."""
    clients.copy_in(oci_layout, IMAGE_REF, IMAGE)
    return IMAGE
