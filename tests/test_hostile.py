"""Hostile layer blobs: nothing outside the layer changes, bad input is refused, nothing is left."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from layerstore import InvalidLayerData, LayerStore

from .manifest import tree_manifest
from .tarballs import Entry, build_tar


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A directory outside the store that no layer may touch."""
    directory = tmp_path / "canary"
    directory.mkdir()
    (directory / "file").write_text("precious")
    (directory / "subdir").mkdir()
    (directory / "subdir" / "inner").write_text("also precious")
    return directory


def raw_tar(build: Callable[[tarfile.TarFile], None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        build(archive)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info, io.BytesIO(data) if kind == tarfile.REGTYPE else None


def archive_of(*members: tuple) -> bytes:
    return raw_tar(lambda archive: [archive.addfile(*item) for item in members])


def assert_store_intact(store: LayerStore, before: set[str]) -> None:
    """No half-made layer remains and the store still takes a good layer."""
    assert {layer.id for layer in store.layers()} == before
    assert set(store.driver.layer_ids()) == before
    leftovers = [
        name
        for name in os.listdir(store.layers_dir)
        if name.endswith((".tar-split.gz", ".tmp")) and name.split(".")[0] not in before
    ]
    assert leftovers == []
    layer, _ = store.put(build_tar([Entry(b"ok", "file", data=b"fine")]))
    assert Path(store.driver.layer_dir(layer.id), "ok").read_bytes() == b"fine"
    store.delete(layer.id)


def confined_cases(canary: Path) -> dict[str, bytes]:
    """Blobs that try to reach `canary` but must land inside the layer (or be refused)."""
    outside = str(canary)
    return {
        "absolute path": archive_of(member(outside + "/file", data=b"pwned")),
        "symlink to an outside directory, then a file through it": archive_of(
            member("escape", tarfile.SYMTYPE, link=outside),
            member("escape/file", data=b"pwned"),
        ),
        "symlink climbing with .., then a file through it": archive_of(
            member("up", tarfile.SYMTYPE, link="../../../../../../../../.."),
            member("up" + outside + "/file", data=b"pwned"),
        ),
        "chain of symlinks": archive_of(
            member("a", tarfile.SYMTYPE, link="b"),
            member("b", tarfile.SYMTYPE, link=outside),
            member("a/subdir", tarfile.DIRTYPE),
            member("a/subdir/inner", data=b"pwned"),
        ),
        "whiteout through a symlink": archive_of(
            member("escape", tarfile.SYMTYPE, link=outside),
            member("escape/.wh.file"),
        ),
        "opaque directory through a symlink": archive_of(
            member("escape", tarfile.SYMTYPE, link=outside),
            member("escape/.wh..wh..opq"),
        ),
        "absolute whiteout": archive_of(member(outside + "/.wh.file")),
    }


def refused_cases(canary: Path) -> dict[str, bytes]:
    outside = str(canary)
    return {
        "dot-dot path": archive_of(member("../../../../../../.." + outside + "/file", data=b"x")),
        "dot-dot inside the name": archive_of(member("a/../../escape", data=b"x")),
        "hard link to an outside file": archive_of(
            member("hl", tarfile.LNKTYPE, link=outside + "/file")
        ),
        "hard link climbing out": archive_of(
            member("hl", tarfile.LNKTYPE, link="../../../../../../.." + outside + "/file")
        ),
        "hard link through a symlink": archive_of(
            member("escape", tarfile.SYMTYPE, link=outside),
            member("hl", tarfile.LNKTYPE, link="escape/file"),
        ),
        "whiteout climbing out": archive_of(member("../../../.wh.canary")),
    }


@pytest.mark.parametrize("case", sorted(confined_cases(Path("/x"))))
def test_hostile_paths_stay_inside(store: LayerStore, canary: Path, case: str) -> None:
    blob = confined_cases(canary)[case]
    before_canary = tree_manifest(canary)
    base = store.create()
    try:
        layer, _ = store.put(blob, parent=base.id)
    except InvalidLayerData:
        layer = None  # refusing is also fine
    assert tree_manifest(canary) == before_canary
    if layer is not None:
        assert store.driver.exists(layer.id)
        store.delete(layer.id)
    assert_store_intact(store, {base.id})


@pytest.mark.parametrize("case", sorted(refused_cases(Path("/x"))))
def test_hostile_paths_are_refused(store: LayerStore, canary: Path, case: str) -> None:
    blob = refused_cases(canary)[case]
    before_canary = tree_manifest(canary)
    with pytest.raises(InvalidLayerData):
        store.put(blob)
    assert tree_manifest(canary) == before_canary
    assert_store_intact(store, set())


def header(name: bytes, size: int, typeflag: bytes = b"0", checksum: bool = True) -> bytes:
    """A raw USTAR header block (the checksum optionally wrong)."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = (
        f"{size:011o}\0".encode() if size < 8**11 else b"\x80" + size.to_bytes(11, "big")
    )
    block[136:148] = b"00000000000\0"
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    value = sum(block) + (0 if checksum else 1)
    block[148:156] = f"{value:06o}\0 ".encode()
    return bytes(block)


def flip(data: bytes, position: int, mask: int = 1) -> bytes:
    changed = bytearray(data)
    changed[position] ^= mask
    return bytes(changed)


def corrupt_cases() -> dict[str, tuple[bytes, str]]:
    good = build_tar([Entry(b"a", "file", data=b"x" * 2000), Entry(b"b", "file", data=b"y")])
    pax_data = b"99 path=x\n"
    return {
        "bad gzip checksum": (flip(gzip.compress(good), -8), "gzip"),
        "bad gzip header": (flip(gzip.compress(good), 3, 0xE0), "gzip"),
        "bad header checksum": (header(b"f", 0, checksum=False) + bytes(1024), "offset 0"),
        "size beyond the data": (header(b"f", 100000) + b"x" * 1000, "'f'"),
        "bogus PAX length": (
            header(b"././@PaxHeader", len(pax_data), b"x") + pax_data.ljust(512, b"\0")
            + header(b"f", 0) + bytes(1024),
            "PAX",
        ),
        "PAX header claiming a terabyte": (header(b"pax", 1 << 40, b"x") + bytes(1024), "1 MiB"),
        "GNU long name claiming a terabyte": (header(b"ll", 1 << 40, b"L") + bytes(1024), "1 MiB"),
        "duplicate paths": (
            build_tar([Entry(b"dup", "file", data=b"1"), Entry(b"./dup", "file", data=b"2")]),
            "duplicate path",
        ),
        "truncated header": (good[:700], "truncated"),
        "zero block then garbage": (bytes(512) + b"\1" * 512, "zero block"),
    }  # fmt: skip


@pytest.mark.parametrize("case", sorted(corrupt_cases()))
def test_corrupt_blobs_are_refused_and_cleaned_up(store: LayerStore, case: str) -> None:
    blob, expected = corrupt_cases()[case]
    base = store.create()
    with pytest.raises(InvalidLayerData, match=expected.replace("(", r"\(")):
        store.put(blob, parent=base.id)
    assert_store_intact(store, {base.id})


def test_errors_name_the_offset(store: LayerStore) -> None:
    blob = build_tar([Entry(b"first", "file", data=b"x" * 600)])[:1536]
    blob += header(b"bad", 0, checksum=False) + bytes(1024)
    with pytest.raises(InvalidLayerData, match="offset 1536"):
        store.put(blob)
