"""Walking a tar stream block by block, as tar-split's forked Go ``archive/tar`` reader does.

The walker hands out each entry with ``raw``: every byte of the archive read since the previous
entry's content that is not file content (padding, header blocks, PAX and GNU long-name data).
Those bytes become tar-split segments, so they must be exactly what Go's reader accounts; the
rules are in docs/apply.md section 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ...errors import InvalidLayerData
from .compress import Readable

__all__ = ["BLOCK", "TarEntry", "TarWalker"]

BLOCK = 512
MAX_SPECIAL_FILE = 1 << 20  # PAX and GNU long-name data: Go's upstream limit
MAX_RAW = 64 << 20  # header bytes before one entry: endless chains of meta headers are refused
_HEADER_ONLY_TYPES = frozenset(b"123456")
_ZERO_BLOCK = bytes(BLOCK)
_NANOSECOND_DIGITS = 9


@dataclass(slots=True)
class TarEntry:
    """One archive entry after PAX and GNU extensions are applied."""

    raw: bytes
    """Archive bytes before this entry's content that are not content (a tar-split segment)."""
    offset: int
    """Offset of the entry's (first) header block in the decompressed stream."""
    typeflag: int
    name: bytes
    linkname: bytes
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int | None
    devmajor: int
    devminor: int
    xattrs: dict[bytes, bytes] = field(default_factory=dict)

    @property
    def datasize(self) -> int:
        """Bytes of content that follow the header (0 for header-only types)."""
        return 0 if self.typeflag in _HEADER_ONLY_TYPES else self.size


class _HeaderError(Exception):
    pass


def _parse_string(field_bytes: bytes) -> bytes:
    end = field_bytes.find(0)
    return field_bytes if end < 0 else field_bytes[:end]


_OCTAL_DIGITS = frozenset(b"01234567")
_DECIMAL_DIGITS = frozenset(b"0123456789")


def _parse_octal(field_bytes: bytes) -> int:
    text = _parse_string(field_bytes.strip(b" \0"))
    if not text:
        return 0
    if not _OCTAL_DIGITS.issuperset(text):
        raise _HeaderError  # Go's ParseUint takes octal digits only
    value = int(text, 8)
    if value >= 1 << 64:
        raise _HeaderError
    return value - (1 << 64) if value >= 1 << 63 else value  # Go converts to int64


def _parse_numeric(field_bytes: bytes) -> int:
    if field_bytes and field_bytes[0] & 0x80:
        # base-256: two's complement, big-endian, the top bit of the first byte a marker
        inverted = 0xFF if field_bytes[0] & 0x40 else 0
        value = 0
        for position, byte in enumerate(field_bytes):
            byte ^= inverted
            if position == 0:
                byte &= 0x7F
            if value >> 56:
                raise _HeaderError
            value = value << 8 | byte
        if value >> 63:
            raise _HeaderError
        return ~value if inverted else value
    return _parse_octal(field_bytes)


def _checksum_matches(block: bytes) -> bool:
    try:
        recorded = _parse_octal(block[148:156])
    except _HeaderError:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 8 * 0x20
    signed = unsigned - 256 * sum(1 for byte in block if byte >= 0x80)
    signed += 256 * sum(1 for byte in block[148:156] if byte >= 0x80)
    return recorded in (unsigned, signed)


def _parse_pax_time(value: bytes) -> int:
    seconds_text, _, fraction = value.partition(b".")
    seconds = _parse_decimal(seconds_text)
    if not fraction:
        return seconds * 1_000_000_000
    if not _DECIMAL_DIGITS.issuperset(fraction):
        raise _HeaderError
    nanoseconds = int(fraction[:_NANOSECOND_DIGITS].ljust(_NANOSECOND_DIGITS, b"0"))
    if seconds_text.startswith(b"-"):
        return seconds * 1_000_000_000 - nanoseconds
    return seconds * 1_000_000_000 + nanoseconds


def _parse_decimal(value: bytes) -> int:
    """Go's ``strconv.ParseInt(value, 10, 64)``: an optional sign, then digits only."""
    digits = value[1:] if value[:1] in (b"+", b"-") else value
    if not digits or not _DECIMAL_DIGITS.issuperset(digits):
        raise _HeaderError
    number = int(value, 10)
    if not -(1 << 63) <= number < 1 << 63:
        raise _HeaderError
    return number


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    sparse_map: list[bytes] = []
    while data:
        space = data.find(b" ")
        if space < 0:
            raise _HeaderError
        length = _parse_decimal(data[:space])
        if length < 5 or length > len(data) or space + 1 > length - 1:
            raise _HeaderError
        record, newline, data = (
            data[space + 1 : length - 1],
            data[length - 1 : length],
            data[length:],
        )
        if newline != b"\n":
            raise _HeaderError
        key, equals, value = record.partition(b"=")
        if not equals or not key:
            raise _HeaderError
        if key in (b"path", b"linkpath", b"uname", b"gname"):
            if b"\0" in value:
                raise _HeaderError
        elif b"\0" in key:
            raise _HeaderError
        if key in (b"GNU.sparse.offset", b"GNU.sparse.numbytes"):
            expected = b"GNU.sparse.offset" if len(sparse_map) % 2 == 0 else b"GNU.sparse.numbytes"
            if key != expected or b"," in value:
                raise _HeaderError
            sparse_map.append(value)
        else:
            records[key] = value
    if sparse_map:
        records[b"GNU.sparse.map"] = b",".join(sparse_map)
    return records


def _is_sparse(pax: dict[bytes, bytes]) -> bool:
    """Whether PAX records describe a GNU sparse file (Go's readGNUSparsePAXHeaders)."""
    major, minor = pax.get(b"GNU.sparse.major", b""), pax.get(b"GNU.sparse.minor", b"")
    if (major, minor) in ((b"0", b"0"), (b"0", b"1"), (b"1", b"0")):
        return True
    if major or minor:
        return False  # an unknown sparse version: Go reads it as a plain file
    return bool(pax.get(b"GNU.sparse.map"))


class TarWalker:
    """Entries of a tar stream with tar-split's raw accounting; see docs/apply.md section 2."""

    def __init__(self, stream: Readable) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._offset = 0  # decompressed bytes consumed so far
        self._padding = 0  # padding still owed by the previous entry
        self._content_left = 0
        self.final_raw = b""
        """After the last entry: the bytes that end the archive (a tar-split segment)."""

    # -- reading -------------------------------------------------------------------------------

    def _read(self, size: int) -> bytes:
        """Up to ``size`` bytes; fewer only at the end of the stream."""
        while len(self._buffer) < size:
            chunk = self._stream.read(max(size - len(self._buffer), 1 << 16))
            if not chunk:
                break
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._offset += len(data)
        return data

    def _error(self, offset: int, message: str) -> InvalidLayerData:
        return InvalidLayerData(f"invalid tar archive at offset {offset}: {message}")

    def content(self, entry: TarEntry, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The entry's content, in chunks; it must be read whole before the next entry."""
        left = self._content_left
        while left:
            chunk = self._read(min(left, chunk_size))
            if not chunk:
                name = entry.name.decode("utf-8", "backslashreplace")
                raise self._error(
                    self._offset, f"entry {name!r} is truncated ({left} bytes of content missing)"
                )
            left -= len(chunk)
            self._content_left = left
            yield chunk

    def trailing(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Whatever follows the end of the archive, in chunks of ``chunk_size``."""
        while chunk := self._read(chunk_size):
            yield chunk

    # -- entries -------------------------------------------------------------------------------

    def entries(self) -> Iterator[TarEntry]:
        while True:
            entry = self._next()
            if entry is None:
                return
            yield entry
            if self._content_left:
                raise RuntimeError("the content of an entry was not read before the next one")

    def _next(self) -> TarEntry | None:
        raw = bytearray()
        pax: dict[bytes, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            if self._padding:
                owed, self._padding = self._padding, 0
                padding = self._read(owed)
                if not padding:  # the stream ends right after the content: so does the archive
                    self.final_raw = bytes(raw)
                    return None
                if len(padding) < owed:
                    # Go ends here too but drops the partial padding from tar-split, so its
                    # diff would differ from the blob: refuse the truncated archive instead.
                    raise self._error(
                        self._offset, "the archive is truncated inside the padding of an entry"
                    )
                raw += padding
            if len(raw) > MAX_RAW:
                raise self._error(self._offset, "too many meta headers before one entry")
            offset = self._offset
            block = self._read(BLOCK)
            if not block:
                self.final_raw = bytes(raw)
                return None
            if len(block) < BLOCK:
                raise self._error(offset, "truncated header")
            raw += block
            if block == _ZERO_BLOCK:
                second = self._read(BLOCK)
                if second and len(second) < BLOCK:
                    raise self._error(offset + BLOCK, "truncated end-of-archive block")
                raw += second
                if not second or second == _ZERO_BLOCK:
                    self.final_raw = bytes(raw)
                    return None
                raise self._error(offset, "a zero block followed by a non-zero block")
            if not _checksum_matches(block):
                raise self._error(offset, "invalid tar header checksum")
            try:
                entry = self._parse_header(block, offset)
            except _HeaderError:
                raise self._error(offset, "invalid tar header") from None
            datasize = entry.datasize
            if datasize < 0:
                raise self._error(offset, "negative size")
            self._padding = -datasize % BLOCK
            kind = entry.typeflag
            if kind in (ord("x"), ord("g")):
                data = self._special_data(datasize, offset, "PAX header")
                raw += data
                try:
                    pax = _parse_pax(data)
                except _HeaderError:
                    raise self._error(offset, "invalid PAX header") from None
                if kind == ord("g"):
                    path = pax.get(b"path")
                    return TarEntry(
                        raw=bytes(raw),
                        offset=offset,
                        typeflag=kind,
                        name=path if path else entry.name,
                        linkname=b"",
                        size=0,
                        mode=0,
                        uid=0,
                        gid=0,
                        mtime_ns=0,
                        atime_ns=None,
                        devmajor=0,
                        devminor=0,
                    )
                continue
            if kind in (ord("L"), ord("K")):
                data = self._special_data(datasize, offset, "GNU long name")
                raw += data
                if kind == ord("L"):
                    long_name = _parse_string(data)
                else:
                    long_link = _parse_string(data)
                continue
            try:
                self._apply_pax(entry, pax)
            except _HeaderError:
                raise self._error(offset, "invalid PAX record") from None
            if long_name:
                entry.name = long_name
            if long_link:
                entry.linkname = long_link
            if kind == 0:
                entry.typeflag = ord("5") if entry.name.endswith(b"/") else ord("0")
            if entry.datasize < 0:
                raise self._error(offset, "negative size")
            if entry.typeflag == ord("S") or _is_sparse(pax):
                name = entry.name.decode("utf-8", "backslashreplace")
                raise self._error(
                    offset,
                    f"entry {name!r} is a sparse file: sparse files cannot be stored "
                    "byte-exactly and are not supported",
                )
            self._padding = -entry.datasize % BLOCK
            self._content_left = entry.datasize
            entry.raw = bytes(raw)
            return entry

    def _special_data(self, size: int, offset: int, what: str) -> bytes:
        if size > MAX_SPECIAL_FILE:
            raise self._error(offset, f"{what} of {size} bytes is larger than 1 MiB")
        data = self._read(size)
        if len(data) < size:
            raise self._error(offset, f"{what} is truncated")
        return data

    @staticmethod
    def _parse_header(block: bytes, offset: int) -> TarEntry:
        magic, version = block[257:263], block[263:265]
        if magic == b"ustar\0" and block[508:512] == b"tar\0":
            layout = "star"
        elif magic == b"ustar\0":
            layout = "ustar"
        elif magic == b"ustar " and version == b" \0":
            layout = "gnu"
        else:
            layout = "v7"
        name = _parse_string(block[0:100])
        entry = TarEntry(
            raw=b"",
            offset=offset,
            typeflag=block[156],
            name=name,
            linkname=_parse_string(block[157:257]),
            size=_parse_numeric(block[124:136]),
            mode=_parse_numeric(block[100:108]),
            uid=_parse_numeric(block[108:116]),
            gid=_parse_numeric(block[116:124]),
            mtime_ns=_parse_numeric(block[136:148]) * 1_000_000_000,
            atime_ns=None,
            devmajor=0,
            devminor=0,
        )
        if layout == "v7":
            return entry
        entry.devmajor = _parse_numeric(block[329:337])
        entry.devminor = _parse_numeric(block[337:345])
        prefix = b""
        if layout == "ustar":
            prefix = _parse_string(block[345:500])
        elif layout == "star":
            prefix = _parse_string(block[345:476])
            entry.atime_ns = _parse_numeric(block[476:488]) * 1_000_000_000
        else:  # GNU: atime and ctime where old Go wrote a prefix
            try:
                if block[345]:
                    entry.atime_ns = _parse_numeric(block[345:357]) * 1_000_000_000
                if block[357]:
                    _parse_numeric(block[357:369])
            except _HeaderError:
                entry.atime_ns = None
                candidate = _parse_string(block[345:500])
                if candidate.isascii():
                    prefix = candidate
        if prefix:
            entry.name = prefix + b"/" + entry.name
        return entry

    @staticmethod
    def _apply_pax(entry: TarEntry, pax: dict[bytes, bytes]) -> None:
        for key, value in pax.items():
            if not value:
                continue  # an empty record keeps the header's value
            if key == b"path":
                entry.name = value
            elif key == b"linkpath":
                entry.linkname = value
            elif key == b"uid":
                entry.uid = _parse_decimal(value)
            elif key == b"gid":
                entry.gid = _parse_decimal(value)
            elif key == b"size":
                entry.size = _parse_decimal(value)
            elif key == b"mtime":
                entry.mtime_ns = _parse_pax_time(value)
            elif key == b"atime":
                entry.atime_ns = _parse_pax_time(value)
            elif key == b"ctime":
                _parse_pax_time(value)
            elif key.startswith(b"SCHILY.xattr."):
                entry.xattrs[key[len(b"SCHILY.xattr.") :]] = value
