"""Finding what is wrong with a store, and what can be removed safely (check and repair).

Orphans are files no record accounts for: a layer's driver directory, tar-split file or big
data directory left by a process that died between removing a record and its files (or the
other way round, in other tools), and temporary files of interrupted atomic writes. Under the
store's exclusive lock nobody is half-way through creating them, because every creation saves
its record (flagged incomplete) before making any file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .drivers import Driver

__all__ = ["Problem", "find_orphans", "is_temporary_name"]

# Only names that can be layer ids are ever removed as orphans: other tools keep directories
# of their own beside the layers (Go's overlay has "l" and "staging", for instance).
_LAYER_ID = re.compile(r"[0-9a-f]{64}")
# Ours: ".NAME.PID.tmp" and "ID.tar-split.gz.tmp"; Go's ioutils.AtomicWriteFile: ".tmp-NAME*".
_TEMPORARY = re.compile(r"(^\..+\.\d+\.tmp$)|(\.tar-split\.gz\.tmp$)|(^\.tmp-)")


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong with the store: what, which layer or file, and in words."""

    kind: str
    """missing-data, missing-parent, missing-tar-split, content-mismatch, missing-big-data,
    stale-mount, or orphan."""
    message: str
    layer: str = ""
    path: str = ""


def is_temporary_name(name: str) -> bool:
    """A temporary file of an interrupted atomic write (ours) or tar-split write."""
    return bool(_TEMPORARY.search(name))


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
        layer_id = name.removesuffix(".tar-split.gz")
        if layer_id in known_ids or not _LAYER_ID.fullmatch(layer_id):
            continue
        what = "tar-split file" if name.endswith(".tar-split.gz") else "big data directory"
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
    problems.extend(driver.orphans())
    return problems
