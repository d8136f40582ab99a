"""Compression of layer blobs: detection by magic bytes and streaming, bounded decompression.

Every format is read as a sequence of streams (gzip members, bzip2 streams, xz streams with their
NUL padding, zstd frames). Bytes after the last stream that do not start another stream of the
same format are an error, as is any decoder error. Output is produced at most ``n`` bytes at a
time, so a small blob that inflates to gigabytes never sits in memory.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from typing import Protocol

from ...errors import InvalidLayerData
from ...layer import Compression

__all__ = ["Readable", "decompressing_reader", "detect_compression"]

# Tried in this order, as containers/storage's archive.DetectCompression does.
_MAGIC: tuple[tuple[Compression, bytes], ...] = (
    (Compression.BZIP2, b"BZh"),
    (Compression.GZIP, b"\x1f\x8b\x08"),
    (Compression.XZ, b"\xfd7zXZ\x00"),
    (Compression.ZSTD, b"\x28\xb5\x2f\xfd"),
)
MAGIC_LENGTH = 6


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def detect_compression(head: bytes) -> Compression:
    """The compression whose magic number starts ``head`` (at least six bytes when available)."""
    for compression, magic in _MAGIC:
        if head.startswith(magic):
            return compression
    return Compression.NONE


class _Decoder(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = -1, /) -> bytes: ...


class _Zlib:
    """zlib's gzip decoder with the interface bz2 and lzma decoders share."""

    def __init__(self) -> None:
        self._decoder = zlib.decompressobj(wbits=31)
        self._pending = b""

    @property
    def eof(self) -> bool:
        return self._decoder.eof

    @property
    def unused_data(self) -> bytes:
        return self._decoder.unused_data

    @property
    def needs_input(self) -> bool:
        return not self._decoder.unconsumed_tail

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        if not data:
            data = self._decoder.unconsumed_tail
        return self._decoder.decompress(data, max_length if max_length > 0 else 0)


class _StreamReader:
    """``read(n)`` over consecutive compressed streams of one format."""

    def __init__(
        self,
        raw: Readable,
        name: str,
        new_decoder: Callable[[], _Decoder],
        magic: bytes,
        pads_with_nul_words: bool = False,
    ) -> None:
        self._raw = raw
        self._name = name
        self._new_decoder = new_decoder
        self._magic = magic
        self._pads = pads_with_nul_words
        self._decoder: _Decoder | None = new_decoder()
        self._input = b""
        self._produced = 0
        self._finished = False

    def _fail(self, reason: object) -> InvalidLayerData:
        return InvalidLayerData(
            f"{self._name} data is corrupt after {self._produced} uncompressed bytes: {reason}"
        )

    def _fill(self) -> bool:
        chunk = self._raw.read(1 << 20)
        self._input += chunk
        return bool(chunk)

    def _next_stream(self) -> None:
        """After a stream ended: start the next one, or finish at the end of the input."""
        if self._pads:
            # xz stream padding: NUL bytes, a multiple of four in all, between or after streams.
            padding = 0
            while True:
                stripped = self._input.lstrip(b"\0")
                padding += len(self._input) - len(stripped)
                self._input = stripped
                if stripped or not self._fill():
                    break
            if padding % 4:
                raise self._fail("stream padding is not a multiple of four bytes")
        if not self._input and not self._fill():
            self._finished = True
            return
        while len(self._input) < len(self._magic) and self._fill():
            pass
        if not self._input.startswith(self._magic):
            raise self._fail("unexpected bytes after the last stream")
        self._decoder = self._new_decoder()

    def read(self, size: int) -> bytes:
        while not self._finished:
            decoder = self._decoder
            assert decoder is not None
            if decoder.eof:
                self._input = decoder.unused_data + self._input
                self._decoder = None
                self._next_stream()
                continue
            needs_input = getattr(decoder, "needs_input", True)
            if needs_input and not self._input and not self._fill():
                raise self._fail("the stream is truncated")
            data, self._input = self._input, b""
            try:
                output = decoder.decompress(data, size)
            except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
                raise self._fail(exc) from None
            if output:
                self._produced += len(output)
                return output
        return b""


class _ZstdFrames:
    """Follows zstd frame and block boundaries in the compressed bytes as they pass.

    python-zstandard's stream reader (the one that bounds its output) ends quietly when its
    input ends inside a frame; walking the block headers tells a truncated stream from a
    complete one, without decoding anything twice.
    """

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._need = 4  # bytes to collect before the next decision
        self._collected = b""
        self._skip = 0  # bytes to pass over (block contents, checksums, skippable frames)
        self._state = "magic"
        self._checksum = False

    def read(self, size: int, /) -> bytes:
        data = self._raw.read(size)
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            take = min(self._need - len(self._collected), len(view))
            self._collected += bytes(view[:take])
            view = view[take:]
            if len(self._collected) == self._need:
                self._advance()
        return data

    def _advance(self) -> None:
        got, self._collected = self._collected, b""
        if self._state == "magic":
            magic = int.from_bytes(got, "little")
            if 0x184D2A50 <= magic <= 0x184D2A5F:
                self._state, self._need = "skippable", 4
            else:  # the decoder itself rejects a bad magic number
                self._state, self._need = "descriptor", 1
        elif self._state == "skippable":
            self._skip = int.from_bytes(got, "little")
            self._state, self._need = "magic", 4
        elif self._state == "descriptor":
            descriptor = got[0]
            single_segment = descriptor >> 5 & 1
            self._checksum = bool(descriptor >> 2 & 1)
            dictionary = (0, 1, 2, 4)[descriptor & 3]
            content_size = (single_segment, 2, 4, 8)[descriptor >> 6]
            self._skip = (0 if single_segment else 1) + dictionary + content_size
            self._state, self._need = "block", 3
        elif self._state == "block":
            header = int.from_bytes(got, "little")
            last, kind, length = header & 1, header >> 1 & 3, header >> 3
            self._skip = 1 if kind == 1 else length
            if last:
                self._skip += 4 if self._checksum else 0
                self._state, self._need = "magic", 4

    @property
    def at_boundary(self) -> bool:
        return self._state == "magic" and not self._collected and not self._skip


class _ZstdReader:
    """zstd frames through python-zstandard's bounded stream reader."""

    def __init__(self, raw: Readable) -> None:
        import zstandard

        self._error = zstandard.ZstdError
        self._frames = _ZstdFrames(raw)
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            self._frames,  # type: ignore[arg-type]  # it only calls read(n)
            read_size=1 << 20,
            read_across_frames=True,
        )
        self._produced = 0

    def _fail(self, reason: object) -> InvalidLayerData:
        return InvalidLayerData(
            f"zstd data is corrupt after {self._produced} uncompressed bytes: {reason}"
        )

    def read(self, size: int) -> bytes:
        try:
            output = self._reader.read(size)
        except self._error as exc:
            raise self._fail(exc) from None
        if not output and not self._frames.at_boundary:
            raise self._fail("the stream is truncated")
        self._produced += len(output)
        return output


def decompressing_reader(raw: Readable, compression: Compression) -> Readable:
    """A reader of the decompressed stream of ``raw``, which holds ``compression`` data."""
    if compression is Compression.NONE:
        return raw
    if compression is Compression.GZIP:
        return _StreamReader(raw, "gzip", _Zlib, b"\x1f\x8b")
    if compression is Compression.BZIP2:
        return _StreamReader(raw, "bzip2", bz2.BZ2Decompressor, b"BZh")
    if compression is Compression.XZ:
        return _StreamReader(
            raw,
            "xz",
            lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ),
            b"\xfd7zXZ\x00",
            pads_with_nul_words=True,
        )
    return _ZstdReader(raw)
