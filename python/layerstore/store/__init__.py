"""The store: records, indexes, locks and the order of steps; drivers and engines do the rest.

``layer_store`` holds :class:`LayerStore`, the public face of layerstore; beside it, the pieces
only it uses: ``records`` (a JSON file under a lock file with a last-writer token),
``locking``, ``index``, ``mounts`` (the mount table), ``check`` (check and repair) and
``locations`` (where a store lives by default), ``staging`` (where a put applies a layer
without holding the store) and ``chain`` (the layers of one image applied at once). Images
live beside the layers: ``images`` (images.json, its lock and indexes) and ``image_store``
(the store's image methods, and the rules that tie images to layers).
"""

from __future__ import annotations

from .._lazy import lazy_attributes

TYPE_CHECKING = False  # see layerstore._lazy: typing itself is not imported
if TYPE_CHECKING:
    from .chain import ChainBlob, chain_layer_id
    from .check import Problem, ProblemKind
    from .layer_store import LayerOptions, LayerStore
    from .locations import default_root, default_run_root

__all__ = [
    "ChainBlob",
    "LayerOptions",
    "LayerStore",
    "Problem",
    "ProblemKind",
    "chain_layer_id",
    "default_root",
    "default_run_root",
]

# Imported on first use, as the package's own names are (layerstore._lazy).
_EXPORTS = {
    "ChainBlob": ".chain",
    "chain_layer_id": ".chain",
    "Problem": ".check",
    "ProblemKind": ".check",
    "LayerOptions": ".layer_store",
    "LayerStore": ".layer_store",
    "default_root": ".locations",
    "default_run_root": ".locations",
}
_SUBMODULES = (
    "chain",
    "check",
    "image_store",
    "images",
    "index",
    "layer_store",
    "locations",
    "locking",
    "mounts",
    "records",
    "staging",
    "users",
)

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS, _SUBMODULES)
