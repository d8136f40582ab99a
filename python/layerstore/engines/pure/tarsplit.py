"""tar-split files: the JSON lines that let a layer's exact tarball be rebuilt (SPEC section 5)."""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from ... import gojson
from ...atomic import fsync_directory
from ...errors import InvalidLayerData
from . import gopath
from .crc64 import Crc64
from .tarwalk import TarWalker

__all__ = [
    "TarSplitEntry",
    "TarSplitWriter",
    "decode",
    "encode",
    "file_line",
    "read_entries",
    "segment_line",
]

FILE_TYPE = 1
SEGMENT_TYPE = 2


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def segment_line(payload: bytes, position: int) -> bytes:
    return b'{"type":2,"payload":"%s","position":%d}\n' % (_b64(payload).encode(), position)


def file_line(name: bytes, size: int, crc: bytes | None, position: int) -> bytes:
    """One file entry: ``name`` (or ``name_raw`` when not UTF-8), ``size``, CRC payload."""
    parts = ['{"type":1']
    if name:
        try:
            parts.append(',"name":' + gojson.dumps(name.decode("utf-8")))
        except UnicodeDecodeError:
            parts.append(f',"name_raw":"{_b64(name)}"')
    if size:
        parts.append(f',"size":{size}')
    parts.append(f',"payload":"{_b64(crc)}"' if crc is not None else ',"payload":null')
    parts.append(f',"position":{position}}}\n')
    return "".join(parts).encode("utf-8")


class TarSplitWriter:
    """Writes ``temporary`` as lines arrive; :meth:`commit` renames it to ``path``."""

    def __init__(self, path: str, temporary: str) -> None:
        self.path = path
        self._temporary = temporary
        self._file = open(self._temporary, "wb")
        os.fchmod(self._file.fileno(), 0o600)
        self._gzip = gzip.GzipFile(fileobj=self._file, mode="wb", compresslevel=1, mtime=0)
        self._position = 0
        self._seen: set[bytes] = set()
        # Names are remembered as keyed 128-bit hashes: memory stays small whatever their length.
        self._key = os.urandom(16)

    def segment(self, payload: bytes) -> None:
        self._gzip.write(segment_line(payload, self._position))
        self._position += 1

    def claim(self, name: bytes, offset: int) -> None:
        """Refuse a name equal to an earlier one after ``path.Clean``, before it is extracted."""
        key = hashlib.blake2b(gopath.clean(name), digest_size=16, key=self._key).digest()
        if key in self._seen:
            shown = name.decode("utf-8", "backslashreplace")
            raise InvalidLayerData(
                f"invalid tar archive at offset {offset}: duplicate path {shown!r}"
            )
        self._seen.add(key)

    def file(self, name: bytes, size: int, crc: bytes | None) -> None:
        """A file entry whose name was :meth:`claim`-ed."""
        self._gzip.write(file_line(name, size, crc, self._position))
        self._position += 1

    def commit(self) -> None:
        self._gzip.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.rename(self._temporary, self.path)
        fsync_directory(os.path.dirname(self.path) or ".")

    def abort(self) -> None:
        try:
            self._gzip.close()
        except OSError:
            pass
        self._file.close()
        try:
            os.unlink(self._temporary)
        except FileNotFoundError:
            pass


@dataclass(frozen=True, slots=True)
class TarSplitEntry:
    """One line of a tar-split file."""

    type: int
    name: bytes
    size: int
    payload: bytes | None
    line: int


def read_entries(path: str) -> Iterator[TarSplitEntry]:
    """The entries of the tar-split file at ``path``, in order; bad lines are InvalidLayerData."""
    number = 0
    try:
        with gzip.open(path, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                yield _parse_line(line, path, number)
        if number == 0:
            raise InvalidLayerData(f"{path}: the tar-split file is empty")
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise InvalidLayerData(
            f"{path}: cannot read tar-split after line {number}: {exc}"
        ) from None


def _b64decode(text: str) -> bytes:
    """Padded standard base64 as Go reads it: Python's decoder also takes padding past a whole
    group ("AAAA="), which Go refuses; like Go, the unused bits of the last digit may be set."""
    data = text.rstrip("=")
    padding = len(text) - len(data)
    if len(text) % 4 or padding > 2 or (padding and len(data) % 4 < 2):
        raise ValueError(f"illegal base64 data of length {len(text)}")
    return base64.b64decode(text, validate=True)


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _check_strings(value: object) -> None:
    """Refuse a lone surrogate anywhere (Python's json reads one; Go's and ours do not)."""
    if isinstance(value, str):
        value.encode("utf-8")  # UnicodeEncodeError, a ValueError, on a surrogate
    elif isinstance(value, list | tuple):
        for item in value:
            _check_strings(item)


class _Members(list[tuple[str, object]]):
    """The members of a JSON object in order, a key given twice kept twice."""


def _integer(value: object, key: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise ValueError(f"{key} {value!r} is not an integer")
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError(f"{key} {value} is out of range")  # Go reads it into an int64
    return value


def _string(value: object, key: str) -> str | None:
    if value is not None and type(value) is not str:
        raise ValueError(f"the {key} is not a string")
    return value


def _parse_line(line: bytes, path: str, number: int) -> TarSplitEntry:
    """One line, read as Go reads it: every member of a known key must be valid, the last one
    counts, a null value counts as a missing key, other keys are ignored."""
    try:
        record = json.loads(line, parse_constant=_refuse_constant, object_pairs_hook=_Members)
        if type(record) is not _Members:
            raise ValueError("not a JSON object")
        if b"\\u" in line:
            _check_strings(record)
        kind = size = None
        text_name = raw_name = None
        payload: bytes | None = None
        for key, value in record:
            if key == "type":
                kind = _integer(value, "type")
            elif key == "size":
                size = _integer(value, "size")
            elif key == "name":
                text_name = _string(value, "name")
            elif key == "name_raw":
                raw = _string(value, "name")
                raw_name = None if raw is None else _b64decode(raw)
            elif key == "payload":
                text = _string(value, "payload")
                payload = None if text is None else _b64decode(text)
        if kind is None:
            raise ValueError("the entry has no type")
        if kind not in (FILE_TYPE, SEGMENT_TYPE):
            raise ValueError(f"unknown entry type {kind!r}")
        if raw_name:  # an empty name_raw falls back to name, as Go's GetName does
            name = raw_name
        else:
            name = (text_name or "").encode("utf-8", "surrogateescape")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise InvalidLayerData(f"{path}: line {number} is not a tar-split entry: {exc}") from None
    return TarSplitEntry(kind, name, size or 0, payload, number)


def encode(tar: bytes | bytearray | memoryview, /) -> bytes:
    """The tar-split of the tar archive ``tar``: its JSON lines, uncompressed, exactly as an
    apply records them (what ``layerstore._native.tar_split_encode`` returns)."""
    walker = TarWalker(io.BytesIO(tar))
    lines: list[bytes] = []
    seen: set[bytes] = set()
    for entry in walker.entries():
        if entry.raw:
            lines.append(segment_line(entry.raw, len(lines)))
        cleaned = gopath.clean(entry.name)
        if cleaned in seen:
            shown = entry.name.decode("utf-8", "backslashreplace")
            raise InvalidLayerData(
                f"invalid tar archive at offset {entry.offset}: duplicate path {shown!r}"
            )
        seen.add(cleaned)
        crc = Crc64() if entry.size > 0 else None
        for chunk in walker.content(entry):
            if crc is not None:
                crc.update(chunk)
        lines.append(file_line(entry.name, entry.size, crc.digest() if crc else None, len(lines)))
    if walker.final_raw:
        lines.append(segment_line(walker.final_raw, len(lines)))
    for chunk in walker.trailing():
        lines.append(segment_line(chunk, len(lines)))
    lines.append(segment_line(b"", len(lines)))
    return b"".join(lines)


def decode(
    tar_split: bytes | bytearray | memoryview, /
) -> list[tuple[int, bytes, int, bytes | None]]:
    """The entries of tar-split JSON lines (uncompressed), in order, as
    ``layerstore._native.tar_split_decode`` gives them: (type, name, size, payload); a segment
    (type 2) has an empty name, size 0 and its bytes as payload."""
    entries: list[tuple[int, bytes, int, bytes | None]] = []
    for number, line in enumerate(io.BytesIO(tar_split), start=1):
        entry = _parse_line(line, "<bytes>", number)
        if entry.type == SEGMENT_TYPE:
            entries.append((SEGMENT_TYPE, b"", 0, entry.payload or b""))
        else:
            entries.append((FILE_TYPE, entry.name, entry.size, entry.payload))
    if not entries:
        raise InvalidLayerData("<bytes>: the tar-split file is empty")
    return entries
