"""layerstore: container image layers on disk, compatible with containers/storage.

>>> from layerstore import LayerStore
>>> with LayerStore("/tmp/store") as store:                       # doctest: +SKIP
...     base = store.create(names=["base"])
...     store.set_metadata("base", "hello")

See :class:`LayerStore` for the API and ``layerstore.errors`` for what it raises.
"""

from __future__ import annotations

from .changes import Change
from .errors import (
    BigDataUnknown,
    DuplicateID,
    DuplicateLayerNames,
    DuplicateName,
    InvalidBigDataName,
    InvalidLayerData,
    InvalidStoreData,
    LayerHasChildren,
    LayerNotMounted,
    LayerStoreError,
    LayerUnknown,
    MountError,
    NotSupported,
    StoreIsReadOnly,
)
from .layer import Compression, IDMap, Layer
from .store import LayerStore

__all__ = [
    "BigDataUnknown",
    "Change",
    "Compression",
    "DuplicateID",
    "DuplicateLayerNames",
    "DuplicateName",
    "IDMap",
    "InvalidBigDataName",
    "InvalidLayerData",
    "InvalidStoreData",
    "Layer",
    "LayerHasChildren",
    "LayerNotMounted",
    "LayerStore",
    "LayerStoreError",
    "LayerUnknown",
    "MountError",
    "NotSupported",
    "StoreIsReadOnly",
]

__version__ = "0.1.0"
