"""Readable binary streams built from chunk generators, and output compression.

Diffs are produced lazily: a generator yields the tarball's bytes a piece at a time and the
reader hands them out through the ordinary file-object interface. Closing the reader closes the
generator, whose ``finally`` clauses release descriptors and locks at once.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, cast

from .layer import Compression

__all__ = ["ChunkReader", "compressed_chunks", "reader_of"]

_GZIP_LEVEL = 1  # fast: the output only has to decompress to the exact bytes
_ZSTD_LEVEL = 3


class ChunkReader(io.RawIOBase):
    """A raw binary stream over the chunks a generator yields."""

    def __init__(self, chunks: Iterator[bytes], on_close: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = memoryview(b"")
        self._on_close = on_close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("I/O operation on a closed diff stream")
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        target = memoryview(buffer).cast("B")
        count = min(len(target), len(self._pending))
        target[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        if not self.closed:
            try:
                close = getattr(self._chunks, "close", None)
                if close is not None:
                    close()
            finally:
                try:
                    if self._on_close is not None:
                        self._on_close()
                finally:
                    super().close()


def reader_of(chunks: Iterator[bytes], on_close: Callable[[], None] | None = None) -> BinaryIO:
    """A buffered binary file object reading ``chunks``."""
    return cast(BinaryIO, io.BufferedReader(ChunkReader(chunks, on_close), buffer_size=1 << 20))


_BLOCK = 1 << 20
_WINDOW = 32 << 10
# A gzip header without a name, time or flags (OS unknown), as Go's gzip.Writer writes it.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def _blocks(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks`` regrouped into blocks of :data:`_BLOCK` bytes (the last one shorter)."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        while len(pending) >= _BLOCK:
            yield bytes(pending[:_BLOCK])
            del pending[:_BLOCK]
    yield bytes(pending)


def _deflate_block(block: bytes, dictionary: bytes) -> bytes:
    # Raw deflate primed with the 32 KiB before the block, ended by a sync flush: the blocks
    # join into one stream. zlib releases the GIL while it compresses, so blocks run in parallel.
    if dictionary:
        compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, -15, zdict=dictionary)
    else:
        compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, -15)
    return compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)


def _parallel_gzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks`` as one gzip member, compressed a block per core at a time (pigz's way)."""
    workers = max(1, min(4, len(os.sched_getaffinity(0))))
    crc = 0
    length = 0
    dictionary = b""
    yield _GZIP_HEADER
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gzip") as pool:
        in_flight: deque[Future[bytes]] = deque()
        for block in _blocks(chunks):
            crc = zlib.crc32(block, crc)
            length += len(block)
            in_flight.append(pool.submit(_deflate_block, block, dictionary))
            dictionary = block[-_WINDOW:]
            if len(in_flight) > workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
    # The final block (fixed Huffman, empty), then CRC-32 and the length mod 2^32.
    yield b"\x03\x00" + struct.pack("<II", crc, length & 0xFFFFFFFF)


def compressed_chunks(chunks: Iterator[bytes], compression: Compression) -> Iterator[bytes]:
    """``chunks`` compressed as ``compression``, still lazily; the caller checked it is one of
    ``engines.DIFF_COMPRESSIONS``."""
    if compression is Compression.NONE:
        yield from chunks
        return
    if compression is Compression.GZIP:
        yield from _parallel_gzip(chunks)
        return
    if compression is Compression.ZSTD:
        import zstandard

        zstd = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compressobj()
        for chunk in chunks:
            if output := zstd.compress(chunk):
                yield output
        yield zstd.flush()
        return
    raise ValueError(f"no diff compression {compression!r}")
