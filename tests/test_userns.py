"""User namespaces with subordinate ids (docs/rootless.md, issue 19 part 2): the mapping
rootless podman makes, and a store kept by an unprivileged user inside ``layerstore unshare``
that matches a root store of the same layers, with the host owners podman gives them."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from layerstore import IDMap, LayerStore, NotSupported
from layerstore.cli import main
from layerstore.engines import Engine
from layerstore.store.locations import default_root, podman_rootless_locations
from layerstore.userns import (
    describe_ownership,
    podman_mapping,
    run_in_namespace,
    running_in_user_namespace,
    subordinate_ranges,
)

from .conftest import overlay_usable
from .test_rootless import (
    _member,
    expected_stats,
    multi_owner_layer,
    owner_change_layer,
    user_workspace,
)

DEVICES = ("dev/null", "dev/sda")  # Go skips device nodes in a user namespace, and so do we


def test_subordinate_ranges_by_name_and_by_uid(tmp_path: Path) -> None:
    subuid = tmp_path / "subuid"
    subuid.write_text(
        "alice:100000:65536\n"
        "bob:165536:65536\n"
        "1001:300000:1000\n"
        "# a comment\n"
        "alice:bad:1\n"
        "alice:400000:0\n"
        "alice:500000:10\n"
    )
    assert subordinate_ranges(str(subuid), "alice", 1001) == [
        (100000, 65536),
        (300000, 1000),
        (500000, 10),
    ]
    assert subordinate_ranges(str(subuid), "bob", 1002) == [(165536, 65536)]
    assert subordinate_ranges(str(subuid), "carol", 1003) == []
    assert subordinate_ranges(str(tmp_path / "missing"), "alice", 1001) == []


def test_podman_mapping(tmp_path: Path) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text(f"{os.getuid()}:100000:65536\n{os.getuid()}:300000:10\n")
    subgid.write_text(f"{os.getuid()}:200000:65536\n")
    mapping = podman_mapping(os.getuid(), 4242, subuid_path=str(subuid), subgid_path=str(subgid))
    assert mapping.uid_map == (
        IDMap(0, os.getuid(), 1),
        IDMap(1, 100000, 65536),
        IDMap(65537, 300000, 10),
    )
    assert mapping.gid_map == (IDMap(0, 4242, 1), IDMap(1, 200000, 65536))
    subgid.write_text("")
    with pytest.raises(NotSupported, match=f"no range for it in {subgid}"):
        podman_mapping(os.getuid(), 4242, subuid_path=str(subuid), subgid_path=str(subgid))


def test_root_is_told_it_needs_no_namespace() -> None:
    if os.geteuid() != 0 or running_in_user_namespace():
        pytest.skip("this checks what root of the initial user namespace is told")
    with pytest.raises(NotSupported, match="root needs no user namespace"):
        run_in_namespace(["true"])
    assert describe_ownership(None, False)[0] == "root"
    assert describe_ownership(0o700, False)[0] == "root, force_mask 0700"


def test_the_defaults_of_a_namespace_made_for_a_user_are_that_users() -> None:
    # Outside a user namespace the variable changes nothing: root keeps root's defaults.
    if os.geteuid() == 0 and not running_in_user_namespace():
        environ = {"_CONTAINERS_ROOTLESS_UID": "1234", "HOME": "/home/u"}
        assert default_root(environ) == "/var/lib/layerstore"


def test_podman_rootless_locations_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    environ = {"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/7"}
    assert podman_rootless_locations(environ, euid=7) == (
        "/home/u/.local/share/containers/storage",
        "/run/user/7/containers",
    )
    assert podman_rootless_locations({"XDG_DATA_HOME": "/d", "HOME": "/h"}, euid=7) == (
        "/d/containers/storage",
        None,
    )
    # The defaults never name podman's storage.
    assert "containers" not in default_root(environ, euid=7)
    with pytest.raises(ValueError, match="non-root user's"):
        podman_rootless_locations(environ, euid=0)
    if os.geteuid() == 0 and not running_in_user_namespace():
        assert main(["--podman-store", "status"]) == 2
        assert "name the store with --root" in capsys.readouterr().err


@dataclass(frozen=True)
class SubidUser:
    name: str
    uid: int
    gid: int
    work: Path
    uid_start: int
    gid_start: int


_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"


def _free_range(path: str) -> int:
    """A first id past every range in ``path`` (on a 65536 boundary)."""
    end = 100000
    for line in Path(path).read_text().splitlines():
        parts = line.split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            end = max(end, int(parts[1]) + int(parts[2]))
    return -(-end // 65536) * 65536


def _remove_lines_of(path: str, name: str, uid: int) -> None:
    lines = Path(path).read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.split(":")[0] not in (name, str(uid))]
    if kept != lines:
        Path(path).write_text("".join(kept))


@pytest.fixture(scope="module")
def subid_user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SubidUser]:
    """A new user with a subordinate uid and gid range (both removed afterwards), and a
    directory it can read holding a copy of layerstore and its dependencies."""
    if os.geteuid() != 0 or running_in_user_namespace():
        pytest.skip("making a user with subordinate ids needs root")
    for tool in ("useradd", "usermod", "userdel", "setpriv", "newuidmap", "newgidmap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing: apt-get install passwd util-linux uidmap")
    if not os.access(_PYTHON, os.X_OK):
        pytest.skip(f"{_PYTHON} is missing: the unprivileged user needs an interpreter")
    name = f"lsun{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/false", name], check=True)
    uid, gid = int(subprocess.check_output(["id", "-u", name])), 0
    gid = int(subprocess.check_output(["id", "-g", name]))
    try:
        # useradd may have given it ranges (SUB_UID_MIN in login.defs); else add some.
        if not subordinate_ranges("/etc/subuid", name, uid):
            first = _free_range("/etc/subuid")
            subprocess.run(
                ["usermod", "--add-subuids", f"{first}-{first + 65535}", name], check=True
            )
        if not subordinate_ranges("/etc/subgid", name, uid):
            first = _free_range("/etc/subgid")
            subprocess.run(
                ["usermod", "--add-subgids", f"{first}-{first + 65535}", name], check=True
            )
        uid_ranges = subordinate_ranges("/etc/subuid", name, uid)
        gid_ranges = subordinate_ranges("/etc/subgid", name, uid)
        assert uid_ranges[0][1] >= 65536
        assert gid_ranges[0][1] >= 65536
        work = user_workspace(tmp_path_factory, "subid-user", name)
        probe = _as(name, work, "-m", "layerstore", "unshare", "--", "true")
        if probe.returncode != 0:
            pytest.skip(f"this machine refuses the user namespace: {probe.stderr.strip()}")
        yield SubidUser(name, uid, gid, work, uid_ranges[0][0], gid_ranges[0][0])
    finally:
        # userdel leaves the ranges here (Debian 12): usermod removes them under shadow's
        # locks, so another test adding a user meanwhile keeps its own.
        for option, path in (("--del-subuids", "/etc/subuid"), ("--del-subgids", "/etc/subgid")):
            for start, count in subordinate_ranges(path, name, uid):
                subprocess.run(["usermod", option, f"{start}-{start + count - 1}", name],
                               capture_output=True, check=False)  # fmt: skip
        removed = subprocess.run(["userdel", name], capture_output=True, text=True, check=False)
        for path in ("/etc/subuid", "/etc/subgid"):
            _remove_lines_of(path, name, uid)  # what usermod could not remove
        if removed.returncode != 0:
            pytest.fail(f"the test user {name} was not removed: {removed.stderr.strip()}")


def _readable_blobs(directory: Path, base: bytes, child: bytes) -> Path:
    """``directory`` holding ``base.tar`` and ``child.tar``, readable by every user."""
    directory.mkdir()
    (directory / "base.tar").write_bytes(base)
    (directory / "child.tar").write_bytes(child)
    subprocess.run(["chmod", "-R", "a+rX", str(directory)], check=True)
    return directory


def _as(user: str, work: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {
        "PYTHONPATH": str(work / "py"),
        "HOME": str(work / "home"),
        "PATH": "/usr/bin:/bin",
        "USER": user,
    }
    return subprocess.run(
        ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", _PYTHON, *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


# Runs inside `layerstore unshare`: prints JSON for the test to compare with a root store.
_IN_NAMESPACE = r"""
import json, os, stat, sys
from pathlib import Path
from layerstore import LayerStore
root, engine, base_path, child_path = sys.argv[1:5]
with LayerStore(root, driver="vfs", engine=engine) as store:
    base, _ = store.put(open(base_path, "rb").read())
    child, _ = store.put(open(child_path, "rb").read(), parent=base.id)
    made = store.create(parent=child.id)  # the vfs copy, with real owners
    diffs = []
    for layer in (base, child):
        with store.diff(layer.id, compression="none") as stream:
            diffs.append(stream.read().hex())
    tree = Path(store.driver.layer_dir(made.id))
    stats = {}
    for path in sorted(tree.rglob("*")):
        info = path.lstat()
        device = stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
        stats[path.relative_to(tree).as_posix()] = (
            info.st_uid, info.st_gid, info.st_mode, info.st_rdev if device else 0)
    report = {
        "euid": os.geteuid(),
        "uid_map": open("/proc/self/uid_map").read().split(),
        "diffs": diffs,
        "changes": [[(c.path, str(c.kind)) for c in store.changes(l.id)] for l in (base, child)],
        "made": [(c.path, str(c.kind)) for c in store.changes(made.id)],
        "check": [str(problem) for problem in store.check(contents=True)],
        "dirs": [store.driver.layer_dir(l.id) for l in (base, child, made)],
        "stats": stats,
        "status": dict(store.status()),
    }
    store.delete(made.id)  # files of subordinate owners, removed from inside
    report["after_delete"] = [layer.id for layer in store.layers()]
    print(json.dumps(report))
"""


def test_a_store_in_a_user_namespace_matches_a_root_store(
    subid_user: SubidUser, engine: Engine, tmp_path: Path
) -> None:
    user = subid_user
    base, child = multi_owner_layer(), owner_change_layer()
    blobs = _readable_blobs(user.work / f"blobs-{engine.name}", base, child)
    store_root = user.work / "home" / f"store-{engine.name}"
    done = _as(
        user.name, user.work, "-m", "layerstore", "unshare", "--", _PYTHON, "-c", _IN_NAMESPACE,
        str(store_root), engine.name, str(blobs / "base.tar"), str(blobs / "child.tar"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["euid"] == 0
    assert report["uid_map"][:3] == ["0", str(user.uid), "1"]
    assert report["uid_map"][3:5] == ["1", str(user.uid_start)]
    assert report["status"]["Ownership"].startswith("user namespace (uids 0->")
    assert [bytes.fromhex(diff) for diff in report["diffs"]] == [base, child]
    assert report["check"] == []
    assert report["made"] == []

    with LayerStore(tmp_path / "root-store", driver="vfs", engine=engine) as store:
        root_base, _ = store.put(base)
        root_child, _ = store.put(child, parent=root_base.id)
        expected = [
            [[change.path, str(change.kind)] for change in store.changes(layer.id)]
            for layer in (root_base, root_child)
        ]
    devices = {f"/{name}" for name in DEVICES}
    # The child changes only owners and modes: seen as a root store sees it.
    assert report["changes"][1] == expected[1]
    assert report["changes"][0] == [c for c in expected[0] if c[0] not in devices]
    assert not any(c[0] in devices for c in report["changes"][0])

    # Owners and modes as the tars say, seen from inside (the copy of the child's tree).
    wanted = expected_stats(base)
    wanted.update(
        {name: value for name, value in expected_stats(child).items() if name not in ("etc", "bin")}
    )
    for name in DEVICES:
        del wanted[name]
    got = {name: tuple(value) for name, value in report["stats"].items()}
    assert got == wanted

    # On the host: the owners rootless podman gives them (0 -> the user, n -> start + n - 1).
    tree = Path(report["dirs"][0])

    def host(uid: int, gid: int) -> tuple[int, int]:
        return (
            user.uid if uid == 0 else user.uid_start + uid - 1,
            user.gid if gid == 0 else user.gid_start + gid - 1,
        )

    for name in (
        "etc/shadow",
        "home/user",
        "home/user/notes",
        "etc/hostname",
        "nobody",
        "bin/wall",
    ):
        info = (tree / name).lstat()
        uid, gid, mode, _ = expected_stats(base)[name]
        assert (info.st_uid, info.st_gid) == host(uid, gid), name
        assert info.st_mode == mode, name
    assert report["after_delete"] == [report["dirs"][i].rsplit("/", 1)[1] for i in (0, 1)]
    assert not Path(report["dirs"][2]).exists()


def test_podman_store_in_the_namespace_is_the_users_podman_store(subid_user: SubidUser) -> None:
    home = subid_user.work / "home"
    done = _as(
        subid_user.name, subid_user.work, "-m", "layerstore", "unshare", "--", _PYTHON, "-m",
        "layerstore", "--podman-store", "--driver", "vfs", "status", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["Root"] == str(home / ".local/share/containers/storage")
    assert facts["Ownership"].startswith("user namespace")
    shutil.rmtree(home / ".local", ignore_errors=True)


def test_without_ranges_the_error_says_why(subid_user: SubidUser) -> None:
    # nobody has no subordinate ids: unshare refuses, naming the file and how to add some.
    done = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", _PYTHON, "-m",
         "layerstore", "unshare", "--", "true"],
        env={"PYTHONPATH": str(subid_user.work / "py"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no range for it in /etc/subuid" in done.stderr
    assert "usermod --add-subuids" in done.stderr


def test_status_outside_the_namespace_says_how_to_get_one(subid_user: SubidUser) -> None:
    script = (
        "import json, sys; from layerstore import LayerStore\n"
        "with LayerStore(sys.argv[1], driver='vfs') as s: print(json.dumps(dict(s.status())))"
    )
    store = subid_user.work / "home" / "plain-store"
    done = _as(subid_user.name, subid_user.work, "-c", script, str(store))
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["Ownership"] == "unprivileged"
    assert "layerstore unshare -- COMMAND" in facts["Ownership because"]
    if stat.S_ISDIR(store.stat().st_mode):
        shutil.rmtree(store)


def whiteout_layer() -> bytes:
    """A child of :func:`multi_owner_layer` that deletes a file and makes a directory opaque."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _member(tar, "etc", tarfile.DIRTYPE, 0o755)
        _member(tar, "etc/.wh.hostname")
        _member(tar, "home", tarfile.DIRTYPE, 0o755)
        _member(tar, "home/.wh..wh..opq")
        _member(tar, "home/new", mode=0o640, owner=(1000, 2000), data=b"new\n")
    return buffer.getvalue()


# Runs inside `layerstore unshare`: overlay, if the kernel mounts it in the namespace.
_OVERLAY = r"""
import json, os, sys
from pathlib import Path
from layerstore import LayerStore
root, engine, base_path, child_path = sys.argv[1:5]
with LayerStore(root, engine=engine) as store:
    facts = dict(store.status())
    if store.driver.name != "overlay":
        print(json.dumps({"driver": store.driver.name, "why": facts["Driver chosen because"]}))
        sys.exit(0)
    base, _ = store.put(open(base_path, "rb").read())
    child, _ = store.put(open(child_path, "rb").read(), parent=base.id)
    diffs = []
    for layer in (base, child):
        with store.diff(layer.id, compression="none") as stream:
            diffs.append(stream.read().hex())
    merged = Path(store.mount(child.id))
    tree = {}
    for path in sorted(merged.rglob("*")):
        info = path.lstat()
        tree[path.relative_to(merged).as_posix()] = (info.st_uid, info.st_gid, info.st_mode)
    mounts = [line.split() for line in open("/proc/self/mounts")]
    options = [fields[3] for fields in mounts if fields[1] == str(merged)]
    store.unmount(child.id)
    print(json.dumps({
        "driver": store.driver.name,
        "why": facts["Driver chosen because"],
        "diffs": diffs,
        "tree": tree,
        "options": options,
        "changes": [(c.path, str(c.kind)) for c in store.changes(child.id)],
        "check": [str(problem) for problem in store.check(contents=True)],
    }))
"""


def test_overlay_in_the_namespace_matches_a_root_store(
    subid_user: SubidUser, engine: Engine, tmp_path: Path
) -> None:
    user = subid_user
    base, child = multi_owner_layer(), whiteout_layer()
    blobs = _readable_blobs(user.work / f"overlay-blobs-{engine.name}", base, child)
    store_root = user.work / "home" / f"overlay-store-{engine.name}"
    done = _as(
        user.name, user.work, "-m", "layerstore", "unshare", "--", _PYTHON, "-c", _OVERLAY,
        str(store_root), engine.name, str(blobs / "base.tar"), str(blobs / "child.tar"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    if report["driver"] != "overlay":
        pytest.skip(f"no overlay in a user namespace here: {report['why']}")
    assert "userxattr" in report["why"]
    assert "userxattr" in report["options"][0].split(",")
    assert [bytes.fromhex(diff) for diff in report["diffs"]] == [base, child]
    assert report["check"] == []
    if not overlay_usable():
        pytest.skip("no overlay for root here to compare with")
    with LayerStore(tmp_path / "root-store", driver="overlay", engine=engine) as store:
        root_base, _ = store.put(base)
        root_child, _ = store.put(child, parent=root_base.id)
        expected_changes = [[c.path, str(c.kind)] for c in store.changes(root_child.id)]
        merged = Path(store.mount(root_child.id))
        try:
            expected_tree = {
                path.relative_to(merged).as_posix(): (
                    path.lstat().st_uid, path.lstat().st_gid, path.lstat().st_mode
                )
                for path in sorted(merged.rglob("*"))
                if path.relative_to(merged).as_posix() not in DEVICES
            }  # fmt: skip
        finally:
            store.unmount(root_child.id)
    assert report["changes"] == expected_changes
    assert "etc/hostname" not in report["tree"]
    assert "home/user" not in report["tree"]
    assert report["tree"]["home/new"] == [1000, 2000, stat.S_IFREG | 0o640]
    assert {name: tuple(value) for name, value in report["tree"].items()} == expected_tree


def test_outside_the_namespace_the_error_says_to_go_in(subid_user: SubidUser) -> None:
    user = subid_user
    blob = user.work / "outside-base.tar"
    blob.write_bytes(multi_owner_layer(locked=False))  # no mode 000: owners shut us out
    blob.chmod(0o644)
    store = user.work / "home" / "outside-store"
    made = _as(
        user.name, user.work, "-m", "layerstore", "unshare", "--", _PYTHON, "-m", "layerstore",
        "--root", str(store), "--driver", "vfs", "import", str(blob),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    layer = made.stdout.split()[0]
    inside = _as(
        user.name, user.work, "-m", "layerstore", "unshare", "--", _PYTHON, "-m", "layerstore",
        "--root", str(store), "changes", layer,
    )  # fmt: skip
    assert inside.returncode == 0, inside.stderr
    assert "/home/user/notes" in inside.stdout
    outside = _as(user.name, user.work, "-m", "layerstore", "--root", str(store), "changes", layer)
    assert outside.returncode == 1
    assert "one of your subordinate ids" in outside.stderr
    assert "layerstore unshare" in outside.stderr


def test_unshare_gives_the_commands_exit_status(subid_user: SubidUser) -> None:
    for script, status in (("exit 7", 7), ("kill -TERM $$", 128 + 15), ("id -u", 0)):
        done = _as(subid_user.name, subid_user.work, "-m", "layerstore", "unshare", "--",
                   "/bin/sh", "-c", script)  # fmt: skip
        assert done.returncode == status, (script, done.stderr)
    done = _as(subid_user.name, subid_user.work, "-m", "layerstore", "unshare", "--", "/bin/sh",
               "-c", "id -u; cat /proc/self/uid_map")  # fmt: skip
    assert done.stdout.split()[:4] == ["0", "0", str(subid_user.uid), "1"]
