"""Pulling an image from a registry: :meth:`LayerStore.pull`.

The manifest is asked for by tag or digest, accepting OCI indexes and manifests and Docker
manifest lists and schema 2 manifests; from an index the platform is picked as ``load`` picks
it. Then the image goes in exactly as a load does (``transfer.load.store_image``): the layers
as one verified chain with containers/image's ids, each blob streamed from the registry
straight into its staged apply (no temporary copy: the apply digests what it reads), up to six
at once as containers/image fetches them, layers the store has reused without a request. A
broken connection resumes with a Range request (:class:`~.client.BlobReader`); a blob that
does not match its digest fails the pull and leaves nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import InvalidImage, RegistryError
from ..image import Image
from ..transfer.load import BlobWrapper, store_image
from ..transfer.references import normalize_name
from ..transfer.sources import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    BlobFiles,
    BlobOpener,
    Platform,
    from_manifest,
    pick_platform,
)
from .auth import Credentials
from .client import BlobReader, RegistryClient
from .reference import RegistryReference, parse_registry_reference

if TYPE_CHECKING:
    from ..store.layer_store import LayerStore

__all__ = ["ACCEPTED_MANIFESTS", "pull_image"]

ACCEPTED_MANIFESTS = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
PULL_WORKERS = 6  # containers/image's default of blobs fetched at once
_MAX_MANIFEST = 4 << 20


class _RegistryBlobs(BlobFiles):
    """A repository's blobs as :func:`from_manifest` reads a layout's files."""

    def __init__(self, client: RegistryClient) -> None:
        super().__init__(f"{client.reference.registry}/{client.repository}")
        self._client = client
        self._sizes: dict[str, int] = {}

    def blob_name(self, digest: object, what: str) -> str:
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise InvalidImage(f"{what}: unsupported digest {digest!r} (only sha256 is)")
        return digest

    def size(self, name: str) -> int:
        if name not in self._sizes:
            response = self._client.request(
                "HEAD", f"/v2/{self._client.repository}/blobs/{name}", what=f"blob {name}"
            )
            self._sizes[name] = int(response.headers.get("Content-Length", -1))
        return self._sizes[name]

    def opener(self, name: str) -> BlobOpener:
        size = self._sizes.get(name)
        return lambda: BlobReader(self._client, name, size)  # type: ignore[return-value]

    def read(self, name: str, what: str) -> bytes:
        response = self._client.request(
            "GET", f"/v2/{self._client.repository}/blobs/{name}", what=f"{what} {name}"
        )
        return bytes(response.data)


def fetch_manifest(client: RegistryClient, reference: str) -> tuple[bytes, str, str]:
    """The manifest (or index) ``reference`` names: its bytes, digest and media type. A
    manifest asked for by digest must have that digest."""
    response = client.request(
        "GET",
        f"/v2/{client.repository}/manifests/{reference}",
        what=f"manifest {reference}",
        headers={"Accept": ", ".join(ACCEPTED_MANIFESTS)},
    )
    data = bytes(response.data)
    if len(data) > _MAX_MANIFEST:
        raise InvalidImage(f"{client.reference}: manifest {reference} is too large")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if reference.startswith("sha256:") and digest != reference:
        raise InvalidImage(
            f"{client.reference.registry}/{client.repository}: the registry served manifest "
            f"{digest} for {reference}"
        )
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    try:
        media_type = json.loads(data).get("mediaType") or media_type
    except (ValueError, AttributeError):
        raise InvalidImage(f"{client.reference}: manifest {reference} is not JSON") from None
    return data, digest, media_type


def pull_image(
    store: LayerStore,
    reference: str,
    *,
    names: Iterable[str] | None = None,
    platform: str | None = None,
    credentials: tuple[str, str] | Credentials | None = None,
    auth_file: str | None = None,
    ca_file: str | None = None,
    tls_verify: bool = True,
    plain_http: bool | None = None,
    timeout: float = 60.0,
    wrap_blob: BlobWrapper | None = None,
) -> Image:
    """What :meth:`LayerStore.pull` does."""
    parsed: RegistryReference = parse_registry_reference(reference)
    if isinstance(credentials, tuple):
        credentials = Credentials(*credentials)
    client = RegistryClient(parsed, credentials=credentials, auth_file=auth_file,
                            ca_file=ca_file, tls_verify=tls_verify,
                            plain_http=plain_http, timeout=timeout)  # fmt: skip
    data, digest, media_type = fetch_manifest(client, parsed.reference)
    if media_type in (OCI_INDEX, DOCKER_LIST):
        entries = json.loads(data).get("manifests") or []
        wanted = Platform.parse(platform) if platform else None
        chosen = pick_platform(entries, wanted, str(parsed))
        data, digest, media_type = fetch_manifest(client, str(chosen.get("digest")))
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise InvalidImage(f"{parsed}: unsupported manifest type {media_type!r}")
    given = tuple(normalize_name(name) for name in names) if names is not None else (parsed.name,)
    image = from_manifest(_RegistryBlobs(client), data, digest, ())
    try:
        return store_image(store, image, str(parsed), given, PULL_WORKERS, wrap_blob)
    except RegistryError as exc:
        raise RegistryError(f"{exc}; nothing was pulled", exc.status) from exc
