"""The overlay driver: each layer keeps only its own changes; the kernel stacks them.

Layout per layer, as containers/storage 1.43 makes it (SPEC section 1)::

    overlay/<id>/diff     the layer's own files (the upper directory when mounted read-write)
    overlay/<id>/work     overlay's work directory
    overlay/<id>/merged   the mount point
    overlay/<id>/link     26-character short name of the layer, no newline
    overlay/<id>/lower    "l/LINK:l/LINK..." of the parents, nearest first (layers with a parent)
    overlay/<id>/empty    an empty lower directory (base layers)
    overlay/l/<LINK>      symlink to ../<id>/diff, which keeps mount data short
"""

from __future__ import annotations

import base64
import os
import re
import stat
from collections.abc import Iterator, Sequence

from ..engines import TreeEntry
from ..errors import LayerStoreError
from ..userns import overlay_namespace_options
from . import DEFAULT_LAYER_MODE, STAGING_DIR_NAME, Driver, remove_tree
from .changes import (
    OPAQUE_MARKER,
    WHITEOUT_PREFIX,
    Change,
    TreeView,
    changes_size,
)
from .mountinfo import is_mount_point, is_visible_mount, mount_points

__all__ = ["OverlayDriver"]

LINK_DIR = "l"
LINK_LENGTH = 26
MAX_DEPTH = 500  # the kernel's overlay stacks this many lower directories at most (Go's limit)
# Directories of the home that are no layer: the short links, Go's staging and ours.
_NOT_LAYERS = frozenset((LINK_DIR, "staging", STAGING_DIR_NAME))
_LINK_PATTERN = re.compile(f"[A-Z2-7]{{{LINK_LENGTH}}}")


def _new_link_name() -> str:
    return base64.b32encode(os.urandom(16)).decode("ascii")[:LINK_LENGTH]


class OverlayDriver(Driver):
    """Layers in ``ROOT/overlay/<id>``, stacked by the kernel's overlay file system."""

    name = "overlay"
    whiteout_format = "overlay"

    def _dir(self, layer_id: str) -> str:
        return os.path.join(self.home, layer_id)

    def create(self, layer_id: str, parent_id: str, *, writeable: bool) -> None:
        os.makedirs(os.path.join(self.home, LINK_DIR), mode=0o700, exist_ok=True)
        layer_dir = self._dir(layer_id)
        os.mkdir(layer_dir, 0o700)
        try:
            self._fill(layer_id, layer_dir, parent_id)
        except BaseException:
            self.remove(layer_id)
            raise

    def _fill(self, layer_id: str, layer_dir: str, parent_id: str) -> None:
        self._make_diff(layer_dir, parent_id)
        self._link(layer_id, layer_dir, parent_id)

    def _make_diff(self, layer_dir: str, parent_id: str) -> str:
        """Make the layer's diff (its mode the parent's, as Go makes it), work and merged."""
        diff_mode = DEFAULT_LAYER_MODE
        if parent_id:
            diff_mode = stat.S_IMODE(os.stat(os.path.join(self._dir(parent_id), "diff")).st_mode)
        diff = os.path.join(layer_dir, "diff")
        os.mkdir(diff, diff_mode)
        os.chmod(diff, diff_mode)  # not narrowed by the umask
        os.mkdir(os.path.join(layer_dir, "work"), 0o700)
        os.mkdir(os.path.join(layer_dir, "merged"), 0o700)
        return diff

    def _link(self, layer_id: str, layer_dir: str, parent_id: str) -> None:
        """Give the layer its lower file (or empty directory) and its short link in ``l/``:
        the link file first, so that a layer removed half-linked leaves no stray link."""
        lower = self._lower_for_child(parent_id) if parent_id else ""
        if lower:
            _write_small_file(os.path.join(layer_dir, "lower"), lower)
        else:
            os.mkdir(os.path.join(layer_dir, "empty"), 0o700)
        link = _new_link_name()
        while os.path.lexists(os.path.join(self.home, LINK_DIR, link)):
            link = _new_link_name()
        _write_small_file(os.path.join(layer_dir, "link"), link)
        os.symlink(os.path.join("..", layer_id, "diff"), os.path.join(self.home, LINK_DIR, link))

    # -- staged layers: made elsewhere, moved into place ---------------------------------------

    def stage(self, directory: str, parent_id: str) -> str:
        os.mkdir(directory, 0o700)
        return self._make_diff(directory, parent_id)

    def commit_staged(self, layer_id: str, parent_id: str, directory: str) -> None:
        os.makedirs(os.path.join(self.home, LINK_DIR), mode=0o700, exist_ok=True)
        layer_dir = self._dir(layer_id)
        if os.path.lexists(layer_dir):
            raise LayerStoreError(f"{layer_dir} exists already: a layer cannot take its place")
        os.rename(directory, layer_dir)
        try:
            self._link(layer_id, layer_dir, parent_id)
        except BaseException:
            self.remove(layer_id)
            raise

    def _lower_for_child(self, parent_id: str) -> str:
        parent_dir = self._dir(parent_id)
        lowers = [f"{LINK_DIR}/{self._read_link(parent_id)}"]
        try:
            with open(os.path.join(parent_dir, "lower"), encoding="ascii") as lower_file:
                parent_lower = lower_file.read()
        except FileNotFoundError:
            parent_lower = ""
        if parent_lower:
            lowers.extend(parent_lower.split(":"))
        if len(lowers) > MAX_DEPTH:
            raise LayerStoreError(
                f"layer {parent_id} is {len(lowers) - 1} layers deep: overlay stacks at most "
                f"{MAX_DEPTH} layers"
            )
        return ":".join(lowers)

    def _read_link(self, layer_id: str) -> str:
        path = os.path.join(self._dir(layer_id), "link")
        with open(path, encoding="ascii", errors="replace") as link_file:
            link = link_file.read().strip()
        if not _LINK_PATTERN.fullmatch(link):
            raise LayerStoreError(f"{path}: not a short link name: {link[:40]!r}")
        return link

    def mount(self, layer_id: str, options: Sequence[str]) -> str:
        self._prepare_home()
        layer_dir = self._dir(layer_id)
        merged = os.path.join(layer_dir, "merged")
        os.makedirs(merged, mode=0o700, exist_ok=True)
        diff = os.path.join(layer_dir, "diff")
        lowers = self._stack(layer_id)[1:]
        if "ro" in options:
            # Read-only: the layer's own files are the topmost lower; overlay needs two lowers.
            lowers = [diff, *lowers] if lowers else [diff, self._empty(layer_id)]
            upper = work = None
        else:
            lowers = lowers or [self._empty(layer_id)]
            upper, work = diff, os.path.join(layer_dir, "work")
            os.makedirs(work, mode=0o700, exist_ok=True)
        extra = [option for option in overlay_namespace_options() if option not in options]
        self.engine.mount_overlay(lowers, upper, work, merged, [*options, *extra])
        return merged

    def _empty(self, layer_id: str) -> str:
        empty = os.path.join(self._dir(layer_id), "empty")
        os.makedirs(empty, mode=0o700, exist_ok=True)
        return empty

    # -- the home bind, as Go's overlay driver keeps it ----------------------------------------
    #
    # Go's overlay Init bind-mounts ROOT/overlay onto itself (private) unless it already is a
    # mount point, and its store's Shutdown removes the bind when no layer is counted as
    # mounted. A layer mounted before that bind would be hidden under it: the next Go process
    # would not see it and mount the layer a second time. So we make the bind before our first
    # mount, and remove it as Go does when the last count goes.

    def _prepare_home(self) -> None:
        self.engine.make_private_mount(self.home, bind=not is_mount_point(self.home))

    def release_home(self) -> bool:
        if not is_mount_point(self.home):
            return False
        self.engine.unmount(self.home, detach=True)
        return True

    def is_mounted(self, path: str) -> bool:
        # As Go sees a layer's mount (its FsChecker): an overlay is the visible file system at
        # the path, a device of its own; a mount hidden under another one does not count.
        return is_visible_mount(path)

    def mounted_at(self, layer_id: str) -> str | None:
        merged = os.path.join(self._dir(layer_id), "merged")
        return merged if is_visible_mount(merged) else None

    def _kernel_mounts(self) -> list[tuple[str, str]]:
        """(layer id, merged path) of every layer mount in the kernel's table, visible or not."""
        prefix = self.home + os.sep
        found = []
        for point in mount_points():
            if point.startswith(prefix) and point.endswith(os.sep + "merged"):
                layer_id = point[len(prefix) : -len(os.sep + "merged")]
                if os.sep not in layer_id:
                    found.append((layer_id, point))
        return found

    def mounted_layers(self) -> list[str]:
        return [layer_id for layer_id, point in self._kernel_mounts() if is_visible_mount(point)]

    def hidden_mounts(self) -> list[str]:
        return [
            layer_id for layer_id, point in self._kernel_mounts() if not is_visible_mount(point)
        ]

    def unmount(self, layer_id: str) -> None:
        merged = os.path.join(self._dir(layer_id), "merged")
        if is_visible_mount(merged):
            # Lazily, as Go does: processes still inside keep working until they leave.
            self.engine.unmount(merged, detach=True)

    def remove(self, layer_id: str) -> None:
        self.unmount(layer_id)  # never walk into a live mount while removing the layer
        layer_dir = self._dir(layer_id)
        try:
            link = self._read_link(layer_id)
        except (OSError, LayerStoreError):
            link = ""  # nothing trustworthy to remove under l/
        if link:
            try:
                os.unlink(os.path.join(self.home, LINK_DIR, link))
            except FileNotFoundError:
                pass
        remove_tree(layer_dir)

    def exists(self, layer_id: str) -> bool:
        return os.path.isdir(self._dir(layer_id))

    def layer_dir(self, layer_id: str) -> str:
        return os.path.join(self._dir(layer_id), "diff")

    def _stack(self, layer_id: str) -> list[str]:
        """The diff directories of the layer and its parents, topmost first."""
        stack = [os.path.join(self._dir(layer_id), "diff")]
        try:
            with open(os.path.join(self._dir(layer_id), "lower"), encoding="ascii") as lower:
                text = lower.read().strip()
        except FileNotFoundError:
            text = ""
        for link in text.split(":") if text else ():
            if not link.startswith(f"{LINK_DIR}/") or not _LINK_PATTERN.fullmatch(link[2:]):
                raise LayerStoreError(f"{self._dir(layer_id)}/lower: bad entry {link[:40]!r}")
            stack.append(os.path.join(self.home, link))
        return stack

    def view(self, layer_id: str) -> TreeView:
        return OverlayView(self._stack(layer_id))

    def _upper_walk(self, layer_id: str, parent_id: str) -> Iterator[_Step]:
        """The layer's own directory in path order: (tar item, change) for each entry, with
        whiteout devices turned back into ``.wh.NAME`` and opaque directories followed by
        ``.wh..wh..opq`` when a lower layer has them."""
        upper = os.path.join(self._dir(layer_id), "diff")
        below = self._view_or_empty(parent_id)
        # Go's overlay changes (archive.OverlayChanges): a directory the layer only holds to
        # reach what it changes inside (same size, mode and mtime as below) is no change; the
        # directories above an added or deleted path are, unless they were reported already.
        reported_dirs: set[str] = set()

        def parent_of(path: str) -> Iterator[_Step]:
            parent = os.path.dirname(path)
            while parent:
                if parent not in reported_dirs:
                    reported_dirs.add(parent)
                    yield None, Change("/" + parent, "modify")
                parent = os.path.dirname(parent)

        def walk(directory: str) -> Iterator[_Step]:
            for name in sorted(os.listdir(os.path.join(upper, directory))):
                path = _join(directory, name)
                real = os.path.join(upper, path)
                info = os.lstat(real)
                if is_whiteout(info):
                    yield from parent_of(path)
                    yield (
                        (_join(directory, WHITEOUT_PREFIX + name), None, None),
                        Change("/" + path, "delete"),
                    )
                    continue
                lower = below.lstat(path)
                change: Change | None = Change("/" + path, "add" if lower is None else "modify")
                if lower is None:
                    yield from parent_of(path)
                elif stat.S_ISDIR(info.st_mode) and _same_directory(info, lower):
                    change = None
                opaque_over_lower = (
                    lower is not None
                    and stat.S_ISDIR(info.st_mode)
                    and stat.S_ISDIR(lower.st_mode)
                    and is_opaque(real)
                )
                if opaque_over_lower:
                    # Go reports the directory below as deleted (it is: nothing of it shows),
                    # and what the opaque directory holds as added or modified.
                    yield from parent_of(path)
                    change = Change("/" + path, "delete")
                if stat.S_ISDIR(info.st_mode) and change is not None:
                    reported_dirs.add(path)
                yield (path, real, info), change
                if not stat.S_ISDIR(info.st_mode):
                    continue
                if opaque_over_lower:
                    yield (_join(path, OPAQUE_MARKER), None, None), None
                yield from walk(path)

        yield from walk("")

    def changes(self, layer_id: str, from_id: str, from_is_parent: bool) -> list[Change]:
        if not from_is_parent:
            return super().changes(layer_id, from_id, from_is_parent)
        found = [change for _, change in self._upper_walk(layer_id, from_id) if change]
        return sorted(found)

    def diff_size(self, layer_id: str, from_id: str, from_is_parent: bool) -> int:
        if not from_is_parent:
            return super().diff_size(layer_id, from_id, from_is_parent)
        return changes_size(self.view(layer_id), self.changes(layer_id, from_id, True))

    def diff_entries(
        self, layer_id: str, from_id: str, from_is_parent: bool
    ) -> Iterator[TreeEntry]:
        if not from_is_parent:
            return super().diff_entries(layer_id, from_id, from_is_parent)
        return self._upper_entries(layer_id, from_id)

    def _upper_entries(self, layer_id: str, parent_id: str) -> Iterator[TreeEntry]:
        """The members of the layer's diff against its parent: its own directory in path
        order, as :meth:`_upper_walk` gives them, without the comparisons only changes need (a
        lower layer is looked at only below an opaque directory)."""
        upper = os.path.join(self._dir(layer_id), "diff")
        below = self._view_or_empty(parent_id)

        def walk(directory: str) -> Iterator[TreeEntry]:
            with os.scandir(os.path.join(upper, directory)) as found:
                children = sorted(found, key=lambda entry: entry.name)
            for child in children:
                path = _join(directory, child.name)
                if child.is_dir(follow_symlinks=False):
                    yield path, child.path
                    if is_opaque(child.path):
                        lower = below.lstat(path)
                        if lower is not None and stat.S_ISDIR(lower.st_mode):
                            yield _join(path, OPAQUE_MARKER), None
                    yield from walk(path)
                elif (
                    not child.is_file(follow_symlinks=False)
                    and not child.is_symlink()
                    and is_whiteout(os.lstat(child.path))
                ):
                    yield _join(directory, WHITEOUT_PREFIX + child.name), None
                else:
                    yield path, child.path

        return walk("")

    def orphans(self) -> list[str]:
        """Short links in ``l/`` that lead to no layer (their layer was removed)."""
        links = os.path.join(self.home, LINK_DIR)
        try:
            names = sorted(os.listdir(links))
        except FileNotFoundError:
            return []
        return [
            os.path.join(links, name)
            for name in names
            if not os.path.exists(os.path.join(links, name))  # the symlink leads nowhere
        ]

    def layer_ids(self) -> list[str]:
        try:
            with os.scandir(self.home) as entries:
                return sorted(
                    entry.name
                    for entry in entries
                    if entry.name not in _NOT_LAYERS
                    and stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode)
                )
        except FileNotFoundError:
            return []


OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_Item = tuple[str, str | None, os.stat_result | None]  # a tar item: name, real path, stat


def _same_directory(upper: os.stat_result, lower: os.stat_result) -> bool:
    """Go's test for a directory left as it was: a directory below too, with the same size
    and mode, and the same mtime (to the second when either has no nanoseconds: sameFsTime)."""
    if not stat.S_ISDIR(lower.st_mode):
        return False
    if upper.st_size != lower.st_size or upper.st_mode != lower.st_mode:
        return False
    if upper.st_mtime_ns == lower.st_mtime_ns:
        return True
    upper_s, upper_ns = divmod(upper.st_mtime_ns, 1_000_000_000)
    lower_s, lower_ns = divmod(lower.st_mtime_ns, 1_000_000_000)
    return upper_s == lower_s and (upper_ns == 0 or lower_ns == 0)


_Step = tuple[_Item | None, Change | None]  # what one entry of the upper directory gives


def is_whiteout(info: os.stat_result) -> bool:
    """An overlay whiteout: a character device 0:0."""
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == 0


def is_opaque(path: str) -> bool:
    """Whether the directory at ``path`` hides what lower layers hold below it."""
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class OverlayView:
    """The merged tree of a stack of overlay layers, as the kernel would show it mounted.

    ``layers`` are the layers' ``diff`` directories, topmost first. A name comes from the
    topmost layer that has it; a whiteout (character device 0:0) hides it in the layers below,
    and an opaque directory hides everything below it in lower layers.
    """

    def __init__(self, layers: list[str]) -> None:
        self.layers = layers

    def _directory_layers(self, path: str) -> list[str] | None:
        """The layers that contribute to directory ``path``, topmost first; None if it is not
        a directory."""
        candidates = self.layers
        parts = [part for part in path.split("/") if part]
        for depth in range(len(parts)):
            prefix = "/".join(parts[: depth + 1])
            contributing: list[str] = []
            for layer in candidates:
                real = os.path.join(layer, prefix)
                try:
                    info = os.lstat(real)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if not stat.S_ISDIR(info.st_mode):
                    break  # a file or a whiteout hides everything of that name below
                contributing.append(layer)
                if is_opaque(real):
                    break
            if not contributing:
                return None
            candidates = contributing
        return list(candidates)

    def lstat(self, path: str) -> os.stat_result | None:
        parent, _, name = path.rpartition("/")
        if not name:
            return os.lstat(self.layers[0]) if self.layers else None
        layers = self._directory_layers(parent)
        for layer in layers or ():
            try:
                info = os.lstat(os.path.join(layer, path))
            except (FileNotFoundError, NotADirectoryError):
                continue
            return None if is_whiteout(info) else info
        return None

    def real_path(self, path: str) -> str:
        if not path:
            return self.layers[0]
        parent, _, _name = path.rpartition("/")
        for layer in self._directory_layers(parent) or ():
            real = os.path.join(layer, path)
            if os.path.lexists(real):
                return real
        raise FileNotFoundError(path)

    def listdir(self, path: str) -> list[str]:
        names: dict[str, bool] = {}  # name -> visible (False: whited out above)
        for layer in self._directory_layers(path) or ():
            real = os.path.join(layer, path)
            for name in os.listdir(real):
                if name in names:
                    continue
                info = os.lstat(os.path.join(real, name))
                names[name] = not is_whiteout(info)
        return sorted(name for name, visible in names.items() if visible)


def _write_small_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)
