"""Lock files: POSIX record locks shared with the Go tools, tokens, and the thread lock on top."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from layerstore.store.locking import TOKEN_SIZE, LockFile, ReadWriteLock


def other_process_can_lock(path: Path, exclusive: bool) -> bool:
    """Try a raw fcntl lock from another process, the kind containers/storage takes."""
    kind = "LOCK_EX" if exclusive else "LOCK_SH"
    script = textwrap.dedent(
        f"""
        import fcntl, os, sys
        fd = os.open({str(path)!r}, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.{kind} | fcntl.LOCK_NB)
        except OSError:
            sys.exit(1)
        sys.exit(0)
        """
    )
    return subprocess.run([sys.executable, "-c", script], check=False).returncode == 0


def hold_exclusively(path: Path, create: bool) -> subprocess.Popen[str]:
    """A child process that takes a raw fcntl write lock on ``path`` (making the file with
    ``create``), holds it for half a second and exits; returns once it holds the lock."""
    flags = "os.O_RDWR | os.O_CREAT" if create else "os.O_RDWR"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import fcntl, os, time
                fd = os.open({str(path)!r}, {flags}, 0o644)
                fcntl.lockf(fd, fcntl.LOCK_EX)
                print("locked", flush=True)
                time.sleep(0.5)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_locks_exclude_other_processes_fcntl_locks(tmp_path: Path) -> None:
    lock = LockFile.open(str(tmp_path / "layers.lock"))
    with lock.shared():
        assert other_process_can_lock(tmp_path / "layers.lock", exclusive=False)
        assert not other_process_can_lock(tmp_path / "layers.lock", exclusive=True)
    with lock.exclusive():
        assert not other_process_can_lock(tmp_path / "layers.lock", exclusive=False)
    assert other_process_can_lock(tmp_path / "layers.lock", exclusive=True)


def test_waits_for_a_writer_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "layers.lock"
    lock = LockFile.open(str(path))
    holder = hold_exclusively(path, create=False)
    started = time.monotonic()
    with lock.shared():
        waited = time.monotonic() - started
    holder.wait()
    assert waited > 0.2, "the shared lock was granted while another process held it exclusively"


def test_one_object_per_path_and_mode(tmp_path: Path) -> None:
    path = str(tmp_path / "x.lock")
    assert LockFile.open(path) is LockFile.open(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_tokens_change_on_write_and_never_truncate(tmp_path: Path) -> None:
    path = tmp_path / "layers.lock"
    lock = LockFile.open(str(path))
    assert lock.read_token() == b""
    path.write_bytes(b"x" * 100)
    with lock.exclusive():
        first = lock.record_write()
        second = lock.record_write()
    assert len(first) == TOKEN_SIZE
    assert first != second
    assert lock.read_token() == second
    assert path.stat().st_size == 100
    assert path.read_bytes()[TOKEN_SIZE:] == b"x" * 36
    assert int.from_bytes(second[16:20], "little") == os.getpid()


def test_recording_a_write_needs_the_exclusive_lock(tmp_path: Path) -> None:
    lock = LockFile.open(str(tmp_path / "layers.lock"))
    with lock.shared(), pytest.raises(RuntimeError, match="without the exclusive lock"):
        lock.record_write()


def test_read_only_lock_files_refuse_writers(tmp_path: Path) -> None:
    path = tmp_path / "ro.lock"
    path.touch()
    lock = LockFile.open(str(path), read_only=True)
    with lock.shared():
        pass
    with pytest.raises(PermissionError):
        lock.acquire_write()


def test_rw_lock_readers_share_writers_exclude() -> None:
    rw = ReadWriteLock()
    events: list[str] = []
    rw.acquire_read()
    rw.acquire_read()  # a second reader does not wait

    def writer() -> None:
        rw.acquire_write()
        events.append("write")
        rw.release_write()

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.1)
    assert events == [], "a writer got in while readers held the lock"
    events.append("readers done")
    rw.release_read()
    rw.release_read()
    thread.join(5)
    assert events == ["readers done", "write"]


def test_threads_share_one_process_lock(tmp_path: Path) -> None:
    lock = LockFile.open(str(tmp_path / "t.lock"))
    counter = 0

    def bump() -> None:
        nonlocal counter
        for _ in range(200):
            with lock.exclusive():
                value = counter
                time.sleep(0)
                counter = value + 1

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter == 800


def test_a_forked_child_starts_with_a_fresh_lock(tmp_path: Path) -> None:
    path = tmp_path / "fork.lock"
    released = tmp_path / "released"
    lock = LockFile.open(str(path))
    with lock.exclusive():
        pid = os.fork()
        if pid == 0:  # child: the parent's lock is not ours; we must wait for it
            status = 0
            try:
                with lock.exclusive():
                    status = 0 if released.exists() else 3
            except BaseException:
                status = 4
            os._exit(status)
        time.sleep(0.4)
        released.touch()  # still holding the lock: the child cannot have it yet
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_removed_lock_file_is_followed(tmp_path: Path) -> None:
    """Locking a deleted file would exclude nobody: the lock follows the file at its path."""
    path = tmp_path / "layers.lock"
    lock = LockFile.open(str(path))
    with lock.exclusive():
        pass
    path.unlink()  # another tool removed it; the next process makes a new one and locks that
    holder = hold_exclusively(path, create=True)
    started = time.monotonic()
    with lock.shared():
        waited = time.monotonic() - started
    holder.wait()
    assert waited > 0.2, "we locked the removed file and excluded nobody"
