"""Staging directories: where a put extracts a layer while it does not hold the store.

A staged put reserves its layer under the store's exclusive lock (a record flagged
``incomplete`` that names its staging token in the flag ``layerstore-staging``), releases the
lock, applies the blob into a staging directory, and takes the lock again to rename the result
into place. A staging directory is owned through a lock file of its own beside it, held with
:mod:`filelock` (``flock``) for as long as the put runs: the kernel drops the lock when the
process dies, so a staging whose lock can be taken belongs to nobody and is removed, and one
whose lock is held is never touched.

Layout, for a driver home ``ROOT/<driver>`` and its records in ``ROOT/<driver>-layers``::

    ROOT/<driver>/layerstore-staging/TOKEN        the future layer directory
    ROOT/<driver>/layerstore-staging/TOKEN.lock   its owner's lock
    ROOT/<driver>-layers/staging-TOKEN.tar-split.gz(.tmp)   the future tar-split file

containers/storage 1.43 ignores all three: its overlay driver lists its home only to repair
short links, and removes only its own ``staging`` directory on shutdown; vfs lists nothing;
the layer store reads ``layers.json`` and the files of the ids it holds. Making and removing
stagings happens under the store's exclusive lock, so a cleaner never meets a half-made one.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import TYPE_CHECKING

from ..drivers import STAGING_DIR_NAME, remove_tree
from ..paths import TAR_SPLIT_SUFFIX, tar_split_temporary_path

if TYPE_CHECKING:
    import filelock

__all__ = ["STAGING_DIR_NAME", "STAGING_FLAG", "Staging", "StagingArea"]

STAGING_FLAG = "layerstore-staging"
"""The flag of a reserved layer's record: the token of the staging that is filling it."""

_LOCK_SUFFIX = ".lock"
_TAR_SPLIT_PREFIX = "staging-"
_TOKEN = re.compile(r"[0-9a-f]{32}")


def _lock(path: str) -> filelock.BaseFileLock:
    # filelock is imported only here, once a staging is made or found: most opens find none.
    import filelock

    # Not thread-local: a chain's staging is made on one thread and released on another.
    return filelock.FileLock(path, thread_local=False)


class Staging:
    """One staging of this process: its directory, tar-split path and held lock."""

    def __init__(self, area: StagingArea, token: str, lock: filelock.BaseFileLock) -> None:
        self.area = area
        self.token = token
        self.directory = area.directory(token)
        self.tar_split = area.tar_split(token)
        self._lock = lock

    def __repr__(self) -> str:
        return f"Staging({self.directory!r})"

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def clear(self) -> None:
        """Remove what the staging holds, keeping its lock (to free the space a failed apply
        took before its record is saved away)."""
        if self._lock.is_locked:
            self.area.remove_files(self.token, keep_lock_file=True)

    def discard(self) -> None:
        """Remove what the staging holds and give up its lock (after a failure, or once its
        contents were renamed into place)."""
        if not self._lock.is_locked:
            return
        try:
            self.area.remove_files(self.token)
        finally:
            self._lock.release()
        self.area.remove_home_if_empty()


class StagingArea:
    """The stagings of one store's driver (``home``) and records (``layers_dir``)."""

    def __init__(self, home: str, layers_dir: str) -> None:
        self.home = os.path.join(home, STAGING_DIR_NAME)
        self.layers_dir = layers_dir

    def directory(self, token: str) -> str:
        return os.path.join(self.home, _checked(token))

    def tar_split(self, token: str) -> str:
        return os.path.join(
            self.layers_dir, f"{_TAR_SPLIT_PREFIX}{_checked(token)}{TAR_SPLIT_SUFFIX}"
        )

    def _lock_path(self, token: str) -> str:
        return os.path.join(self.home, _checked(token) + _LOCK_SUFFIX)

    def new(self) -> Staging:
        """A fresh staging, its lock held; its directory is left for the driver to make.
        The caller holds the store's exclusive lock."""
        import secrets

        token = secrets.token_hex(16)
        lock = _lock(self._lock_path(token))
        for attempt in range(3):
            os.makedirs(self.home, mode=0o700, exist_ok=True)
            try:
                lock.acquire(timeout=0)  # a fresh name: nobody else can hold it
                break
            except FileNotFoundError:  # the empty home was just removed (remove_home_if_empty)
                if attempt == 2:
                    raise
        return Staging(self, token, lock)

    def remove_home_if_empty(self) -> None:
        """Remove the stagings' directory once no staging is left in it, so that a store
        with no put running holds nothing of ours in the driver's home."""
        with contextlib.suppress(OSError):  # not empty, or gone already
            os.rmdir(self.home)

    def is_live(self, token: str) -> bool:
        """Whether a living process holds the staging ``token`` (a malformed token never)."""
        if not _TOKEN.fullmatch(token):
            return False
        if not os.path.exists(self._lock_path(token)):
            return False
        probe = _lock(self._lock_path(token))
        from filelock import Timeout

        try:
            probe.acquire(timeout=0)
        except Timeout:
            return True
        probe.release()
        return False

    def remove_dead(self, token: str) -> bool:
        """Remove the staging ``token`` unless a living process holds it; whether it did.
        The caller holds the store's exclusive lock."""
        if not _TOKEN.fullmatch(token):
            return False
        probe = _lock(self._lock_path(token))
        from filelock import Timeout

        try:
            probe.acquire(timeout=0)
        except Timeout:
            return False
        except FileNotFoundError:  # no home, so no lock file: nobody holds it
            self.remove_files(token)
            return True
        try:
            self.remove_files(token)
        finally:
            probe.release()
        self.remove_home_if_empty()
        return True

    def remove_files(self, token: str, *, keep_lock_file: bool = False) -> None:
        """Remove the staging's directory, tar-split and (unless kept) lock file; the caller
        holds its lock."""
        remove_tree(self.directory(token))
        tar_split = self.tar_split(token)
        paths = [tar_split, tar_split_temporary_path(tar_split)]
        if not keep_lock_file:
            paths.append(self._lock_path(token))
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def tokens(self) -> set[str]:
        """Tokens of every staging that has anything on disk, live or dead."""
        found: set[str] = set()
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.home):
                token = name.removesuffix(_LOCK_SUFFIX)
                if _TOKEN.fullmatch(token):
                    found.add(token)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.layers_dir):
                if name.startswith(_TAR_SPLIT_PREFIX):
                    token = name[len(_TAR_SPLIT_PREFIX) :].split(".", 1)[0]
                    if _TOKEN.fullmatch(token):
                        found.add(token)
        return found

    def remove_all_dead(self) -> list[str]:
        """Remove every staging no living process holds (on a read-write open); their tokens."""
        return [token for token in sorted(self.tokens()) if self.remove_dead(token)]


def _checked(token: str) -> str:
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"not a staging token: {token!r}")
    return token
