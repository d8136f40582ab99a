"""ApplyDiff in one pass: read, digest, decompress, digest, walk, record tar-split, extract."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import BinaryIO

from ...faults import fault
from ...layer import Compression
from .. import ApplyRequest, ApplyResult, BlobSource
from . import gopath
from .compress import MAGIC_LENGTH, Readable, decompressing_reader, detect_compression
from .crc64 import Crc64
from .extract import Extractor
from .tarsplit import TarSplitWriter
from .tarwalk import TarWalker

__all__ = ["apply_layer"]

_READ_SIZE = 1 << 20


class _CountingReader:
    """Reads a source once, front to back, counting and (optionally) hashing what passes."""

    def __init__(self, read: Readable, hashing: bool) -> None:
        self._read = read
        self.hash = hashlib.sha256() if hashing else None
        self.size = 0

    def read(self, size: int, /) -> bytes:
        data = self._read.read(size)
        if data:
            self.size += len(data)
            if self.hash is not None:
                self.hash.update(data)
        return bytes(data) if not isinstance(data, bytes) else data


class _Prefixed:
    """A reader that returns ``head`` first, then the rest of ``rest``."""

    def __init__(self, head: bytes, rest: Readable) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int, /) -> bytes:
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._rest.read(size)


class _BufferReader:
    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data).cast("B")
        self._position = 0

    def read(self, size: int, /) -> bytes:
        data = self._view[self._position : self._position + size]
        self._position += len(data)
        return bytes(data)


def _open_source(source: BlobSource) -> tuple[Readable, BinaryIO | None]:
    if isinstance(source, str):
        handle = open(source, "rb")
        return handle, handle
    if isinstance(source, bytes | bytearray):
        return _BufferReader(source), None
    return source, None


def apply_layer(request: ApplyRequest) -> ApplyResult:
    """See docs/apply.md: the contract both engines implement (arguments checked by Engine)."""
    trusted_compressed_digest = request.trusted_compressed_digest
    trusted_uncompressed_digest = request.trusted_uncompressed_digest
    extractor = Extractor(
        request.destination,
        request.whiteout_format,
        force_mask=request.force_mask,
        ignore_chown_errors=request.ignore_chown_errors,
    )
    readable, handle = _open_source(request.source)
    writer: TarSplitWriter | None = None
    try:
        writer = TarSplitWriter(request.tar_split_path, request.tar_split_temporary_path)
        compressed = _CountingReader(readable, trusted_compressed_digest is None)
        head = _read_head(compressed)
        compression = detect_compression(head)
        uncompressed = _CountingReader(
            decompressing_reader(_Prefixed(head, compressed), compression),
            trusted_uncompressed_digest is None,
        )
        # Go's zstd and xz readers return the last bytes together with the end of the stream.
        eof_with_data = compression in (Compression.ZSTD, Compression.XZ)
        uids, gids = _walk(TarWalker(uncompressed), extractor, writer, eof_with_data)
        extractor.finish()
        fault("apply:before-tar-split")
        writer.commit()
        writer = None
    finally:
        if writer is not None:
            writer.abort()
        extractor.close()
        if handle is not None:
            handle.close()
    return ApplyResult(
        compressed_digest=trusted_compressed_digest or _hex(compressed),
        compressed_size=compressed.size,
        uncompressed_digest=trusted_uncompressed_digest or _hex(uncompressed),
        uncompressed_size=uncompressed.size,
        compression=Compression(compression),
        uids=tuple(sorted(uids)),
        gids=tuple(sorted(gids)),
        size=extractor.size,
    )


def _read_head(reader: _CountingReader) -> bytes:
    head = b""
    while len(head) < MAGIC_LENGTH:
        chunk = reader.read(MAGIC_LENGTH - len(head))
        if not chunk:
            break
        head += chunk
    return head


def _hex(reader: _CountingReader) -> str:
    assert reader.hash is not None
    return "sha256:" + reader.hash.hexdigest()


def _walk(
    walker: TarWalker, extractor: Extractor, writer: TarSplitWriter, eof_with_data: bool
) -> tuple[set[int], set[int]]:
    uids: set[int] = set()
    gids: set[int] = set()
    for entry in walker.entries():
        if entry.raw:
            writer.segment(entry.raw)
        writer.claim(entry.name, entry.offset)
        if not gopath.base(entry.name).startswith(b".wh."):
            uids.add(entry.uid & 0xFFFFFFFF)
            gids.add(entry.gid & 0xFFFFFFFF)
        crc = Crc64() if entry.size > 0 else None
        content = _checked(walker.content(entry), crc)
        extractor.extract(entry, content)
        for _ in content:  # whatever the extractor did not need still counts
            pass
        writer.file(entry.name, entry.size, crc.digest() if crc else None)
    if walker.final_raw:
        writer.segment(walker.final_raw)
    short_last = False
    for chunk in walker.trailing(_READ_SIZE):
        writer.segment(chunk)
        short_last = len(chunk) < _READ_SIZE
    # Go writes this empty segment when its last read returned nothing; its zstd and xz
    # readers hand the last bytes over together with the end of the stream, so none follows.
    if not (eof_with_data and short_last):
        writer.segment(b"")
    return uids, gids


def _checked(chunks: Iterator[bytes], crc: Crc64 | None) -> Iterator[bytes]:
    for chunk in chunks:
        if crc is not None:
            crc.update(chunk)
        yield chunk
