"""Reading blobs and writing tarballs for the verbs, with a progress bar for long copies."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from .. import DiffSource
from .common import CommandError, os_error

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = [
    "LARGE",
    "Progress",
    "ProgressReader",
    "copy_stream",
    "open_blob",
    "read_all",
]

LARGE = 8 << 20
"""Copies above this many bytes get a progress bar, when stderr is a terminal."""

_CHUNK = 1 << 20


class Progress:
    """A byte-counting progress bar on stderr (bytes, rate, time left) for a long copy.

    It shows only when stderr is a terminal and the copy is large: from the start when
    ``total`` is known and above :data:`LARGE`; when it is unknown (a pipe), from the moment
    that many bytes have gone by, without a time left. Otherwise it stays silent, so scripts
    and logs never see it.
    """

    def __init__(
        self,
        description: str,
        total: int | None,
        *,
        enabled: bool | None = None,
        position: int | None = None,
    ):
        self._description = description
        self._position = position  # the bar's line, when several show at once
        self._total = total
        self._enabled = sys.stderr.isatty() if enabled is None else enabled
        self._count = 0
        self._bar: tqdm[Any] | None = None
        if self._enabled and total is not None and total > LARGE:
            self._start()

    @property
    def wanted(self) -> bool:
        """Whether a bar may show at all: whether a stream is worth counting."""
        return self._enabled and (self._total is None or self._total > LARGE)

    def _start(self) -> None:
        # Imported here: most commands never draw a bar, and start-up time is felt in a shell.
        from tqdm import tqdm

        self._bar = tqdm(
            desc=self._description,
            total=self._total,
            initial=self._count,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.2,
            leave=False,
            position=self._position,
        )

    def update(self, count: int) -> None:
        """Count ``count`` more bytes."""
        self._count += count
        if self._bar is not None:
            self._bar.update(count)
        elif self._enabled and self._total is None and self._count > LARGE:
            self._start()

    def close(self) -> None:
        """Take the bar off the terminal."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ProgressReader:
    """A binary reader that advances a :class:`Progress` by the bytes read through it.

    The store reads its input with ``readinto`` (native engine) or ``read`` (pure engine);
    both pass through to the wrapped stream and are counted.
    """

    def __init__(self, stream: BinaryIO, progress: Progress) -> None:
        self._stream = stream
        self._progress = progress

    def read(self, size: int = -1, /) -> bytes:
        """Read up to ``size`` bytes (all that is left when negative)."""
        data = self._stream.read(size)
        self._progress.update(len(data))
        return data

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        """Read into ``buffer``; the number of bytes read, 0 at the end."""
        count: int | None = self._stream.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            self._progress.update(count)
        return count or 0


def _regular_size(stream: BinaryIO) -> int | None:
    """The size of the regular file behind ``stream``; None for pipes and terminals."""
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


@contextmanager
def open_blob(path: str, description: str, *, position: int | None = None) -> Iterator[DiffSource]:
    """The layer blob named on the command line (``-``: stdin), counted for a progress bar
    when one may show.

    A file that needs no bar is handed to the store by name, so the native engine reads it
    without coming back into Python for each chunk.
    """
    with ExitStack() as cleanup:
        if path == "-":
            if sys.stdin.isatty():
                raise CommandError(
                    "refusing to read a layer blob from a terminal: pipe one in, or name a file"
                )
            stream: BinaryIO = sys.stdin.buffer
        else:
            try:
                stream = cleanup.enter_context(open(path, "rb"))
            except OSError as exc:
                raise CommandError(f"cannot read {os_error(exc, path, reading=True)}") from None
        progress = cleanup.enter_context(
            Progress(description, _regular_size(stream), position=position)
        )
        if progress.wanted:
            yield ProgressReader(stream, progress)
        else:
            yield path if path != "-" else stream


def read_all(path: str) -> bytes:
    """The whole of the file named on the command line (``-``: stdin)."""
    if path == "-":
        if sys.stdin.isatty():
            raise CommandError("refusing to read from a terminal: pipe the data in, or name a file")
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as source:
            return source.read()
    except OSError as exc:
        raise CommandError(f"cannot read {os_error(exc, path, reading=True)}") from None


def copy_stream(source: BinaryIO, target: IO[bytes], progress: Progress) -> int:
    """Copy ``source`` to ``target`` in 1 MiB chunks, counting them; the bytes copied."""
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    total = 0
    while True:
        count: int | None = source.readinto(view)  # type: ignore[attr-defined]
        if not count:
            return total
        target.write(view[:count])
        progress.update(count)
        total += count
