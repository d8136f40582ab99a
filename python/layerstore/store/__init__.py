"""The store: records, indexes, locks and the order of steps; drivers and engines do the rest.

``layer_store`` holds :class:`LayerStore`, the public face of layerstore; beside it, the pieces
only it uses: ``records`` (a JSON file under a lock file with a last-writer token),
``locking``, ``index``, ``mounts`` (the mount table), ``check`` (check and repair) and
``locations`` (where a store lives by default).
"""

from __future__ import annotations

from .check import Problem, ProblemKind
from .layer_store import LayerOptions, LayerStore
from .locations import default_root, default_run_root

__all__ = [
    "LayerOptions",
    "LayerStore",
    "Problem",
    "ProblemKind",
    "default_root",
    "default_run_root",
]
