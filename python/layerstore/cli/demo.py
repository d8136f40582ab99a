"""``layerstore demo``: the store's main job, end to end, in a temporary store.

It needs no network and no arguments: two layer tarballs are built in memory with
:mod:`tarfile` (a base, and an upper layer that deletes a file and makes a directory opaque),
imported with :meth:`~layerstore.LayerStore.put`, mounted as one tree, listed, unmounted and
diffed back; the sha256 of each diff must be the layer's ``uncompressed_digest``. Every step is
timed. Whatever happens, the mount is undone and the temporary store removed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import time
from argparse import Namespace
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

from .. import Layer, LayerStore
from ..errors import LayerStoreError
from .common import PROG, CommandError, one_line

__all__ = ["run_demo"]

_T = TypeVar("_T")
_MTIME = 1_700_000_000  # fixed, so the layers (and their digests) are the same on every run
_Member = tuple[tarfile.TarInfo, bytes | None]


def _member(
    name: str, data: bytes | None = None, *, kind: bytes = tarfile.REGTYPE, mode: int = 0o644
) -> _Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else mode
    info.mtime = _MTIME
    info.uname = info.gname = "root"
    if kind == tarfile.SYMTYPE:
        info.linkname, data = (data or b"").decode(), None
    elif data is not None:
        info.size = len(data)
    return info, data


def _directory(name: str) -> _Member:
    return _member(name, kind=tarfile.DIRTYPE)


def _gzipped_tar(members: Sequence[_Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(buffer.getvalue(), mtime=0)


BASE = [
    _directory("etc/"),
    _member("etc/os-release", b'NAME="layerstore demo"\nID=demo\n'),
    _member("etc/hostname", b"base\n"),
    _member("etc/motd", b"deleted by the upper layer\n"),
    _directory("bin/"),
    _member("bin/hello", b"#!/bin/sh\necho hello from the base layer\n", mode=0o755),
    _member("bin/hi", b"hello", kind=tarfile.SYMTYPE),
    _directory("var/"),
    _directory("var/cache/"),
    _directory("var/cache/app/"),
    _member("var/cache/app/stale-1", b"hidden by the upper layer's opaque directory\n"),
    _member("var/cache/app/stale-2", b"hidden as well\n"),
]
"""The base layer's entries."""

UPPER = [
    _directory("etc/"),
    _member("etc/hostname", b"app\n"),
    _member("etc/.wh.motd", b""),  # a whiteout: etc/motd is deleted
    _directory("var/"),
    _directory("var/cache/"),
    _directory("var/cache/app/"),
    _member("var/cache/app/.wh..wh..opq", b""),  # opaque: the base's entries here are hidden
    _member("var/cache/app/fresh", b"written by the upper layer\n"),
    _directory("app/"),
    _member("app/main.py", b'print("hello from the upper layer")\n'),
]
"""The upper layer's entries: a changed file, a deleted one, an opaque directory, new files."""

MERGED = {
    "/app": None,
    "/app/main.py": b'print("hello from the upper layer")\n',
    "/bin": None,
    "/bin/hello": b"#!/bin/sh\necho hello from the base layer\n",
    "/bin/hi": None,
    "/etc": None,
    "/etc/hostname": b"app\n",
    "/etc/os-release": b'NAME="layerstore demo"\nID=demo\n',
    "/var": None,
    "/var/cache": None,
    "/var/cache/app": None,
    "/var/cache/app/fresh": b"written by the upper layer\n",
}
"""What the mounted upper layer must show: every path, and the contents of its files."""


def _scratch_directory() -> tuple[str | None, str]:
    """Where the temporary store goes: /dev/shm when it is a tmpfs we may write (fast, and
    nothing is left on a disk), else the system's temporary directory."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if fields[1:3] == ["/dev/shm", "tmpfs"] and os.access("/dev/shm", os.W_OK):
                    return "/dev/shm", "tmpfs"
    except OSError:
        pass
    return None, tempfile.gettempdir()


def _tree(top: str) -> list[tuple[str, str]]:
    """Every entry under ``top`` as (path within it, what it is), sorted by path."""
    entries = []
    for directory, subdirectories, files in os.walk(top):
        for name in [*subdirectories, *files]:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode):
                what = "dir"
            elif stat.S_ISLNK(info.st_mode):
                what = f"symlink to {os.readlink(path)}"
            elif stat.S_ISREG(info.st_mode):
                what = f"file, {info.st_size} B, mode {stat.S_IMODE(info.st_mode):o}"
            else:
                what = stat.filemode(info.st_mode)
            entries.append(("/" + os.path.relpath(path, top), what))
    return sorted(entries)


def _check_tree(mount_point: str, tree: list[tuple[str, str]]) -> None:
    paths = {path for path, _what in tree}
    if paths != set(MERGED):
        missing = ", ".join(sorted(set(MERGED) - paths)) or "nothing"
        extra = ", ".join(sorted(paths - set(MERGED))) or "nothing"
        raise CommandError(f"demo: the merged tree is wrong: missing {missing}; unexpected {extra}")
    for path, data in MERGED.items():
        if data is not None:
            with open(mount_point + path, "rb") as merged_file:
                if merged_file.read() != data:
                    raise CommandError(f"demo: {path} in the merged tree holds the wrong data")


def _sha256_of_diff(store: LayerStore, layer: Layer) -> str:
    digest = hashlib.sha256()
    with store.diff(layer.id, compression="none") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


class _Steps:
    """Runs the demo's steps, printing each with the time it took."""

    def __init__(self) -> None:
        self.total = 0.0

    def run(self, label: str, step: Callable[[], _T]) -> _T:
        started = time.perf_counter()
        result = step()
        elapsed = time.perf_counter() - started
        self.total += elapsed
        print(f"  {label:<56} {1000 * elapsed:8.1f} ms", flush=True)
        return result


def run_demo(arguments: Namespace) -> None:
    """Run the demo with the engine and driver asked for (defaults: the store's choice)."""
    scratch, scratch_kind = _scratch_directory()
    top = tempfile.mkdtemp(prefix="layerstore-demo-", dir=scratch)
    store: LayerStore | None = None
    mounted: list[str] = []
    try:
        print(f"{PROG} demo: a temporary store in {top} ({scratch_kind})")
        steps = _Steps()
        base_blob, upper_blob = steps.run(
            "build two gzipped layer tarballs in memory (tarfile)",
            lambda: (_gzipped_tar(BASE), _gzipped_tar(UPPER)),
        )
        store = steps.run(
            "open the store",
            partial(
                LayerStore,
                os.path.join(top, "root"),
                os.path.join(top, "run"),
                driver=arguments.driver,
                engine=arguments.engine,
            ),
        )
        opened = store
        why = dict(opened.status()).get("Driver chosen because", "")
        print(
            f"  engine {opened.engine.name}, driver {opened.driver.name}"
            + (f" ({why})" if why else "")
        )
        base, _ = steps.run(
            f"import the base layer with put ({len(base_blob)} B gzip)",
            partial(opened.put, base_blob, names=["demo-base"]),
        )
        upper, _ = steps.run(
            f"import the upper layer with put ({len(upper_blob)} B gzip)",
            partial(opened.put, upper_blob, parent=base.id, names=["demo-upper"]),
        )
        mount_point = steps.run(
            "mount the upper layer on its parent", partial(opened.mount, upper.id)
        )
        mounted.append(upper.id)
        tree = steps.run("list the merged tree", partial(_tree, mount_point))
        print(f"  merged tree at {mount_point}:")
        for path, what in tree:
            print(f"    {path:<24} {what}")
        _check_tree(mount_point, tree)
        print("  whiteouts honoured: /etc/motd is gone, /var/cache/app holds only 'fresh'")
        steps.run("unmount", partial(opened.unmount, upper.id))
        mounted.clear()
        for layer in (base, upper):
            digest = steps.run(
                f"diff {layer.names[0]} back, uncompressed, and sha256 it",
                partial(_sha256_of_diff, opened, layer),
            )
            if digest != layer.uncompressed_digest:
                raise CommandError(
                    f"demo: the diff of {layer.names[0]} has {digest}, but the layer's "
                    f"uncompressed_digest is {layer.uncompressed_digest}"
                )
            print(f"    {digest} = uncompressed_digest of {layer.names[0]}")
        print(
            f"  done in {1000 * steps.total:.1f} ms with engine {opened.engine.name} "
            f"and driver {opened.driver.name}; the temporary store is removed"
        )
    finally:
        _clean_up(top, store, mounted)


def _clean_up(top: str, store: LayerStore | None, mounted: list[str]) -> None:
    """Unmount and remove everything, whatever failed; anything left behind is reported."""
    if store is not None:
        try:
            for layer_id in mounted:
                store.unmount(layer_id, force=True)
            store.wipe()
        except (LayerStoreError, OSError) as exc:
            # The demo's own failure, if any, is the one to show; this one is a warning.
            print(f"{PROG}: demo: cleaning up: {one_line(str(exc))}", file=sys.stderr)
        store.close()
    shutil.rmtree(top, ignore_errors=True)
    if os.path.exists(top):
        print(f"{PROG}: demo: could not remove {top}: remove it by hand", file=sys.stderr)
