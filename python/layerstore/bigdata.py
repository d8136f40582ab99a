"""Big data items: named blobs kept beside a layer's record, one file each.

Files live in ``ROOT/<driver>-layers/<id>/``. A key made only of ``[0-9a-z.]`` is its own file
name; any other key is stored as ``=`` followed by its standard base64, as containers/storage
names them, so both read the same items.
"""

from __future__ import annotations

import base64
import re

from .errors import InvalidBigDataName

__all__ = ["big_data_file_name"]

_PLAIN_KEY = re.compile(r"[0-9a-z.]+")


def big_data_file_name(key: str) -> str:
    """The file name of the item ``key``; raises InvalidBigDataName for keys we cannot store."""
    if not isinstance(key, str) or not key:
        raise InvalidBigDataName(f"invalid big data key {key!r}: keys are non-empty strings")
    if key in (".", ".."):
        raise InvalidBigDataName(f"invalid big data key {key!r}: it names a directory")
    if _PLAIN_KEY.fullmatch(key):
        return key
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
