"""Digests as the store records them (``"sha256:<hex>"``); mirrors rust/digest.rs."""

from __future__ import annotations

import hashlib

__all__ = ["sha256_digest"]


def sha256_digest(data: bytes | bytearray | memoryview, /) -> str:
    """``"sha256:<hex>"`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
