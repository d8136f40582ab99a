"""Image references in a registry: ``[REGISTRY/]REPOSITORY[:TAG][@DIGEST]``, as docker and
podman read them (a first component with a ``.`` or ``:``, or ``localhost``, is a registry;
otherwise the image is on Docker Hub, ``docker.io/library/`` for a one-word name)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidImage

__all__ = ["RegistryReference", "parse_registry_reference"]

_REPOSITORY = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True, slots=True)
class RegistryReference:
    registry: str
    """``host[:port]`` as named (``docker.io`` for Docker Hub)."""
    repository: str
    tag: str = ""
    digest: str = ""

    @property
    def endpoint(self) -> str:
        """The host the API is served from (Docker Hub's differs from its name)."""
        return "registry-1.docker.io" if self.registry == "docker.io" else self.registry

    @property
    def is_local(self) -> bool:
        """A registry on this machine: plain HTTP is tried for it when TLS fails."""
        host = self.registry.rsplit(":", 1)[0] if not self.registry.startswith("[") else (
            self.registry.split("]")[0] + "]")  # fmt: skip
        return host in _LOCAL_HOSTS

    @property
    def reference(self) -> str:
        """What the manifest is asked for by: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def name(self) -> str:
        """The image's name in a store, as podman names a pulled image."""
        if self.digest and not self.tag:
            return f"{self.registry}/{self.repository}@{self.digest}"
        return f"{self.registry}/{self.repository}:{self.tag or 'latest'}"

    def with_tag(self, tag: str) -> RegistryReference:
        return RegistryReference(self.registry, self.repository, tag, "")

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_registry_reference(text: str) -> RegistryReference:
    """Parse ``[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`` (a ``docker://`` prefix is allowed)."""
    rest = text.removeprefix("docker://")
    rest, _, digest = rest.partition("@")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = "docker.io", rest
    repository, tag = path, ""
    last_slash = path.rfind("/")
    if ":" in path[last_slash + 1 :]:
        repository, _, tag = path.rpartition(":")
    if registry == "docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    if not _REPOSITORY.fullmatch(repository):
        raise InvalidImage(f"{text!r}: {repository!r} is not a valid repository name")
    if tag and not _TAG.fullmatch(tag):
        raise InvalidImage(f"{text!r}: {tag!r} is not a valid tag")
    if digest and not _DIGEST.fullmatch(digest):
        raise InvalidImage(f"{text!r}: {digest!r} is not a sha256 digest")
    return RegistryReference(registry, repository, tag, digest)
