"""Pushing an image to a registry: :meth:`LayerStore.push`.

For each layer, as containers/image does it: a blob the registry has already (HEAD on the
layer's own compressed digest) is not sent again; one it has in another repository the image
was named from is mounted (``POST .../uploads/?mount=&from=``); any other is streamed from the
store's ``diff`` in chunks (``POST``, then ``PATCH`` with ``Content-Range``, then ``PUT`` with
the digest computed on the way), compressed as the layer's blob was unless asked otherwise, so
the layer keeps its own digest whenever the bytes produced are its blob's. Then the config and
the manifest: the image's own manifest when it describes exactly these blobs (its digest is
kept), else a new OCI manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from ..errors import InvalidImage, RegistryError
from ..image import MANIFEST_KEY, Image
from ..layer import Compression, Layer
from ..transfer.save import LAYER_TYPES, config_of, describe_config, diff_id_of
from ..transfer.sources import DOCKER_MANIFEST, OCI_CONFIG, OCI_MANIFEST
from .auth import Credentials
from .client import RegistryClient
from .reference import RegistryReference, parse_registry_reference

if TYPE_CHECKING:
    from ..store.layer_store import LayerStore

__all__ = ["push_image"]

CHUNK = 16 << 20  # bytes per PATCH: memory stays at one chunk per blob being sent
PUSH_WORKERS = 4
_COMPRESSIONS = {"none": Compression.NONE, "gzip": Compression.GZIP, "zstd": Compression.ZSTD}

Progress = Callable[[int, Layer], Callable[[int], None]]


@dataclass(frozen=True, slots=True)
class _Pushed:
    digest: str
    size: int
    media_type: str
    diff_id: str


def push_image(
    store: LayerStore,
    image_name: str,
    reference: str,
    *,
    compression: str | None = None,
    credentials: tuple[str, str] | Credentials | None = None,
    auth_file: str | None = None,
    ca_file: str | None = None,
    tls_verify: bool = True,
    plain_http: bool | None = None,
    timeout: float = 60.0,
    progress: Progress | None = None,
) -> str:
    """What :meth:`LayerStore.push` does; returns the manifest's digest."""
    target = parse_registry_reference(reference)
    if target.digest:
        raise InvalidImage(f"{reference}: push to a tag, not a digest")
    wanted = None
    if compression is not None:
        wanted = _COMPRESSIONS.get(compression)
        if wanted is None:
            raise InvalidImage(f"unknown compression {compression!r}: none, gzip or zstd")
    if isinstance(credentials, tuple):
        credentials = Credentials(*credentials)
    client = RegistryClient(target, credentials=credentials, auth_file=auth_file,
                            ca_file=ca_file, tls_verify=tls_verify,
                            plain_http=plain_http, timeout=timeout)  # fmt: skip
    image = store.image(image_name)
    layers = store.image_layers(image.id)
    config = config_of(store, image)
    sources = _mount_sources(image, target)

    def push_layer(number: int, layer: Layer) -> _Pushed:
        advance = progress(number, layer) if progress else None
        return _push_layer(store, client, layer, wanted, sources, advance)

    with ThreadPoolExecutor(max_workers=max(1, min(PUSH_WORKERS, len(layers)))) as pool:
        futures = [pool.submit(push_layer, n, layer) for n, layer in enumerate(layers)]
        pushed = [future.result() for future in futures]
    config = describe_config(config, [blob.diff_id for blob in pushed])
    config_digest = _sha256(config)
    if not _has_blob(client, config_digest):
        _upload(client, config_digest, [config])
    manifest, media_type = _manifest(store, image, config, config_digest, pushed)
    digest = _sha256(manifest)
    client.request(
        "PUT",
        f"/v2/{client.repository}/manifests/{target.tag or 'latest'}",
        what=f"manifest {digest} as {target.tag or 'latest'}",
        scope="pull,push",
        headers={"Content-Type": media_type},
        body=manifest,
        ok=(200, 201, 202),
    )
    return digest


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _mount_sources(image: Image, target: RegistryReference) -> list[str]:
    """Other repositories of the target's registry the image is named from: where its blobs
    may be already, to be mounted rather than sent."""
    sources = []
    for name in image.names:
        if name.startswith(f"{target.registry}/"):
            repository = name[len(target.registry) + 1 :].split("@")[0].rsplit(":", 1)[0]
            if repository != target.repository and repository not in sources:
                sources.append(repository)
    return sources


def _has_blob(client: RegistryClient, digest: str) -> bool:
    try:
        client.request(
            "HEAD", f"/v2/{client.repository}/blobs/{digest}", what=f"blob {digest}",
            scope="pull,push",
        )  # fmt: skip
    except RegistryError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _push_layer(
    store: LayerStore,
    client: RegistryClient,
    layer: Layer,
    wanted: Compression | None,
    sources: list[str],
    advance: Callable[[int], None] | None,
) -> _Pushed:
    compression = layer.compression if wanted is None else wanted
    if compression not in LAYER_TYPES:
        compression = Compression.GZIP  # bzip2 and xz blobs are sent as gzip
    media_type = LAYER_TYPES[compression]
    known = layer.compressed_digest if compression == layer.compression else ""
    if known and layer.uncompressed_digest:
        if _has_blob(client, known):
            return _Pushed(known, layer.compressed_size, media_type, layer.uncompressed_digest)
        for source in sources:
            if _mount(client, known, source):
                return _Pushed(known, layer.compressed_size, media_type, layer.uncompressed_digest)
    digest = hashlib.sha256()
    size = 0

    def chunks() -> Any:
        nonlocal size
        with store.diff(layer.id, compression=compression) as diff:
            while chunk := diff.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if advance:
                    advance(len(chunk))
                yield chunk

    location = _start_upload(client)
    location = _send_chunks(client, location, chunks())
    blob_digest = "sha256:" + digest.hexdigest()
    _finish_upload(client, location, blob_digest)
    diff_id = blob_digest if compression is Compression.NONE else diff_id_of(store, layer)
    return _Pushed(blob_digest, size, media_type, diff_id)


def _mount(client: RegistryClient, digest: str, source: str) -> bool:
    query = urlencode({"mount": digest, "from": source})
    try:
        response = client.request(
            "POST", f"/v2/{client.repository}/blobs/uploads/?{query}",
            what=f"mount of blob {digest} from {source}", scope="pull,push", ok=(201, 202),
        )  # fmt: skip
    except RegistryError:
        return False
    if response.status == 202:  # not there: the registry opened an upload instead
        location = response.headers.get("Location", "")
        if location:
            client.request("DELETE", location, what="an upload not needed", scope="pull,push",
                           ok=(200, 202, 204, 404))  # fmt: skip
        return False
    return True


def _start_upload(client: RegistryClient) -> str:
    response = client.request(
        "POST", f"/v2/{client.repository}/blobs/uploads/", what="an upload",
        scope="pull,push", ok=(202,),
    )  # fmt: skip
    location = response.headers.get("Location")
    if not location:
        raise RegistryError(f"{client.reference.registry}: an upload without a Location")
    return str(location)


def _send_chunks(client: RegistryClient, location: str, chunks: Any) -> str:
    offset = 0
    for chunk in chunks:
        end = offset + len(chunk) - 1
        response = client.request(
            "PATCH", location, what=f"upload of bytes {offset}-{end}", scope="pull,push",
            headers={"Content-Type": "application/octet-stream",
                     "Content-Range": f"{offset}-{end}", "Content-Length": str(len(chunk))},
            body=chunk, ok=(202,),
        )  # fmt: skip
        location = str(response.headers.get("Location") or location)
        offset = end + 1
    return location


def _finish_upload(client: RegistryClient, location: str, digest: str, body: bytes = b"") -> None:
    separator = "&" if "?" in location else "?"
    client.request(
        "PUT", f"{location}{separator}{urlencode({'digest': digest})}",
        what=f"blob {digest}", scope="pull,push",
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(body))},
        body=body, ok=(201, 204),
    )  # fmt: skip


def _upload(client: RegistryClient, digest: str, parts: list[bytes]) -> None:
    """A small blob (the config) in one request."""
    _finish_upload(client, _start_upload(client), digest, b"".join(parts))


def _manifest(
    store: LayerStore, image: Image, config: bytes, config_digest: str, pushed: list[_Pushed]
) -> tuple[bytes, str]:
    """The image's own manifest when it names exactly this config and these blobs, else a new
    OCI manifest; with its media type."""
    if MANIFEST_KEY in image.big_data_names:
        data = store.image_big_data(image.id, MANIFEST_KEY)
        try:
            parsed = json.loads(data)
            media_type = parsed.get("mediaType") or OCI_MANIFEST
            if (
                media_type in (OCI_MANIFEST, DOCKER_MANIFEST)
                and parsed["config"]["digest"] == config_digest
                and [layer["digest"] for layer in parsed["layers"]]
                == [blob.digest for blob in pushed]
            ):
                return data, media_type
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [
            {"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}
            for blob in pushed
        ],
    }
    return json.dumps(manifest, separators=(",", ":")).encode(), OCI_MANIFEST
