"""In-memory indexes over the layer records: by id, by name, by id prefix and by digest.

The index is the store's view of ``layers.json``. It is rebuilt whole when another process has
written the file and updated in place by this process's own writes, which happen under the
store's exclusive lock. Prefix lookups use a sorted list of ids and binary search, so a lookup
costs O(log n) and never scans every id.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from ..errors import LayerUnknown
from ..layer import Layer

__all__ = ["LayerIndex"]


class LayerIndex:
    """Layers in file order, with lookups by id, name, unique id prefix and digest."""

    __slots__ = ("_by_compressed", "_by_id", "_by_name", "_by_uncompressed", "_sorted_ids")

    def __init__(self, layers: Iterable[Layer] = ()) -> None:
        self._by_id: dict[str, Layer] = {}  # insertion order is the order of layers.json
        self._by_name: dict[str, str] = {}
        self._by_compressed: dict[str, list[str]] = {}
        self._by_uncompressed: dict[str, list[str]] = {}
        for layer in layers:
            self._by_id[layer.id] = layer
            self._index_layer(layer)
        self._sorted_ids = sorted(self._by_id)

    # -- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self._by_id.values())

    def __contains__(self, layer_id: object) -> bool:
        return layer_id in self._by_id

    def get(self, layer_id: str) -> Layer:
        """The layer with exactly this id (no name or prefix lookup)."""
        try:
            return self._by_id[layer_id]
        except KeyError:
            raise LayerUnknown(f"layer not known: {layer_id!r}") from None

    def owner_of(self, name: str) -> str | None:
        """Id of the layer that has ``name``, if any."""
        return self._by_name.get(name)

    def lookup(self, name: str) -> str:
        """Resolve an id, a name or a unique id prefix to an id, in that order (as Go does)."""
        if name in self._by_id:
            return name
        owner = self._by_name.get(name)
        if owner is not None:
            return owner
        if not name:
            raise LayerUnknown("layer not known: an empty name or id prefix")
        start = bisect.bisect_left(self._sorted_ids, name)
        matches = self._sorted_ids[start : start + 2]
        matches = [candidate for candidate in matches if candidate.startswith(name)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise LayerUnknown(f"layer not known: id prefix {name!r} is ambiguous")
        raise LayerUnknown(f"layer not known: {name!r}")

    def by_compressed_digest(self, digest: str) -> list[Layer]:
        return [self._by_id[layer_id] for layer_id in self._by_compressed.get(digest, ())]

    def by_uncompressed_digest(self, digest: str) -> list[Layer]:
        return [self._by_id[layer_id] for layer_id in self._by_uncompressed.get(digest, ())]

    def children(self, layer_id: str) -> list[Layer]:
        """Layers whose parent is ``layer_id``."""
        return [layer for layer in self._by_id.values() if layer.parent == layer_id]

    # -- changing ------------------------------------------------------------------------------

    def add(self, layer: Layer) -> None:
        """Add a new layer at the end; its names must already be free."""
        self._by_id[layer.id] = layer
        self._index_layer(layer)
        bisect.insort(self._sorted_ids, layer.id)

    def replace(self, layer: Layer) -> None:
        """Put a changed record of an existing layer in place, keeping its position."""
        self._unindex_layer(self._by_id[layer.id])
        self._by_id[layer.id] = layer
        self._index_layer(layer)

    def remove(self, layer_id: str) -> Layer:
        layer = self._by_id.pop(layer_id)
        self._unindex_layer(layer)
        position = bisect.bisect_left(self._sorted_ids, layer_id)
        del self._sorted_ids[position]
        return layer

    def _index_layer(self, layer: Layer) -> None:
        for name in layer.names:
            self._by_name[name] = layer.id
        if layer.compressed_digest:
            self._by_compressed.setdefault(layer.compressed_digest, []).append(layer.id)
        if layer.uncompressed_digest:
            self._by_uncompressed.setdefault(layer.uncompressed_digest, []).append(layer.id)

    def _unindex_layer(self, layer: Layer) -> None:
        for name in layer.names:
            if self._by_name.get(name) == layer.id:
                del self._by_name[name]
        for table, digest in (
            (self._by_compressed, layer.compressed_digest),
            (self._by_uncompressed, layer.uncompressed_digest),
        ):
            if digest:
                ids = table[digest]
                ids.remove(layer.id)
                if not ids:
                    del table[digest]
