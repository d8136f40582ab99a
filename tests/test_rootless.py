"""Stores kept without root: containers/storage's force_mask and ignore_chown_errors
(docs/rootless.md), over both engines, as root and as an unprivileged user."""

from __future__ import annotations

import io
import os
import stat
import tarfile
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


def multi_owner_layer() -> bytes:
    """A layer with setuid files, devices, mode-000 files and directories, several owners,
    hard links and symlinks (what Fedora's and Debian's base images hold)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _member(tar, "etc", tarfile.DIRTYPE, 0o755)
        _member(tar, "etc/shadow", mode=0o000, data=b"root:*:19000::::::\n")
        _member(tar, "etc/locked", tarfile.DIRTYPE, 0o000)
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
