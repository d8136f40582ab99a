"""The vfs driver: every layer is a full copy of its parent plus its own changes.

It needs no kernel support and no privileges, at the price of disk space and copy time; copies
share extents (reflinks) where the file system can.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ..engines import Engine, TreeEntry
from ..errors import LayerStoreError, NotSupported
from . import DEFAULT_LAYER_MODE, Driver, remove_tree
from .unlock import Grants, applied_paths, copy_original_modes, writable_copy

if TYPE_CHECKING:
    from .changes import TreeView

__all__ = ["VfsDriver"]


class VfsDriver(Driver):
    """Layers in ``ROOT/vfs/dir/<id>``."""

    name = "vfs"
    whiteout_format = "vfs"
    supports_force_mask = True

    def __init__(self, root: str, engine: Engine) -> None:
        super().__init__(root, engine)
        # Copies of parents with locked entries, by directory, until a layer is applied on them.
        self._granted_copies: dict[str, Grants] = {}

    def _dir(self, layer_id: str) -> str:
        return os.path.join(self.home, "dir", layer_id)

    def create(self, layer_id: str, parent_id: str, *, writeable: bool) -> None:
        os.makedirs(os.path.join(self.home, "dir"), mode=0o700, exist_ok=True)
        target = self._dir(layer_id)
        try:
            self.stage(target, parent_id)
            self.staged_applied(target, None)
        except BaseException:
            remove_tree(target)
            raise

    def stage(self, directory: str, parent_id: str) -> str:
        if parent_id:
            # The copy keeps every mode (a mode-000 file stays 000): only the parent's tree is
            # opened up while it is read, and only without root (drivers/unlock.py).
            with self.unlocked(parent_id) as grants:
                self.engine.copy_tree(self._dir(parent_id), directory)
            if os.geteuid() != 0:
                # Without root a layer applied on the copy may need to write below a mode-000
                # or 0555 directory: directories stay open (u+rwx) until staged_applied gives
                # what the layer did not set the modes of the parent's tar.
                self._granted_copies[directory] = writable_copy(grants, directory)
        else:
            os.mkdir(directory, DEFAULT_LAYER_MODE)
            os.chmod(directory, DEFAULT_LAYER_MODE)  # not narrowed by the umask
        return directory

    def staged_applied(self, directory: str, tar_split: str | None) -> None:
        grants = self._granted_copies.pop(directory, None)
        if grants is not None:
            copy_original_modes(grants, directory, applied_paths(tar_split) if tar_split else ())

    def commit_staged(self, layer_id: str, parent_id: str, directory: str) -> None:
        os.makedirs(os.path.join(self.home, "dir"), mode=0o700, exist_ok=True)
        target = self._dir(layer_id)
        if os.path.lexists(target):
            raise LayerStoreError(f"{target} exists already: a layer cannot take its place")
        mode = stat.S_IMODE(os.lstat(directory).st_mode)
        if mode & stat.S_IWUSR or os.geteuid() == 0:
            os.rename(directory, target)
            return
        # Moving a directory to another parent rewrites its "..": without root that needs
        # write permission on it, which a layer's 0555 tree root lacks.
        os.chmod(directory, mode | stat.S_IWUSR)
        try:
            os.rename(directory, target)
        except BaseException:
            os.chmod(directory, mode)
            raise
        os.chmod(target, mode)

    def remove(self, layer_id: str) -> None:
        remove_tree(self._dir(layer_id))

    def exists(self, layer_id: str) -> bool:
        return os.path.isdir(self._dir(layer_id))

    def layer_dir(self, layer_id: str) -> str:
        return self._dir(layer_id)

    def mount(self, layer_id: str, options: Sequence[str]) -> str:
        unsupported = [option for option in options if option != "ro"]
        if unsupported:
            raise NotSupported(
                f"the vfs driver takes no mount options (only ro): {', '.join(unsupported)}"
            )
        return self._dir(layer_id)

    def unmount(self, layer_id: str) -> None:
        pass  # nothing was mounted: the layer's directory is its tree

    def release_home(self) -> bool:
        return False  # vfs sets nothing up for mounts

    def view(self, layer_id: str) -> TreeView:
        from .changes import DirectoryView

        return DirectoryView(self._dir(layer_id))

    def diff_entries(
        self, layer_id: str, from_id: str, from_is_parent: bool
    ) -> Iterator[TreeEntry]:
        if from_id:
            return super().diff_entries(layer_id, from_id, from_is_parent)
        # Against an empty tree (a layer without a parent, written through its directory) the
        # diff is the whole directory: listed, not compared.
        from .changes import entries_of_directory

        return entries_of_directory(self._dir(layer_id))

    def layer_ids(self) -> list[str]:
        try:
            with os.scandir(os.path.join(self.home, "dir")) as entries:
                return sorted(
                    entry.name
                    for entry in entries
                    if stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode)
                )
        except FileNotFoundError:
            return []
