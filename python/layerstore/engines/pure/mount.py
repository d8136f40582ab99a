"""Overlay mounts with the kernel's new mount API, through ctypes (the pure engine's mount.rs).

Each lower directory goes in as its own ``lowerdir+`` (Linux 6.8+), so deep chains are not
limited by the page of data ``mount(2)`` takes; older kernels fall back to ``mount(2)``.
"""

from __future__ import annotations

import ctypes
import errno
import os

from ...errors import MountError

__all__ = ["make_private_mount", "mount_overlay", "unmount"]

# Syscall numbers of the new mount API are the same on every architecture (added in 5.2).
_SYS_MOVE_MOUNT, _SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 429, 430, 431, 432
_FSOPEN_CLOEXEC = 1
_FSCONFIG_SET_FLAG, _FSCONFIG_SET_STRING, _FSCONFIG_CMD_CREATE = 0, 1, 6
_FSMOUNT_CLOEXEC = 1
_MOVE_MOUNT_F_EMPTY_PATH = 4
_AT_FDCWD = -100
_MOUNT_ATTRIBUTES = {"ro": 0x1, "nosuid": 0x2, "nodev": 0x4, "noexec": 0x8}
_MS_FLAGS = {"ro": 0x1, "nosuid": 0x2, "nodev": 0x4, "noexec": 0x8}
_MNT_DETACH = 2
_MS_BIND, _MS_PRIVATE = 0x1000, 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _data(lowers: list[str], upper: str | None, work: str | None, options: list[str]) -> str:
    parts = [f"lowerdir={':'.join(lowers)}"]
    if upper is not None and work is not None:
        parts += [f"upperdir={upper}", f"workdir={work}"]
    parts += [option for option in options if option not in _MOUNT_ATTRIBUTES]
    return ",".join(parts)


def _syscall(number: int, *arguments: object) -> int:
    result = int(_libc.syscall(ctypes.c_long(number), *arguments))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _kernel_messages(context: int) -> str:
    messages = []
    while True:
        try:
            message = os.read(context, 1024)
        except OSError:
            break  # ENODATA: no more messages
        if not message:
            break
        messages.append(message.decode("utf-8", "replace").strip())
    return "; ".join(messages)


def _fsconfig(context: int, command: int, key: str | None, value: str | None) -> None:
    _syscall(
        _SYS_FSCONFIG,
        ctypes.c_int(context),
        ctypes.c_uint(command),
        ctypes.c_char_p(os.fsencode(key) if key is not None else None),
        ctypes.c_char_p(os.fsencode(value) if value is not None else None),
        ctypes.c_int(0),
    )


def mount_overlay(
    lowers: list[str], upper: str | None, work: str | None, target: str, options: list[str]
) -> None:
    """See Engine.mount_overlay."""
    data = _data(lowers, upper, work, options)

    def failure(exc: OSError, what: str, detail: str = "") -> MountError:
        code = exc.errno or errno.EIO
        return MountError(code, f"{what}: {os.strerror(code)} {detail}".strip(), target, data)

    try:
        context = _syscall(_SYS_FSOPEN, ctypes.c_char_p(b"overlay"), ctypes.c_uint(_FSOPEN_CLOEXEC))
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            _legacy_mount(data, target, options)
            return
        raise failure(exc, "opening an overlay file system") from None
    try:
        settings: list[tuple[int, str, str | None]] = [
            (_FSCONFIG_SET_STRING, "lowerdir+", lower) for lower in lowers
        ]
        if upper is not None and work is not None:
            settings += [(_FSCONFIG_SET_STRING, "upperdir", upper)]
            settings += [(_FSCONFIG_SET_STRING, "workdir", work)]
        attributes = 0
        for option in options:
            if option in _MOUNT_ATTRIBUTES:
                attributes |= _MOUNT_ATTRIBUTES[option]
            elif "=" in option:
                name, _, text = option.partition("=")
                settings.append((_FSCONFIG_SET_STRING, name, text))
            else:
                settings.append((_FSCONFIG_SET_FLAG, option, None))
        for command, key, value in settings:
            try:
                _fsconfig(context, command, key, value)
            except OSError as exc:
                if key == "lowerdir+" and exc.errno == errno.EINVAL:
                    _legacy_mount(data, target, options)  # a kernel before 6.8
                    return
                detail = _kernel_messages(context)
                raise failure(exc, f"setting {key} for overlay", detail) from None
        try:
            _fsconfig(context, _FSCONFIG_CMD_CREATE, None, None)
        except OSError as exc:
            raise failure(exc, "creating the overlay", _kernel_messages(context)) from None
        try:
            mount = _syscall(
                _SYS_FSMOUNT,
                ctypes.c_int(context),
                ctypes.c_uint(_FSMOUNT_CLOEXEC),
                ctypes.c_uint(attributes),
            )
        except OSError as exc:
            raise failure(exc, "making the overlay mount") from None
        try:
            _syscall(
                _SYS_MOVE_MOUNT,
                ctypes.c_int(mount),
                ctypes.c_char_p(b""),
                ctypes.c_int(_AT_FDCWD),
                ctypes.c_char_p(os.fsencode(target)),
                ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH),
            )
        except OSError as exc:
            raise failure(exc, "attaching the overlay at its mount point") from None
        finally:
            os.close(mount)
    finally:
        os.close(context)


def _legacy_mount(data: str, target: str, options: list[str]) -> None:
    if len(data) >= 4096:
        raise MountError(
            errno.E2BIG,
            "the mount data is longer than a page, and this kernel has no lowerdir+ to pass "
            "the layers one by one",
            target,
            data,
        )
    flags = 0
    for option in options:
        flags |= _MS_FLAGS.get(option, 0)
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", flags, data.encode()) != 0:
        code = ctypes.get_errno()
        raise MountError(code, f"mounting overlay: {os.strerror(code)}", target, data)


def unmount(target: str, detach: bool = False) -> None:
    """See Engine.unmount."""
    if _libc.umount2(os.fsencode(target), _MNT_DETACH if detach else 0) != 0:
        code = ctypes.get_errno()
        raise MountError(code, f"unmounting: {os.strerror(code)}", target)


def make_private_mount(path: str, bind: bool) -> None:
    """See Engine.make_private_mount."""
    encoded = os.fsencode(path)
    if bind and _libc.mount(encoded, encoded, b"none", _MS_BIND, None) != 0:
        code = ctypes.get_errno()
        raise MountError(code, f"bind-mounting onto itself: {os.strerror(code)}", path)
    if _libc.mount(None, encoded, b"none", _MS_PRIVATE, None) != 0:
        code = ctypes.get_errno()
        raise MountError(code, f"making the mount private: {os.strerror(code)}", path)
