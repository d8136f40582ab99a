"""Staged puts: a put applies its blob without holding the store, and readers never wait."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore import DuplicateName, LayerHasChildren, LayerStore, LayerStoreError, LayerUnknown
from layerstore.drivers import STAGING_DIR_NAME
from layerstore.engines import Engine

from .reliability.invariants import assert_consistent, staging_leftovers
from .tarballs import Entry, build_tar

ROOT_DIRECTORY = Path(__file__).resolve().parents[1]
WAIT = 60  # seconds: far more than any step here takes, short of a hung test


class GatedBlob(io.RawIOBase):
    """A blob that gives its first ``open_bytes`` bytes, then blocks until ``release()``:
    the put that reads it stays in its apply for as long as the test needs."""

    def __init__(self, data: bytes, open_bytes: int) -> None:
        self.data = data
        self._data = memoryview(data)
        self._position = 0
        self._open_bytes = open_bytes
        self.reached = threading.Event()
        self._gate = threading.Event()

    def release(self) -> None:
        self._gate.set()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._position >= self._open_bytes:
            self.reached.set()
            if not self._gate.wait(WAIT):
                raise TimeoutError("the test never released the blob")
        end = len(self._data) if self._gate.is_set() else self._open_bytes
        count = min(len(buffer), end - self._position)
        buffer[:count] = self._data[self._position : self._position + count]
        self._position += count
        return count


def blob_of(tag: str, size: int = 1 << 20) -> bytes:
    data = os.urandom(size)
    return build_tar(
        [Entry(b"data", "dir", mode=0o755), Entry(f"data/{tag}".encode(), "file", data=data)]
    )


class PutInThread:
    """``store.put`` of a gated blob in a thread, stopped halfway through its apply."""

    def __init__(self, store: LayerStore, parent: str | None = None, names: list[str] | None = None
                 ) -> None:  # fmt: skip
        self.blob = GatedBlob(blob_of("staged"), open_bytes=64 << 10)
        self.error: BaseException | None = None
        self.base_blob = b""
        self.layer_id = ""

        def run() -> None:
            try:
                self.layer_id = store.put(self.blob, parent=parent, names=names or [])[0].id
            except BaseException as error:  # the test thread reports it
                self.error = error

        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert self.blob.reached.wait(WAIT), "the put never started reading its blob"

    def blob_bytes(self) -> bytes:
        """The tarball the put applies."""
        return self.blob.data

    def finish(self) -> str:
        self.blob.release()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.layer_id


@pytest.fixture
def staged(store: LayerStore) -> Iterator[tuple[LayerStore, PutInThread]]:
    """A store with a layer "base", and a put on it halfway through its apply."""
    base = blob_of("base")
    store.put(base, names=["base"])
    put = PutInThread(store, parent="base", names=["staged"])
    put.base_blob = base
    try:
        yield store, put
    finally:
        put.blob.release()
        put.thread.join(WAIT)


def test_readers_do_not_wait_for_a_put(
    staged: tuple[LayerStore, PutInThread], tmp_path: Path
) -> None:
    store, put = staged
    # Each of these would block on the store's lock if the put held it.
    assert [layer.names for layer in store.layers()] == [("base",)]
    assert store.get("base").names == ("base",)
    with store.diff("base", compression="none") as stream:
        assert stream.read() == put.base_blob
    point = store.mount("base")
    assert os.path.isdir(point)
    assert not store.unmount("base")  # no longer mounted
    assert store.exists("base")
    assert not store.exists("staged")
    # The reservation is not a layer yet, but its name is taken.
    with pytest.raises(LayerUnknown):
        store.get("staged")
    with pytest.raises(DuplicateName):
        store.create(names=["staged"])
    layer_id = put.finish()
    assert store.get("staged").id == layer_id
    assert store.get(layer_id).parent == store.get("base").id
    assert_consistent(LayerStore(store.root, run_root=store.run_root, driver=store.driver.name))


def run_python(code: str, timeout: float = WAIT) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT_DIRECTORY / "python")},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_another_process_reads_and_writes_during_a_put(
    staged: tuple[LayerStore, PutInThread],
) -> None:
    store, put = staged
    output = run_python(
        f"""
        from layerstore import LayerStore
        store = LayerStore({store.root!r}, run_root={store.run_root!r},
                           driver={store.driver.name!r}, engine={store.engine.name!r})
        print(sorted(name for layer in store.layers() for name in layer.names))
        store.mount("base")
        store.unmount("base")
        print(store.create(parent="base", names=["beside"]).parent)
        """
    )
    base = store.get("base").id
    assert output.split("\n")[:2] == ["['base']", base]
    put.finish()
    assert sorted(name for layer in store.layers() for name in layer.names) == [
        "base",
        "beside",
        "staged",
    ]


def test_the_parent_of_a_staged_layer_is_not_deleted(
    staged: tuple[LayerStore, PutInThread],
) -> None:
    store, put = staged
    with pytest.raises(LayerHasChildren):
        store.delete("base")
    with pytest.raises(LayerHasChildren):
        store.wipe()
    put.finish()
    assert store.get("staged").parent == store.get("base").id


def test_a_failed_apply_leaves_nothing(store: LayerStore) -> None:
    store.put(blob_of("base"), names=["base"])
    whole = blob_of("broken")
    broken = whole[: len(whole) // 2]  # a tarball cut short in its data
    with pytest.raises(LayerStoreError):
        store.put(broken, parent="base", names=["broken"])
    assert [layer.names for layer in store.layers()] == [("base",)]
    assert staging_leftovers(store) == []
    store.create(names=["broken"])  # the name was given back


STAGE_AND_WAIT = """
import sys, time
from layerstore import LayerStore
import layerstore.faults

class Slow:
    # A blob that never ends: the put stays in its apply until the process is killed.
    def __init__(self, head):
        self.head = head
    def read(self, size=-1):
        if self.head:
            chunk, self.head = self.head, b""
            return chunk
        print("staging", flush=True)
        time.sleep(3600)
        return b""

store = LayerStore({root!r}, run_root={run_root!r}, driver={driver!r}, engine={engine!r})
head = open({blob!r}, "rb").read(65536)
store.put(Slow(head), parent="base", names=["doomed"])
"""


def test_a_dead_staging_is_removed_and_a_live_one_kept(
    store: LayerStore, engine: Engine, tmp_path: Path
) -> None:
    store.put(blob_of("base"), names=["base"])
    blob = tmp_path / "blob.tar"
    blob.write_bytes(blob_of("doomed"))
    code = STAGE_AND_WAIT.format(
        root=store.root,
        run_root=store.run_root,
        driver=store.driver.name,
        engine=engine.name,
        blob=str(blob),
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT_DIRECTORY / "python")},
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline() == "staging\n"
        # A read-write open while the other process is staging keeps its staging and record.
        live = LayerStore(store.root, run_root=store.run_root, driver=store.driver.name)
        assert staging_leftovers(live) != []
        assert [layer.names for layer in live.layers()] == [("base",)]
        with pytest.raises(DuplicateName):
            live.create(names=["doomed"])
        assert live.check() == []
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(WAIT)
    reopened = LayerStore(store.root, run_root=store.run_root, driver=store.driver.name)
    assert staging_leftovers(reopened) == []
    assert [layer.names for layer in reopened.layers()] == [("base",)]
    reopened.create(names=["doomed"])
    assert_consistent(reopened)


def test_staging_does_not_look_like_a_layer(staged: tuple[LayerStore, PutInThread]) -> None:
    store, put = staged
    assert os.path.isdir(os.path.join(store.driver.home, STAGING_DIR_NAME))
    assert store.driver.layer_ids() == [store.get("base").id]
    put.finish()


def test_threads_put_at_the_same_time(store: LayerStore) -> None:
    blobs = [blob_of(f"thread{number}", 256 << 10) for number in range(8)]
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def put(number: int) -> None:
        try:
            results[number] = store.put(blobs[number], names=[f"t{number}"])[0].id
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=put, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert errors == []
    assert sorted(layer.id for layer in store.layers()) == sorted(results.values())
    for number, layer_id in results.items():
        with store.diff(layer_id, compression="none") as stream:
            assert stream.read() == blobs[number]
    assert_consistent(LayerStore(store.root, run_root=store.run_root, driver=store.driver.name))
