"""What the verbs share: where the store lives, how failures and results are printed."""

from __future__ import annotations

import dataclasses
import enum
import errno
import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import IDMap, Layer, default_root, default_run_root

if TYPE_CHECKING:
    from ..image import Image

__all__ = [
    "PROG",
    "CommandError",
    "UsageError",
    "cell",
    "default_root",
    "default_run_root",
    "human_size",
    "image_to_json",
    "layer_to_json",
    "one_line",
    "os_error",
    "print_json",
    "print_table",
]

PROG = "layerstore"


# -- where the store lives ----------------------------------------------------------------------


# -- failures -----------------------------------------------------------------------------------


class CommandError(Exception):
    """A failure already worded for the user: printed as one line, exit status 1."""


class UsageError(Exception):
    """Arguments that parse but do not make sense together: one line, exit status 2."""


def one_line(text: str) -> str:
    """``text`` on one line: messages may quote names or data with newlines in them."""
    return " ".join(text.splitlines()) or "unknown error"


def _subordinate_owner(name: object) -> int | None:
    """The owner of ``name`` or of its nearest parent that can be looked at, if that owner is
    one of this user's subordinate uids (``/etc/subuid``); else None."""
    if not isinstance(name, str | bytes) or os.geteuid() == 0:
        return None
    path = os.fsdecode(name)
    while path:
        try:
            uid = os.lstat(path).st_uid
            break
        except OSError:
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent
    else:
        return None
    if uid == os.geteuid():
        return None
    import pwd

    from ..userns import subordinate_ranges

    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = str(os.geteuid())
    ranges = subordinate_ranges("/etc/subuid", user, os.geteuid())
    return uid if any(start <= uid < start + count for start, count in ranges) else None


def os_error(
    exc: OSError, subject: str | None = None, *, reading: bool = False, owner: bool = False
) -> str:
    """An OSError as one sentence naming the file (``subject`` if given), and what to do.

    ``reading``: the file is an input named on the command line, not part of the store.
    ``owner``: the caller owns the store, so another user is not the answer.
    """
    name = subject if subject is not None else exc.filename
    reason = exc.strerror or str(exc)
    text = f"{os.fsdecode(name)!r}: {reason}" if name is not None else reason
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
        return f"{text}: check the path"
    if reading and exc.errno in (errno.EACCES, errno.EPERM):
        return f"{text}: check the file's permissions"
    if owner and exc.errno in (errno.EACCES, errno.EPERM):
        subordinate = _subordinate_owner(name)
        if subordinate is not None:
            return (
                f"{text}: it belongs to uid {subordinate}, one of your subordinate ids: the "
                "store was written in a user namespace; run the command in 'layerstore "
                "unshare -- ...' too (docs/rootless.md)"
            )
        return (
            f"{text}: the store is yours, but this file's owner or mode shuts you out; "
            "`layerstore check` finds modes a killed process left widened, `repair` puts them "
            "back; a store written in 'layerstore unshare' (with subordinate ids) is read "
            "there, as root reads it (docs/rootless.md)"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{text}: run as a user who may write the store, or add --read-only to only read it"
    if exc.errno == errno.EROFS:
        return f"{text}: add --read-only to only read the store"
    if exc.errno == errno.ENOSPC:
        return f"{text}: free some space and try again"
    return text


# -- output -------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A field value as JSON: enums by lowercase name, tuples as lists, mappings as objects."""
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, IDMap):
        return value.to_json()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def layer_to_json(layer: Layer) -> dict[str, Any]:
    """Every field of a :class:`~layerstore.Layer` under its Python name, as JSON values.

    ``compression`` is the enum's lowercase name (``"gzip"``), id maps are objects with
    ``container_id``, ``host_id`` and ``size``. ``layerstore layers --json`` prints this for
    each layer.
    """
    return {field.name: _plain(getattr(layer, field.name)) for field in dataclasses.fields(layer)}


def image_to_json(image: Image) -> dict[str, Any]:
    """Every field of an :class:`~layerstore.image.Image` under its Python name, as
    :func:`layer_to_json` gives a layer's; ``layerstore images --json`` prints this."""
    return {field.name: _plain(getattr(image, field.name)) for field in dataclasses.fields(image)}


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON, ASCII only (safe whatever the terminal's encoding)."""
    print(json.dumps(value, indent=2))


def cell(text: str) -> str:
    """``text`` for a table cell: a control character would break the table's lines."""
    return text if text.isprintable() else repr(text)[1:-1]


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell, the last one left ragged."""
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]
    for row in (header, *rows):
        cells = [text.ljust(width) for text, width in zip(row[:-1], widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())


def human_size(count: int) -> str:
    """``count`` bytes for people: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    if count < 1024:
        return f"{count} B"
    size = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"
