"""The store: records, indexes, locks and the order of steps; drivers and engines do the rest.

``layer_store`` holds :class:`LayerStore`, the public face of layerstore; beside it, the pieces
only it uses: ``records`` (a JSON file under a lock file with a last-writer token),
``locking``, ``index``, ``mounts`` (the mount table) and ``check`` (check and repair).
"""

from __future__ import annotations

from .check import Problem, ProblemKind
from .layer_store import LayerOptions, LayerStore

__all__ = ["LayerOptions", "LayerStore", "Problem", "ProblemKind"]
