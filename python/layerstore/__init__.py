"""layerstore: container image layers on disk, compatible with containers/storage.

>>> from layerstore import LayerStore
>>> with LayerStore("/tmp/store") as store:                       # doctest: +SKIP
...     base = store.create(names=["base"])
...     store.set_metadata("base", "hello")

See :class:`LayerStore` for the API and ``layerstore.errors`` for what it raises.
"""

from __future__ import annotations

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
    RegistryError,
    StoreIsReadOnly,
)
from .image import Image
from .layer import Compression, IDMap, Layer
from .store import (
    ChainBlob,
    LayerOptions,
    LayerStore,
    Problem,
    ProblemKind,
    chain_layer_id,
    default_root,
    default_run_root,
)

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
    "Problem",
    "ProblemKind",
    "RegistryError",
    "StoreIsReadOnly",
    "chain_layer_id",
    "default_root",
    "default_run_root",
]

__version__ = "0.1.0"
