"""layerstore: container image layers on disk, compatible with containers/storage.

>>> from layerstore import LayerStore
>>> with LayerStore("/tmp/store") as store:                       # doctest: +SKIP
...     base = store.create(names=["base"])
...     store.set_metadata("base", "hello")

See :class:`LayerStore` for the API and ``layerstore.errors`` for what it raises.
"""

from __future__ import annotations

from ._lazy import lazy_attributes

TYPE_CHECKING = False  # see _lazy: typing itself is not imported
if TYPE_CHECKING:
    from .drivers import DRIVER_NAMES
    from .drivers.changes import Change
    from .engines import ENGINE_NAMES, DiffSource
    from .errors import (
        BigDataUnknown,
        ChainFailed,
        DuplicateID,
        DuplicateLayerNames,
        DuplicateName,
        ImageUnknown,
        ImageUsedByContainer,
        InvalidBigDataName,
        InvalidImage,
        InvalidLayerData,
        InvalidStoreData,
        LayerHasChildren,
        LayerNotMounted,
        LayerStoreError,
        LayerUnknown,
        LayerUsedByContainer,
        LayerUsedByImage,
        MountError,
        NotSupported,
        OwnersLostWarning,
        RegistryError,
        StoreIsReadOnly,
    )
    from .image import Image
    from .layer import Compression, IDMap, Layer
    from .store.chain import ChainBlob, chain_layer_id
    from .store.check import Problem, ProblemKind
    from .store.layer_store import LayerOptions, LayerStore
    from .store.locations import default_root, default_run_root

__all__ = [
    "DRIVER_NAMES",
    "ENGINE_NAMES",
    "BigDataUnknown",
    "ChainBlob",
    "ChainFailed",
    "Change",
    "Compression",
    "DiffSource",
    "DuplicateID",
    "DuplicateLayerNames",
    "DuplicateName",
    "IDMap",
    "Image",
    "ImageUnknown",
    "ImageUsedByContainer",
    "InvalidBigDataName",
    "InvalidImage",
    "InvalidLayerData",
    "InvalidStoreData",
    "Layer",
    "LayerHasChildren",
    "LayerNotMounted",
    "LayerOptions",
    "LayerStore",
    "LayerStoreError",
    "LayerUnknown",
    "LayerUsedByContainer",
    "LayerUsedByImage",
    "MountError",
    "NotSupported",
    "OwnersLostWarning",
    "Problem",
    "ProblemKind",
    "RegistryError",
    "StoreIsReadOnly",
    "chain_layer_id",
    "default_root",
    "default_run_root",
]

__version__ = "0.1.0"

# Each name is imported from its module on first use: `import layerstore` alone loads nothing
# else, so the CLI and small scripts pay only for what they call.
_EXPORTS = {
    "DRIVER_NAMES": ".drivers",
    "Change": ".drivers.changes",
    "ENGINE_NAMES": ".engines",
    "DiffSource": ".engines",
    "BigDataUnknown": ".errors",
    "ChainFailed": ".errors",
    "DuplicateID": ".errors",
    "DuplicateLayerNames": ".errors",
    "DuplicateName": ".errors",
    "ImageUnknown": ".errors",
    "ImageUsedByContainer": ".errors",
    "InvalidBigDataName": ".errors",
    "InvalidImage": ".errors",
    "InvalidLayerData": ".errors",
    "InvalidStoreData": ".errors",
    "LayerHasChildren": ".errors",
    "LayerNotMounted": ".errors",
    "LayerStoreError": ".errors",
    "LayerUnknown": ".errors",
    "LayerUsedByContainer": ".errors",
    "LayerUsedByImage": ".errors",
    "MountError": ".errors",
    "NotSupported": ".errors",
    "OwnersLostWarning": ".errors",
    "RegistryError": ".errors",
    "StoreIsReadOnly": ".errors",
    "Image": ".image",
    "Compression": ".layer",
    "IDMap": ".layer",
    "Layer": ".layer",
    "ChainBlob": ".store.chain",
    "LayerOptions": ".store.layer_store",
    "LayerStore": ".store.layer_store",
    "Problem": ".store.check",
    "ProblemKind": ".store.check",
    "chain_layer_id": ".store.chain",
    "default_root": ".store.locations",
    "default_run_root": ".store.locations",
}
_SUBMODULES = (
    "atomic",
    "cli",
    "drivers",
    "engines",
    "errors",
    "faults",
    "gojson",
    "image",
    "layer",
    "paths",
    "registry",
    "store",
    "streams",
    "transfer",
)

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS, _SUBMODULES)
