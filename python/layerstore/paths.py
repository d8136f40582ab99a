"""Where a store keeps a layer's files, named once (containers/storage's ``tspath``/``datapath``).

``ROOT/<driver>-layers/`` holds ``layers.json``, each layer's tar-split file ``<id>.tar-split.gz``
and its big data directory ``<id>/`` with one file per item. A big data key made only of
``[0-9a-z.]`` is its own file name; any other key is stored as ``=`` followed by its standard
base64, as containers/storage names them, so both read the same items. The engines write a
tar-split file under its temporary name and rename it when it is whole, so a reader never sees
half of one.
"""

from __future__ import annotations

import os
import re

from .errors import InvalidBigDataName

__all__ = [
    "TAR_SPLIT_SUFFIX",
    "big_data_dir",
    "big_data_file_name",
    "big_data_path",
    "is_temporary_name",
    "tar_split_path",
    "tar_split_temporary_path",
]

TAR_SPLIT_SUFFIX = ".tar-split.gz"
_TEMPORARY_SUFFIX = ".tmp"

# Ours: ".NAME.PID.tmp" (atomic writes) and "ID.tar-split.gz.tmp"; Go's AtomicWriteFile: ".tmp-*".
# A staged put's "staging-TOKEN.tar-split.gz(.tmp)" is not one: its staging lock says whether
# its process still lives (store.staging).
_TEMPORARY = re.compile(
    r"(^\..+\.\d+\.tmp$)"
    rf"|(^[0-9a-f]{{64}}{re.escape(TAR_SPLIT_SUFFIX + _TEMPORARY_SUFFIX)}$)"
    r"|(^\.tmp-)"
)


def tar_split_path(layers_dir: str, layer_id: str) -> str:
    """The layer's tar-split file: how to rebuild its diff byte for byte."""
    return os.path.join(layers_dir, layer_id + TAR_SPLIT_SUFFIX)


def tar_split_temporary_path(tar_split: str) -> str:
    """Where a tar-split file is written before it is renamed to ``tar_split``."""
    return tar_split + _TEMPORARY_SUFFIX


def big_data_dir(layers_dir: str, layer_id: str) -> str:
    """The directory of the layer's big data items (one file each, see ``store.bigdata``)."""
    return os.path.join(layers_dir, layer_id)


_PLAIN_KEY = re.compile(r"[0-9a-z.]+")


def big_data_file_name(key: str) -> str:
    """The file name of the item ``key``; raises InvalidBigDataName for keys we cannot store."""
    if not isinstance(key, str) or not key:
        raise InvalidBigDataName(f"invalid big data key {key!r}: keys are non-empty strings")
    if key in (".", ".."):
        raise InvalidBigDataName(f"invalid big data key {key!r}: it names a directory")
    if _PLAIN_KEY.fullmatch(key):
        return key
    import base64

    try:
        encoded = "=" + base64.b64encode(key.encode("utf-8")).decode("ascii")
    except UnicodeEncodeError:
        raise InvalidBigDataName(f"invalid big data key {key!r}: not valid Unicode") from None
    if "/" in encoded:
        # Go would try to write into a subdirectory and fail; refuse clearly instead.
        raise InvalidBigDataName(
            f"invalid big data key {key!r}: its encoded file name {encoded!r} contains '/'"
        )
    return encoded


def big_data_path(layers_dir: str, layer_id: str, key: str) -> str:
    """The file of the layer's big data item ``key`` (InvalidBigDataName for a bad key)."""
    return os.path.join(big_data_dir(layers_dir, layer_id), big_data_file_name(key))


def is_temporary_name(name: str) -> bool:
    """A temporary file of an interrupted atomic write (ours or Go's) or tar-split write."""
    return bool(_TEMPORARY.search(name))
