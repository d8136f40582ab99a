"""The image record: an immutable :class:`Image` and its ``images.json`` form.

containers/storage keeps images beside layers in ``ROOT/<driver>-images/images.json``: an id,
names, the top layer and big data items (the manifest, the config, signatures) stored one file
each in ``ROOT/<driver>-images/<id>/``. The JSON form matches containers/storage 1.43's
``images.go`` key for key: keys in the Go struct's order, ``omitempty`` as Go applies it
(``created`` is a struct, so it is always written), maps with sorted keys, Go's escaping. Keys
this version does not know are kept and written back, as for layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from . import gojson
from .errors import InvalidStoreData
from .layer import freeze, thaw

__all__ = ["MANIFEST_KEY", "Image", "is_manifest_key"]

MANIFEST_KEY = "manifest"
"""The big data key of an image's manifest; keys that start with it are manifests too, and
their digests find the image (Go: ``ImageDigestManifestBigDataNamePrefix``)."""

_ZERO_TIME = "0001-01-01T00:00:00Z"
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def is_manifest_key(key: str) -> bool:
    """Whether the big data item ``key`` holds a manifest, whose digest names the image."""
    return key.startswith(MANIFEST_KEY)


@dataclass(frozen=True, slots=True, eq=True)
class Image:
    """An image as recorded in ``images.json`` (Go: ``storage.Image``); a value, like
    :class:`~layerstore.Layer`."""

    id: str
    """The config's digest hex for an image loaded or pulled, else the creator's choice."""
    digest: str = ""
    """``sha256:<hex>`` the image was created with or of its first manifest."""
    names: tuple[str, ...] = ()
    """References such as ``localhost/app:1``, unique across the store's images."""
    names_history: tuple[str, ...] = ()
    """Every name the image had, newest first."""
    layer: str = ""
    """Id of the image's top layer; empty for an image without layers."""
    mapped_layers: tuple[str, ...] = ()
    """Ids of copies of the top layer with other id mappings."""
    metadata: str = ""
    """Free text kept for the caller (containers/image keeps signature sizes here)."""
    big_data_names: tuple[str, ...] = ()
    """Keys of the image's big data items, in the order they were first stored."""
    big_data_sizes: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    big_data_digests: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    created: str = _ZERO_TIME
    """Creation time, RFC 3339 in UTC, as Go writes it."""
    flags: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    read_only: bool = False
    """True when the image comes from a store opened read-only (not stored)."""
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)
    """Keys of the record this version does not know, kept so they are written back."""

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def digests(self) -> tuple[str, ...]:
        """Every digest that finds the image: :attr:`digest`, then its manifests' digests."""
        found = [self.digest] if self.digest else []
        for key in sorted(self.big_data_digests):
            value = self.big_data_digests[key]
            if is_manifest_key(key) and value not in found:
                found.append(value)
        return tuple(found)

    def with_names(self, names: tuple[str, ...]) -> Image:
        """The record with ``names``, each new one recorded first in the names history."""
        history = list(self.names_history)
        for name in names:
            if name in history:
                history.remove(name)
            history.insert(0, name)
        return replace(self, names=names, names_history=tuple(history))

    # -- the images.json form ------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The record as containers/storage writes it."""
        record: dict[str, Any] = {"id": self.id}
        if self.digest:
            record["digest"] = self.digest
        if self.names:
            record["names"] = list(self.names)
        if self.names_history:
            record["names-history"] = list(self.names_history)
        if self.layer:
            record["layer"] = self.layer
        if self.mapped_layers:
            record["mapped-layers"] = list(self.mapped_layers)
        if self.metadata:
            record["metadata"] = self.metadata
        if self.big_data_names:
            record["big-data-names"] = list(self.big_data_names)
        if self.big_data_sizes:
            record["big-data-sizes"] = gojson.sort_maps(self.big_data_sizes)
        if self.big_data_digests:
            record["big-data-digests"] = gojson.sort_maps(self.big_data_digests)
        record["created"] = self.created
        if self.flags:
            record["flags"] = gojson.sort_maps(self.flags)
        for key, value in self.extra.items():
            record[key] = thaw(value)
        return record

    @classmethod
    def from_json(cls, record: Any, *, source: str, read_only: bool = False) -> Image:
        """Build an image from one ``images.json`` entry; ``source`` names the file for errors."""
        if type(record) is not dict or type(record.get("id")) is not str:
            raise InvalidStoreData(f"{source}: an image record without an id: {record!r:.200}")
        try:
            image = cls(
                id=record["id"],
                digest=_typed(record, "digest", str, ""),
                names=_strings(record, "names"),
                names_history=_strings(record, "names-history"),
                layer=_typed(record, "layer", str, ""),
                mapped_layers=_strings(record, "mapped-layers"),
                metadata=_typed(record, "metadata", str, ""),
                big_data_names=_strings(record, "big-data-names"),
                big_data_sizes=_map_of(record, "big-data-sizes", int),
                big_data_digests=_map_of(record, "big-data-digests", str),
                created=_typed(record, "created", str, _ZERO_TIME),
                flags=freeze(_typed(record, "flags", dict, {})),
                read_only=read_only,
                extra=MappingProxyType(
                    {key: freeze(value) for key, value in record.items() if key not in _KNOWN}
                ),
            )
        except TypeError as exc:
            raise InvalidStoreData(f"{source}: image {record['id']}: {exc}") from None
        return image


_KNOWN = frozenset(
    (
        "id digest names names-history layer mapped-layers metadata big-data-names "
        "big-data-sizes big-data-digests created flags"
    ).split()
)


def _typed(record: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = record.get(key)
    if value is None:
        return default
    if type(value) is not kind or (kind is int and type(value) is bool):
        raise TypeError(f"{key!r} should be a {kind.__name__}, found {value!r:.80}")
    return value


def _strings(record: dict[str, Any], key: str) -> tuple[str, ...]:
    values = _typed(record, key, list, [])
    if not all(type(value) is str for value in values):
        raise TypeError(f"{key!r} should be a list of strings, found {values!r:.80}")
    return tuple(values)


def _map_of(record: dict[str, Any], key: str, kind: type) -> Mapping[str, Any]:
    values = _typed(record, key, dict, {})
    if not all(type(value) is kind for value in values.values()):
        raise TypeError(f"{key!r} should map to {kind.__name__} values, found {values!r:.80}")
    return MappingProxyType(dict(values)) if values else _EMPTY
