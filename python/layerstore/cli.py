"""The ``layerstore`` command (also ``python -m layerstore``)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from . import LayerStore
from .errors import LayerStoreError

__all__ = ["main"]

_T = TypeVar("_T")


def _timed(label: str, step: Callable[[], _T]) -> _T:
    started = time.perf_counter()
    result = step()
    print(f"  {label:<52} {1000 * (time.perf_counter() - started):8.2f} ms")
    return result


def demo(engine: str | None) -> int:
    """Build a small store in a temporary directory and show what it holds."""
    scratch_parent = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = tempfile.mkdtemp(prefix="layerstore-demo-", dir=scratch_parent)
    try:
        store = _timed("open a new store", lambda: LayerStore(root, engine=engine))
        print(f"  store at {root}: driver {store.driver.name}, engine {store.engine.name}")
        base = _timed("create a base layer named 'base'", lambda: store.create(names=["base"]))
        app = _timed(
            "create a layer on it named 'app'",
            lambda: store.create(parent="base", names=["app"], flags={"demo": True}),
        )
        _timed("set metadata and a big data item on 'app'", lambda: _annotate(store))
        _timed("move the name 'latest' from base to app", lambda: _move_name(store))
        reader = _timed(
            "open the same store read-only, as another tool would",
            lambda: LayerStore(root, driver=store.driver.name, engine=engine, read_only=True),
        )
        print()
        print(f"  {'ID':<14} {'NAMES':<16} {'PARENT':<14} METADATA")
        for layer in reader.layers():
            print(
                f"  {layer.id[:12]:<14} {','.join(layer.names):<16} "
                f"{layer.parent[:12]:<14} {layer.metadata}"
            )
        print()
        same = (
            reader.big_data("app", "manifest") == b'{"schemaVersion": 2}'
            and reader.lookup(app.id[:12]) == app.id
            and reader.lookup("base") == base.id
            and reader.get("latest").id == app.id
        )
        if not same:
            raise LayerStoreError("the second store read back something else than was written")
        print("  read back by the second store: names, parents, metadata and big data match")
        _timed("delete both layers", lambda: _delete(store, "app", "base"))
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _annotate(store: LayerStore) -> None:
    store.set_metadata("app", "built by the layerstore demo")
    store.set_big_data("app", "manifest", b'{"schemaVersion": 2}')


def _delete(store: LayerStore, *names: str) -> None:
    for name in names:
        store.delete(name)


def _move_name(store: LayerStore) -> None:
    store.add_names("base", ["latest"])
    store.add_names("app", ["latest"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="layerstore", description="Container image layers on disk, as containers/storage."
    )
    parser.add_argument("--engine", choices=("native", "pure"), help="byte-work engine")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="build a small store in a temporary directory and show it")
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "demo":
            return demo(arguments.engine)
    except LayerStoreError as exc:
        print(f"layerstore: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader of our output went away (`| head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    parser.error(f"unknown command {arguments.command}")
    return 2
