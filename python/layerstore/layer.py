"""The layer record: an immutable :class:`Layer` and its ``layers.json`` form.

The JSON form matches containers/storage 1.43 key for key (SPEC section 2): keys in the Go
struct's order, empty values omitted (``omitempty``) except ``created``, Go's escaping. Keys this
version does not know (written by a newer containers/storage) are kept and written back, so
opening a store with layerstore never drops data.
"""

from __future__ import annotations

import enum
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, TypeVar

from . import gojson
from .errors import InvalidStoreData

__all__ = [
    "INCOMPLETE_FLAG",
    "Compression",
    "IDMap",
    "Layer",
    "check_layer_id",
    "check_name",
    "format_created",
    "freeze",
    "id_maps",
    "new_layer_id",
    "thaw",
]

INCOMPLETE_FLAG = "incomplete"
"""Flag set on a layer while it is being made or deleted; such layers are removed on open."""

_T = TypeVar("_T")
_ZERO_TIME = "0001-01-01T00:00:00Z"  # what Go writes for a record that has no creation time
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class Compression(enum.IntEnum):
    """Compression of a layer blob, numbered as containers/storage's ``archive.Compression``."""

    NONE = 0
    BZIP2 = 1
    GZIP = 2
    XZ = 3
    ZSTD = 4


@dataclass(frozen=True, slots=True)
class IDMap:
    """One range of a uid or gid mapping: ``size`` ids from ``container_id`` map to ``host_id``."""

    container_id: int
    host_id: int
    size: int

    def to_json(self) -> dict[str, int]:
        return {"container_id": self.container_id, "host_id": self.host_id, "size": self.size}


def freeze(value: Any) -> Any:
    """Deep-freeze a JSON value: dicts become read-only mappings, lists become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True, eq=True)
class Layer:
    """A copy-on-write layer as recorded in ``layers.json`` (Go: ``storage.Layer``).

    A ``Layer`` is a value: the store hands out immutable snapshots, and changing the store
    never changes a ``Layer`` already returned.
    """

    id: str
    """64 lowercase hex digits unless the creator chose another id."""
    names: tuple[str, ...] = ()
    """User-given names, unique across the store."""
    parent: str = ""
    """Id of the layer this one is based on; empty for a base layer."""
    metadata: str = ""
    """Free text kept for the caller."""
    mount_label: str = ""
    """SELinux label for mounts; stored only."""
    created: str = _ZERO_TIME
    """Creation time, RFC 3339 in UTC with up to nanosecond precision, as Go writes it."""
    compressed_digest: str = ""
    """``sha256:<hex>`` of the blob last applied, as it was given."""
    compressed_size: int = 0
    """Length of the blob last applied, as it was given."""
    uncompressed_digest: str = ""
    """``sha256:<hex>`` of the uncompressed tar last applied (the DiffID)."""
    uncompressed_size: int = 0
    """Length of the uncompressed tar last applied."""
    compression: Compression = Compression.NONE
    """Compression detected on the blob last applied."""
    uids: tuple[int, ...] = ()
    """Sorted uids that own files in the layer's tar (``.wh.*`` entries skipped)."""
    gids: tuple[int, ...] = ()
    """Sorted gids that own files in the layer's tar (``.wh.*`` entries skipped)."""
    flags: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    """Arbitrary flags; ``incomplete`` marks a layer still being made or deleted."""
    uid_map: tuple[IDMap, ...] = ()
    """uid mapping of the layer's contents (user namespaces)."""
    gid_map: tuple[IDMap, ...] = ()
    """gid mapping of the layer's contents (user namespaces)."""
    big_data_names: tuple[str, ...] = ()
    """Keys of the big data items stored with the layer."""
    read_only: bool = False
    """True when the layer comes from a store opened read-only (not stored)."""
    mount_point: str = ""
    """Where the layer is mounted, from mountpoints.json (not stored in layers.json)."""
    mount_count: int = 0
    """How many times the layer is mounted, from mountpoints.json (not stored in layers.json)."""
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)
    """Keys of the record this version does not know, kept so they are written back."""

    def __hash__(self) -> int:
        # Equal layers have equal ids; flags (a mapping) are not hashable themselves.
        return hash(self.id)

    @property
    def incomplete(self) -> bool:
        """True while the layer is being made or deleted (or was, when a process died)."""
        return self.flags.get(INCOMPLETE_FLAG) is True

    # -- the layers.json form ------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The record as containers/storage writes it: Go's key order, empty values omitted."""
        record: dict[str, Any] = {"id": self.id}
        if self.names:
            record["names"] = list(self.names)
        if self.parent:
            record["parent"] = self.parent
        if self.metadata:
            record["metadata"] = self.metadata
        if self.mount_label:
            record["mountlabel"] = self.mount_label
        record["created"] = self.created
        if self.compressed_digest:
            record["compressed-diff-digest"] = self.compressed_digest
        if self.compressed_size:
            record["compressed-size"] = self.compressed_size
        if self.uncompressed_digest:
            record["diff-digest"] = self.uncompressed_digest
        if self.uncompressed_size:
            record["diff-size"] = self.uncompressed_size
        if self.compression:
            record["compression"] = int(self.compression)
        if self.uids:
            record["uidset"] = list(self.uids)
        if self.gids:
            record["gidset"] = list(self.gids)
        if self.flags:
            record["flags"] = gojson.sort_maps(self.flags)
        if self.uid_map:
            record["uidmap"] = [entry.to_json() for entry in self.uid_map]
        if self.gid_map:
            record["gidmap"] = [entry.to_json() for entry in self.gid_map]
        if self.big_data_names:
            record["big-data-names"] = list(self.big_data_names)
        for key, value in self.extra.items():
            record[key] = thaw(value)
        return record

    @classmethod
    def from_json(cls, record: Any, *, source: str, read_only: bool = False) -> Layer:
        """Build a layer from one ``layers.json`` entry; ``source`` names the file for errors.

        This runs once per layer when a store opens, so it checks types with ``type() is``
        tests in one pass instead of a helper per field, and makes the layer without the
        dataclass's ``__init__`` (:func:`_slot_constructor`).
        """
        if type(record) is not dict or type(record.get("id")) is not str:
            raise InvalidStoreData(f"{source}: a layer record without an id: {record!r:.200}")
        get = record.get
        try:
            names = get("names") or []
            uids = get("uidset") or []
            gids = get("gidset") or []
            big_data_names = get("big-data-names") or []
            parent = get("parent") or ""
            metadata = get("metadata") or ""
            mount_label = get("mountlabel") or ""
            created = get("created") or _ZERO_TIME
            compressed_digest = get("compressed-diff-digest") or ""
            uncompressed_digest = get("diff-digest") or ""
            compressed_size = get("compressed-size") or 0
            uncompressed_size = get("diff-size") or 0
            flags = get("flags") or {}
            uid_map = get("uidmap")
            gid_map = get("gidmap")
            if not (
                type(names) is list
                and type(uids) is list
                and type(gids) is list
                and type(big_data_names) is list
                and type(parent) is str
                and type(metadata) is str
                and type(mount_label) is str
                and type(created) is str
                and type(compressed_digest) is str
                and type(uncompressed_digest) is str
                and type(compressed_size) is int
                and type(uncompressed_size) is int
                and type(flags) is dict
                and (not names or _STR_TYPE.issuperset(map(type, names)))
                and (not big_data_names or _STR_TYPE.issuperset(map(type, big_data_names)))
                and (not uids or _INT_TYPE.issuperset(map(type, uids)))
                and (not gids or _INT_TYPE.issuperset(map(type, gids)))
            ):
                raise TypeError("a field has the wrong type")
            compression = get("compression") or 0
            known = _COMPRESSION_BY_VALUE.get(compression) if type(compression) is int else None
            if known is None:
                raise ValueError(f"unknown compression {compression!r}")
            # A subclass may have an __init__ of its own; Layer's is skipped (_slot_constructor).
            make = _make_layer if cls is Layer else cls
            layer = make(
                record["id"],
                tuple(names),
                parent,
                metadata,
                mount_label,
                created,
                compressed_digest,
                compressed_size,
                uncompressed_digest,
                uncompressed_size,
                known,
                tuple(uids),
                tuple(gids),
                freeze(flags) if flags else _EMPTY,
                _id_maps(uid_map) if uid_map else (),
                _id_maps(gid_map) if gid_map else (),
                tuple(big_data_names),
                read_only,
                "",
                0,
                _EMPTY if _KNOWN_KEYS.issuperset(record) else _extra(record),
            )
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise InvalidStoreData(
                f"{source}: layer {record['id']}: {exc}: {record!r:.300}"
            ) from None
        return layer


def _slot_constructor(cls: type[_T]) -> Callable[..., _T]:
    """A function that takes the fields of the frozen, slotted dataclass ``cls`` as its
    ``__init__`` does (all of them, in order) and makes the same object, setting the fields
    through the slots' descriptors. The dataclass's ``__init__`` sets each through
    ``object.__setattr__`` instead, which made up half the time of loading a layer record.

    The function is generated from the fields, as dataclasses generates ``__init__``, so it
    follows any change to them.
    """
    names = [field.name for field in fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    namespace |= {f"_set_{name}": cls.__dict__[name].__set__ for name in names}
    source = "\n".join(
        [
            f"def make({', '.join(names)}):",
            "    self = _new(_cls)",
            *(f"    _set_{name}(self, {name})" for name in names),
            "    return self",
        ]
    )
    exec(source, namespace)
    make: Callable[..., _T] = namespace["make"]
    return make


_make_layer = _slot_constructor(Layer)


_KNOWN_KEYS = frozenset(
    (
        "id names parent metadata mountlabel created compressed-diff-digest compressed-size "
        "diff-digest diff-size compression uidset gidset flags uidmap gidmap big-data-names"
    ).split()
)
_COMPRESSION_BY_VALUE = {int(member): member for member in Compression}


_STR_TYPE = frozenset((str,))
_INT_TYPE = frozenset((int,))


def _extra(record: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(
        {key: freeze(value) for key, value in record.items() if key not in _KNOWN_KEYS}
    )


def _id_maps(values: Any) -> tuple[IDMap, ...]:
    if type(values) is not list:
        raise TypeError(f"expected a list of id mappings, found {values!r:.80}")
    result = []
    for entry in values:
        numbers = (entry.get("container_id", 0), entry.get("host_id", 0), entry.get("size", 0))
        if not all(type(number) is int for number in numbers):
            raise TypeError(f"bad id mapping {entry!r:.80}")
        result.append(IDMap(*numbers))
    return tuple(result)


def id_maps(values: Iterable[IDMap | tuple[int, int, int]] | None) -> tuple[IDMap, ...]:
    """Normalise a caller's id mappings: :class:`IDMap` values or ``(container, host, size)``."""
    result = []
    for value in values or ():
        entry = value if isinstance(value, IDMap) else IDMap(*value)
        if min(entry.container_id, entry.host_id) < 0 or entry.size <= 0:
            raise ValueError(f"invalid id mapping {entry}: ids must be >= 0 and size > 0")
        result.append(entry)
    return tuple(result)


def format_created(nanoseconds: int | None = None) -> str:
    """Format a UTC time the way Go's ``time.Time`` marshals it (RFC 3339, trailing zeros cut)."""
    if nanoseconds is None:
        nanoseconds = time.time_ns()
    seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def new_layer_id() -> str:
    """A random 64-hex-digit id, never all digits (as Go's ``stringid.GenerateRandomID``)."""
    while True:
        candidate = os.urandom(32).hex()
        # An all-numeric id could be mistaken for a number by tools; Go retries, so do we.
        if not candidate.isdigit():
            return candidate


def check_layer_id(layer_id: str) -> str:
    """Return ``layer_id`` if it can name a layer's files, else raise ``ValueError``."""
    if not isinstance(layer_id, str) or not _ID_PATTERN.fullmatch(layer_id):
        raise ValueError(
            f"invalid layer id {layer_id!r}: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )
    return layer_id


def check_name(name: str) -> str:
    """Return ``name`` if it can be stored as a layer name, else raise ``ValueError``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"invalid layer name {name!r}: names are non-empty strings")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"invalid layer name {name!r}: not valid Unicode text") from None
    return name
