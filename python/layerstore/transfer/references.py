"""Where an image is loaded from or saved to: containers/image's transport names.

``oci:DIR[:REF]`` (an OCI image layout directory), ``oci-archive:FILE[:REF]`` (that layout
in a tar file) and ``docker-archive:FILE[:NAME]`` (what ``docker save`` and ``podman save``
write). As containers/image parses them, the path ends at the first ``:``; what follows is the
image's reference within the layout or archive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import InvalidImage

__all__ = ["TRANSPORTS", "ImageReference", "normalize_name", "parse_reference"]

Transport = Literal["oci", "oci-archive", "docker-archive"]
TRANSPORTS: tuple[Transport, ...] = ("oci", "oci-archive", "docker-archive")


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A parsed ``TRANSPORT:PATH[:REF]``."""

    transport: Transport
    path: str
    ref: str = ""
    """The layout's ``org.opencontainers.image.ref.name``, or the archive's image name (or
    ``@N``, its N-th image); empty: the only image there is."""

    def __str__(self) -> str:
        return f"{self.transport}:{self.path}" + (f":{self.ref}" if self.ref else "")


def parse_reference(text: str) -> ImageReference:
    """Parse ``oci:DIR[:REF]``, ``oci-archive:FILE[:REF]`` or ``docker-archive:FILE[:NAME]``."""
    transport, separator, rest = text.partition(":")
    if not separator or transport not in TRANSPORTS:
        known = ", ".join(f"{name}:PATH" for name in TRANSPORTS)
        raise InvalidImage(f"{text!r} is not an image location: expected one of {known}")
    path, _, ref = rest.partition(":")
    if not path:
        raise InvalidImage(f"{text!r}: the path is empty")
    return ImageReference(transport, path, ref)


def normalize_name(name: str) -> str:
    """A docker reference as podman stores it: ``busybox`` is ``docker.io/library/busybox:latest``
    and ``app:1`` is ``docker.io/library/app:1``; a name with a registry keeps it."""
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}"
        first, _, rest = name.partition("/")
    if first == "docker.io" and "/" not in rest:
        name = f"docker.io/library/{rest}"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        name += ":latest"
    return name
