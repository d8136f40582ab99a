"""A record file: JSON data guarded by a lock file that carries the last writer's token.

``layers.json`` and ``mountpoints.json`` (and, as containers/storage keeps them, the image and
container stores) share one protocol (SPEC section 3), which containers/storage implements as
``lockfile.Modified`` and ``RecordWrite``: a writer records a fresh token in the lock file, then
replaces the data file atomically; a reader that remembers the token and the file's state it
last saw knows the data changed when either differs. The caller holds the lock: shared to read,
exclusive to write.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..atomic import write_atomic
from ..errors import InvalidStoreData
from .locking import LockFile

__all__ = ["RecordFile", "decode_records"]


def decode_records(data: bytes, source: str, what: str) -> list[Any]:
    """The JSON array of records in ``data`` (empty for an empty file); InvalidStoreData
    naming ``source`` for anything else. ``what`` names the records in the message."""
    if not data.strip():
        return []
    try:
        records = json.loads(data)
    except ValueError as exc:
        raise InvalidStoreData(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(records, list):
        raise InvalidStoreData(f"{source}: expected a JSON array of {what}")
    return records


def _file_state(path: str) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


class RecordFile:
    """One data file and its lock file (which may be opened later, or never, read-only)."""

    def __init__(self, path: str, lock: LockFile | None) -> None:
        self.path = path
        self.lock = lock
        self._token: bytes | None = None  # None: not read or written since it was opened
        self._state: tuple[int, int, int] | None = None

    @property
    def token(self) -> bytes | None:
        """The last writer's token as this process last saw it (None: not read yet)."""
        return self._token

    def modified(self) -> bool:
        """Whether the file changed since this process last read or wrote it (or never did).

        Without a lock file there is nothing anyone could have written: False.
        """
        if self.lock is None:
            return False
        return (
            self._token is None
            or self.lock.read_token() != self._token
            or _file_state(self.path) != self._state
        )

    def read(self) -> bytes:
        """The file's bytes (empty when it does not exist), remembering what was read."""
        assert self.lock is not None
        # Token and state first: a write that lands after them makes the next check see it.
        token = self.lock.read_token()
        state = _file_state(self.path)
        try:
            with open(self.path, "rb") as data_file:
                data = data_file.read()
        except FileNotFoundError:
            data = b""
        self._token, self._state = token, state
        return data

    def write(self, data: bytes) -> None:
        """Record a new token, then replace the file atomically (exclusive lock held).

        On failure the file counts as modified, so the next check reads it again.
        """
        assert self.lock is not None
        try:
            self._token = self.lock.record_write()
            write_atomic(self.path, data)
            self._state = _file_state(self.path)
        except BaseException:
            self.forget()
            raise

    def forget(self) -> None:
        """Count the file as modified: the next :meth:`modified` is True."""
        self._token = None
