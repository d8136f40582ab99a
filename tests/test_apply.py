"""ApplyDiff: both engines agree with each other, with Go's tar-split and with GNU tar."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerstore import Compression, InvalidLayerData, LayerStore
from layerstore.engines import ApplyResult, Engine, select_engine

from .manifest import tree_manifest
from .tarballs import ROOT, Entry, build_tar, compress, layer_tarballs

TAR_SPLIT = shutil.which("tar-split")
needs_tar_split = pytest.mark.skipif(
    TAR_SPLIT is None, reason="the Go tar-split CLI is missing: apt-get install tar-split"
)
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("LAYERSTORE_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def apply(
    engine: Engine, data: bytes, work: Path, label: str, whiteout_format: str = "vfs"
) -> tuple[ApplyResult, list[bytes], Path]:
    destination = work / f"{label}-tree"
    destination.mkdir(mode=0o755)
    tar_split = work / f"{label}.tar-split.gz"
    result = engine.apply_layer(
        data, str(destination), str(tar_split), whiteout_format=whiteout_format
    )
    return result, gzip.decompress(tar_split.read_bytes()).splitlines(), destination


def go_tar_split_lines(data: bytes, work: Path) -> list[bytes]:
    source = work / "go-input.tar"
    source.write_bytes(data)
    output = work / "go.tar-split.gz"
    assert TAR_SPLIT is not None
    subprocess.run([TAR_SPLIT, "disasm", "--output", str(output), str(source)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return gzip.decompress(output.read_bytes()).splitlines()


def scratch(tmp_path: Path) -> Path:
    work = tmp_path / f"case-{os.urandom(4).hex()}"
    work.mkdir()
    return work


# -- the property tests ------------------------------------------------------------------------


@needs_tar_split
@PROPERTY_SETTINGS
@given(case=layer_tarballs(), compression=st.sampled_from(list(Compression)))
def test_digests_and_tar_split_match_go(
    tmp_path: Path, engine: Engine, case: tuple[list[Entry], bytes], compression: Compression
) -> None:
    _entries, tar = case
    blob = compress(tar, compression)
    work = scratch(tmp_path)
    result, lines, _tree = apply(engine, blob, work, engine.name)
    assert result.compression is compression
    assert result.compressed_digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert result.compressed_size == len(blob)
    assert result.uncompressed_digest == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert result.uncompressed_size == len(tar)
    expected = go_tar_split_lines(tar, work)
    if compression in (Compression.ZSTD, Compression.XZ) and trailing_after_end_blocks(expected):
        # containers-storage's zstd and xz readers return the last bytes with the end of the
        # stream, so no empty segment follows them (docs/apply.md, step 8); the CLI read a
        # plain file.
        expected = expected[:-1]
    assert lines == expected


def trailing_after_end_blocks(lines: list[bytes]) -> bool:
    """Whether a tar-split list ends with a short segment of trailing bytes, then the empty one."""
    if len(lines) < 3 or b'"payload":""' not in lines[-1]:
        return False
    before = json.loads(lines[-2])
    return (
        before["type"] == 2
        and 0 < len(base64.b64decode(before["payload"])) < 1 << 20
        and (json.loads(lines[-3])["type"] == 2)
    )


@PROPERTY_SETTINGS
@given(
    case=layer_tarballs(),
    compression=st.sampled_from(list(Compression)),
    whiteout_format=st.sampled_from(["vfs", "overlay"] if ROOT else ["vfs"]),
)
def test_engines_agree(
    tmp_path: Path, case: tuple[list[Entry], bytes], compression: Compression,
    whiteout_format: str,
) -> None:  # fmt: skip
    _entries, tar = case
    blob = compress(tar, compression)
    work = scratch(tmp_path)
    native, native_lines, native_tree = apply(
        select_engine("native"), blob, work, "native", whiteout_format
    )
    pure, pure_lines, pure_tree = apply(select_engine("pure"), blob, work, "pure", whiteout_format)
    assert native == pure
    assert native_lines == pure_lines
    assert without_unset_times(tree_manifest(native_tree)) == without_unset_times(
        tree_manifest(pure_tree)
    )


def without_unset_times(manifest: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    """Drop mtimes nobody sets: the root's (unless the archive has a root entry, it is when the
    last entry was made) and those of overlay whiteout devices (Go sets none either)."""
    return {
        path: details[:-1]
        if path == "." or (details[0] == stat.S_IFCHR and details[1] == 0 and details[5] == (0, 0))
        else details
        for path, details in manifest.items()
    }


def gnu_tar_extract(tar: bytes, work: Path) -> Path:
    destination = work / "gnu-tree"
    destination.mkdir()
    os.chmod(destination, 0o755)
    subprocess.run(
        ["tar", "-xpf", "-", "--numeric-owner", "--xattrs", "--xattrs-include=*",
         "-C", str(destination)],
        input=tar, check=True, capture_output=True,
    )  # fmt: skip
    return destination


def comparable_with_gnu_tar(manifest: dict[str, tuple[object, ...]]) -> dict[str, object]:
    """Drop the root and directory mtimes: GNU tar fixes a directory's times when it leaves it,
    so a later entry inside it (archives need not be in tree order) moves them again; Go and
    layerstore set them after the whole archive."""
    return {
        path: details[:-1] if details[0] == stat.S_IFDIR else details
        for path, details in manifest.items()
        if path != "."
    }


@PROPERTY_SETTINGS
@given(case=layer_tarballs(whiteouts=False))
def test_trees_match_gnu_tar(tmp_path: Path, case: tuple[list[Entry], bytes]) -> None:
    _entries, tar = case
    work = scratch(tmp_path)
    _, _, ours = apply(select_engine("pure"), tar, work, "pure")
    gnu = gnu_tar_extract(tar, work)
    assert comparable_with_gnu_tar(tree_manifest(ours)) == comparable_with_gnu_tar(
        tree_manifest(gnu)
    )


# -- specific shapes ---------------------------------------------------------------------------


def test_each_compression_and_multiple_streams(tmp_path: Path, engine: Engine) -> None:
    tar = build_tar([Entry(b"a", "file", data=b"x" * 5000), Entry(b"b", "file", data=b"y")])
    half = len(tar) // 2
    blobs = {
        "gzip members": gzip.compress(tar[:half]) + gzip.compress(tar[half:]),
        "zstd frames": compress(tar[:half], Compression.ZSTD)
        + compress(tar[half:], Compression.ZSTD),
        "bzip2 streams": compress(tar[:half], Compression.BZIP2)
        + compress(tar[half:], Compression.BZIP2),
        "xz streams with padding": compress(tar[:half], Compression.XZ)
        + b"\0" * 4
        + compress(tar[half:], Compression.XZ),
    }
    for label, blob in blobs.items():
        result, _, tree = apply(engine, blob, scratch(tmp_path), "x")
        assert result.uncompressed_digest == "sha256:" + hashlib.sha256(tar).hexdigest(), label
        assert (tree / "a").read_bytes() == b"x" * 5000, label


@pytest.mark.parametrize("compression", [c for c in Compression if c is not Compression.NONE])
def test_corrupt_compressed_streams_are_refused(
    tmp_path: Path, engine: Engine, compression: Compression
) -> None:
    tar = build_tar([Entry(b"a", "file", data=os.urandom(20000))])
    blob = compress(tar, compression)
    for label, bad in (("truncated", blob[: len(blob) // 2]), ("trailing", blob + b"junk")):
        work = scratch(tmp_path)
        with pytest.raises(InvalidLayerData, match=compression.name.lower()):
            apply(engine, bad, work, label)
        assert list(work.glob("*.tar-split.gz*")) == [], "no tar-split is left behind"


def test_sources_path_bytes_and_streams(tmp_path: Path, engine: Engine) -> None:
    tar = build_tar([Entry(b"f", "file", data=b"content" * 1000)])
    blob = gzip.compress(tar)
    path = tmp_path / "blob.tar.gz"
    path.write_bytes(blob)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # a writer process: the pipe is read in chunks as it fills
        os.close(read_fd)
        os.write(write_fd, blob)
        os._exit(0)
    os.close(write_fd)
    sources = {
        "path": str(path),
        "pathlike": path,
        "bytes": blob,
        "bytearray": bytearray(blob),
        "memoryview": memoryview(blob),
        "file": io.BytesIO(blob),
    }
    digests = set()
    for label, source in sources.items():
        work = scratch(tmp_path)
        destination = work / "tree"
        destination.mkdir()
        result = engine.apply_layer(
            source, str(destination), str(work / "ts.gz"), whiteout_format="vfs"
        )  # type: ignore[arg-type]
        digests.add((result.compressed_digest, result.uncompressed_digest))
        assert (destination / "f").read_bytes() == b"content" * 1000, label
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        work = scratch(tmp_path)
        (work / "tree").mkdir()
        result = engine.apply_layer(
            pipe, str(work / "tree"), str(work / "ts.gz"), whiteout_format="vfs"
        )
        digests.add((result.compressed_digest, result.uncompressed_digest))
    os.waitpid(pid, 0)
    assert len(digests) == 1


def test_trusted_digests_are_used_and_checked(tmp_path: Path, engine: Engine) -> None:
    blob = gzip.compress(build_tar([Entry(b"f", "file", data=b"x")]))
    given_digest = "sha256:" + "ab" * 32
    result, _, _ = apply_with(engine, blob, scratch(tmp_path), compressed=given_digest)
    assert result.compressed_digest == given_digest
    assert result.compressed_size == len(blob)
    assert result.uncompressed_digest != given_digest
    with pytest.raises(ValueError, match="sha256"):
        apply_with(engine, blob, scratch(tmp_path), compressed="md5:abc")


def apply_with(
    engine: Engine, blob: bytes, work: Path, compressed: str
) -> tuple[ApplyResult, None, None]:
    (work / "tree").mkdir()
    result = engine.apply_layer(
        blob,
        str(work / "tree"),
        str(work / "ts.gz"),
        whiteout_format="vfs",
        trusted_compressed_digest=compressed,
    )
    return result, None, None


def test_uid_gid_sets_skip_whiteouts(tmp_path: Path, engine: Engine) -> None:
    tar = build_tar(
        [
            Entry(b"a", "file", uid=5, gid=50),
            Entry(b"dir", "dir", uid=7, gid=70, mode=0o755),
            Entry(b"dir/.wh.gone", "file", uid=999, gid=999),
            Entry(b"dir/.wh..wh..opq", "file", uid=998, gid=998),
        ]
    )
    result, _, _ = apply(engine, tar, scratch(tmp_path), "ids")
    assert result.uids == (5, 7)
    assert result.gids == (50, 70)


def test_size_counts_files_and_symlinks(tmp_path: Path, engine: Engine) -> None:
    tar = build_tar(
        [
            Entry(b"a", "file", data=b"x" * 1000),
            Entry(b"b", "hardlink", target=b"a"),
            Entry(b"c", "symlink", target=b"0123456789"),
            Entry(b"d", "dir", mode=0o755),
        ]
    )
    result, _, _ = apply(engine, tar, scratch(tmp_path), "size")
    assert result.size == 1010


def test_sparse_files_are_refused(tmp_path: Path, engine: Engine) -> None:
    source = tmp_path / "sparse"
    with open(source, "wb") as handle:
        handle.seek(10 << 20)
        handle.write(b"end")
    archive = tmp_path / "sparse.tar"
    subprocess.run(
        ["tar", "--sparse", "--format=pax", "-cf", str(archive), "-C", str(tmp_path), "sparse"],
        check=True,
    )
    with pytest.raises(InvalidLayerData, match="sparse"):
        apply(engine, archive.read_bytes(), scratch(tmp_path), "sparse")


def test_gnu_tar_formats_round_trip_through_go(tmp_path: Path, engine: Engine) -> None:
    """Archives written by GNU tar itself, in each of its formats."""
    if TAR_SPLIT is None:
        pytest.skip("the Go tar-split CLI is missing: apt-get install tar-split")
    tree = tmp_path / "src"
    (tree / ("d" * 120)).mkdir(parents=True)
    (tree / ("d" * 120) / ("f" * 150)).write_bytes(b"long" * 100)
    (tree / "link").symlink_to("x" * 200)
    os.link(tree / ("d" * 120) / ("f" * 150), tree / "hard")
    for tar_format in ("gnu", "pax", "ustar", "v7", "oldgnu"):
        archive = tmp_path / f"{tar_format}.tar"
        completed = subprocess.run(
            ["tar", f"--format={tar_format}", "-cf", str(archive), "-C", str(tree), "."],
            capture_output=True, check=False,
        )  # fmt: skip
        if completed.returncode != 0:  # ustar and v7 cannot hold the long names: skip them
            continue
        work = scratch(tmp_path)
        _, lines, _ = apply(engine, archive.read_bytes(), work, tar_format)
        assert lines == go_tar_split_lines(archive.read_bytes(), work), tar_format


# -- through the store -------------------------------------------------------------------------


def test_put_records_everything(store: LayerStore) -> None:
    tar = build_tar([Entry(b"etc", "dir", mode=0o755), Entry(b"etc/hosts", "file", data=b"h")])
    blob = gzip.compress(tar)
    layer, size = store.put(blob, names=["base"])
    assert size == 1
    assert layer.compression is Compression.GZIP
    assert layer.compressed_digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert layer.uncompressed_digest == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert (layer.compressed_size, layer.uncompressed_size) == (len(blob), len(tar))
    assert not layer.incomplete
    assert store.get("base") == layer
    assert store.layers_by_uncompressed_digest(layer.uncompressed_digest) == [layer]
    tar_split = Path(store.layers_dir, layer.id + ".tar-split.gz")
    assert tar_split.exists()
    assert oct(tar_split.stat().st_mode & 0o777) == "0o600"
    assert Path(store.driver.layer_dir(layer.id), "etc", "hosts").read_bytes() == b"h"

    child, _ = store.put(build_tar([Entry(b"etc/.wh.hosts", "file")]), parent="base")
    assert child.compression is Compression.NONE
    child_dir = Path(store.driver.layer_dir(child.id))
    if store.driver.name == "vfs":
        assert not (child_dir / "etc" / "hosts").exists()
    else:
        assert (child_dir / "etc" / "hosts").is_char_device()


def test_failed_put_leaves_nothing(store: LayerStore) -> None:
    store.create(names=["base"])
    before = sorted(os.listdir(store.layers_dir))
    bad = build_tar([Entry(b"a", "file", data=b"x" * 10000)])[:3000]
    with pytest.raises(InvalidLayerData, match="truncated"):
        store.put(gzip.compress(bad), parent="base", names=["broken"])
    assert [layer.names for layer in store.layers()] == [("base",)]
    assert sorted(os.listdir(store.layers_dir)) == before
    assert len(store.driver.layer_ids()) == 1
    assert not store.exists("broken")


def test_apply_diff_on_an_existing_layer(store: LayerStore) -> None:
    layer = store.create(names=["empty"])
    tar = build_tar([Entry(b"new", "file", data=b"n", uid=3, gid=4)])
    assert store.apply_diff("empty", tar) == 1
    applied = store.get(layer.id)
    assert applied.uids == (3,)
    assert applied.uncompressed_digest == "sha256:" + hashlib.sha256(tar).hexdigest()
    reader = LayerStore(
        store.root, run_root=store.run_root, driver=store.driver.name, read_only=True
    )
    assert reader.get(layer.id).uncompressed_digest == applied.uncompressed_digest
