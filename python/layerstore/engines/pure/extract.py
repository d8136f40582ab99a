"""Extracting tar entries into a layer's directory, confined to it whatever the names say.

Every path is resolved inside the layer, one component at a time with ``O_NOFOLLOW``; a symlink
met on the way is followed as if the layer's directory were the root, the way Go extracts inside
a chroot. Every change is made with a ``*at`` call relative to an open directory, so nothing
outside the layer can be reached (docs/apply.md sections 4 and 5).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Iterable

from ...drivers.override import OVERRIDE_XATTR, format_override
from ...errors import InvalidLayerData
from ...userns import running_in_user_namespace
from .. import WhiteoutFormat
from .confine import DIRECTORY_FLAGS as _DIR_FLAGS
from .confine import Parts, confine, open_directory, shown
from .tarwalk import TarEntry

__all__ = ["Extractor"]

WHITEOUT_PREFIX = b".wh."
WHITEOUT_META_PREFIX = b".wh..wh."
OPAQUE_MARKER = b".wh..wh..opq"
_IGNORED_XATTRS = frozenset({b"security.selinux"})

TYPE_REGULAR = frozenset(b"07")
TYPE_HARDLINK = ord("1")
TYPE_SYMLINK = ord("2")
TYPE_CHAR = ord("3")
TYPE_BLOCK = ord("4")
TYPE_DIRECTORY = ord("5")
TYPE_FIFO = ord("6")
TYPE_GLOBAL = ord("g")

_MAX_ID = 0xFFFFFFFE  # uid_t; 0xFFFFFFFF means "unchanged" to chown
_MAX_DEVICE = 0xFFFFFFFF
# setxattr(2) for an empty or overlong name (ERANGE), a value too large (E2BIG), or a name
# outside every namespace on some file systems (EINVAL).
_BAD_XATTR_ERRNOS = frozenset({errno.ERANGE, errno.E2BIG, errno.EINVAL})
_MIN_TIME, _MAX_TIME = -(1 << 63), (1 << 63) - 1  # nanoseconds in a signed 64-bit integer


_TYPE_MODES = {
    TYPE_CHAR: stat.S_IFCHR,
    TYPE_BLOCK: stat.S_IFBLK,
    TYPE_FIFO: stat.S_IFIFO,
    TYPE_DIRECTORY: stat.S_IFDIR,
}
_DEFAULT_ROOT_OVERRIDE = format_override(0, 0, stat.S_IFDIR | 0o755).encode()  # Go: no root entry


class Extractor:
    """Applies entries to ``root``; ``whiteout_format`` is ``"overlay"`` or ``"vfs"``.

    ``force_mask`` (containers/storage's option, docs/rootless.md): regular files and
    directories get that mode, devices and fifos become empty regular files, nothing is
    chowned, and each file's owner, mode and device numbers from the tar are recorded in
    ``user.containers.override_stat``. ``ignore_chown_errors``: owners that cannot be set are
    left as they are, even for root.
    """

    def __init__(
        self,
        root: str,
        whiteout_format: WhiteoutFormat,
        *,
        force_mask: int | None = None,
        ignore_chown_errors: bool = False,
    ) -> None:
        self._overlay = whiteout_format == "overlay"
        self._force_mask = force_mask
        self._ignore_chown_errors = ignore_chown_errors
        self._root_override: bytes | None = None  # the root entry's, under force_mask
        self._root_fd = os.open(root, _DIR_FLAGS)
        self._privileged = os.geteuid() == 0
        # In a user namespace even its root cannot make device nodes (Go skips them there)
        # nor set trusted.* xattrs: overlay is mounted with userxattr, which reads user.*.
        self._in_user_namespace = running_in_user_namespace()
        self._opaque_xattr = (
            "trusted.overlay.opaque"
            if self._privileged and not self._in_user_namespace
            else "user.overlay.opaque"
        )
        self._cached: tuple[Parts, int] | None = None  # the last parent directory resolved
        self._deferred_dirs: list[tuple[Parts, int, int, int]] = []
        self._extracted: set[bytes] = set()  # vfs: keyed hashes of paths this layer made
        self._hash_key = os.urandom(16)
        self.size = 0  # regular file sizes and symlink target lengths
        # Without root, the layer's directory is made owner-writable while the blob is applied
        # (a new layer's is 0555, which only root may write into); its mode is given back.
        self._root_mode: int | None = None
        if not self._privileged:
            mode = stat.S_IMODE(os.fstat(self._root_fd).st_mode)
            if mode & 0o300 != 0o300:
                os.fchmod(self._root_fd, mode | 0o300)
                self._root_mode = mode

    def close(self) -> None:
        self._forget_cache()
        try:
            self._give_back_root_mode()
        finally:
            os.close(self._root_fd)

    def _give_back_root_mode(self) -> None:
        if self._root_mode is not None:
            mode, self._root_mode = self._root_mode, None
            os.fchmod(self._root_fd, mode)

    # -- resolution ----------------------------------------------------------------------------

    def _forget_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _invalidate(self, parts: Parts) -> None:
        """Forget the cached directory if ``parts`` (being removed) is it or an ancestor."""
        if self._cached is not None and self._cached[0][: len(parts)] == parts:
            self._forget_cache()

    def _directory(self, parts: Parts, create: bool) -> int | None:
        """A descriptor of directory ``parts`` inside the layer (owned by the cache)."""
        if self._cached is not None and self._cached[0] == parts:
            return self._cached[1]
        fd = self._open_directory(parts, create)
        if fd is None:
            return None
        self._forget_cache()
        self._cached = (parts, fd)
        return fd

    def _open_directory(self, parts: Parts, create: bool) -> int | None:
        return open_directory(self._root_fd, parts, create)

    def _key(self, parts: Parts) -> bytes:
        return hashlib.blake2b(b"/".join(parts), digest_size=16, key=self._hash_key).digest()

    # -- removal -------------------------------------------------------------------------------

    def _remove(self, parent_fd: int, name: bytes, parts: Parts) -> None:
        """Remove ``name`` (recursively) from the directory ``parent_fd``; missing is fine."""
        self._invalidate(parts)
        try:
            info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=parent_fd)  # fd-based, never follows symlinks
        else:
            os.unlink(name, dir_fd=parent_fd)

    def _remove_unextracted(self, directory_fd: int, parts: Parts) -> None:
        """vfs opaque directory: remove everything below it this layer did not extract."""
        for name in sorted(os.listdir(directory_fd)):
            child = (*parts, os.fsencode(name))
            raw_name = os.fsencode(name)
            if self._key(child) not in self._extracted:
                self._remove(directory_fd, raw_name, child)
                continue
            info = os.stat(raw_name, dir_fd=directory_fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                fd = os.open(raw_name, _DIR_FLAGS, dir_fd=directory_fd)
                try:
                    self._remove_unextracted(fd, child)
                finally:
                    os.close(fd)

    # -- entries -------------------------------------------------------------------------------

    def extract(self, entry: TarEntry, content: Iterable[bytes]) -> None:
        """Apply one entry; ``content`` yields its data (it is consumed in any case)."""
        if entry.typeflag == TYPE_GLOBAL:
            return
        self._check_numbers(entry)
        parts = confine(entry.name)
        if any(part.startswith(WHITEOUT_META_PREFIX) for part in parts[:-1]) or (
            parts and parts[-1].startswith(WHITEOUT_META_PREFIX) and parts[-1] != OPAQUE_MARKER
        ):
            return  # reserved AUFS metadata
        if not parts:
            self._extract_root(entry)
            return
        base = parts[-1]
        if base == OPAQUE_MARKER:
            self._opaque(parts[:-1])
            return
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(entry, (*parts[:-1], base[len(WHITEOUT_PREFIX) :]))
            return
        parent_fd = self._directory(parts[:-1], create=True)
        assert parent_fd is not None
        kind = entry.typeflag
        if self._force_mask is not None and kind in (TYPE_CHAR, TYPE_BLOCK, TYPE_FIFO):
            kind = ord("0")  # stored as an empty regular file; the xattr says what it is
        try:
            existing = os.stat(base, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None and not (stat.S_ISDIR(existing.st_mode) and kind == TYPE_DIRECTORY):
            self._remove(parent_fd, base, parts)
            parent_fd = self._directory(parts[:-1], create=True)
            assert parent_fd is not None
            existing = None

        if kind in TYPE_REGULAR:
            self._regular_file(parent_fd, base, entry, content)
        elif kind == TYPE_DIRECTORY:
            self._directory_entry(parent_fd, base, parts, entry, existing is not None)
        elif kind == TYPE_SYMLINK:
            os.symlink(entry.linkname, base, dir_fd=parent_fd)
            self.size += len(entry.linkname)
            if self._force_mask is None:
                self._chown(parent_fd, base, entry)
            self._set_times(parent_fd, base, entry)
        elif kind == TYPE_HARDLINK:
            self._hardlink(parent_fd, base, entry)
        elif kind in (TYPE_CHAR, TYPE_BLOCK, TYPE_FIFO):
            self._special_file(parent_fd, base, entry)
        else:
            raise InvalidLayerData(
                f"invalid tar archive at offset {entry.offset}: unsupported entry type "
                f"{shown(bytes([kind]))} for {shown(entry.name)}"
            )
        if not self._overlay:
            self._extracted.add(self._key(parts))

    def _extract_root(self, entry: TarEntry) -> None:
        if self._overlay or entry.typeflag != TYPE_DIRECTORY:
            return  # Go's Unpack skips the root entry; UnpackLayer merges a root directory
        self._fchown(self._root_fd, entry)
        self._set_xattrs_fd(self._root_fd, entry)
        if self._force_mask is not None:
            self._root_override = self._override(entry)
        self._deferred_dirs.append(((), self._mode(entry), *self._times(entry)))

    def _regular_file(
        self, parent_fd: int, base: bytes, entry: TarEntry, content: Iterable[bytes]
    ) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(base, flags, 0o600, dir_fd=parent_fd)
        try:
            for chunk in content:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            self._fchown(fd, entry)
            os.fchmod(fd, self._mode(entry))
            self._set_xattrs_fd(fd, entry)
            self._set_override_fd(fd, entry)
            os.utime(fd, ns=self._times(entry))
            self.size += os.fstat(fd).st_size
        finally:
            os.close(fd)

    def _directory_entry(
        self, parent_fd: int, base: bytes, parts: Parts, entry: TarEntry, exists: bool
    ) -> None:
        if not exists:
            os.mkdir(base, 0o700, dir_fd=parent_fd)  # the real mode is set at the end
        fd = os.open(base, _DIR_FLAGS, dir_fd=parent_fd)
        try:
            self._fchown(fd, entry)
            if not exists:
                os.fchmod(fd, 0o700)  # writable while the archive fills it, whatever the umask
            self._set_xattrs_fd(fd, entry)
            self._set_override_fd(fd, entry)
        finally:
            os.close(fd)
        self._deferred_dirs.append((parts, self._mode(entry), *self._times(entry)))

    def _hardlink(self, parent_fd: int, base: bytes, entry: TarEntry) -> None:
        target = confine(entry.linkname, "hard link target")
        target_fd = self._open_directory(target[:-1], create=False) if target else None
        if target_fd is None:
            raise InvalidLayerData(
                f"hard link {shown(entry.name)} points to {shown(entry.linkname)}, "
                "which is not in the layer"
            )
        try:
            target_info = os.stat(target[-1], dir_fd=target_fd, follow_symlinks=False)
            if stat.S_ISDIR(target_info.st_mode):
                raise InvalidLayerData(
                    f"hard link {shown(entry.name)} points to {shown(entry.linkname)}, "
                    "which is a directory"
                )
            os.link(
                target[-1], base, src_dir_fd=target_fd, dst_dir_fd=parent_fd,
                follow_symlinks=False,
            )  # fmt: skip
        except FileNotFoundError:
            raise InvalidLayerData(
                f"hard link {shown(entry.name)} points to {shown(entry.linkname)}, "
                "which is not in the layer"
            ) from None
        finally:
            os.close(target_fd)
        info = os.stat(base, dir_fd=parent_fd, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            self._chown(parent_fd, base, entry)
            return  # a hard link to a symlink: as Go, no mode or times through it
        self._chown(parent_fd, base, entry)
        # Under force_mask the link's inode keeps its target's override xattr, as in Go.
        os.chmod(base, self._mode(entry), dir_fd=parent_fd)
        self._set_xattrs_path(parent_fd, base, entry)
        os.utime(base, ns=self._times(entry), dir_fd=parent_fd, follow_symlinks=False)

    def _special_file(self, parent_fd: int, base: bytes, entry: TarEntry) -> None:
        if entry.typeflag == TYPE_FIFO:
            kind = stat.S_IFIFO
        elif not self._privileged or self._in_user_namespace:
            return  # device nodes need privileges; Go skips them in a user namespace too
        else:
            kind = stat.S_IFCHR if entry.typeflag == TYPE_CHAR else stat.S_IFBLK
        device = os.makedev(entry.devmajor, entry.devminor) if kind != stat.S_IFIFO else 0
        os.mknod(base, kind | 0o600, device, dir_fd=parent_fd)
        self._chown(parent_fd, base, entry)
        os.chmod(base, entry.mode & 0o7777, dir_fd=parent_fd)
        self._set_xattrs_path(parent_fd, base, entry)
        os.utime(base, ns=self._times(entry), dir_fd=parent_fd, follow_symlinks=False)

    def _whiteout(self, entry: TarEntry, target: Parts) -> None:
        if target[-1] in (b"", b".", b".."):
            return  # ".wh." alone names nothing to hide
        try:
            parent_fd = self._directory(target[:-1], create=True)
        except InvalidLayerData:
            # A parent that is not a directory (a whiteout device, say) hides nothing below it.
            return
        assert parent_fd is not None
        self._remove(parent_fd, target[-1], target)
        if not self._overlay:
            return
        parent_fd = self._directory(target[:-1], create=True)
        assert parent_fd is not None
        os.mknod(target[-1], stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent_fd)
        os.chmod(target[-1], 0, dir_fd=parent_fd)
        self._chown(parent_fd, target[-1], entry)

    def _opaque(self, directory: Parts) -> None:
        try:
            fd = self._open_directory(directory, create=True)
        except InvalidLayerData:
            if self._overlay:
                raise
            return  # vfs: nothing below a non-directory to remove
        assert fd is not None
        try:
            if self._overlay:
                os.setxattr(fd, self._opaque_xattr, b"y")
            else:
                self._invalidate(directory)
                self._remove_unextracted(fd, directory)
        finally:
            os.close(fd)

    # -- metadata ------------------------------------------------------------------------------

    @staticmethod
    def _check_numbers(entry: TarEntry) -> None:
        """Refuse owners, devices and times the system calls cannot take."""
        problem = ""
        if not (0 <= entry.uid <= _MAX_ID and 0 <= entry.gid <= _MAX_ID):
            problem = f"owner {entry.uid}:{entry.gid}"
        elif not (0 <= entry.devmajor <= _MAX_DEVICE and 0 <= entry.devminor <= _MAX_DEVICE):
            problem = f"device {entry.devmajor}:{entry.devminor}"
        elif not all(
            _MIN_TIME <= value <= _MAX_TIME for value in (entry.mtime_ns, entry.atime_ns or 0)
        ):
            problem = "time"
        if problem:
            raise InvalidLayerData(
                f"invalid tar archive at offset {entry.offset}: entry {shown(entry.name)} has "
                f"an out-of-range {problem}"
            )

    @staticmethod
    def _times(entry: TarEntry) -> tuple[int, int]:
        mtime = entry.mtime_ns
        atime = entry.atime_ns
        return (mtime if atime is None or atime < mtime else atime), mtime

    def _mode(self, entry: TarEntry) -> int:
        """The mode an entry gets on disk: its own, or the force mask."""
        return entry.mode & 0o7777 if self._force_mask is None else self._force_mask

    @staticmethod
    def _override(entry: TarEntry) -> bytes:
        kind = _TYPE_MODES.get(entry.typeflag, stat.S_IFREG)
        value = format_override(
            entry.uid, entry.gid, kind | entry.mode & 0o7777, entry.devmajor, entry.devminor
        )
        return value.encode()

    def _set_override_fd(self, fd: int, entry: TarEntry) -> None:
        """Record the tar's owner, mode and device numbers (force_mask only)."""
        if self._force_mask is not None:
            os.setxattr(fd, OVERRIDE_XATTR, self._override(entry))

    def _chown_failed(self, exc: OSError) -> None:
        # Without privileges the files stay ours, as the vfs driver needs to work rootless.
        if (self._privileged and not self._ignore_chown_errors) or exc.errno not in (
            errno.EPERM,
            errno.EINVAL,
        ):
            raise exc

    def _fchown(self, fd: int, entry: TarEntry) -> None:
        if self._force_mask is not None:
            return  # Go turns chown off under force_mask: the xattr has the owner
        try:
            os.fchown(fd, entry.uid, entry.gid)
        except OSError as exc:
            self._chown_failed(exc)

    def _chown(self, parent_fd: int, base: bytes, entry: TarEntry) -> None:
        if self._force_mask is not None:
            return
        try:
            os.chown(base, entry.uid, entry.gid, dir_fd=parent_fd, follow_symlinks=False)
        except OSError as exc:
            self._chown_failed(exc)

    @staticmethod
    def _set_times(parent_fd: int, base: bytes, entry: TarEntry) -> None:
        os.utime(base, ns=Extractor._times(entry), dir_fd=parent_fd, follow_symlinks=False)

    def _set_xattrs_fd(self, fd: int, entry: TarEntry) -> None:
        for key, value in entry.xattrs.items():
            if key in _IGNORED_XATTRS:
                continue
            try:
                os.setxattr(fd, key, value)
            except OSError as exc:
                self._xattr_failed(exc, entry, key)

    def _set_xattrs_path(self, parent_fd: int, base: bytes, entry: TarEntry) -> None:
        if not entry.xattrs:
            return
        # lsetxattr has no *at form; the parent's /proc entry is our own descriptor.
        path = b"/proc/self/fd/%d/%s" % (parent_fd, base)
        for key, value in entry.xattrs.items():
            if key in _IGNORED_XATTRS:
                continue
            try:
                os.setxattr(path, key, value, follow_symlinks=False)
            except OSError as exc:
                self._xattr_failed(exc, entry, key)

    def _xattr_failed(self, exc: OSError, entry: TarEntry, key: bytes) -> None:
        """Ignore what the file system or our privileges do not support (as Go does); a name
        or value no file system takes is the archive's fault."""
        if exc.errno == errno.ENOTSUP or (exc.errno == errno.EPERM and not self._privileged):
            return
        if exc.errno in _BAD_XATTR_ERRNOS:
            raise InvalidLayerData(
                f"invalid tar archive at offset {entry.offset}: entry {shown(entry.name)} has "
                f"an extended attribute {shown(key)} that cannot be set: {os.strerror(exc.errno)}"
            ) from None
        raise exc

    def finish(self) -> None:
        """Give directories their modes and times, in archive order, after all content."""
        if self._force_mask is not None:
            # Go records the layer root too: the root entry's values, else 0:0:0755. Before
            # the root's mode is given back: a user xattr needs write permission.
            value = self._root_override or _DEFAULT_ROOT_OVERRIDE
            os.setxattr(self._root_fd, OVERRIDE_XATTR, value)
        self._give_back_root_mode()  # first: a root entry's own mode (vfs) comes after it
        for parts, mode, atime, mtime in self._deferred_dirs:
            if not parts:
                os.fchmod(self._root_fd, mode)
                os.utime(self._root_fd, ns=(atime, mtime))
                continue
            parent_fd = self._directory(parts[:-1], create=False)
            if parent_fd is None:
                continue  # removed by a later whiteout
            try:
                info = os.stat(parts[-1], dir_fd=parent_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode):
                os.chmod(parts[-1], mode, dir_fd=parent_fd)
                os.utime(parts[-1], ns=(atime, mtime), dir_fd=parent_fd, follow_symlinks=False)
