"""The native engine: thin wrappers over the Rust extension ``layerstore._native``."""

from __future__ import annotations

import os

from .. import _native

__all__ = ["NativeEngine"]


class NativeEngine:
    """Byte work done in Rust, detached from the interpreter while it runs."""

    name = "native"

    def copy_tree(self, source: str, destination: str) -> None:
        _native.copy_tree(os.fspath(source), os.fspath(destination))
