"""Readable binary streams built from chunk generators, and output compression.

Diffs are produced lazily: a generator yields the tarball's bytes a piece at a time and the
reader hands them out through the ordinary file-object interface. Closing the reader closes the
generator, whose ``finally`` clauses release descriptors and locks at once.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterator
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


def compressed_chunks(chunks: Iterator[bytes], compression: Compression) -> Iterator[bytes]:
    """``chunks`` compressed as ``compression``, still lazily; the caller checked it is one of
    ``engines.DIFF_COMPRESSIONS``."""
    if compression is Compression.NONE:
        yield from chunks
        return
    if compression is Compression.GZIP:
        compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)
        for chunk in chunks:
            if output := compressor.compress(chunk):
                yield output
        yield compressor.flush()
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
