"""Cross-process and in-process locks over the store's lock files (SPEC section 6).

A :class:`LockFile` is what containers/storage calls a lockfile: a whole-file POSIX record lock
(``fcntl(F_SETLKW)``), shared for readers and exclusive for writers, so layerstore and the Go tools
exclude each other. POSIX locks belong to the process and vanish when *any* descriptor of the file
is closed, so each process keeps exactly one descriptor per lock file, opened once and never
closed while the process lives, and threads share it through a reader/writer lock on top.

The file also carries the 64-byte token of the last writer. A writer records a fresh token before
it rewrites the data the lock protects; a reader that remembers the token it last saw knows the
data changed when the token differs.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

__all__ = ["TOKEN_SIZE", "LockFile", "ReadWriteLock"]

TOKEN_SIZE = 64
_RETRY_SECONDS = 0.01  # Go retries a failed F_SETLKW every 10 ms too


class ReadWriteLock:
    """A reader/writer lock for threads: many readers or one writer, writers not starved."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire_read(self) -> None:
        with self._condition:
            while self._writer or self._writers_waiting:
                self._condition.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._condition:
            self._readers -= 1
            if not self._readers:
                self._condition.notify_all()

    def acquire_write(self) -> None:
        with self._condition:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._condition.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._condition:
            self._writer = False
            self._condition.notify_all()


class LockFile:
    """One lock file of this process: fcntl lock, last-writer token, in-process RW lock.

    Use :meth:`open` rather than the constructor, so every user of a path in this process shares
    the one descriptor (closing a second descriptor would drop the first one's POSIX lock).
    """

    _registry: ClassVar[dict[tuple[str, bool], LockFile]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()
    _live: ClassVar[weakref.WeakSet[LockFile]] = weakref.WeakSet()

    def __init__(self, path: str, *, read_only: bool) -> None:
        self.path = path
        self.read_only = read_only
        self._state = threading.Lock()  # guards the counters below
        self._reset()
        LockFile._live.add(self)

    @classmethod
    def open(cls, path: str, *, read_only: bool = False) -> LockFile:
        """The process-wide lock object for ``path``, created (with the file) on first use."""
        key = (os.path.abspath(path), read_only)
        with cls._registry_lock:
            lock = cls._registry.get(key)
            if lock is None:
                lock = cls(key[0], read_only=read_only)
                lock._ensure_open()
                cls._registry[key] = lock
            return lock

    def _reset(self) -> None:
        self._threads = ReadWriteLock()
        self._fd = -1
        self._holders = 0  # threads holding the file lock (readers, or the one writer)
        self._exclusive = False
        self._pid = os.getpid()
        self._counter = 0

    def _ensure_open(self) -> int:
        if self._fd < 0:
            if self.read_only:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            else:
                os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
                # 0644 and never truncated: the mode and the token layout are what Go uses.
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return self._fd

    # -- locking -------------------------------------------------------------------------------

    def _follow_replaced_file(self) -> None:
        """Reopen the lock file if it was removed or replaced since it was opened.

        Locking a deleted file would exclude nobody: the next process opens a new one.
        """
        if self._fd < 0:
            return
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        opened = os.fstat(self._fd)
        if current is None or (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
            os.close(self._fd)
            self._fd = -1
            self._ensure_open()

    def _fcntl(self, kind: int) -> None:
        fd = self._ensure_open()
        while True:
            try:
                fcntl.lockf(fd, kind)
                return
            except OSError as exc:
                # EINTR and EDEADLK (the kernel's guess at a cycle between processes) are
                # transient: try again, as Go does.
                if exc.errno not in (errno.EINTR, errno.EDEADLK, errno.EAGAIN):
                    raise
                time.sleep(_RETRY_SECONDS)

    def acquire_read(self) -> None:
        """Take the lock shared: wait for writers in this and other processes."""
        self._threads.acquire_read()
        try:
            with self._state:
                if self._holders == 0:
                    self._follow_replaced_file()
                    self._fcntl(fcntl.LOCK_SH)
                    self._exclusive = False
                self._holders += 1
        except BaseException:
            self._threads.release_read()
            raise

    def release_read(self) -> None:
        with self._state:
            self._holders -= 1
            if self._holders == 0:
                self._fcntl(fcntl.LOCK_UN)
        self._threads.release_read()

    def acquire_write(self) -> None:
        """Take the lock exclusive: wait for every other holder in any process."""
        if self.read_only:
            raise PermissionError(f"{self.path}: lock file opened read-only")
        self._threads.acquire_write()
        try:
            with self._state:
                self._follow_replaced_file()
                self._fcntl(fcntl.LOCK_EX)
                self._exclusive = True
                self._holders = 1
        except BaseException:
            self._threads.release_write()
            raise

    def release_write(self) -> None:
        with self._state:
            self._holders = 0
            self._exclusive = False
            self._fcntl(fcntl.LOCK_UN)
        self._threads.release_write()

    @contextmanager
    def shared(self) -> Iterator[None]:
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        self.acquire_write()
        try:
            yield
        finally:
            self.release_write()

    @property
    def held_exclusive(self) -> bool:
        """True while a thread of this process holds the lock for writing."""
        return self._exclusive

    # -- the last-writer token -----------------------------------------------------------------

    def read_token(self) -> bytes:
        """The token at offset 0: empty until the first writer records one."""
        return os.pread(self._ensure_open(), TOKEN_SIZE, 0)

    def record_write(self) -> bytes:
        """Write a fresh token (caller holds the exclusive lock) and return it."""
        if not self._exclusive:
            raise RuntimeError(f"{self.path}: recording a write without the exclusive lock")
        self._counter += 1
        token = struct.pack("<QQI", time.time_ns(), self._counter, os.getpid())
        token += os.urandom(TOKEN_SIZE - len(token))
        written = os.pwrite(self._fd, token, 0)
        if written != TOKEN_SIZE:
            raise OSError(errno.ENOSPC, "short write of the lock token", self.path)
        return token

    # -- fork ----------------------------------------------------------------------------------

    @classmethod
    def _after_fork_in_child(cls) -> None:
        # A child inherits descriptors and counters but none of the parent's POSIX locks, and
        # threads that held the in-process locks do not exist in it: start from scratch.
        cls._registry_lock = threading.Lock()
        for lock in list(cls._live):
            fd = lock._fd
            lock._state = threading.Lock()
            lock._reset()
            if fd >= 0:
                os.close(fd)


os.register_at_fork(after_in_child=LockFile._after_fork_in_child)
