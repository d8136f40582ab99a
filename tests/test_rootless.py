"""Stores kept without root: containers/storage's force_mask and ignore_chown_errors
(docs/rootless.md), over both engines, as root and as an unprivileged user."""

from __future__ import annotations

import contextlib
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
from pathlib import Path

import pytest

from layerstore import LayerStore, NotSupported
from layerstore.drivers.override import OVERRIDE_XATTR, parse_override
from layerstore.engines import Engine

OWNERS = ((0, 0), (1000, 2000), (33, 33), (65534, 65534))


def _member(
    tar: tarfile.TarFile,
    name: str,
    kind: bytes = tarfile.REGTYPE,
    mode: int = 0o644,
    owner: tuple[int, int] = (0, 0),
    data: bytes = b"",
    **fields: object,
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, (info.uid, info.gid), info.mtime = kind, mode, owner, 1_600_000_000
    for field, value in fields.items():
        setattr(info, field, value)
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def multi_owner_layer(locked: bool = True) -> bytes:
    """A layer with setuid files, devices, mode-000 files and directories (unless not
    ``locked``), several owners, hard links and symlinks (what Fedora's and Debian's base
    images hold)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _member(tar, "etc", tarfile.DIRTYPE, 0o755)
        _member(tar, "etc/shadow", mode=0o000 if locked else 0o600, data=b"root:*:19000::::::\n")
        if locked:
            _member(tar, "etc/locked", tarfile.DIRTYPE, 0o000)
            _member(tar, "etc/locked/inside", mode=0o644, data=b"behind a mode-000 directory\n")
            _member(tar, "etc/search-only", tarfile.DIRTYPE, 0o100)
            _member(tar, "etc/search-only/key", mode=0o600, data=b"k" * 700)
            _member(tar, "etc/shadow-", tarfile.LNKTYPE, 0o000, linkname="etc/shadow")
            _member(tar, "bin/run-only", mode=0o100, data=b"#!/bin/true\n")
            _member(tar, "var", tarfile.DIRTYPE, 0o755)
            _member(tar, "var/write-only", mode=0o200, data=b"a log nobody reads\n")
        _member(tar, "etc/hostname", mode=0o644, owner=(33, 33), data=b"box\n")
        _member(tar, "bin", tarfile.DIRTYPE, 0o755)
        _member(tar, "bin/su", mode=0o4755, data=b"#!su\n")
        _member(tar, "bin/wall", mode=0o2755, owner=(0, 5), data=b"#!wall\n")
        _member(tar, "bin/again", tarfile.LNKTYPE, 0o4755, linkname="bin/su")
        _member(tar, "bin/sh", tarfile.SYMTYPE, 0o777, linkname="dash")
        _member(tar, "home", tarfile.DIRTYPE, 0o755)
        _member(tar, "home/user", tarfile.DIRTYPE, 0o700, owner=(1000, 2000))
        _member(tar, "home/user/notes", mode=0o600, owner=(1000, 2000), data=b"x" * 1500)
        _member(tar, "tmp", tarfile.DIRTYPE, 0o1777)
        _member(tar, "dev", tarfile.DIRTYPE, 0o755)
        _member(tar, "dev/null", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3)
        _member(tar, "dev/sda", tarfile.BLKTYPE, 0o660, owner=(0, 6), devmajor=8, devminor=0)
        _member(tar, "dev/initctl", tarfile.FIFOTYPE, 0o600)
        _member(tar, "nobody", mode=0o640, owner=(65534, 65534), data=b"")
    return buffer.getvalue()


def expected_stats(layer: bytes) -> dict[str, tuple[int, int, int, int]]:
    """(uid, gid, st_mode, rdev) of every member as the tar says; hard links as their target."""
    found: dict[str, tuple[int, int, int, int]] = {}
    kinds = {
        tarfile.REGTYPE: stat.S_IFREG,
        tarfile.DIRTYPE: stat.S_IFDIR,
        tarfile.SYMTYPE: stat.S_IFLNK,
        tarfile.CHRTYPE: stat.S_IFCHR,
        tarfile.BLKTYPE: stat.S_IFBLK,
        tarfile.FIFOTYPE: stat.S_IFIFO,
    }
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        for member in tar:
            name = member.name.rstrip("/")
            if member.type == tarfile.LNKTYPE:
                found[name] = found[member.linkname]
                continue
            rdev = os.makedev(member.devmajor, member.devminor) if member.isdev() else 0
            found[name] = (member.uid, member.gid, kinds[member.type] | member.mode, rdev)
    return found


def recorded_stats(tree: Path) -> dict[str, tuple[int, int, int, int]]:
    """What the override xattrs of a force_mask tree say (symlinks: their lstat)."""
    found = {}
    for path in sorted(tree.rglob("*")):
        name = path.relative_to(tree).as_posix()
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue  # Go records nothing on a symlink
        recorded = parse_override(os.getxattr(path, OVERRIDE_XATTR, follow_symlinks=False))
        found[name] = (recorded.uid, recorded.gid, recorded.mode, recorded.device)
    return found


def test_force_mask_apply(tmp_path: Path, engine: Engine) -> None:
    layer = multi_owner_layer()
    with LayerStore(tmp_path / "store", driver="vfs", engine=engine, force_mask=0o700) as store:
        applied, _ = store.put(layer)
        tree = Path(store.driver.layer_dir(applied.id))
        expected = {
            name: value
            for name, value in expected_stats(layer).items()
            if not stat.S_ISLNK(value[2])
        }
        assert recorded_stats(tree) == expected
        # On disk: the forced mode, nothing chowned, devices and fifos as empty files.
        for path in tree.rglob("*"):
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                continue
            assert stat.S_IMODE(info.st_mode) == 0o700, path
            assert stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode), path
            assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid()), path
        assert (tree / "etc/shadow").read_bytes() == b"root:*:19000::::::\n"
        root = parse_override(os.getxattr(tree, OVERRIDE_XATTR))
        assert (root.uid, root.gid, root.mode) == (0, 0, stat.S_IFDIR | 0o755)
        assert applied.uids == (0, 33, 1000, 65534)
        with store.diff(applied.id, compression="none") as stream:
            assert stream.read() == layer


def test_force_mask_options(tmp_path: Path, engine: Engine) -> None:
    for value, mode in (("private", 0o700), ("shared", 0o755), ("0750", 0o750), (0o711, 0o711)):
        with LayerStore(tmp_path / "s", driver="vfs", engine=engine, force_mask=value) as store:
            assert store.force_mask == mode
    for bad in ("0644", "rwx", 0o10000, -1, "0"):
        with pytest.raises(ValueError, match="force_mask"):
            LayerStore(tmp_path / "s", driver="vfs", engine=engine, force_mask=bad)
    if os.geteuid() == 0 and "overlay" in Path("/proc/filesystems").read_text():
        with pytest.raises(NotSupported, match="force_mask"):
            LayerStore(tmp_path / "o", driver="overlay", engine=engine, force_mask=0o700)


def owner_change_layer() -> bytes:
    """A child layer that changes only owners and modes: invisible on disk under force_mask."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _member(tar, "etc", tarfile.DIRTYPE, 0o755)
        _member(tar, "etc/shadow", mode=0o640, owner=(0, 42), data=b"root:*:19000::::::\n")
        _member(tar, "bin", tarfile.DIRTYPE, 0o755)
        _member(tar, "bin/su", mode=0o755, data=b"#!su\n")
    return buffer.getvalue()


def under_locked_layer() -> bytes:
    """A layer writing below the base's mode-000 and 0100 directories, and listing one again."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _member(tar, "etc/locked/added", mode=0o640, data=b"added below a mode-000 directory\n")
        _member(tar, "etc/locked/.wh.inside", mode=0o000)
        _member(tar, "etc/search-only", tarfile.DIRTYPE, 0o100)
        _member(tar, "etc/search-only/more", mode=0o000, data=b"more")
    return buffer.getvalue()


# What runs as the unprivileged user: prints JSON for the test to compare with a root store.
_AS_USER = r"""
import json, os, sys
from layerstore import LayerStore
root, engine, option, base_path, child_path, under_path = sys.argv[1:7]
options = {"force_mask": "private"} if option == "force_mask" else {"ignore_chown_errors": True}
LOCKED = ("etc/shadow", "etc/shadow-", "etc/locked", "etc/search-only", "etc/search-only/key",
          "bin/run-only", "var/write-only")
def modes(store, layers):
    # The st_mode of the entries that lock their owner out, by lstat alone (their directories
    # are searchable); the root of the test looks below etc/locked at the end.
    return [[os.lstat(os.path.join(store.driver.layer_dir(l.id), p)).st_mode for p in LOCKED]
            for l in layers]
with LayerStore(root, driver="vfs", engine=engine, **options) as store:
    base, _ = store.put(open(base_path, "rb").read())
    snapshots = [modes(store, [base])]
    child, _ = store.put(open(child_path, "rb").read(), parent=base.id)
    snapshots.append(modes(store, [base]))
    made = store.create(parent=child.id)  # the vfs copy of a tree with mode-000 entries
    snapshots.append(modes(store, [base]))
    grandchild, _ = store.put(open(under_path, "rb").read(), parent=made.id)
    diffs = []
    for layer in (base, child, grandchild):
        with store.diff(layer.id, compression="none") as stream:
            diffs.append(stream.read().hex())
        snapshots.append(modes(store, [base]))
    with store.diff(made.id, from_=base.id, compression="none") as stream:
        tree_diff = stream.read().hex()
    empty = store.create()  # against another layer than the parent: a diff from the trees
    with store.diff(base.id, from_=empty.id, compression="none") as stream:
        whole_diff = stream.read().hex()
    snapshots.append(modes(store, [base]))
    changes = [[(c.path, str(c.kind)) for c in store.changes(l.id)]
               for l in (base, child, grandchild)]
    sizes = [store.diff_size(l.id) for l in (base, child, made)]
    snapshots.append(modes(store, [base]))
    check = [str(problem) for problem in store.check(contents=True)]
    snapshots.append(modes(store, [base]))
    print(json.dumps({
        "snapshots": snapshots,
        "trees": modes(store, [base, child, made, grandchild]),
        "tree_diffs": [tree_diff, whole_diff],
        "sizes": sizes,
        "uid": os.geteuid(),
        "diffs": diffs,
        "changes": changes,
        "made": [(c.path, str(c.kind)) for c in store.changes(made.id)],
        "check": check,
        "dirs": [store.driver.layer_dir(l.id) for l in (base, child, made, grandchild)],
    }))
"""


_DEPENDENCIES = ("filelock", "zstandard", "tqdm", "urllib3", "certifi")


def user_workspace(tmp_path_factory: pytest.TempPathFactory, prefix: str, user: str) -> Path:
    """A directory ``user`` can read, holding a copy of layerstore and its dependencies in
    ``py`` (this interpreter's may sit where it cannot read) and a ``home`` it owns."""
    work = tmp_path_factory.mktemp(prefix)
    work.chmod(0o755)
    packages = work / "py"
    packages.mkdir()
    import layerstore

    shutil.copytree(Path(layerstore.__file__).parent, packages / "layerstore")
    for dependency in _DEPENDENCIES:
        module = __import__(dependency)
        shutil.copytree(Path(module.__file__).parent, packages / dependency)
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    # tmp_path_factory's base directory may be private to root: walk up and open the path.
    for parent in work.parents:
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o011)
    home = work / "home"
    home.mkdir()
    shutil.chown(home, user, user)
    return work


@pytest.fixture(scope="module")
def unprivileged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A new user (removed afterwards) and a directory it owns holding a copy of layerstore
    and its dependencies (this interpreter's may sit where it cannot read)."""
    if os.geteuid() != 0:
        pytest.skip("making an unprivileged user needs root")
    if shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.skip("useradd or setpriv is missing: apt-get install passwd util-linux")
    name = f"lsrl{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/false", name], check=True)
    try:
        yield name, user_workspace(tmp_path_factory, "unprivileged", name)
    finally:
        subprocess.run(["userdel", name], check=False)


def run_as(user: str, work: Path, *arguments: str, script: str = _AS_USER) -> str:
    command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
    environment = {"PYTHONPATH": str(work / "py"), "HOME": str(work / "home"), "PATH": "/usr/bin"}
    # sys.executable may be where the user cannot read it: the system's python3 of this version.
    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if not os.access(python, os.X_OK):
        pytest.skip(f"{python} is missing: the unprivileged user needs an interpreter")
    done = subprocess.run(
        [*command, python, "-c", script, *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


_PUT_WARNINGS = r"""
import json, sys, warnings
from layerstore import LayerStore, OwnersLostWarning
root, engine, option, blob = sys.argv[1:5]
options = {"": {}, "ignore": {"ignore_chown_errors": True}, "mask": {"force_mask": 0o700}}
with LayerStore(root, driver="vfs", engine=engine, **options[option]) as store:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer, _ = store.put(open(blob, "rb").read())
        chain = store.put_chain([open(blob, "rb").read()], parent=layer.id)
print(json.dumps([str(w.message) for w in caught if w.category is OwnersLostWarning]))
"""


@pytest.mark.parametrize("option", ["", "ignore", "mask"])
def test_an_unprivileged_put_says_when_owners_are_lost(
    unprivileged: tuple[str, Path], engine: Engine, option: str
) -> None:
    """Without root, and asked for neither option, a put (and each layer of a chain) warns
    that the tar's owners became the user's; with ignore_chown_errors or force_mask it is
    silent (the caller chose)."""
    user, work = unprivileged
    blob = work / f"warn-{engine.name}-{option or 'plain'}.tar"
    blob.write_bytes(multi_owner_layer())
    blob.chmod(0o644)
    store = work / "home" / f"warn-{engine.name}-{option or 'plain'}"
    found = json.loads(run_as(user, work, str(store), engine.name, option, str(blob),
                              script=_PUT_WARNINGS))  # fmt: skip
    if option:
        assert found == []
    else:
        assert len(found) == 2
        assert "uids [0, " in found[0]
        assert "force_mask keeps them" in found[0]


@pytest.mark.parametrize("option", ["force_mask", "ignore_chown_errors"])
def test_unprivileged_store_matches_a_root_store(
    unprivileged: tuple[str, Path], engine: Engine, option: str, tmp_path: Path
) -> None:
    user, work = unprivileged
    base, child, under = multi_owner_layer(), owner_change_layer(), under_locked_layer()
    blobs = work / f"blobs-{engine.name}-{option}"
    blobs.mkdir()
    (blobs / "base.tar").write_bytes(base)
    (blobs / "child.tar").write_bytes(child)
    (blobs / "under.tar").write_bytes(under)
    blobs.chmod(0o755)
    store_root = work / "home" / f"store-{engine.name}-{option}"
    report = json.loads(
        run_as(user, work, str(store_root), engine.name, option, str(blobs / "base.tar"),
               str(blobs / "child.tar"), str(blobs / "under.tar"))
    )  # fmt: skip
    assert report["uid"] != 0
    assert [bytes.fromhex(diff) for diff in report["diffs"]] == [base, child, under]
    assert report["check"] == []
    with LayerStore(tmp_path / "root-store", driver="vfs", engine=engine) as store:
        root_base, _ = store.put(base)
        root_child, _ = store.put(child, parent=root_base.id)
        root_made = store.create(parent=root_child.id)
        root_grandchild, _ = store.put(under, parent=root_made.id)
        root_layers = (root_base, root_child, root_made, root_grandchild)
        expected = [
            [[change.path, str(change.kind)] for change in store.changes(layer.id)]
            for layer in (root_base, root_child, root_grandchild)
        ]
        expected_made = [[c.path, str(c.kind)] for c in store.changes(root_made.id)]
        expected_sizes = [store.diff_size(layer.id) for layer in root_layers[:3]]
        root_trees = [_tree_modes(Path(store.driver.layer_dir(layer.id))) for layer in root_layers]
        with store.diff(root_made.id, from_=root_base.id, compression="none") as stream:
            root_tree_diffs = [stream.read()]
        empty = store.create()
        with store.diff(root_base.id, from_=empty.id, compression="none") as stream:
            root_tree_diffs.append(stream.read())
    tree_diffs = [bytes.fromhex(diff) for diff in report["tree_diffs"]]
    trees = [_tree_modes(Path(directory)) for directory in report["dirs"]]
    tar_modes = expected_stats(base)
    if option == "force_mask":
        # Owners and modes as the tar says, read through the override xattr.
        assert report["changes"] == expected
        assert report["made"] == expected_made == []
        tree = Path(report["dirs"][0])
        assert recorded_stats(tree) == {
            name: value
            for name, value in expected_stats(base).items()
            if not stat.S_ISLNK(value[2])
        }
        copied = recorded_stats(Path(report["dirs"][2]))
        assert copied["etc/shadow"] == (0, 42, stat.S_IFREG | 0o640, 0)
        assert copied["dev/sda"] == (0, 6, stat.S_IFBLK | 0o660, os.makedev(8, 0))
        assert [_contents(diff) for diff in tree_diffs] == [
            _contents(diff) for diff in root_tree_diffs
        ]
        on_disk = {name: stat.S_IFMT(value[2]) | 0o700 for name, value in tar_modes.items()}
    else:
        # Owners squashed to the user, devices left out (they need root): only the base's
        # device paths are missing, and the child's owner-only changes are not seen.
        devices = {"/dev/null", "/dev/sda"}
        assert [change for change in report["changes"][0] if change[0] not in devices] == [
            change for change in expected[0] if change[0] not in devices
        ]
        assert report["made"] == expected_made == []
        assert report["changes"][2] == expected[2]  # below the mode-000 directory
        tree = Path(report["dirs"][0])
        assert (tree / "home/user/notes").stat().st_uid == report["uid"]
        assert not (tree / "dev/null").exists()
        # Every tree (the vfs copies too) holds the modes the tars gave, mode 000 included.
        for found, wanted in zip(trees, root_trees, strict=True):
            assert found == {
                name: mode for name, mode in wanted.items() if "/" + name not in devices
            }
        # Tree diffs hold the contents and modes a root store's do (owners aside).
        for found_diff, wanted_diff in zip(tree_diffs, root_tree_diffs, strict=True):
            assert _contents(found_diff) == [
                member for member in _contents(wanted_diff) if "/" + member[0] not in devices
            ]
        assert report["sizes"][1:] == expected_sizes[1:]
        on_disk = {name: value[2] for name, value in tar_modes.items()}
    # After every operation the entries that lock their owner out keep the tar's modes.
    locked = [
        "etc/shadow", "etc/shadow-", "etc/locked", "etc/search-only", "etc/search-only/key",
        "bin/run-only", "var/write-only",
    ]  # fmt: skip
    assert on_disk["etc/shadow"] & 0o777 == (0o700 if option == "force_mask" else 0)
    for snapshot in report["snapshots"]:
        assert snapshot == [[on_disk[name] for name in locked]]
    for found in trees[:3]:
        assert found["etc/locked/inside"] == on_disk["etc/locked/inside"]
        assert found["etc/locked"] == on_disk["etc/locked"]
    assert not (Path(store_root) / "vfs" / "unlock" / f"{report['dirs'][0]}.modes").exists()
    assert not list((Path(store_root) / "vfs" / "unlock").glob("*.modes"))


def _tree_modes(tree: Path) -> dict[str, int]:
    """st_mode of ``tree`` (as ".") and every entry below it (read as root)."""
    found = {path.relative_to(tree).as_posix(): path.lstat().st_mode for path in tree.rglob("*")}
    return {".": tree.lstat().st_mode, **found}


def _contents(data: bytes) -> list[tuple[object, ...]]:
    """Name, type, mode, size, link target and bytes of every member of a tar."""
    found: list[tuple[object, ...]] = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            extracted = tar.extractfile(member) if member.isreg() else None
            body = extracted.read() if extracted is not None else b""
            found.append((member.name, member.type, member.mode, member.size, member.linkname,
                          body))  # fmt: skip
    return found


def test_the_store_owner_is_not_told_to_be_another_user() -> None:
    from layerstore.cli.common import os_error

    denied = PermissionError(13, "Permission denied", "/store/vfs/dir/x/etc/locked")
    assert "run as a user who may write the store" in os_error(denied)
    message = os_error(denied, owner=True)
    assert "run as a user" not in message
    assert "layerstore check" in message


def _members(data: bytes) -> list[tuple[object, ...]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [
            (m.name, m.type, m.mode, m.uid, m.gid, m.size, m.linkname, m.devmajor, m.devminor,
             m.mtime, sorted(m.pax_headers.items()))
            for m in tar
        ]  # fmt: skip


def test_tree_diff_reads_the_override_xattr(tmp_path: Path, engine: Engine) -> None:
    """A diff built from the trees (against a grandparent: no tar-split to use) shows owners,
    modes and devices as the tar says, without the xattr, as a root store's does."""
    base, child = multi_owner_layer(), owner_change_layer()
    diffs = []
    for label, options in (("masked", {"force_mask": 0o700}), ("plain", {})):
        with LayerStore(tmp_path / label, driver="vfs", engine=engine, **options) as store:
            first, _ = store.put(base)
            second, _ = store.put(child, parent=first.id)
            third = store.create(parent=second.id)
            with store.diff(third.id, from_=first.id, compression="none") as stream:
                diffs.append(_members(stream.read()))
            empty = store.create()  # against another layer than the parent: from the trees
            with store.diff(first.id, from_=empty.id, compression="none") as stream:
                whole = _members(stream.read())
            assert not any(OVERRIDE_XATTR in str(member[-1]) for member in whole)
            diffs.append(whole)
    assert diffs[0] == diffs[2]
    assert diffs[1] == diffs[3]
    assert any(member[0] == "dev/sda" and member[7:9] == (8, 0) for member in diffs[1])
    assert ("etc/shadow", tarfile.REGTYPE, 0, 0, 0) in [member[:5] for member in diffs[1]]


def _locked_tree(root: Path) -> dict[str, int]:
    """A tree whose modes shut an unprivileged owner out; returns its modes."""
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "inside").write_bytes(b"inside")
    (root / "secret").write_bytes(b"secret")
    os.link(root / "secret", root / "again")
    (root / "secret").chmod(0o000)
    (root / "write-only").write_bytes(b"w")
    (root / "write-only").chmod(0o200)
    (root / "dir").chmod(0o000)
    return _tree_modes(root)


def _as_root_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Root skips the grants (it needs none): pretend to be a user to exercise them."""
    if os.geteuid() != 0:
        pytest.skip("the grants are checked by root pretending to be a user")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


def test_grants_are_shared_and_the_last_reader_restores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from layerstore.drivers.unlock import unlocked

    tree, state = tmp_path / "tree", str(tmp_path / "state")
    modes = _locked_tree(tree)
    _as_root_now(monkeypatch)
    with unlocked(str(tree), state, "layer") as first:
        assert first[(tree.stat().st_dev, (tree / "secret").stat().st_ino)] == stat.S_IFREG
        assert stat.S_IMODE((tree / "dir").stat().st_mode) == 0o500
        assert stat.S_IMODE((tree / "write-only").stat().st_mode) == 0o600
        # A second reader (another open file description: flock counts it as another process)
        # shares the grant and sees the same original modes.
        second = contextlib.ExitStack()
        assert dict(second.enter_context(unlocked(str(tree), state, "layer"))) == dict(first)
    with second:
        # The first reader left: the second still reads.
        assert stat.S_IMODE((tree / "dir").stat().st_mode) == 0o500
        assert (tree / "dir" / "inside").read_bytes() == b"inside"
    assert _tree_modes(tree) == modes
    assert not (tmp_path / "state" / "layer.modes").exists()


_KILLED_READER = r"""
import os, sys
os.geteuid = lambda: 1000  # as the store's unprivileged owner (the test runs as root)
from layerstore.drivers.unlock import unlocked
with unlocked(sys.argv[1], sys.argv[2], "layer"):
    os.kill(os.getpid(), 9)
"""


def test_a_killed_readers_grant_is_found_and_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from layerstore.drivers.unlock import abandoned, repair, unlocked

    tree, state = tmp_path / "tree", tmp_path / "state"
    modes = _locked_tree(tree)
    if os.geteuid() != 0:
        pytest.skip("the grants are checked by root pretending to be a user")
    import layerstore

    environment = {**os.environ, "PYTHONPATH": str(Path(layerstore.__file__).parent.parent)}

    def killed_reader() -> None:
        done = subprocess.run(
            [sys.executable, "-c", _KILLED_READER, str(tree), str(state)],
            env=environment,
            check=False,
        )
        assert done.returncode == -9
        assert _tree_modes(tree) != modes  # left widened: the journal says how to undo it

    killed_reader()
    assert abandoned(str(state)) == ["layer"]
    # A torn last line (a reader killed while writing it) is skipped, not misread.
    with open(state / "layer.modes", "ab") as journal:
        journal.write(b"0 40500 12")
    assert repair(str(state), "layer")
    assert _tree_modes(tree) == modes
    assert abandoned(str(state)) == []
    assert not repair(str(state), "layer")
    # The next reader finds an abandoned grant too, and starts from the tar's modes.
    killed_reader()
    _as_root_now(monkeypatch)
    with unlocked(str(tree), str(state), "layer") as grants:
        assert grants[(tree.stat().st_dev, (tree / "dir").stat().st_ino)] == stat.S_IFDIR
    assert _tree_modes(tree) == modes


def test_check_reports_and_repair_restores_a_killed_readers_grant(
    tmp_path: Path, engine: Engine
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the grants are checked by root pretending to be a user")
    import layerstore

    with LayerStore(tmp_path / "store", driver="vfs", engine=engine) as store:
        layer, _ = store.put(multi_owner_layer())
        tree = store.driver.layer_dir(layer.id)
        state = store.driver.unlock_state
    modes = _tree_modes(Path(tree))
    environment = {**os.environ, "PYTHONPATH": str(Path(layerstore.__file__).parent.parent)}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_READER.replace('"layer"', repr(layer.id)), tree, state],
        env=environment,
        check=False,
    )
    assert done.returncode == -9
    assert _tree_modes(Path(tree)) != modes
    with LayerStore(tmp_path / "store", driver="vfs", engine=engine) as store:
        assert [problem.kind for problem in store.check(contents=True)] == ["granted-modes"]
        assert [problem.kind for problem in store.repair()] == ["granted-modes"]
        assert store.check(contents=True) == []
    assert _tree_modes(Path(tree)) == modes
