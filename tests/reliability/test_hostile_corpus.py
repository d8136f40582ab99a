"""Hostile input: a corpus of malicious layer blobs through both engines, both drivers and the CLI.

Each blob is refused with InvalidLayerData or applied with everything inside the layer; a canary
directory outside the store, and the parent layer, are untouched; no partial layer remains (no
record, no driver directory, no tar-split or temporary file); the store goes on working. The
decompression bombs and the blobs of many tiny entries run in a child process whose peak memory
(VmHWM) is measured; the bombs land on a small tmpfs so that they cannot fill the real disk.

Figures for the report: ``pytest tests/reliability/test_hostile_corpus.py -rP`` prints each
child's peak memory; ``--long`` makes the bombs and the many-entries blobs bigger.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layerstore import InvalidLayerData, LayerStore

from ..manifest import tree_manifest
from ..tarballs import Entry, build_tar
from .hostile_blobs import (
    CASES,
    COMPRESSORS,
    Case,
    many_entries,
    meta_header_bomb,
    trailing_bomb,
    zero_bomb,
)

REPO = Path(__file__).resolve().parents[2]
ROOT = os.geteuid() == 0
CANARY_TEXT = b"precious"
PEAK_RSS_LIMIT_MIB = 200


# -- fixtures and checks --------------------------------------------------------------------------


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A directory outside the store that no layer may touch (nor read into a diff)."""
    directory = tmp_path / "canary"
    directory.mkdir()
    (directory / "file").write_bytes(CANARY_TEXT)
    (directory / "subdir").mkdir()
    (directory / "subdir" / "inner").write_bytes(CANARY_TEXT + b" too")
    return directory


def base_layer() -> bytes:
    """The parent of every case without one of its own: what a child must not change."""
    return build_tar(
        [
            Entry(b"etc", "dir", mode=0o755),
            Entry(b"etc/passwd", "file", data=b"root:x:0:0::/root:/bin/sh\n"),
            Entry(b"subdir", "dir", mode=0o755),
            Entry(b"subdir/inner", "file", data=b"parent"),
        ]
    )


def assert_no_partial_layer(store: LayerStore, expected: set[str]) -> None:
    """Exactly the ``expected`` layers exist: records, driver data, tar-split files, nothing
    temporary or stray in the store's directories."""
    assert {layer.id for layer in store.layers()} == expected
    assert set(store.driver.layer_ids()) == expected
    records = json.loads(Path(store.layers_dir, "layers.json").read_bytes() or b"[]")
    assert {record["id"] for record in records} == expected
    assert not [record for record in records if record.get("flags", {}).get("incomplete")]
    allowed = {"layers.json", "layers.lock"}
    allowed |= {layer_id + ".tar-split.gz" for layer_id in expected} | expected
    stray = sorted(set(os.listdir(store.layers_dir)) - allowed)
    assert stray == [], f"left in {store.layers_dir}: {stray}"
    driver_root = Path(store.root, store.driver.name)
    if store.driver.name == "vfs":
        # dir/ is made with the first layer (a failed first put leaves none).
        layers_dir = driver_root / "dir"
        assert (set(os.listdir(layers_dir)) if layers_dir.is_dir() else set()) == expected
        assert set(os.listdir(driver_root)) <= {"dir"}
    else:
        assert set(os.listdir(driver_root)) - {"l"} == expected
        for link in (driver_root / "l").iterdir():
            assert link.resolve().parent.name in expected, f"a dangling short link {link}"


def assert_store_works(store: LayerStore, parent: str | None = None) -> None:
    """A good layer goes in, diffs back to its digest and goes away again."""
    layer, _ = store.put(build_tar([Entry(b"ok", "file", data=b"fine")]), parent=parent)
    assert Path(store.driver.layer_dir(layer.id), "ok").read_bytes() == b"fine"
    with store.diff(layer.id, compression="none") as stream:
        assert "sha256:" + hashlib.sha256(stream.read()).hexdigest() == layer.uncompressed_digest
    store.delete(layer.id)


def apply(store: LayerStore, blob: bytes, parent: str | None) -> tuple[str, str | None]:
    """("confined", layer id) or ("refused: <message>", None); anything else propagates."""
    try:
        layer, _ = store.put(blob, parent=parent)
    except InvalidLayerData as exc:
        return f"refused: {exc}", None
    return "confined", layer.id


def check_outcome(case: Case, outcome: str) -> None:
    if case.expect == "refused":
        assert outcome.startswith("refused: "), f"{case.name}: applied, but must be refused"
        assert case.match in outcome, f"{case.name}: {outcome!r} lacks {case.match!r}"
    elif case.expect == "confined":
        assert outcome == "confined", f"{case.name}: must be applied, but {outcome}"


def assert_diff_is_confined(store: LayerStore, layer_id: str) -> None:
    """The layer's diff reads nothing from outside it: it gives the layer's digest back, or
    refuses a layer whose files do not match its tar-split (two entries on one path)."""
    layer = store.get(layer_id)
    try:
        with store.diff(layer_id, compression="none") as stream:
            data = stream.read()
    except InvalidLayerData:
        return
    assert CANARY_TEXT not in data
    assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.uncompressed_digest


CASE_NAMES = sorted(CASES)


# -- through the API, per driver and engine -------------------------------------------------------


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_hostile_blob_through_the_api(
    store: LayerStore, canary: Path, tmp_path: Path, case_name: str
) -> None:
    case = CASES[case_name]
    parent, _ = store.put(case.parent(canary) if case.parent else base_layer())
    parent_dir = store.driver.layer_dir(parent.id)
    before = (tree_manifest(canary), tree_manifest(parent_dir), sorted(os.listdir(tmp_path)))

    outcome, layer_id = apply(store, case.build(canary), parent.id)

    check_outcome(case, outcome)
    assert (tree_manifest(canary), tree_manifest(parent_dir), sorted(os.listdir(tmp_path))) == (
        before
    )
    if layer_id is not None:
        assert_diff_is_confined(store, layer_id)
        store.delete(layer_id)
    assert_no_partial_layer(store, {parent.id})
    assert_store_works(store, parent.id)


def comparable(outcome: str) -> str:
    """An outcome as both engines must give it: the reason a decompressor gives, and how far
    it got before it noticed, belong to its library (zlib-rs or zlib, libbz2-rs or libbz2...)."""
    match = re.match(r"refused: (gzip|bzip2|xz|zstd) data is corrupt", outcome)
    return match.group(0) if match else outcome


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_both_engines_give_the_same_outcome(
    driver_name: str, canary: Path, tmp_path: Path, case_name: str
) -> None:
    """The same refusal (message included) or the same tree from both engines."""
    case = CASES[case_name]
    results = []
    for engine_name in ("native", "pure"):
        store = LayerStore(tmp_path / engine_name, driver=driver_name, engine=engine_name)
        parent, _ = store.put(case.parent(canary) if case.parent else base_layer())
        outcome, layer_id = apply(store, case.build(canary), parent.id)
        if layer_id is None:
            results.append((comparable(outcome), None, None))
            continue
        layer = store.get(layer_id)
        facts = (layer.uncompressed_digest, layer.uids, layer.gids, store.diff_size(layer_id))
        tree = tree_manifest(store.driver.layer_dir(layer_id), times=False)
        results.append((outcome, facts, tree))
    assert results[0] == results[1]


# -- through the command line ---------------------------------------------------------------------


def run_cli(root: Path, engine: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("LAYERSTORE_")
    }
    command = [sys.executable, "-m", "layerstore", "--root", str(root)]
    command += ["--run-root", str(root / "run"), "--driver", "vfs", "--engine", engine]
    return subprocess.run(
        [*command, *arguments],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_hostile_blob_through_the_cli(
    engine_name: str, canary: Path, tmp_path: Path, case_name: str
) -> None:
    """``layerstore import``: exit 1 with one line and no traceback, or the layer's id."""
    case = CASES[case_name]
    root = tmp_path / "store"
    root.mkdir()
    parent_arguments: list[str] = []
    if case.parent:
        parent_blob = tmp_path / "parent.tar"
        parent_blob.write_bytes(case.parent(canary))
        made = run_cli(root, engine_name, "import", "--name", "parent", str(parent_blob))
        assert made.returncode == 0, made.stderr
        parent_arguments = ["--parent", "parent"]
    blob = tmp_path / "hostile.blob"
    blob.write_bytes(case.build(canary))
    before = (tree_manifest(canary), sorted(os.listdir(tmp_path)))

    result = run_cli(root, engine_name, "import", *parent_arguments, str(blob))

    assert (tree_manifest(canary), sorted(os.listdir(tmp_path))) == before
    assert "Traceback" not in result.stderr
    with LayerStore(root, driver="vfs", engine=engine_name) as store:
        # What the API does with the same blob on a fresh store is what the command must do.
        reference = LayerStore(tmp_path / "reference", driver="vfs", engine=engine_name)
        reference_parent = reference.put(case.parent(canary))[0].id if case.parent else None
        expected, _ = apply(reference, case.build(canary), reference_parent)
        check_outcome(case, expected)
        kept = {store.get("parent").id} if case.parent else set()
        if expected == "confined":
            assert result.returncode == 0, result.stderr
            layer_id = result.stdout.strip()
            assert store.get(layer_id).parent == (store.get("parent").id if case.parent else "")
            store.delete(layer_id)
        else:
            assert result.returncode == 1, (result.returncode, result.stderr)
            assert result.stderr.count("\n") == 1
            assert result.stderr.startswith("layerstore")
            assert expected.removeprefix("refused: ") in result.stderr
            assert "nothing was stored" in result.stderr
        assert_no_partial_layer(store, kept)
        assert_store_works(store)


# -- bombs and floods, measured in a child process ------------------------------------------------

CHILD = r"""
import json, re, sys
from layerstore import InvalidLayerData, LayerStore
from layerstore.engines import select_engine

def peak_kib():
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1))

root, blob, driver, engine = sys.argv[1:5]
store = LayerStore(root, driver=driver, engine=select_engine(engine))
result = {"baseline_kib": peak_kib()}
try:
    layer, size = store.put(blob)
    result.update(outcome="accepted", id=layer.id, size=size)
except InvalidLayerData as exc:
    result.update(outcome="refused", message=str(exc))
except OSError as exc:
    result.update(outcome="oserror", errno=exc.errno, message=str(exc))
result["peak_kib"] = peak_kib()
print(json.dumps(result))
"""


def run_child(root: Path, blob: Path, driver: str, engine: str) -> dict[str, Any]:
    """Put ``blob`` in a child process; its outcome and peak resident memory (VmHWM, which
    starts afresh at exec, unlike the rusage of a child forked from a big parent)."""
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(blob), driver, engine],
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
        cwd=REPO,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    print(
        f"{blob.name} [{driver}, {engine}]: {result['outcome']}, "
        f"peak RSS {result['peak_kib'] / 1024:.1f} MiB "
        f"(after imports {result['baseline_kib'] / 1024:.1f} MiB)"
    )
    return result


def tmpfs_usable() -> bool:
    return ROOT and "tmpfs" in Path("/proc/filesystems").read_text()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path | None]:
    """A 64 MiB tmpfs for the store (None where it cannot be mounted); always unmounted."""
    if not tmpfs_usable():
        yield None
        return
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(mount_point)]
    if subprocess.run(mount, capture_output=True, check=False).returncode != 0:
        yield None
        return
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def big_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs with room for a million inodes (the disk's directory where none can be made)."""
    mount_point = tmp_path / "big"
    mount_point.mkdir()
    mount = [
        "mount", "-t", "tmpfs", "-o", "size=4g,nr_inodes=4m,mode=0755", "tmpfs", str(mount_point)
    ]  # fmt: skip
    mounted = tmpfs_usable() and subprocess.run(mount, capture_output=True).returncode == 0
    try:
        yield mount_point
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def reopen_and_check(root: Path, driver: str, expected: set[str]) -> None:
    with LayerStore(root, driver=driver) as store:
        assert_no_partial_layer(store, expected)
        assert_store_works(store)


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_decompression_bomb(
    request: pytest.FixtureRequest,
    small_tmpfs: Path | None,
    tmp_path: Path,
    engine_name: str,
    compression: str,
) -> None:
    """One file of zeros, gigabytes of it from a few kilobytes to megabytes of blob: memory
    stays flat, and the 64 MiB tmpfs stops it with ENOSPC (where no tmpfs can be mounted,
    a 96 MiB expansion that fits on disk is accepted)."""
    total = (
        (16 << 30 if request.config.getoption("--long") else 4 << 30) if small_tmpfs else 96 << 20
    )
    blob = tmp_path / f"zero-bomb-{total >> 20}MiB.{compression}"
    blob.write_bytes(zero_bomb(compression, total))
    assert blob.stat().st_size < total // 500
    root = (small_tmpfs or tmp_path) / "store"
    result = run_child(root, blob, "vfs", engine_name)
    assert result["peak_kib"] < PEAK_RSS_LIMIT_MIB << 10
    if small_tmpfs is not None:
        assert result["outcome"] == "oserror", result
        assert result["errno"] == errno.ENOSPC
        reopen_and_check(root, "vfs", set())
    else:
        assert result["outcome"] == "accepted", result
        reopen_and_check(root, "vfs", {result["id"]})


def test_bomb_after_the_archive(
    request: pytest.FixtureRequest, small_tmpfs: Path | None, tmp_path: Path, engine_name: str
) -> None:
    """Zeros after the end-of-archive blocks are kept in the tar-split file (as Go keeps them),
    compressed: a 256 MiB tail (1 GiB with --long) costs a few MiB of disk, memory stays flat."""
    total = (1 << 30) if request.config.getoption("--long") else 256 << 20
    blob = tmp_path / f"trailing-bomb-{total >> 20}MiB.zst"
    blob.write_bytes(trailing_bomb("zstd", total))
    root = (small_tmpfs or tmp_path) / "store"
    result = run_child(root, blob, "vfs", engine_name)
    assert result["peak_kib"] < PEAK_RSS_LIMIT_MIB << 10
    assert result["outcome"] == "accepted", result
    with LayerStore(root, driver="vfs") as store:
        layer = store.get(result["id"])
        assert layer.uncompressed_size > total
        tar_split = Path(store.layers_dir, layer.id + ".tar-split.gz")
        assert tar_split.stat().st_size < total // 50
        store.delete(layer.id)
    reopen_and_check(root, "vfs", set())


def test_endless_meta_headers(tmp_path: Path, engine_name: str) -> None:
    """65 MiB of PAX headers before one entry: refused at 64 MiB, with memory bounded."""
    blob = tmp_path / "meta-headers.zst"
    blob.write_bytes(meta_header_bomb())
    root = tmp_path / "store"
    result = run_child(root, blob, "vfs", engine_name)
    assert result["outcome"] == "refused"
    assert "too many meta headers" in result["message"]
    assert result["peak_kib"] < PEAK_RSS_LIMIT_MIB << 10
    reopen_and_check(root, "vfs", set())


def test_many_tiny_entries(
    request: pytest.FixtureRequest, big_tmpfs: Path, tmp_path: Path, engine_name: str
) -> None:
    """200,000 empty files, links and directories (1,000,000 with --long): applied, with
    memory bounded (the duplicate-path set grows with the entries, as Go's does)."""
    count = 1_000_000 if request.config.getoption("--long") else 200_000
    blob = tmp_path / f"{count}-entries.zst"
    blob.write_bytes(COMPRESSORS["zstd"](many_entries(count)))
    root = big_tmpfs / "store"
    result = run_child(root, blob, "overlay" if ROOT else "vfs", engine_name)
    assert result["outcome"] == "accepted", result
    limit = PEAK_RSS_LIMIT_MIB if count <= 200_000 else 2 * PEAK_RSS_LIMIT_MIB
    assert result["peak_kib"] < limit << 10
    with LayerStore(root) as store:
        layer_dir = Path(store.driver.layer_dir(result["id"]))
        assert sum(len(files) + len(dirs) for _, dirs, files in os.walk(layer_dir)) == count
        store.delete(result["id"])
        assert_no_partial_layer(store, set())


# -- device nodes without root --------------------------------------------------------------------

UNPRIVILEGED_CHILD = r"""
import json, os, sys
from layerstore import LayerStore
from layerstore.engines import select_engine

# Everything a put imports is imported while root can still read it: this interpreter lives
# under /root (mode 0700), and layerstore imports the modules a call needs on first use.
import base64, filelock, hashlib, secrets, shutil, tempfile  # noqa: E401, F401
import layerstore.drivers.vfs  # noqa: F401

root, blob, engine_name, uid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
engine = select_engine(engine_name)
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
store = LayerStore(root, driver="vfs", engine=engine)
layer, _ = store.put(blob)
directory = store.driver.layer_dir(layer.id)
listing = {}
for folder, _, names in os.walk(directory):
    for name in names + ["."]:
        path = os.path.relpath(os.path.join(folder, name), directory)
        info = os.lstat(os.path.join(directory, path))
        listing[path] = [info.st_mode, info.st_uid]
print(json.dumps({"geteuid": os.geteuid(), "listing": listing}))
"""


def test_device_nodes_without_root(tmp_path: Path, engine_name: str) -> None:
    """A process that is not root skips device nodes, keeps files as its own and ignores
    xattrs it may not set; nothing else is refused. (Its new layer's directory is mode 0555,
    as Go's vfs makes it: the engines make it writable while they apply the blob.)"""
    blob = tmp_path / "devices.tar"
    blob.write_bytes(
        build_tar(
            [
                Entry(b"null", "char", mode=0o666, device=(1, 3)),
                Entry(b"sda", "block", mode=0o660, device=(8, 0)),
                Entry(b"owned", "file", data=b"x", uid=0, gid=0, xattrs={"trusted.x": b"y"}),
                Entry(b"fifo", "fifo"),
                Entry(b"dev", "dir", mode=0o755),
                Entry(b"dev/tty", "char", mode=0o666, device=(5, 0)),
            ]
        )
    )
    if ROOT:
        try:
            import pwd

            uid = pwd.getpwnam("nobody").pw_uid
        except KeyError:
            pytest.skip("no unprivileged user 'nobody' to run the child as")
    else:
        uid = os.geteuid()
    # The unprivileged child needs a store it can write outside root's private temp dirs.
    with tempfile.TemporaryDirectory(prefix="layerstore-unprivileged-") as scratch:
        os.chmod(scratch, 0o777)
        store_root = Path(scratch, "store")
        store_root.mkdir()
        os.chown(store_root, uid, uid)
        os.chmod(blob.parent, 0o755)
        shared_blob = Path(scratch, "devices.tar")
        shared_blob.write_bytes(blob.read_bytes())
        completed = subprocess.run(
            [sys.executable, "-c", UNPRIVILEGED_CHILD, str(store_root), str(shared_blob),
             engine_name, str(uid)],
            capture_output=True, text=True, check=False, timeout=120, cwd=REPO,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr
        result = json.loads(completed.stdout)
    assert result["geteuid"] != 0
    listing = result["listing"]
    assert sorted(listing) == [".", "dev", "fifo", "owned"]
    assert all(owner == uid for _mode, owner in listing.values())
    # The layer's directory was writable only while the blob was applied.
    assert stat.S_IMODE(listing["."][0]) == 0o555
    assert stat.S_IMODE(listing["owned"][0]) == 0o644
