"""Images in and out of the store: OCI layouts, OCI archives and docker archives.

``references`` parses containers/image's transport names, ``sources`` reads an image from a
layout or archive, ``load`` puts one into the store as containers/image does, ``save`` writes one
out. :meth:`LayerStore.load` and :meth:`LayerStore.save` are the entry points.
"""

from __future__ import annotations

from .load import BlobWrapper, load_image
from .references import ImageReference, normalize_name, parse_reference
from .save import LayerProgress, save_image
from .sources import LayerBlob, Platform, machine_platform

__all__ = [
    "BlobWrapper",
    "ImageReference",
    "LayerBlob",
    "LayerProgress",
    "Platform",
    "load_image",
    "machine_platform",
    "normalize_name",
    "parse_reference",
    "save_image",
]
