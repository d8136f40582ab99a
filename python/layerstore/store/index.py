"""In-memory indexes over the layer records: by id, by name, by id prefix and by digest.

The index is the store's view of ``layers.json``. It is rebuilt whole when another process has
written the file and updated in place by this process's own writes, which happen under the
store's exclusive lock. Prefix lookups use a sorted list of ids and binary search, so a lookup
costs O(log n) and never scans every id.

A layer flagged ``incomplete`` (being made by a staged put, or being deleted) is held so that
its id and names stay taken and its parent keeps a child, but lookups do not find it: a user
sees a layer once it is whole.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from ..errors import LayerUnknown
from ..layer import Layer

__all__ = ["LayerIndex", "resolve_prefix"]


def resolve_prefix(
    sorted_ids: list[str], prefix: str, unknown: type[LookupError], what: str
) -> str:
    """The one id of ``sorted_ids`` that starts with ``prefix``; ``unknown`` when none or
    several do (``what`` names the records in the message). Binary search: O(log n)."""
    if not prefix:
        raise unknown(f"{what} not known: an empty name or id prefix")
    start = bisect.bisect_left(sorted_ids, prefix)
    matches = [
        candidate for candidate in sorted_ids[start : start + 2] if candidate.startswith(prefix)
    ]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise unknown(f"{what} not known: id prefix {prefix!r} is ambiguous")
    raise unknown(f"{what} not known: {prefix!r}")


class LayerIndex:
    """Layers in file order, with lookups by id, name, unique id prefix and digest."""

    __slots__ = ("_by_compressed", "_by_id", "_by_name", "_by_uncompressed", "_sorted_ids")

    def __init__(self, layers: Iterable[Layer] = ()) -> None:
        # What _index_layer does for each layer, inlined: a store's every open builds the
        # index of all its layers.
        by_id: dict[str, Layer] = {}  # insertion order is the order of layers.json
        by_name: dict[str, str] = {}
        by_compressed: dict[str, list[str]] = {}
        by_uncompressed: dict[str, list[str]] = {}
        for layer in layers:
            layer_id = layer.id
            by_id[layer_id] = layer
            for name in layer.names:
                by_name[name] = layer_id
            digest = layer.compressed_digest
            if digest:
                ids = by_compressed.get(digest)
                if ids is None:
                    by_compressed[digest] = [layer_id]
                else:
                    ids.append(layer_id)
            digest = layer.uncompressed_digest
            if digest:
                ids = by_uncompressed.get(digest)
                if ids is None:
                    by_uncompressed[digest] = [layer_id]
                else:
                    ids.append(layer_id)
        self._by_id = by_id
        self._by_name = by_name
        self._by_compressed = by_compressed
        self._by_uncompressed = by_uncompressed
        # The sorted ids of whole layers, for prefix lookups: made on the first one, since most
        # opens never look a prefix up.
        self._sorted_ids: list[str] | None = None

    # -- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Layer]:
        """Every record, incomplete ones too, in file order."""
        return iter(self._by_id.values())

    def visible(self) -> Iterator[Layer]:
        """The whole layers, in file order."""
        return (layer for layer in self._by_id.values() if not (layer.flags and layer.incomplete))

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
        """Resolve an id, a name or a unique id prefix of a whole layer to an id, in that order
        (as Go does)."""
        layer = self._by_id.get(name)
        if layer is not None and not layer.incomplete:
            return name
        owner = self._by_name.get(name)
        if owner is not None and not self._by_id[owner].incomplete:
            return owner
        return resolve_prefix(self._sorted(), name, LayerUnknown, "layer")

    def _sorted(self) -> list[str]:
        if self._sorted_ids is None:
            # (flags first: most layers have none, and then cannot be incomplete)
            self._sorted_ids = sorted(
                layer_id
                for layer_id, layer in self._by_id.items()
                if not (layer.flags and layer.incomplete)
            )
        return self._sorted_ids

    def by_compressed_digest(self, digest: str) -> list[Layer]:
        return self._whole(self._by_compressed.get(digest, ()))

    def by_uncompressed_digest(self, digest: str) -> list[Layer]:
        return self._whole(self._by_uncompressed.get(digest, ()))

    def _whole(self, ids: Iterable[str]) -> list[Layer]:
        return [layer for layer in map(self._by_id.__getitem__, ids) if not layer.incomplete]

    def children(self, layer_id: str) -> list[Layer]:
        """Layers whose parent is ``layer_id``, incomplete ones too (a staged child counts)."""
        return [layer for layer in self._by_id.values() if layer.parent == layer_id]

    # -- changing ------------------------------------------------------------------------------

    def add(self, layer: Layer) -> None:
        """Add a new layer at the end; its names must already be free."""
        self._by_id[layer.id] = layer
        self._index_layer(layer)
        if not layer.incomplete and self._sorted_ids is not None:
            bisect.insort(self._sorted_ids, layer.id)

    def replace(self, layer: Layer) -> None:
        """Put a changed record of an existing layer in place, keeping its position."""
        old = self._by_id[layer.id]
        self._unindex_layer(old)
        self._by_id[layer.id] = layer
        self._index_layer(layer)
        if self._sorted_ids is None:
            return
        if old.incomplete and not layer.incomplete:
            bisect.insort(self._sorted_ids, layer.id)
        elif layer.incomplete and not old.incomplete:
            self._unsort(layer.id)

    def remove(self, layer_id: str) -> Layer:
        layer = self._by_id.pop(layer_id)
        self._unindex_layer(layer)
        if not layer.incomplete:
            self._unsort(layer_id)
        return layer

    def _unsort(self, layer_id: str) -> None:
        if self._sorted_ids is None:
            return
        position = bisect.bisect_left(self._sorted_ids, layer_id)
        del self._sorted_ids[position]

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
