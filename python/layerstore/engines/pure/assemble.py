"""Rebuilding a layer's exact tarball from its tar-split file and its files (docs/diff.md)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

from ...errors import InvalidLayerData
from ...layer import Compression
from ...streams import compressed_chunks, reader_of
from .confine import DIRECTORY_FLAGS, confine, open_directory, shown
from .crc64 import Crc64
from .tarsplit import SEGMENT_TYPE, TarSplitEntry, read_entries

__all__ = ["open_diff"]

_READ_SIZE = 1 << 20


def open_diff(tar_split_path: str, layer_dir: str, compression: Compression) -> BinaryIO:
    """A reader of the layer's tarball, compressed as asked (none, gzip or zstd, as Engine
    checked); see docs/diff.md."""
    return reader_of(compressed_chunks(_tar_chunks(tar_split_path, layer_dir), compression))


def _tar_chunks(tar_split_path: str, layer_dir: str) -> Iterator[bytes]:
    root_fd = os.open(layer_dir, DIRECTORY_FLAGS)
    try:
        for entry in read_entries(tar_split_path):
            if entry.type == SEGMENT_TYPE:
                if entry.payload:
                    yield entry.payload
            elif entry.size > 0:
                yield from _file_chunks(root_fd, entry)
    finally:
        os.close(root_fd)


def _missing(entry: TarSplitEntry) -> InvalidLayerData:
    return InvalidLayerData(f"the layer's file {shown(entry.name)} is missing")


def _file_chunks(root_fd: int, entry: TarSplitEntry) -> Iterator[bytes]:
    parts = confine(entry.name)
    parent_fd = open_directory(root_fd, parts[:-1], create=False) if parts else None
    if parent_fd is None:
        raise _missing(entry)
    # O_NONBLOCK: a fifo put where the file was must not hang the reader.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(parts[-1], flags, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise _missing(entry) from None  # gone, or something else than a file now
        raise
    finally:
        os.close(parent_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _missing(entry)
    try:
        crc = Crc64()
        left = entry.size
        while left:
            chunk = os.read(fd, min(left, _READ_SIZE))
            if not chunk:
                raise InvalidLayerData(
                    f"file integrity checksum failed for {shown(entry.name)}: it changed size"
                )
            crc.update(chunk)
            left -= len(chunk)
            if left:
                yield chunk
                continue
            # The last piece is held back until the whole file checked out.
            if os.read(fd, 1):
                raise InvalidLayerData(
                    f"file integrity checksum failed for {shown(entry.name)}: it changed size"
                )
            if crc.digest() != entry.payload:
                raise InvalidLayerData(f"file integrity checksum failed for {shown(entry.name)}")
            yield chunk
    finally:
        os.close(fd)
