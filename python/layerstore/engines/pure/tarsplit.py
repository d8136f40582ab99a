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

from ... import gojson, gopath
from ...atomic import fsync_directory
from ...errors import InvalidLayerData
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
    """Writes ``<path>.tmp`` as lines arrive; :meth:`commit` makes it ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._temporary = path + ".tmp"
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


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _check_strings(value: object) -> None:
    """Refuse a lone surrogate anywhere (Python's json reads one; Go's and ours do not)."""
    if isinstance(value, str):
        value.encode("utf-8")  # UnicodeEncodeError, a ValueError, on a surrogate
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)


def _parse_line(line: bytes, path: str, number: int) -> TarSplitEntry:
    try:
        record = json.loads(line, parse_constant=_refuse_constant)
        if type(record) is not dict:
            raise ValueError("not a JSON object")
        if b"\\u" in line:
            _check_strings(record)
        kind = record["type"]
        if type(kind) is not int or kind not in (FILE_TYPE, SEGMENT_TYPE):
            raise ValueError(f"unknown entry type {kind!r}")
        payload = record.get("payload")
        if payload is not None and type(payload) is not str:
            raise ValueError("the payload is not a string")
        raw_payload = None if payload is None else base64.b64decode(payload, validate=True)
        raw_name, text_name = record.get("name_raw"), record.get("name")
        if text_name is None:  # a null value counts as a missing key
            text_name = ""
        if type(text_name) is not str or (raw_name is not None and type(raw_name) is not str):
            raise ValueError("the name is not a string")
        if raw_name:  # an empty name_raw falls back to name, as Go's GetName does
            name = base64.b64decode(raw_name, validate=True)
        else:
            name = text_name.encode("utf-8", "surrogateescape")
        size = record.get("size", 0)
        if size is None:
            size = 0
        if type(size) is not int:
            raise ValueError(f"size {size!r} is not an integer")
        if not -(1 << 63) <= size < 1 << 63:
            raise ValueError(f"size {size} is out of range")  # Go reads it into an int64
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise InvalidLayerData(f"{path}: line {number} is not a tar-split entry: {exc}") from None
    return TarSplitEntry(kind, name, size, raw_payload, number)


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
