"""Storage drivers: where a layer's files live on disk, and how layers stack.

A driver owns the directory layout of its layers (SPEC section 1) and, in later stages,
mounting; it asks the engine for byte work such as copying a tree. ``overlay`` keeps each
layer's own changes and stacks them with the kernel's overlay file system; ``vfs`` keeps a full
copy of every layer and works anywhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ..engines import Engine, TreeEntry
from ..errors import LayerStoreError
from ..layer import IDMap
from ..userns import overlay_namespace_options, running_in_user_namespace
from .idmaps import shift_ownership
from .unlock import Grants, copy_original_modes, unlocked

if TYPE_CHECKING:
    # The naive diff (.changes) is imported by the calls that compare trees, not by every open.
    from .changes import Change, TreeView

__all__ = [
    "DRIVER_NAMES",
    "STAGING_DIR_NAME",
    "Driver",
    "choose_driver",
    "existing_drivers",
    "open_driver",
    "remove_tree",
]

DRIVER_NAMES = ("overlay", "vfs")

# A layer made without content starts read-only for others, as containers/storage makes it.
DEFAULT_LAYER_MODE = 0o555

STAGING_DIR_NAME = "layerstore-staging"
"""The directory of the driver's home where staged puts build layers (``store.staging``)."""


class Driver(ABC):
    """The part of the store that knows where a layer's files are."""

    name: str
    whiteout_format: str
    """How this driver stores whiteouts: ``"overlay"`` (device nodes, opaque xattrs) or
    ``"vfs"`` (the whited-out files are simply removed from the copy)."""

    supports_force_mask = False
    """Whether the store's ``force_mask`` option can be used with this driver."""

    def __init__(self, root: str, engine: Engine) -> None:
        self.override_stat = False
        """Read owners, modes and devices from ``user.containers.override_stat`` where a file
        has it (the store uses ``force_mask``): changes and tree diffs see what the tar said."""
        self.root = root
        self.home = os.path.join(root, self.name)
        self.engine = engine

    @abstractmethod
    def create(self, layer_id: str, parent_id: str, *, writeable: bool) -> None:
        """Make the directories of a new layer on top of ``parent_id`` (empty: a base layer)."""

    @abstractmethod
    def stage(self, directory: str, parent_id: str) -> str:
        """Make ``directory`` (new, in the staging area) the start of a layer on ``parent_id``
        and return where its diff is to be extracted. vfs copies the parent's tree, so the
        parent must be whole; overlay only takes its mode, which no applied diff changes."""

    def staged_applied(self, directory: str, tar_split: str | None) -> None:
        """A layer was applied on the staged ``directory`` (``tar_split``: its tar-split file;
        None: nothing was, or the apply failed): give what it did not set the modes of the
        parent's tar (``drivers/unlock.py``)."""
        return  # overlay stages no copy of the parent: nothing to give back

    @abstractmethod
    def commit_staged(self, layer_id: str, parent_id: str, directory: str) -> None:
        """Move the staged ``directory`` into place as the layer ``layer_id`` on ``parent_id``
        (whole now). On failure nothing of ``layer_id`` is left in place."""

    @abstractmethod
    def remove(self, layer_id: str) -> None:
        """Remove everything the driver keeps for the layer; a missing layer is not an error."""

    @abstractmethod
    def exists(self, layer_id: str) -> bool:
        """Whether the driver has data for the layer."""

    @abstractmethod
    def layer_dir(self, layer_id: str) -> str:
        """The directory that holds the layer's own files (where a diff is extracted)."""

    @abstractmethod
    def layer_ids(self) -> list[str]:
        """Ids of every layer the driver has data for, whether the store knows it or not."""

    @abstractmethod
    def mount(self, layer_id: str, options: Sequence[str]) -> str:
        """Make the layer's merged tree available and return where (overlay: a kernel mount
        at ``<id>/merged``; vfs: the layer's own directory). ``ro`` mounts read-only."""

    @abstractmethod
    def unmount(self, layer_id: str) -> None:
        """Undo :meth:`mount`; a layer that is not mounted is not an error."""

    def is_mounted(self, path: str) -> bool:
        """Whether the mount :meth:`mount` returned at ``path`` still stands (the kernel can
        drop one behind the store's back); a driver that mounts nothing always says so."""
        return True

    def mounted_at(self, layer_id: str) -> str | None:
        """Where the kernel has the layer mounted right now, if anywhere."""
        return None

    def mounted_layers(self) -> list[str]:
        """Ids of the layers the kernel has mounted right now, where their users see them."""
        return []

    def hidden_mounts(self) -> list[str]:
        """Ids of layers the kernel has mounted under another mount, where nobody sees them."""
        return []

    @abstractmethod
    def release_home(self) -> bool:
        """Undo what the driver set up for mounts once nothing is mounted (overlay: the bind
        of its home, as Go's Shutdown removes it); whether there was anything to undo."""

    def update_id_map(
        self,
        layer_id: str,
        old: tuple[Sequence[IDMap], Sequence[IDMap]],
        new: tuple[Sequence[IDMap], Sequence[IDMap]],
    ) -> None:
        """Shift the owners of the layer's files from ``old`` to ``new`` (uid, gid) maps,
        through a mount of the layer (overlay copies every changed file up into the layer)."""
        root = self.mount(layer_id, ())
        try:
            shift_ownership(root, old, new)
        finally:
            self.unmount(layer_id)

    def create_from_template(
        self, layer_id: str, template_id: str, parent_id: str, *, writeable: bool
    ) -> None:
        """Make a new layer on ``parent_id`` holding a copy of ``template_id``'s own files."""
        self.create(layer_id, parent_id, writeable=writeable)
        target = self.layer_dir(layer_id)
        source = self.layer_dir(template_id)
        # The engine copies into a fresh directory: replace the empty one create() made.
        remove_tree(target)
        with self.unlocked(template_id) as grants:
            self.engine.copy_tree(source, target)
            copy_original_modes(grants, target)

    def unlocked(self, layer_id: str) -> contextlib.AbstractContextManager[Grants]:
        """The layer's own tree readable by the store's owner while the context lasts, even
        where its modes shut the owner out (``drivers/unlock.py``); yields the modes the
        grant replaced. Root gets the tree as it is."""
        return unlocked(self.layer_dir(layer_id), self.unlock_state, layer_id)

    @property
    def unlock_state(self) -> str:
        """Where :meth:`unlocked` keeps its locks and journals (``HOME/unlock``)."""
        return os.path.join(self.home, "unlock")

    def orphans(self) -> list[str]:
        """Paths of the driver's own files that no layer accounts for (beyond layer
        directories)."""
        return []

    def status(self) -> list[tuple[str, str]]:
        """Facts about the driver for people, as (key, value) pairs."""
        return [("Driver", self.name), ("Home", self.home)]

    # -- changes and diffs computed from the trees (layers without tar-split) -----------------

    @abstractmethod
    def view(self, layer_id: str) -> TreeView:
        """The layer's whole tree as its users see it (with its parents)."""

    def _view_or_empty(self, layer_id: str) -> TreeView:
        from .changes import DirectoryView

        return self._honoured(self.view(layer_id)) if layer_id else DirectoryView(None)

    def _honoured(self, view: TreeView) -> TreeView:
        """``view`` showing recorded owners and modes when the store uses force_mask."""
        if not self.override_stat:
            return view
        from .changes import OverrideView

        return OverrideView(view)

    def _unlocked_view(
        self, holding: contextlib.ExitStack, layer_id: str, view: TreeView | None = None
    ) -> TreeView:
        """``view(layer_id)`` (or ``view``, one of it), readable throughout ``holding``,
        showing the tar's modes."""
        from .changes import DirectoryView, OriginalModesView

        if not layer_id:
            return DirectoryView(None)
        modes = holding.enter_context(self.unlocked(layer_id))
        if view is None:
            view = self.view(layer_id)
        return self._honoured(OriginalModesView(view, modes) if modes else view)

    def changes(self, layer_id: str, from_id: str, from_is_parent: bool) -> list[Change]:
        """What changed from layer ``from_id`` ("" for an empty tree) to ``layer_id``."""
        from .changes import compare_trees

        with contextlib.ExitStack() as holding:
            old = self._unlocked_view(holding, from_id)
            return compare_trees(old, self._unlocked_view(holding, layer_id))

    def diff_size(self, layer_id: str, from_id: str, from_is_parent: bool) -> int:
        """Bytes of the files added or modified from ``from_id`` to ``layer_id``."""
        from .changes import changes_size, compare_trees

        with contextlib.ExitStack() as holding:
            old = self._unlocked_view(holding, from_id)
            view = self._unlocked_view(holding, layer_id)  # one view: each entry stat'ed once
            return changes_size(view, compare_trees(old, view))

    def diff_entries(
        self, layer_id: str, from_id: str, from_is_parent: bool
    ) -> Iterator[TreeEntry]:
        """The members of the tarball that turns ``from_id`` into ``layer_id``, in order, for
        the engine to write (:meth:`~layerstore.engines.Engine.open_tree_diff`). The caller
        holds the trees readable (:meth:`unlocked`) while it reads the members."""
        from .changes import compare_trees, entries_of_changes

        view = self.view(layer_id)  # the comparison's and the members': each entry stat'ed once
        with contextlib.ExitStack() as holding:
            old = self._unlocked_view(holding, from_id)
            changes = compare_trees(old, self._unlocked_view(holding, layer_id, view))
        return entries_of_changes(view, changes)


def remove_tree(path: str) -> None:
    """Remove ``path`` and everything below it; never follows symlinks; missing is fine.

    Layers hold read-only directories (0555 is the default); without root, directories are
    made owner-writable on the way down so their entries can be removed.
    """
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(top.st_mode):
        os.unlink(path)
        return
    if os.geteuid() != 0:
        _make_owner_writable(path, top.st_mode)
        for directory, subdirectories, _files in os.walk(path):
            for name in subdirectories:
                child = os.path.join(directory, name)
                _make_owner_writable(child, os.lstat(child).st_mode)
    import shutil

    shutil.rmtree(path)


def _make_owner_writable(path: str, mode: int) -> None:
    if stat.S_ISDIR(mode) and mode & stat.S_IRWXU != stat.S_IRWXU:
        os.chmod(path, stat.S_IMODE(mode) | stat.S_IRWXU)


_probed: dict[int, tuple[bool, str]] = {}  # by device of the store's root: probe once


def _overlay_available(root: str, engine: Engine) -> tuple[bool, str]:
    """Whether an overlay mount works under ``root``, found by trying one (once per device)."""
    if os.geteuid() != 0:
        return False, (
            "overlay mounts need root or a user namespace ('layerstore unshare'); using vfs"
        )
    try:
        with open("/proc/filesystems", encoding="ascii") as filesystems:
            known = {line.split()[-1] for line in filesystems if line.strip()}
    except OSError as exc:
        return False, f"cannot read /proc/filesystems ({os.strerror(exc.errno or errno.EIO)})"
    if "overlay" not in known:
        return False, "the kernel has no overlay file system; using vfs"
    os.makedirs(root, mode=0o700, exist_ok=True)
    device = os.stat(root).st_dev
    if device not in _probed:
        _probed[device] = _probe_overlay(root, engine)
    return _probed[device]


def _probe_overlay(root: str, engine: Engine) -> tuple[bool, str]:
    import shutil
    import tempfile

    probe = tempfile.mkdtemp(prefix=".overlay-probe-", dir=root)
    try:
        for name in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(probe, name))
        merged = os.path.join(probe, "merged")
        try:
            engine.mount_overlay(
                [os.path.join(probe, "lower")],
                os.path.join(probe, "upper"),
                os.path.join(probe, "work"),
                merged,
                overlay_namespace_options(),
            )
        except OSError as exc:
            return False, f"an overlay mount under {root} failed ({exc}); using vfs"
        engine.unmount(merged, detach=True)
        if running_in_user_namespace():
            return (
                True,
                f"an overlay mount with userxattr under {root} works in this user namespace",
            )
        return True, f"an overlay mount under {root} works"
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def existing_drivers(root: str) -> list[str]:
    """The drivers of the layer stores the root already holds."""
    return [
        name
        for name in DRIVER_NAMES
        if os.path.exists(os.path.join(root, f"{name}-layers", "layers.json"))
    ]


def choose_driver(root: str, requested: str | None, engine: Engine) -> tuple[str, str]:
    """The driver for the store at ``root`` and why it was chosen.

    Never a silent switch: the root's own driver when it has one store; a root that holds
    stores of several drivers must be told which (LayerStoreError names them).
    """
    if requested is not None:
        if requested not in DRIVER_NAMES:
            raise ValueError(
                f"unknown driver {requested!r}: choose one of {', '.join(DRIVER_NAMES)}"
            )
        return requested, "asked for"
    existing = existing_drivers(root)
    if len(existing) > 1:
        raise LayerStoreError(
            f"the store at {root} holds layer stores of several drivers "
            f"({', '.join(existing)}): say which one to use (driver=..., --driver)"
        )
    if existing:
        return existing[0], f"the store at {root} already uses {existing[0]}"
    available, reason = _overlay_available(root, engine)
    return ("overlay" if available else "vfs"), reason


def open_driver(name: str, root: str, engine: Engine) -> Driver:
    """An instance of the driver called ``name`` for the store at ``root``."""
    if name == "overlay":
        from .overlay import OverlayDriver

        return OverlayDriver(root, engine)
    if name == "vfs":
        from .vfs import VfsDriver

        return VfsDriver(root, engine)
    raise ValueError(f"unknown driver {name!r}: choose one of {', '.join(DRIVER_NAMES)}")
