"""The one exception hierarchy of layerstore.

Every error the package raises on purpose derives from :class:`LayerStoreError`. Where a Go sentinel
error of containers/storage exists, the class carries its name (``ErrLayerUnknown`` becomes
:class:`LayerUnknown`), and where a builtin exception describes the same kind of failure it is
mixed in, so ``except KeyError`` around a lookup keeps working. The native engine raises these
same classes, so callers never see which engine did the work.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BigDataUnknown",
    "ChainFailed",
    "DuplicateID",
    "DuplicateLayerNames",
    "DuplicateName",
    "ImageUnknown",
    "ImageUsedByContainer",
    "InvalidBigDataName",
    "InvalidImage",
    "InvalidLayerData",
    "InvalidStoreData",
    "LayerHasChildren",
    "LayerNotMounted",
    "LayerStoreError",
    "LayerUnknown",
    "LayerUsedByContainer",
    "LayerUsedByImage",
    "MountError",
    "NotSupported",
    "OwnersLostWarning",
    "RegistryError",
    "StoreIsReadOnly",
]


class LayerStoreError(Exception):
    """Base class of every error raised by layerstore."""


class LayerUnknown(LayerStoreError, KeyError):
    """No layer has the given id, name or id prefix (Go: ErrLayerUnknown)."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a sentence reads better.
        return str(self.args[0]) if self.args else "layer not known"


class BigDataUnknown(LayerStoreError, KeyError):
    """The layer has no big data item with that key."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "big data item not known"


class ImageUnknown(LayerStoreError, KeyError):
    """No image has the given id, name or id prefix (Go: ErrImageUnknown)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ImageUsedByContainer(LayerStoreError):
    """A container of the store is based on the image (Go: ErrImageUsedByContainer)."""


class InvalidImage(LayerStoreError, ValueError):
    """An image to load or save cannot be used: a layout or archive that is malformed or
    truncated, a missing blob, a digest or DiffID that does not match, no matching platform."""


class RegistryError(LayerStoreError):
    """A registry refused or failed a request: ``status`` is the HTTP status (None when the
    connection itself failed); the message names the registry, what was asked and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DuplicateID(LayerStoreError, ValueError):
    """A layer with that id already exists (Go: ErrDuplicateID)."""


class DuplicateName(LayerStoreError, ValueError):
    """A name is already taken by another layer (Go: ErrDuplicateName)."""


class DuplicateLayerNames(LayerStoreError):
    """layers.json gives one name to several layers and the store cannot repair it here,
    because it is open read-only (Go: ErrDuplicateLayerNames)."""


class StoreIsReadOnly(LayerStoreError, PermissionError):
    """A mutation was attempted on a store opened read-only (Go: ErrStoreIsReadOnly)."""


class InvalidBigDataName(LayerStoreError, ValueError):
    """A big data key cannot be stored (Go: ErrInvalidBigDataName)."""


class LayerNotMounted(LayerStoreError):
    """The layer is not mounted (Go: ErrLayerNotMounted)."""


class LayerHasChildren(LayerStoreError):
    """The layer is the parent of other layers and cannot be deleted (Go: ErrLayerHasChildren)."""


class LayerUsedByImage(LayerStoreError):
    """An image of the store uses the layer, which cannot be deleted (Go: ErrLayerUsedByImage)."""


class LayerUsedByContainer(LayerStoreError):
    """A container of the store uses the layer, which cannot be deleted
    (Go: ErrLayerUsedByContainer)."""


class NotSupported(LayerStoreError):
    """The operation is not supported by this driver or on this system (Go: ErrNotSupported)."""


class InvalidLayerData(LayerStoreError, ValueError):
    """A layer blob, its compression or its tar-split metadata is malformed or does not match."""


class InvalidStoreData(LayerStoreError, ValueError):
    """A file of the store itself (layers.json, mountpoints.json) cannot be parsed."""


class MountError(LayerStoreError, OSError):
    """Mounting or unmounting failed: carries the errno, the target and the mount data tried."""

    def __init__(self, errno: int, message: str, target: str, data: str = "") -> None:
        super().__init__(errno, message, target)
        self.data = data

    def __str__(self) -> str:
        text = f"{self.strerror} ({self.filename}, errno {self.errno})"
        return f"{text}; mount data: {self.data}" if self.data else text


class ChainFailed(LayerStoreError):
    """One blob of :meth:`~layerstore.LayerStore.put_chain` could not be applied.

    ``index`` is the failed blob's position in the chain, ``committed`` the layers before it
    that are in the store (from the first up); none after it is. The blob's own error is the
    ``__cause__``.
    """

    def __init__(self, message: str, index: int, committed: list[Any]) -> None:
        super().__init__(message)
        self.index = index
        self.committed = committed


class OwnersLostWarning(UserWarning):
    """An unprivileged put gave the tar's files to the caller: their owners (and device
    nodes) are lost. A warning, not an error: the diff is unchanged, and ``force_mask``,
    ``ignore_chown_errors`` or a user namespace (docs/rootless.md) are the caller's choice."""
