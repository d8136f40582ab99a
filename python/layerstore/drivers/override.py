"""The ``user.containers.override_stat`` xattr: a file's real owner, mode and device numbers.

containers/storage stores layers without root by giving every file a fixed mode (its
``force_mask`` option) and recording what the tar said in this xattr; everything that reads the
layer (fuse-overlayfs, the Go diff code) then uses the recorded values. The value is text,
``UID:GID:MODE[:TYPE]``: decimal ids, the permission bits with setuid/setgid/sticky in octal,
and a type (``file``, ``dir``, ``symlink``, ``pipe``, ``socket``, ``block-MAJOR-MINOR``,
``char-MAJOR-MINOR``). containers/storage 1.43 writes only the first three parts (mode as
``"0%o"``); newer releases write all four (mode as ``"%04o"``) and read both
(pkg/idtools/idtools.go; docs/rootless.md has the details).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from ..errors import InvalidLayerData

__all__ = ["OVERRIDE_XATTR", "OverrideStat", "format_override", "parse_override", "read_override"]

OVERRIDE_XATTR = "user.containers.override_stat"

_PERMISSIONS = 0o7777  # rwx for all three, setuid, setgid, sticky
_TYPE_NAMES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "pipe",
    stat.S_IFSOCK: "socket",
}
_NAMED_TYPES = {name: kind for kind, name in _TYPE_NAMES.items()}
_DEVICE_TYPES = {"block": stat.S_IFBLK, "char": stat.S_IFCHR}
_MAX_ID = 0xFFFFFFFF  # Go parses ids and the mode with ParseUint(..., 32)


@dataclass(frozen=True)
class OverrideStat:
    """What the xattr records: ``mode`` is a full ``st_mode`` (file type and permission bits).

    A value without a type part (the 1.43 format) gives a regular file's type; callers that
    know the file's real type on disk combine it with :attr:`permissions`.
    """

    uid: int
    gid: int
    mode: int
    major: int = 0
    minor: int = 0
    typed: bool = True  # False when the value had no type part

    @property
    def permissions(self) -> int:
        """The permission bits, setuid, setgid and sticky included."""
        return self.mode & _PERMISSIONS

    @property
    def device(self) -> int:
        """``os.makedev(major, minor)``: meaningful for block and character devices only."""
        return os.makedev(self.major, self.minor)


def format_override(uid: int, gid: int, mode: int, major: int = 0, minor: int = 0) -> str:
    """The value newer containers/storage writes: ``"UID:GID:%04o:TYPE"``.

    ``mode`` is an ``st_mode``; ``major``/``minor`` are used for block and character devices.
    """
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFBLK:
        type_name = f"block-{major}-{minor}"
    elif kind == stat.S_IFCHR:
        type_name = f"char-{major}-{minor}"
    else:
        type_name = _TYPE_NAMES.get(kind, "file")
    return f"{uid}:{gid}:{mode & _PERMISSIONS:04o}:{type_name}"


def _number(text: str, base: int, what: str, value: str) -> int:
    # Go's strconv.ParseUint: digits only (no sign, no spaces, no underscores).
    digits = "01234567" if base == 8 else "0123456789"
    if not text or any(char not in digits for char in text):
        raise InvalidLayerData(f"{OVERRIDE_XATTR} {value!r}: cannot parse the {what}")
    number = int(text, base)
    if number > _MAX_ID:
        raise InvalidLayerData(f"{OVERRIDE_XATTR} {value!r}: the {what} is out of range")
    return number


def parse_override(value: str | bytes) -> OverrideStat:
    """Decode a value as newer containers/storage does (both formats; extra parts ignored).

    Raises :class:`~layerstore.errors.InvalidLayerData` for a value Go would refuse.
    """
    text = os.fsdecode(value) if isinstance(value, bytes) else value
    parts = text.split(":")
    if len(parts) < 3:
        raise InvalidLayerData(f"{OVERRIDE_XATTR} {text!r}: fewer than 3 parts")
    uid = _number(parts[0], 10, "uid", text)
    gid = _number(parts[1], 10, "gid", text)
    # Go keeps only the permission, setuid, setgid and sticky bits of the parsed number.
    permissions = _number(parts[2], 8, "mode", text) & _PERMISSIONS
    if len(parts) == 3:
        return OverrideStat(uid, gid, stat.S_IFREG | permissions, typed=False)
    type_text = parts[3]
    # Go matches the type by prefix ("dirx" is a directory), devices by their first part.
    for name, kind in _DEVICE_TYPES.items():
        if type_text.startswith(name):
            fields = type_text.split("-")
            if len(fields) < 3 or fields[0] != name:
                raise InvalidLayerData(f"{OVERRIDE_XATTR} {text!r}: invalid device type")
            major = _signed(fields[1], "major number", text)
            minor = _signed(fields[2], "minor number", text)
            return OverrideStat(uid, gid, kind | permissions, major, minor)
    for name, kind in _NAMED_TYPES.items():
        if type_text.startswith(name):
            return OverrideStat(uid, gid, kind | permissions)
    raise InvalidLayerData(f"{OVERRIDE_XATTR} {text!r}: invalid file type {type_text!r}")


def _signed(text: str, what: str, value: str) -> int:
    # Go's strconv.Atoi: an optional sign, then decimal digits.
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body.isascii() or not body.isdigit():
        raise InvalidLayerData(f"{OVERRIDE_XATTR} {value!r}: cannot parse the {what}")
    number = int(text)
    if number < 0:
        raise InvalidLayerData(f"{OVERRIDE_XATTR} {value!r}: the {what} is negative")
    return number


def read_override(path: str | bytes, *, dir_fd: int | None = None) -> OverrideStat | None:
    """The recorded stat of ``path`` (not following a symlink), or None when it has none.

    A value without a type part takes the file's type from ``lstat``, as fuse-overlayfs does.
    """
    try:
        if dir_fd is not None:
            # os.getxattr has no dir_fd: go through the directory's /proc/self/fd entry.
            name = os.path.join(f"/proc/self/fd/{dir_fd}", os.fsdecode(path))
        else:
            name = os.fsdecode(path)
        value = os.getxattr(name, OVERRIDE_XATTR, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise
    recorded = parse_override(value)
    if recorded.typed:
        return recorded
    kind = stat.S_IFMT(os.lstat(name).st_mode)
    return OverrideStat(recorded.uid, recorded.gid, kind | recorded.permissions, typed=False)
