"""Diffs built from trees (layers without tar-split): the engines write the tar of the members
the driver walked (``Engine.open_tree_diff``). Both engines give the same bytes, and the members
are the tree's: names, types, modes, owners, times, xattrs, link targets and contents."""

from __future__ import annotations

import io
import os
import socket
import stat
import subprocess
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from layerstore import Compression, LayerStore, NotSupported
from layerstore.engines import Engine, TreeEntry, select_engine

from .tarballs import Entry, build_tar

ROOT = os.geteuid() == 0
BIG_ID = 3_000_000  # above what an 8-byte octal field holds: a pax record
NANOSECONDS = 1_700_000_000_123_456_789


def make_tree(root: Path) -> None:
    """A tree with every kind of member and every field a tar header can overflow."""
    root.mkdir()
    (root / "dir").mkdir(mode=0o755)
    (root / "dir" / "plain").write_bytes(b"hello\n")
    (root / "empty").write_bytes(b"")
    # Across 1 MiB blocks of the compressors, not a multiple of 512.
    (root / "big").write_bytes(os.urandom(1 << 19) * 5 + b"tail")
    (root / "linked").write_bytes(b"one inode, two names")
    os.link(root / "linked", root / "dir" / "also-linked")
    os.symlink("dir/plain", root / "symlink")
    os.symlink("t" * 150, root / "long-target")
    long_directory = root / ("d" * 90)
    long_directory.mkdir()
    (long_directory / ("f" * 40)).write_bytes(b"a path of 131 bytes")
    (root / "caf\u00e9-\u65e5\u672c").write_bytes(b"non-ASCII name")
    (root / os.fsdecode(b"latin1-\xe9\xff")).write_bytes(b"not UTF-8")
    os.mkfifo(root / "fifo")
    (root / "no-access").write_bytes(b"secret")
    os.chmod(root / "no-access", 0)
    (root / "setuid").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "setuid", 0o4755)
    os.setxattr(root / "dir" / "plain", "user.text", b"value")
    os.setxattr(root / "dir" / "plain", "user.binary", b"\x00\xff\xfe")
    os.setxattr(root / "dir", "user.on-directory", b"d")
    server = socket.socket(socket.AF_UNIX)
    server.bind(os.fspath(root / "socket"))  # sockets do not go into layers
    server.close()
    if ROOT:
        os.mknod(root / "char", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        os.mknod(root / "block", stat.S_IFBLK | 0o660, os.makedev(8, 1))
        os.chown(root / "dir" / "plain", 1000, 1001)
        os.chown(root / "big", BIG_ID, BIG_ID + 1)
        os.setxattr(root / "setuid", "security.capability", bytes.fromhex("01000002" + "00" * 16))
    os.utime(root / "dir" / "plain", ns=(0, NANOSECONDS))
    os.utime(root / "empty", ns=(0, -1_500_000_000))  # before 1970, with a fraction
    os.utime(root / "big", ns=(0, -7_000_000_000))  # before 1970, whole seconds


def entries_of(root: Path) -> list[TreeEntry]:
    """Every path below ``root`` in sorted order, then a whiteout."""
    found: list[TreeEntry] = []

    def walk(directory: str) -> None:
        for name in sorted(os.listdir(root / directory)):
            path = f"{directory}/{name}" if directory else name
            found.append((path, os.fspath(root / path)))
            if (root / path).is_dir() and not (root / path).is_symlink():
                walk(path)

    walk("")
    found.append(("dir/.wh.removed", None))
    return found


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree") / "root"
    make_tree(root)
    return root


def diff_bytes(engine: Engine, entries: list[TreeEntry], compression: Compression) -> bytes:
    with engine.open_tree_diff(iter(entries), compression) as stream:
        return stream.read()


def uncompressed(blob: bytes, compression: Compression) -> bytes:
    if compression is Compression.GZIP:
        decoder = zlib.decompressobj(31)
        data = decoder.decompress(blob) + decoder.flush()
        assert decoder.eof
        assert decoder.unused_data == b"", "one gzip member, nothing after it"
        return data
    if compression is Compression.ZSTD:
        reader = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True)
        return reader.read()  # one frame per 1 MiB block
    return blob


def members(tar: bytes) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as archive:
        for member in archive:
            data = archive.extractfile(member) if member.isreg() else None
            yield member, (data.read() if data is not None else None)


def test_the_two_engines_write_the_same_bytes(tree: Path) -> None:
    entries = entries_of(tree)
    native = diff_bytes(select_engine("native"), entries, Compression.NONE)
    pure = diff_bytes(select_engine("pure"), entries, Compression.NONE)
    assert native == pure


@pytest.mark.parametrize("compression", [Compression.NONE, Compression.GZIP, Compression.ZSTD])
def test_members_are_the_tree(engine: Engine, tree: Path, compression: Compression) -> None:
    entries = entries_of(tree)
    tar = uncompressed(diff_bytes(engine, entries, compression), compression)
    seen = {member.name: (member, data) for member, data in members(tar)}
    expected = {name.rstrip("/") for name, _ in entries} - {"socket"}
    assert {name.rstrip("/") for name in seen} == expected
    for name, path in entries:
        if name == "socket":
            continue
        member, data = seen.get(name) or seen[name + "/"]
        if path is None:
            whiteout = (member.type, member.mode, member.mtime, member.size)
            assert whiteout == (tarfile.REGTYPE, 0, 0, 0)
            continue
        info = os.lstat(path)
        assert member.mode == stat.S_IMODE(info.st_mode), name
        assert (member.uid, member.gid) == (info.st_uid, info.st_gid), name
        assert member.uname == member.gname == ""
        assert round(float(member.mtime) * 1e9) == pytest.approx(info.st_mtime_ns, abs=1000), name
        if stat.S_ISDIR(info.st_mode):
            assert member.isdir()
        elif stat.S_ISLNK(info.st_mode):
            assert member.issym()
            assert member.linkname == os.readlink(path)
        elif stat.S_ISREG(info.st_mode) and member.islnk():
            assert os.path.samefile(tree / member.linkname, path)
        elif stat.S_ISREG(info.st_mode):
            assert data == Path(path).read_bytes(), name
        elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
            assert member.ischr() == stat.S_ISCHR(info.st_mode)
            assert (member.devmajor, member.devminor) == (
                os.major(info.st_rdev),
                os.minor(info.st_rdev),
            )
        else:
            assert member.isfifo()
        xattrs = {
            key.removeprefix("SCHILY.xattr."): value
            for key, value in member.pax_headers.items()
            if key.startswith("SCHILY.xattr.")
        }
        wanted = {
            attribute: os.getxattr(path, attribute, follow_symlinks=False)
            for attribute in os.listxattr(path, follow_symlinks=False)
            if not attribute.startswith(("trusted.overlay.", "user.overlay.", "security.selinux"))
        }
        assert {
            key: value.encode("utf-8", "surrogateescape") for key, value in xattrs.items()
        } == wanted, name
    links = [member for member, _ in seen.values() if member.islnk()]
    assert [member.name for member in links] == ["linked"]  # the second name met


def test_pax_records_carry_what_ustar_cannot(engine: Engine, tree: Path) -> None:
    tar = diff_bytes(engine, entries_of(tree), Compression.NONE)
    seen = {member.name: member for member, _ in members(tar)}
    assert seen["dir/plain"].pax_headers["mtime"] == "1700000000.123456789"
    assert seen["empty"].pax_headers["mtime"] == "-1.500000000"
    assert "path" in seen["d" * 90 + "/" + "f" * 40].pax_headers
    assert "linkpath" in seen["long-target"].pax_headers
    assert seen["long-target"].linkname == "t" * 150
    assert seen[os.fsdecode(b"latin1-\xe9\xff")].pax_headers["path"]
    if ROOT:
        assert seen["big"].pax_headers["uid"] == str(BIG_ID)
        assert seen["big"].pax_headers["mtime"] == "-7"


def test_gzip_diffs_read_whole_with_gzip(engine: Engine, tree: Path) -> None:
    entries = entries_of(tree)
    blob = diff_bytes(engine, entries, Compression.GZIP)
    result = subprocess.run(["gzip", "-dc"], input=blob, capture_output=True, check=True)
    assert result.stdout == diff_bytes(engine, entries, Compression.NONE)


def test_an_empty_list_is_an_empty_tar(engine: Engine) -> None:
    for compression in (Compression.NONE, Compression.GZIP, Compression.ZSTD):
        tar = uncompressed(diff_bytes(engine, [], compression), compression)
        assert tar == bytes(1024)


def test_a_missing_file_fails_naming_it(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "here").write_bytes(b"x")
    entries: list[TreeEntry] = [
        ("here", os.fspath(tmp_path / "here")),
        ("gone", os.fspath(tmp_path / "gone")),
    ]
    with pytest.raises(FileNotFoundError) as caught:
        diff_bytes(engine, entries, Compression.GZIP)
    assert caught.value.filename == os.fspath(tmp_path / "gone")


def test_bzip2_and_xz_are_refused(engine: Engine) -> None:
    for compression in (Compression.BZIP2, Compression.XZ):
        with pytest.raises(NotSupported):
            engine.open_tree_diff([], compression)


def test_a_file_that_grew_gives_its_size_at_lstat(engine: Engine, tmp_path: Path) -> None:
    """The header's size comes from the entry's lstat; the bytes written match it."""
    path = tmp_path / "growing"
    path.write_bytes(b"a" * 1000)
    with engine.open_tree_diff([("growing", os.fspath(path))], Compression.NONE) as stream:
        header = stream.read(512)
        with path.open("ab") as more:
            more.write(b"b" * 5000)
        rest = stream.read()
    ((member, data),) = list(members(header + rest))
    assert member.size == 1000
    assert data == b"a" * 1000


@pytest.mark.skipif(not ROOT, reason="chown of a container's files needs root")
def test_a_container_layer_diffs_alike_in_both_engines(tmp_path: Path, driver_name: str) -> None:
    """A layer written through its mount (as a container writes it): same diff bytes from
    both engines, every compression, and the diff rebuilds the same tree."""
    base_tar = build_tar(
        [
            Entry(b"etc", "dir", mode=0o755),
            Entry(b"etc/hostname", "file", data=b"base\n"),
            Entry(b"etc/removed", "file", data=b"soon gone\n"),
        ]
    )
    outputs: dict[str, dict[Compression, bytes]] = {}
    for engine in ("native", "pure"):
        store = LayerStore(tmp_path / engine, driver=driver_name, engine=engine)
        base, _ = store.put(base_tar)
        layer = store.create(parent=base.id)
        mount_point = Path(store.mount(layer.id))
        try:
            (mount_point / "etc" / "hostname").write_text("container\n")
            os.remove(mount_point / "etc" / "removed")
            (mount_point / "new").mkdir()
            (mount_point / "new" / "file").write_bytes(bytes(range(256)) * (3 << 12) + b"end")
            os.chown(mount_point / "new" / "file", 123, 456)
            os.utime(mount_point / "new" / "file", ns=(0, NANOSECONDS))
            os.utime(mount_point / "new", ns=(0, NANOSECONDS))
            os.utime(mount_point / "etc", ns=(0, NANOSECONDS))
            os.utime(mount_point / "etc" / "hostname", ns=(0, NANOSECONDS))
        finally:
            store.unmount(layer.id)
        outputs[engine] = {}
        for compression in (Compression.NONE, Compression.GZIP, Compression.ZSTD):
            with store.diff(layer.id, compression=compression) as stream:
                outputs[engine][compression] = uncompressed(stream.read(), compression)
        store.close()
    assert outputs["native"] == outputs["pure"]
    tar = outputs["native"][Compression.NONE]
    names = [member.name for member, _ in members(tar)]
    assert "etc/.wh.removed" in names
    assert "new/file" in names
    assert all(tar == output for output in outputs["native"].values())


def test_a_whole_directory_lists_as_its_comparison_with_nothing(tree: Path, tmp_path: Path) -> None:
    """vfs diffs a layer without a parent by listing its directory (no comparison, no lstat):
    the same members, in the same order, as comparing it with an empty tree gives, here on
    names whose order differs between a depth-first walk and a sort by path."""
    from layerstore.drivers.changes import (
        DirectoryView,
        compare_trees,
        entries_of_changes,
        entries_of_directory,
    )

    ordered = tmp_path / "ordered"
    for directory in ("a/b", "a-b", "a.b/c", "deep/" + "/".join("n" * 60)):
        (ordered / directory).mkdir(parents=True)
    for file in ("a/b/z", "a/0", "a-b/f", "a.b/c/f", "a~", "deep/" + "/".join("n" * 60) + "/f"):
        (ordered / file).write_bytes(b"x")
    os.symlink("a", ordered / "link-to-directory")
    for root in (os.fspath(tree), os.fspath(ordered)):
        compared = entries_of_changes(
            DirectoryView(root), compare_trees(DirectoryView(None), DirectoryView(root))
        )
        listed = list(entries_of_directory(root))
        assert listed == list(compared)
        assert len(listed) > 10


def test_a_layer_without_a_parent_diffs_as_its_directory(tmp_path: Path, engine_name: str) -> None:
    """A vfs layer without a parent, written through its mount: its diff holds every entry
    of its directory, once, in path order, with the files' contents."""
    store = LayerStore(tmp_path / "store", driver="vfs", engine=engine_name)
    layer = store.create()
    mount_point = Path(store.mount(layer.id))
    try:
        (mount_point / "a" / "b").mkdir(parents=True)
        (mount_point / "a" / "b" / "f").write_bytes(b"file\n")
        (mount_point / "a-b").write_bytes(b"sorts before a/ by path\n")
        os.symlink("a/b/f", mount_point / "link")
    finally:
        store.unmount(layer.id)
    with store.diff(layer.id, compression=Compression.NONE) as stream:
        tar = stream.read()
    store.close()
    assert [(member.name, data) for member, data in members(tar)] == [
        ("a", None),
        ("a-b", b"sorts before a/ by path\n"),
        ("a/b", None),
        ("a/b/f", b"file\n"),
        ("link", None),
    ]
