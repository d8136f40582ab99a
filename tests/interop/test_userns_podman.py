"""A rootless podman (vfs, and overlay where it works) and layerstore in ``layerstore unshare``
share one user's store, in both directions, with the same host owners (docs/rootless.md,
issue 19 part 2).

The user and its subordinate ids come from ``tests/test_userns.py``'s fixture; podman, skopeo
and layerstore all run as that user, on a store and a configuration below the test's
directory (never the user's or the machine's own container storage).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from ..test_rootless import multi_owner_layer
from ..test_userns import _PYTHON, SubidUser, subid_user
from .clients import image_layers, require_tools, static_busybox, write_oci_layout

__all__ = ["subid_user"]  # the fixture, used below

TIMEOUT = 180


@dataclass
class RootlessPodman:
    """podman and skopeo as the user, on a private vfs store, and layerstore in its
    namespace on the same store."""

    user: SubidUser
    base: Path
    root: Path
    run_root: Path
    env: dict[str, str]
    driver: str

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["setpriv", f"--reuid={self.user.name}", f"--regid={self.user.name}",
             "--init-groups", *command],
            env=self.env, capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip

    def podman(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return self.run(
            "podman", "--root", str(self.root), "--runroot", str(self.run_root),
            "--storage-driver", self.driver, "--cgroup-manager", "cgroupfs",
            "--events-backend", "file", *arguments,
        )  # fmt: skip

    def skopeo(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return self.run(
            "skopeo", "--policy", str(self.base / "conf" / "policy.json"),
            "--registries-conf", str(self.base / "conf" / "registries.conf"), *arguments,
        )  # fmt: skip

    @property
    def transport(self) -> str:
        return f"containers-storage:[{self.driver}@{self.root}+{self.run_root}]"

    def layerstore(self, script: str, *arguments: str) -> dict[str, object]:
        """``script`` in ``layerstore unshare``, with the store as argv[1]; its JSON."""
        done = self.run(
            _PYTHON, "-m", "layerstore", "unshare", "--", _PYTHON, "-c", script,
            str(self.root), str(self.run_root), self.driver, *arguments,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))


@pytest.fixture(params=["vfs", "overlay"])
def rootless(
    subid_user: SubidUser, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[RootlessPodman]:
    driver = str(request.param)
    require_tools("podman", "skopeo", "runc")
    base = subid_user.work / "home" / f"podman-{tmp_path.name}"
    run_root = Path(tempfile.mkdtemp(prefix="ls-userns-", dir="/tmp"))  # podman: short paths
    xdg = base / "xdg"
    for directory in (base / "conf", xdg, base / "tmp", base / "home"):
        directory.mkdir(parents=True, mode=0o700)
    conf = base / "conf"
    (conf / "containers.conf").write_text(  # file locks: as in clients.py
        '[containers]\nnetns = "none"\n\n'
        '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nlock_type = "file"\n'
        'runtime = "runc"\n'
        f'tmp_dir = "{base / "tmp"}"\nevents_logfile_path = "{base / "events.log"}"\n\n'
        f'[network]\nnetwork_backend = "cni"\nnetwork_config_dir = "{base / "cni"}"\n'
    )
    (conf / "storage.conf").write_text(
        f'[storage]\ndriver = "{driver}"\n'
        f'graphroot = "{base / "storage"}"\nrunroot = "{run_root}"\n'
    )
    (conf / "registries.conf").write_text("unqualified-search-registries = []\n")
    (conf / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    subprocess.run(["chown", "-R", f"{subid_user.name}:{subid_user.name}", str(base),
                    str(run_root)], check=True)  # fmt: skip
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(base / "home"),
        "USER": subid_user.name,
        "XDG_RUNTIME_DIR": str(xdg),
        "XDG_CONFIG_HOME": str(base / "home" / ".config"),
        "XDG_DATA_HOME": str(base / "home" / ".local" / "share"),
        "TMPDIR": str(base / "tmp"),
        "CONTAINERS_CONF": str(conf / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
        "PYTHONPATH": str(subid_user.work / "py"),
    }
    podman = RootlessPodman(subid_user, base, base / "storage", run_root / "run", env, driver)
    probe = podman.podman("info", "--format", "{{.Store.GraphDriverName}}")
    if probe.returncode != 0 or probe.stdout.strip() != driver:
        _stop_pause_process(base, subid_user.uid)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(run_root, ignore_errors=True)
        pytest.skip(f"rootless podman has no {driver} here: {probe.stderr.strip()}")
    try:
        yield podman
    finally:
        podman.podman("rm", "--all", "--force")
        _stop_pause_process(base, subid_user.uid)
        # Files of subordinate owners: removed as root (the fixture's user may be gone next).
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(run_root, ignore_errors=True)


def _stop_pause_process(base: Path, uid: int) -> None:
    """Rootless podman leaves a pause process (catatonit) holding its namespace, its pid in
    ``pause.pid`` below its runtime or tmp directory: stop the one this test started."""
    for pid_file in base.rglob("pause.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            status = Path(f"/proc/{pid}/status").read_text()
        except (OSError, ValueError):
            continue
        owner = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        if owner == str(uid):
            os.kill(pid, signal.SIGKILL)


def _layout(directory: Path) -> list[bytes]:
    """The interop image plus a multi-owner layer (setuid, devices, mode 000, owners), as an
    OCI layout the user can read; the uncompressed layers, bottom first."""
    owners = multi_owner_layer()
    layers = (*image_layers(), (owners, gzip.compress(owners, compresslevel=1, mtime=0)))
    write_oci_layout(directory, "test", layers)
    subprocess.run(["chmod", "-R", "a+rX", str(directory)], check=True)
    return [tar for tar, _ in layers]


def _tree(directory: Path) -> dict[str, tuple[int, int, int]]:
    """(host uid, gid, mode) of everything below ``directory``, as root sees them."""
    return {
        path.relative_to(directory).as_posix(): (info.st_uid, info.st_gid, info.st_mode)
        for path in sorted(directory.rglob("*"))
        for info in [path.lstat()]
    }


_READ = r"""
import hashlib, json, sys
from layerstore import LayerStore
root, run_root, driver, name = sys.argv[1:5]
with LayerStore(root, run_root=run_root, driver=driver) as store:
    image = store.image(name)
    layers = store.image_layers(image.id)
    diffs = []
    for layer in layers:
        with store.diff(layer.id, compression="none") as stream:
            diffs.append(stream.read().hex())
    print(json.dumps({
        "diffs": diffs,
        "digests": [layer.uncompressed_digest for layer in layers],
        "dirs": [store.driver.layer_dir(layer.id) for layer in layers],
        "changes": [str(c.path) for c in store.changes(layers[-1].id)],
        "check": [str(problem) for problem in store.check(contents=True)],
    }))
"""

_LOAD = r"""
import json, sys
from layerstore import LayerStore
root, run_root, driver, layout, name = sys.argv[1:6]
with LayerStore(root, run_root=run_root, driver=driver) as store:
    image = store.load(f"oci:{layout}:test", names=[name])
    layers = store.image_layers(image.id)
    print(json.dumps({"dirs": [store.driver.layer_dir(layer.id) for layer in layers]}))
"""


def test_skopeo_copies_in_layerstore_reads_it(rootless: RootlessPodman) -> None:
    layout = rootless.base / "layout"
    tars = _layout(layout)
    copied = rootless.skopeo(
        "copy", "--quiet", f"oci:{layout}:test",
        f"{rootless.transport}localhost/from-skopeo:1",
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    report = rootless.layerstore(_READ, "localhost/from-skopeo:1")
    assert [bytes.fromhex(diff) for diff in report["diffs"]] == tars  # type: ignore[union-attr]
    assert report["check"] == []
    assert "/etc/shadow" in report["changes"]  # type: ignore[operator]
    # skopeo's owners on the host are the ones rootless podman's mapping gives.
    top = Path(report["dirs"][-1])  # type: ignore[index]
    user = rootless.user
    notes = (top / "home/user/notes").lstat()
    assert (notes.st_uid, notes.st_gid) == (user.uid_start + 999, user.gid_start + 1999)
    assert stat.S_IMODE((top / "bin/su").lstat().st_mode) == 0o4755
    assert (top / "bin/su").lstat().st_uid == user.uid


def test_layerstore_loads_rootless_podman_runs_it(rootless: RootlessPodman) -> None:
    if static_busybox() is None:
        pytest.skip("podman run needs a static busybox: apt-get install busybox-static")
    layout = rootless.base / "layout"
    _layout(layout)
    rootless.layerstore(_LOAD, str(layout), "localhost/from-layerstore:1")
    ran = rootless.podman(
        "run", "--rm", "--pull", "never", "--network", "none",
        "localhost/from-layerstore:1", "/bin/busybox", "stat", "-c", "%u:%g:%a",
        "/home/user/notes", "/bin/su", "/nobody",
    )  # fmt: skip
    if ran.returncode != 0 and "cgroup" in ran.stderr:
        pytest.skip(f"rootless podman cannot run containers here: {ran.stderr.strip()}")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["1000:2000:600", "0:0:4755", "65534:65534:640"]


def test_skopeo_and_layerstore_give_the_same_host_owners(
    rootless: RootlessPodman,
) -> None:
    """The same image, copied by skopeo into one store and loaded by layerstore into another,
    as the same user: every layer's tree has the same host owners and modes."""
    layout = rootless.base / "layout"
    _layout(layout)
    ours = rootless.layerstore(_LOAD, str(layout), "localhost/same:1")
    other = replace(rootless, root=rootless.base / "storage-skopeo",
                    run_root=rootless.run_root.parent / "run-skopeo")  # fmt: skip
    copied = other.skopeo(
        "copy", "--quiet", f"oci:{layout}:test", f"{other.transport}localhost/same:1"
    )
    assert copied.returncode == 0, copied.stderr
    theirs = other.layerstore(_READ, "localhost/same:1")
    assert len(ours["dirs"]) == len(theirs["dirs"]) == 4  # type: ignore[arg-type]
    for mine, skopeos in zip(ours["dirs"], theirs["dirs"], strict=True):  # type: ignore[call-overload]
        assert Path(mine).name == Path(skopeos).name  # the same layer ids
        assert _tree(Path(mine)) == _tree(Path(skopeos))
    top = _tree(Path(ours["dirs"][-1]))  # type: ignore[index]
    assert top["home/user/notes"][:2] == (
        rootless.user.uid_start + 999,
        rootless.user.gid_start + 1999,
    )
