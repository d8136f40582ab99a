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

from ..errors import LayerStoreError
from . import DEFAULT_LAYER_MODE, Driver, remove_tree

__all__ = ["OverlayDriver"]

LINK_DIR = "l"
LINK_LENGTH = 26
MAX_DEPTH = 500  # the kernel's overlay stacks this many lower directories at most (Go's limit)
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
        lower = self._lower_for_child(parent_id) if parent_id else ""
        diff_mode = DEFAULT_LAYER_MODE
        if parent_id:
            diff_mode = stat.S_IMODE(os.stat(os.path.join(self._dir(parent_id), "diff")).st_mode)
        diff = os.path.join(layer_dir, "diff")
        os.mkdir(diff, diff_mode)
        os.chmod(diff, diff_mode)  # not narrowed by the umask
        link = _new_link_name()
        while os.path.lexists(os.path.join(self.home, LINK_DIR, link)):
            link = _new_link_name()
        os.symlink(os.path.join("..", layer_id, "diff"), os.path.join(self.home, LINK_DIR, link))
        _write_small_file(os.path.join(layer_dir, "link"), link)
        os.mkdir(os.path.join(layer_dir, "work"), 0o700)
        os.mkdir(os.path.join(layer_dir, "merged"), 0o700)
        if lower:
            _write_small_file(os.path.join(layer_dir, "lower"), lower)
        else:
            os.mkdir(os.path.join(layer_dir, "empty"), 0o700)

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

    def remove(self, layer_id: str) -> None:
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

    def layer_ids(self) -> list[str]:
        try:
            with os.scandir(self.home) as entries:
                return sorted(
                    entry.name
                    for entry in entries
                    if entry.name != LINK_DIR
                    and stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode)
                )
        except FileNotFoundError:
            return []


def _write_small_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)
