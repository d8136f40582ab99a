"""Diff: the exact tarball back, Changes and DiffSize, from tar-split or from the trees."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading
import time
import zlib
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerstore import Change, Compression, InvalidLayerData, LayerStore, NotSupported
from layerstore.engines import select_engine

from .tarballs import Entry, build_tar, compress, layer_tarballs

TAR_SPLIT = shutil.which("tar-split")
EXAMPLES = int(os.environ.get("LAYERSTORE_EXAMPLES", "40"))


def read_all(store: LayerStore, layer: str, **kwargs: object) -> bytes:
    with store.diff(layer, **kwargs) as stream:  # type: ignore[arg-type]
        return stream.read()


def one_gzip_member(blob: bytes) -> bytes:
    """What a reader that stops after the first gzip member gets; nothing may follow it."""
    decoder = zlib.decompressobj(31)
    data = decoder.decompress(blob) + decoder.flush()
    assert decoder.eof
    assert decoder.unused_data == b""
    return data


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=layer_tarballs(), compression=st.sampled_from(list(Compression)))
def test_diff_gives_back_the_applied_tar(
    store: LayerStore, case: tuple[list[Entry], bytes], compression: Compression
) -> None:
    _entries, tar = case
    layer, _ = store.put(compress(tar, compression))
    plain = read_all(store, layer.id, compression="none")
    assert plain == tar
    assert sha256(plain) == layer.uncompressed_digest
    assert one_gzip_member(read_all(store, layer.id, compression="gzip")) == tar
    assert (
        zstandard.ZstdDecompressor()
        .decompressobj()
        .decompress(read_all(store, layer.id, compression=Compression.ZSTD))
        == tar
    )
    store.delete(layer.id)


@pytest.mark.skipif(
    TAR_SPLIT is None, reason="the Go tar-split CLI is missing: apt-get install tar-split"
)
def test_go_tar_split_asm_rebuilds_the_same_bytes(store: LayerStore, tmp_path: Path) -> None:
    tar = (
        build_tar(
            [
                Entry(b"dir", "dir", mode=0o755),
                Entry(b"dir/file", "file", data=os.urandom(70_000)),
                Entry(b"dir/" + b"long" * 40, "file", data=b"long name"),
                Entry(b"link", "hardlink", target=b"dir/file"),
                Entry(b"sym", "symlink", target=b"/nowhere"),
                Entry(b"\xff\xfe-not-utf8", "file", data=b"raw name"),
                Entry(b"empty", "file"),
            ]
        )
        + b"trailing bytes"
    )
    layer, _ = store.put(gzip.compress(tar))
    output = tmp_path / "go.tar"
    assert TAR_SPLIT is not None
    subprocess.run(
        [TAR_SPLIT, "asm", "--input", str(Path(store.layers_dir, layer.id + ".tar-split.gz")),
         "--path", store.driver.layer_dir(layer.id), "--output", str(output)],
        check=True, capture_output=True,
    )  # fmt: skip
    assert output.read_bytes() == tar == read_all(store, layer.id, compression="none")


def test_default_compression_is_the_layers(store: LayerStore) -> None:
    tar = build_tar([Entry(b"f", "file", data=b"x" * 1000)])
    gzipped, _ = store.put(gzip.compress(tar))
    assert one_gzip_member(read_all(store, gzipped.id)) == tar
    plain, _ = store.put(tar)
    assert read_all(store, plain.id) == tar
    zstd, _ = store.put(compress(tar, Compression.ZSTD))
    assert zstandard.ZstdDecompressor().decompressobj().decompress(read_all(store, zstd.id)) == tar
    bzipped, _ = store.put(compress(tar, Compression.BZIP2))
    with pytest.raises(NotSupported, match="bzip2"):
        store.diff(bzipped.id)
    assert read_all(store, bzipped.id, compression="none") == tar
    with pytest.raises(ValueError, match="unknown compression"):
        store.diff(plain.id, compression="lz4")


@pytest.mark.parametrize(
    "damage", ["one byte", "shorter", "longer", "missing", "symlink", "directory", "fifo"]
)
def test_a_changed_file_is_named(store: LayerStore, damage: str) -> None:
    tar = build_tar(
        [
            Entry(b"first", "file", data=b"a" * 3000),
            Entry(b"victim", "file", data=b"b" * 5000),
            Entry(b"last", "file", data=b"c" * 10),
        ]
    )
    layer, _ = store.put(tar)
    victim = Path(store.driver.layer_dir(layer.id), "victim")
    if damage == "one byte":
        with open(victim, "r+b") as handle:
            handle.seek(2500)
            handle.write(b"X")
    elif damage == "shorter":
        os.truncate(victim, 4999)
    elif damage == "longer":
        with open(victim, "ab") as handle:
            handle.write(b"!")
    elif damage == "missing":
        victim.unlink()
    elif damage == "symlink":
        victim.unlink()
        victim.symlink_to("first")
    elif damage == "directory":
        victim.unlink()
        victim.mkdir()
    else:
        victim.unlink()
        os.mkfifo(victim)  # must not hang the reader
    received = bytearray()

    def read_everything() -> None:
        with store.diff(layer.id) as stream:
            while chunk := stream.read(1000):
                received.extend(chunk)

    with pytest.raises(InvalidLayerData, match="'victim'"):
        read_everything()
    # Never silently different bytes: the stream stops before the end of the damaged file.
    assert len(received) < tar.index(b"b" * 5000) + 5000
    assert tar.startswith(received)


def test_size_and_diff_size(store: LayerStore) -> None:
    empty = store.create()
    assert store.size(empty.id) == -1
    tar = build_tar(
        [
            Entry(b"a", "file", data=b"x" * 1234),
            Entry(b"b", "hardlink", target=b"a"),
            Entry(b"d", "dir", mode=0o755),
            Entry(b"d/c", "file", data=b"y" * 10),
        ]
    )
    layer, _ = store.put(tar, parent=empty.id)
    assert store.size(layer.id) == len(tar)
    assert store.diff_size(layer.id) == 1244


def test_changes_list_adds_modifications_and_deletions(store: LayerStore) -> None:
    base, _ = store.put(
        build_tar(
            [
                Entry(b"etc", "dir", mode=0o755),
                Entry(b"etc/keep", "file", data=b"k"),
                Entry(b"etc/change", "file", data=b"old"),
                Entry(b"etc/remove", "file", data=b"r"),
                Entry(b"opaque", "dir", mode=0o755),
                Entry(b"opaque/hidden", "file", data=b"h"),
            ]
        )
    )
    top, _ = store.put(
        build_tar(
            [
                Entry(b"etc", "dir", mode=0o755),
                Entry(b"etc/change", "file", data=b"new!", mtime=1_800_000_000),
                Entry(b"etc/.wh.remove", "file"),
                Entry(b"etc/added", "file", data=b"a"),
                Entry(b"opaque", "dir", mode=0o755),
                Entry(b"opaque/.wh..wh..opq", "file"),
                Entry(b"opaque/fresh", "file", data=b"f"),
            ]
        ),
        parent=base.id,
    )
    common = [
        Change("/etc", "modify"),
        Change("/etc/added", "add"),
        Change("/etc/change", "modify"),
        Change("/etc/remove", "delete"),
    ]
    if store.driver.name == "vfs":
        # Go's naive walk (vfs): the opaque directory is modified, what it hides deleted.
        expected = [*common, Change("/opaque", "modify"), Change("/opaque/fresh", "add"),
                    Change("/opaque/hidden", "delete")]  # fmt: skip
    else:
        # Go's overlay walk: an opaque directory over a lower one is the lower one deleted.
        expected = [*common, Change("/opaque", "delete"), Change("/opaque/fresh", "add")]
    assert store.changes(top.id) == expected
    # The same changes against the parent named explicitly or implicitly.
    assert store.changes(top.id, base.id) == store.changes(top.id)
    assert [change.kind for change in store.changes(base.id)] == ["add"] * 6


def fill_through_directory(store: LayerStore, layer_id: str) -> None:
    """Change a layer by writing into its directory, as a container would through a mount."""
    root = Path(store.driver.layer_dir(layer_id))
    os.chmod(root, 0o755)
    (root / "etc").mkdir(exist_ok=True)
    os.chmod(root / "etc", 0o750)
    (root / "etc" / "hostname").write_text("container\n")
    os.chown(root / "etc" / "hostname", 0, 0)
    (root / "etc" / "motd").write_bytes(os.urandom(3000))
    os.link(root / "etc" / "motd", root / "etc" / "motd.link")
    (root / "etc" / "link").symlink_to("hostname")
    (root / "srv" / "data").mkdir(parents=True)
    (root / "srv" / "data" / "big").write_bytes(b"z" * 200_000)
    os.utime(root / "srv" / "data" / "big", ns=(1_600_000_000_123_456_789,) * 2)
    if store.driver.name == "vfs":
        (root / "opt" / "gone").unlink()
        shutil.rmtree(root / "tmp")
    else:
        # What overlay itself writes for a deleted file and a replaced directory.
        (root / "opt").mkdir(exist_ok=True)
        os.mknod(root / "opt" / "gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))
        (root / "tmp").mkdir()
        os.setxattr(root / "tmp", "trusted.overlay.opaque", b"y")
        (root / "tmp" / "new").write_text("only this")


def test_a_layer_filled_through_its_directory_diffs_to_the_same_tree(
    store: LayerStore, tmp_path: Path
) -> None:
    if store.driver.name == "overlay" and os.geteuid() != 0:
        pytest.skip("making overlay whiteouts needs root")
    base, _ = store.put(
        build_tar(
            [
                Entry(b"opt", "dir", mode=0o755),
                Entry(b"opt/gone", "file", data=b"bye"),
                Entry(b"opt/stays", "file", data=b"hi"),
                Entry(b"tmp", "dir", mode=0o1777),
                Entry(b"tmp/old", "file", data=b"old"),
            ]
        ),
        names=["base"],
    )
    layer = store.create(parent="base")
    fill_through_directory(store, layer.id)
    tar = read_all(store, layer.id)
    names = tarfile.open(fileobj=io.BytesIO(tar)).getnames()
    assert len(names) == len(set(names))

    other = LayerStore(tmp_path / "fresh", driver=store.driver.name, engine=store.engine)
    other.put(read_all(store, base.id), names=["base"])
    replayed, _ = other.put(tar, parent="base")
    assert merged_manifest(other, replayed.id) == merged_manifest(store, layer.id)
    assert read_all(store, layer.id) == tar, "the diff of an unchanged tree is the same bytes"


def merged_manifest(store: LayerStore, layer_id: str) -> dict[str, tuple[object, ...]]:
    """The layer's tree as its users see it (the vfs copy, or the merged overlay stack)."""
    view = store.driver.view(layer_id)
    manifest: dict[str, tuple[object, ...]] = {}

    def walk(directory: str) -> None:
        for name in view.listdir(directory):
            path = f"{directory}/{name}" if directory else name
            info = view.lstat(path)
            assert info is not None
            real = view.real_path(path)
            detail: object = None
            if stat.S_ISREG(info.st_mode):
                detail = hashlib.sha256(Path(real).read_bytes()).hexdigest()
            elif stat.S_ISLNK(info.st_mode):
                detail = os.readlink(real)
            mtime = None if stat.S_ISDIR(info.st_mode) else info.st_mtime_ns
            manifest[path] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode),
                              info.st_uid, info.st_gid, detail, mtime)  # fmt: skip
            if stat.S_ISDIR(info.st_mode):
                walk(path)

    walk("")
    return manifest


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def threads(expected: int | None = None) -> int:
    """Threads of this process. A joined thread can linger in /proc/self/task for a moment
    (the kernel wakes the joiner before it reaps the task): with ``expected``, wait up to a
    second for the count to come down to it."""
    deadline = time.monotonic() + 1
    while True:
        count = len(os.listdir("/proc/self/task"))
        if expected is None or count <= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.005)


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_closing_early_releases_everything(store: LayerStore, compression: str) -> None:
    tar = build_tar([Entry(f"f{i}".encode(), "file", data=os.urandom(300_000)) for i in range(8)])
    layer, _ = store.put(tar)
    descriptors, running = open_descriptors(), threads()
    stream = store.diff(layer.id, compression=compression)
    assert stream.read(100_000)
    stream.close()
    assert stream.closed
    assert open_descriptors() == descriptors
    assert threads(running) == running
    # The shared lock is gone too: a writer in another thread gets through at once.
    done = threading.Event()
    worker = threading.Thread(target=lambda: (store.set_metadata(layer.id, "x"), done.set()))
    worker.start()
    worker.join(10)
    assert done.is_set()


def test_a_diff_holds_the_lock_until_closed(store: LayerStore) -> None:
    layer, _ = store.put(build_tar([Entry(b"f", "file", data=b"x")]))
    stream = store.diff(layer.id)
    wrote = threading.Event()
    worker = threading.Thread(target=lambda: (store.set_metadata(layer.id, "y"), wrote.set()))
    worker.start()
    assert not wrote.wait(0.3), "a writer got in while a diff was open"
    stream.close()
    worker.join(10)
    assert wrote.is_set()


def test_trees_of_the_two_engines_diff_alike(tmp_path: Path, driver_name: str) -> None:
    """Tree-built diffs do not depend on the engine."""
    outputs = []
    for engine in ("native", "pure"):
        store = LayerStore(tmp_path / engine, driver=driver_name, engine=engine)
        base, _ = store.put(build_tar([Entry(b"a", "file", data=b"1")]))
        layer = store.create(parent=base.id)
        root = Path(store.driver.layer_dir(layer.id))
        os.chmod(root, 0o755)
        (root / "b").write_bytes(b"2")
        os.utime(root / "b", ns=(0, 0))
        os.utime(root, ns=(0, 0))
        outputs.append(read_all(store, layer.id))
    assert outputs[0] == outputs[1]


CORRUPT_TAR_SPLITS = {
    "not gzip": b"plain text",
    "empty": gzip.compress(b""),
    "blank line": gzip.compress(b'{"type":2,"payload":"","position":0}\n\n'),
    "not JSON": gzip.compress(b"{nope\n"),
    "unknown type": gzip.compress(b'{"type":3,"payload":null,"position":0}\n'),
    "float type": gzip.compress(b'{"type":2.0,"payload":"","position":0}\n'),
    "bad base64": gzip.compress(b'{"type":2,"payload":"!!","position":0}\n'),
    "size not a number": gzip.compress(b'{"type":1,"name":"f","size":"9","payload":null}\n'),
    "name not a string": gzip.compress(b'{"type":1,"name":5,"payload":null,"position":0}\n'),
    "truncated gzip": gzip.compress(b'{"type":2,"payload":"","position":0}\n' * 100)[:-12],
}


@pytest.mark.parametrize("case", sorted(CORRUPT_TAR_SPLITS))
def test_corrupt_tar_split_files_fail_alike(tmp_path: Path, case: str) -> None:
    path = tmp_path / "layer.tar-split.gz"
    path.write_bytes(CORRUPT_TAR_SPLITS[case])
    messages = []
    for name in ("native", "pure"):
        engine = select_engine(name)
        with pytest.raises(InvalidLayerData) as caught:
            with engine.open_diff(str(path), str(tmp_path), Compression.NONE) as stream:
                stream.read()
        messages.append(str(caught.value))
    assert str(path) in messages[0]
    assert messages[0].split(":")[:2] == messages[1].split(":")[:2]


def big_tar() -> bytes:
    """About 5 MiB of tar: several 1 MiB blocks for a compressing engine to split it into."""
    return build_tar(
        [Entry(b"data", "dir", mode=0o755)]
        + [Entry(f"data/f{n}".encode(), "file", data=os.urandom(300_000) + bytes(400_000))
           for n in range(7)]
    )  # fmt: skip


def test_a_gzip_diff_is_one_member_every_reader_reads_whole(store: LayerStore) -> None:
    """Readers that stop after the first member (zlib.decompressobj(31), flate2's GzDecoder,
    Go's gzip.Reader with Multistream(false)) get the whole tar."""
    tar = big_tar()
    layer, _ = store.put(tar)
    blob = read_all(store, layer.id, compression="gzip")
    assert one_gzip_member(blob) == tar
    if shutil.which("gzip"):
        unpacked = subprocess.run(["gzip", "-dc"], input=blob, capture_output=True, check=True)
        assert unpacked.stdout == tar
