"""The user.containers.override_stat codec agrees with containers/storage's (pkg/idtools)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from layerstore import InvalidLayerData
from layerstore.drivers.override import (
    OVERRIDE_XATTR,
    OverrideStat,
    format_override,
    parse_override,
    read_override,
)


@pytest.mark.parametrize(
    ("mode", "major", "minor", "value"),
    [
        # What FormatContainersOverrideXattrDevice writes for each kind of file.
        (stat.S_IFREG | 0o644, 0, 0, "0:0:0644:file"),
        (stat.S_IFREG | 0o4755, 0, 0, "0:0:4755:file"),
        (stat.S_IFREG, 0, 0, "0:0:0000:file"),
        (stat.S_IFDIR | 0o1777, 0, 0, "0:0:1777:dir"),
        (stat.S_IFLNK | 0o777, 0, 0, "0:0:0777:symlink"),
        (stat.S_IFIFO | 0o600, 0, 0, "0:0:0600:pipe"),
        (stat.S_IFSOCK | 0o755, 0, 0, "0:0:0755:socket"),
        (stat.S_IFCHR | 0o666, 1, 3, "0:0:0666:char-1-3"),
        (stat.S_IFBLK | 0o660, 8, 1, "0:0:0660:block-8-1"),
    ],
)
def test_format_and_parse_round_trip(mode: int, major: int, minor: int, value: str) -> None:
    assert format_override(0, 0, mode, major, minor) == value
    assert parse_override(value) == OverrideStat(0, 0, mode, major, minor)


def test_owners_and_the_1_43_format() -> None:
    assert format_override(1000, 42, stat.S_IFREG | 0o2711) == "1000:42:2711:file"
    # containers/storage 1.43 wrote "%d:%d:0%o" and no type.
    recorded = parse_override("100:200:04755")
    assert (recorded.uid, recorded.gid, recorded.permissions, recorded.typed) == (
        100,
        200,
        0o4755,
        False,
    )
    assert parse_override(b"0:0:00").permissions == 0
    # Extra parts are ignored, types match by prefix, bits above 07777 are dropped (as in Go).
    assert parse_override("1:2:0755:dir:future").mode == stat.S_IFDIR | 0o755
    assert parse_override("1:2:0755:char-4-5-extra").device == os.makedev(4, 5)
    assert parse_override("1:2:170755:file").mode == stat.S_IFREG | 0o755


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1:2",
        "a:0:0644",
        "0:-1:0644",
        "0:0:0899",
        "0:0:0644:door",
        "0:0:0644:char-1",
        "0:0:0644:char-x-1",
        "4294967296:0:0644",
    ],
)
def test_values_go_refuses(value: str) -> None:
    with pytest.raises(InvalidLayerData, match="override_stat"):
        parse_override(value)


def test_read_override(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    try:
        os.setxattr(plain, OVERRIDE_XATTR, b"7:8:0000:file")
    except OSError as exc:
        pytest.skip(f"this file system takes no user xattrs: {exc}")
    assert read_override(plain) == OverrideStat(7, 8, stat.S_IFREG)
    untyped = tmp_path / "dir"
    untyped.mkdir()
    os.setxattr(untyped, OVERRIDE_XATTR, b"0:0:0700")
    recorded = read_override(untyped)
    assert recorded is not None
    assert recorded.mode == stat.S_IFDIR | 0o700
    (tmp_path / "none").write_bytes(b"")
    assert read_override(tmp_path / "none") is None
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert read_override("plain", dir_fd=fd) == OverrideStat(7, 8, stat.S_IFREG)
    finally:
        os.close(fd)
