"""What is wrong with a store (check), and putting it right as far as is safe (repair).

Orphans are files no record accounts for: a layer's driver directory, tar-split file or big
data directory left by a process that died between removing a record and its files (or the
other way round, in other tools), and temporary files of interrupted atomic writes. Under the
store's exclusive lock nobody is half-way through creating them, because every creation saves
its record (flagged incomplete) before making any file.

The functions here work on a :class:`~layerstore.LayerStore` whose lock the caller holds
(shared to find problems, exclusive to repair), as containers/storage's check.go works on its
store.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from ..errors import InvalidLayerData
from ..layer import Compression, Layer
from ..paths import TAR_SPLIT_SUFFIX, big_data_path, is_temporary_name, tar_split_path

if TYPE_CHECKING:
    from ..drivers import Driver
    from .layer_store import LayerStore

__all__ = ["Problem", "ProblemKind", "find_orphans", "find_problems", "repair_problems"]

ProblemKind = Literal[
    "missing-data",
    "missing-parent",
    "missing-tar-split",
    "content-mismatch",
    "missing-big-data",
    "stale-mount",
    "hidden-mount",
    "orphan",
    "granted-modes",
]

# Only names that can be layer ids are ever removed as orphans: other tools keep directories
# of their own beside the layers (Go's overlay has "l" and "staging", for instance).
_LAYER_ID = re.compile(r"[0-9a-f]{64}")
# Problems that make a layer unusable: repair deletes it, with the layers built on it.
_FATAL: tuple[ProblemKind, ...] = ("missing-data", "missing-parent", "content-mismatch")


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong with the store: what, which layer or file, and in words."""

    kind: ProblemKind
    message: str
    layer: str = ""
    path: str = ""


def find_orphans(layers_dir: str, driver: Driver, known: Iterable[str]) -> list[Problem]:
    """Files and directories that belong to no layer record."""
    known_ids = set(known)
    problems: list[Problem] = []
    for layer_id in driver.layer_ids():
        if layer_id not in known_ids and _LAYER_ID.fullmatch(layer_id):
            problems.append(
                Problem(
                    "orphan",
                    f"{driver.name} data of layer {layer_id}, which has no record",
                    layer_id,
                    driver.layer_dir(layer_id),
                )
            )
    try:
        names = sorted(os.listdir(layers_dir))
    except FileNotFoundError:
        names = []
    big_data_dirs: list[str] = []
    for name in names:
        path = os.path.join(layers_dir, name)
        if is_temporary_name(name):
            problems.append(
                Problem("orphan", f"temporary file {name} of an interrupted write", "", path)
            )
            continue
        if name in known_ids:
            big_data_dirs.append(path)
            continue
        layer_id = name.removesuffix(TAR_SPLIT_SUFFIX)
        if layer_id in known_ids or not _LAYER_ID.fullmatch(layer_id):
            continue
        what = "tar-split file" if name.endswith(TAR_SPLIT_SUFFIX) else "big data directory"
        problems.append(
            Problem("orphan", f"{what} of layer {layer_id}, which has no record", layer_id, path)
        )
    # Only the big data directories the listing above saw: opening a store of 10,000 layers
    # must not cost 10,000 failed listdir calls for layers without big data.
    for directory in big_data_dirs:
        try:
            entries = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in entries:
            if is_temporary_name(name):
                path = os.path.join(directory, name)
                problems.append(Problem("orphan", f"temporary big data file {name}", "", path))
    for path in driver.orphans():
        problems.append(
            Problem("orphan", f"{driver.name} file {path} belongs to no layer", "", path)
        )
    return problems


def find_problems(store: LayerStore, contents: bool) -> list[Problem]:
    """What :meth:`LayerStore.check` reports; the caller holds the store's lock."""
    problems: list[Problem] = []
    # Before the contents are read: reading a layer puts an abandoned grant's modes back.
    from ..drivers.unlock import abandoned

    for layer_id in abandoned(store.driver.unlock_state):
        problems.append(
            Problem(
                "granted-modes",
                f"layer {layer_id}: modes widened for a reader that was killed were not put "
                "back (repair, or the next reader, puts back the modes the tar gave)",
                layer_id,
                os.path.join(store.driver.unlock_state, f"{layer_id}.modes"),
            )
        )
    for layer in store._index.visible():  # not the layers living puts are applying
        problems += _layer_problems(store, layer, contents)
    staging = store._staging
    for token in sorted(staging.tokens()):
        if not staging.is_live(token):
            problems.append(
                Problem(
                    "orphan",
                    f"staging {token} of a put whose process died",
                    "",
                    staging.directory(token),
                )
            )
    driver = store.driver
    hidden = driver.hidden_mounts()
    for layer_id in hidden:
        problems.append(
            Problem(
                "hidden-mount",
                f"layer {layer_id} is mounted under another mount (a bind of "
                f"{driver.home}?), where nobody sees it: unmount what covers it, then the layer",
                layer_id,
            )
        )
    for layer_id, mount in store._mounts.items():
        if mount.count > 0 and layer_id not in hidden and not driver.is_mounted(mount.path):
            problems.append(
                Problem(
                    "stale-mount",
                    f"layer {layer_id} is counted as mounted "
                    f"{mount.count} time(s) at {mount.path}, which is not mounted",
                    layer_id,
                    mount.path,
                )
            )
    return problems + find_orphans(store.layers_dir, driver, store._index_ids())


def _layer_problems(store: LayerStore, layer: Layer, contents: bool) -> list[Problem]:
    problems: list[Problem] = []
    driver = store.driver
    layer_dir = driver.layer_dir(layer.id)
    if not (driver.exists(layer.id) and os.path.isdir(layer_dir)):
        problems.append(
            Problem(
                "missing-data", f"layer {layer.id} has no {driver.name} data", layer.id, layer_dir
            )
        )
    if layer.parent and layer.parent not in store._index:
        problems.append(
            Problem(
                "missing-parent",
                f"layer {layer.id}'s parent {layer.parent} is not in the store",
                layer.id,
            )
        )
    tar_split = tar_split_path(store.layers_dir, layer.id)
    if layer.uncompressed_digest and not os.path.exists(tar_split):
        problems.append(
            Problem(
                "missing-tar-split",
                f"layer {layer.id} has a digest but no "
                "tar-split file: its diff cannot be rebuilt exactly",
                layer.id,
                tar_split,
            )
        )
    elif contents and layer.uncompressed_digest and os.path.isdir(layer_dir):
        problem = _content_problem(store, layer, tar_split)
        if problem is not None:
            problems.append(problem)
    for key in layer.big_data_names:
        path = big_data_path(store.layers_dir, layer.id, key)
        if not os.path.exists(path):
            problems.append(
                Problem(
                    "missing-big-data",
                    f"layer {layer.id} lists big data {key!r} but has no such file",
                    layer.id,
                    path,
                )
            )
    return problems


def _content_problem(store: LayerStore, layer: Layer, tar_split: str) -> Problem | None:
    import hashlib  # loads OpenSSL: only for check(contents=True)

    digest = hashlib.sha256()
    try:
        with (
            store.driver.unlocked(layer.id),
            store.engine.open_diff(
                tar_split, store.driver.layer_dir(layer.id), Compression.NONE
            ) as stream,
        ):
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except InvalidLayerData as exc:
        return Problem("content-mismatch", f"layer {layer.id}: {exc}", layer.id, tar_split)
    if "sha256:" + digest.hexdigest() != layer.uncompressed_digest:
        return Problem(
            "content-mismatch",
            f"layer {layer.id} rebuilds to sha256:{digest.hexdigest()}, not "
            f"{layer.uncompressed_digest}",
            layer.id,
            tar_split,
        )
    return None


def repair_problems(store: LayerStore, contents: bool) -> list[Problem]:
    """What :meth:`LayerStore.repair` does; the caller holds the store's exclusive lock."""
    problems = find_problems(store, contents)
    doomed = {problem.layer for problem in problems if problem.kind in _FATAL}
    for layer in store._index:  # file order: parents first, so children follow
        if layer.parent in doomed:
            doomed.add(layer.id)
    for layer in reversed(list(store._index)):
        if layer.id in doomed:
            store._delete_locked(layer.id)
    fixed = [problem for problem in problems if problem.layer in doomed]
    for problem in problems:
        if problem.layer in doomed:
            continue
        if problem.kind == "missing-big-data":
            layer = store._index.get(problem.layer)
            present = tuple(
                key
                for key in layer.big_data_names
                if os.path.exists(big_data_path(store.layers_dir, layer.id, key))
            )
            store._index.replace(replace(layer, big_data_names=present))
            store._save()
            fixed.append(problem)
        elif problem.kind == "granted-modes":
            from ..drivers.unlock import repair

            repair(store.driver.unlock_state, problem.layer)
            fixed.append(problem)
        elif problem.kind == "stale-mount":
            store._clear_stale_mount(problem.layer)
            fixed.append(problem)
    orphans = [problem for problem in problems if problem.kind == "orphan"]
    store._remove(orphans)
    return fixed + orphans
