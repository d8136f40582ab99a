"""Saving an image of the store: :meth:`LayerStore.save`.

The layers come from :meth:`~layerstore.LayerStore.diff` (a layer applied from a blob gives
that blob's tar back byte for byte, so a loaded image saved uncompressed, or with its own
compression, has the blobs it had), written in parallel, each digested as it is written. The
config is the image's own, its ``rootfs.diff_ids`` made to describe the layers written (kept
byte for byte when it already does, so the image id stays); the manifest is the image's own
when it describes exactly these blobs, else a new one. Destinations:

* ``oci:DIR[:REF]``: an OCI image layout, made or added to (an image of the same REF is
  replaced in ``index.json``; blobs are shared by digest);
* ``oci-archive:FILE[:REF]``: that layout as a tar file;
* ``docker-archive:FILE``: ``manifest.json``, ``<config>.json`` and uncompressed
  ``<diffid>.tar`` layers, as ``podman save`` writes them; the image's names are its RepoTags.

Files appear whole or not at all: blobs and archives are written under temporary names and
renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..atomic import write_atomic
from ..errors import InvalidImage
from ..image import MANIFEST_KEY, Image
from ..layer import Compression, Layer
from ..store.chain import default_workers
from .references import parse_reference
from .sources import (
    IMAGE_NAME,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
)

if TYPE_CHECKING:
    from ..store.layer_store import LayerStore

__all__ = [
    "LAYER_TYPES",
    "LayerProgress",
    "config_of",
    "describe_config",
    "diff_id_of",
    "save_image",
    "stored_manifest",
]

LayerProgress = Callable[[int, Layer], Callable[[int], None]]
"""Given layer N, returns what to call with each count of bytes written for it."""

LAYER_TYPES = {
    Compression.NONE: "application/vnd.oci.image.layer.v1.tar",
    Compression.GZIP: "application/vnd.oci.image.layer.v1.tar+gzip",
    Compression.ZSTD: "application/vnd.oci.image.layer.v1.tar+zstd",
}
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class _Blob:
    digest: str
    size: int
    diff_id: str


def save_image(
    store: LayerStore,
    name: str,
    destination: str,
    *,
    compression: str | None = None,
    workers: int | None = None,
    progress: LayerProgress | None = None,
) -> str:
    """What :meth:`LayerStore.save` does; returns the manifest's digest."""
    reference = parse_reference(destination)
    image = store.image(name)
    layers = store.image_layers(image.id)
    if reference.transport == "docker-archive":
        if compression not in (None, "none"):
            raise InvalidImage("docker archives hold uncompressed layers: drop --compression")
        wanted = Compression.NONE
    else:
        chosen = {"none": Compression.NONE, "gzip": Compression.GZIP,
                  "zstd": Compression.ZSTD}.get(compression or "gzip")  # fmt: skip
        if chosen is None:
            raise InvalidImage(f"unknown compression {compression!r}: none, gzip or zstd")
        wanted = chosen
    config = config_of(store, image)
    target = os.path.abspath(reference.path)
    if reference.transport == "oci":
        os.makedirs(target, exist_ok=True)
        return _write_layout(store, image, layers, config, target, reference.ref,
                             wanted, workers, progress)  # fmt: skip
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".layerstore-save-") as work:
        if reference.transport == "oci-archive":
            digest = _write_layout(store, image, layers, config, work,
                                   reference.ref, wanted, workers, progress)  # fmt: skip
        else:
            digest = _write_docker(store, image, layers, config, work, workers, progress)
        _tar_directory(work, target)
    return digest


def config_of(store: LayerStore, image: Image) -> bytes:
    """The image's config item: under its id's digest, as containers/image stores it."""
    keys = [f"sha256:{image.id}"] + [
        key for key in image.big_data_names if key.startswith("sha256:")
    ]
    for key in keys:
        if key in image.big_data_names:
            return store.image_big_data(image.id, key)
    raise InvalidImage(
        f"image {image.id} has no config (no big data item sha256:{image.id}): only images "
        "loaded, pulled or committed with their config can be saved"
    )


# -- blobs -----------------------------------------------------------------------------------


def _write_blobs(
    store: LayerStore,
    layers: list[Layer],
    directory: str,
    name_of: Callable[[str, str], str],
    wanted: Compression,
    workers: int | None,
    progress: LayerProgress | None,
) -> list[_Blob]:
    """Each layer's diff, compressed as ``wanted``, written to ``directory`` under the name
    ``name_of(digest, diff_id)`` gives, several at a time."""

    def write(number: int, layer: Layer) -> _Blob:
        advance = progress(number, layer) if progress else None
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".blob-")
        try:
            digest = hashlib.sha256()
            size = 0
            with (
                os.fdopen(handle, "wb") as output,
                store.diff(layer.id, compression=wanted) as diff,
            ):
                while chunk := diff.read(_CHUNK):
                    digest.update(chunk)
                    output.write(chunk)
                    size += len(chunk)
                    if advance:
                        advance(len(chunk))
                output.flush()
                os.fsync(output.fileno())
            blob_digest = "sha256:" + digest.hexdigest()
            diff_id = blob_digest if wanted is Compression.NONE else diff_id_of(store, layer)
            os.chmod(temporary, 0o644)
            os.replace(temporary, os.path.join(directory, name_of(blob_digest, diff_id)))
            return _Blob(blob_digest, size, diff_id)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    count = max(1, min(workers or default_workers(), len(layers) or 1))
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="save") as pool:
        futures = [pool.submit(write, number, layer) for number, layer in enumerate(layers)]
        return [future.result() for future in futures]


def diff_id_of(store: LayerStore, layer: Layer) -> str:
    """The layer's DiffID: recorded when it was applied, else digested from its diff."""
    if layer.uncompressed_digest:
        return layer.uncompressed_digest
    digest = hashlib.sha256()
    with store.diff(layer.id, compression="none") as diff:
        while chunk := diff.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def describe_config(config: bytes, diff_ids: list[str]) -> bytes:
    """``config`` with ``rootfs.diff_ids`` = ``diff_ids``: unchanged when it says so already."""
    try:
        parsed = json.loads(config)
    except ValueError as exc:
        raise InvalidImage(f"the image's config is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidImage("the image's config is not a JSON object")
    if (parsed.get("rootfs") or {}).get("diff_ids") == diff_ids:
        return config
    parsed["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    return json.dumps(parsed, separators=(",", ":")).encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- OCI layouts -----------------------------------------------------------------------------


def _write_layout(
    store: LayerStore,
    image: Image,
    layers: list[Layer],
    config: bytes,
    root: str,
    ref: str,
    wanted: Compression,
    workers: int | None,
    progress: LayerProgress | None,
) -> str:
    blobs_dir = os.path.join(root, "blobs", "sha256")
    os.makedirs(blobs_dir, exist_ok=True)
    blobs = _write_blobs(store, layers, blobs_dir, lambda digest, _diff_id: digest[7:],
                         wanted, workers, progress)  # fmt: skip
    config = describe_config(config, [blob.diff_id for blob in blobs])
    config_digest = _sha256(config)
    descriptors = [
        {"mediaType": LAYER_TYPES[wanted], "digest": blob.digest, "size": blob.size}
        for blob in blobs
    ]
    manifest = (
        stored_manifest(store, image, config_digest, descriptors)
        or json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": descriptors,
            },
            separators=(",", ":"),
        ).encode()
    )
    manifest_digest = _sha256(manifest)
    for data, digest in ((config, config_digest), (manifest, manifest_digest)):
        write_atomic(os.path.join(blobs_dir, digest[7:]), data, mode=0o644)
    annotations: dict[str, str] = {}
    if ref:
        annotations[REF_NAME] = ref
    if image.names:
        annotations[IMAGE_NAME] = image.names[0]
    entry: dict[str, Any] = {
        "mediaType": OCI_MANIFEST,
        "digest": manifest_digest,
        "size": len(manifest),
    }
    if annotations:
        entry["annotations"] = annotations
    _add_to_index(root, entry, ref)
    return manifest_digest


def stored_manifest(
    store: LayerStore, image: Image, config_digest: str, layers: list[dict[str, Any]]
) -> bytes | None:
    """The image's own OCI manifest when it describes exactly this config and these blobs."""
    if MANIFEST_KEY not in image.big_data_names:
        return None
    data = store.image_big_data(image.id, MANIFEST_KEY)
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        parsed = json.loads(data)
        same = (
            parsed.get("mediaType", OCI_MANIFEST) == OCI_MANIFEST
            and parsed["config"]["digest"] == config_digest
            and [(d["digest"], d["size"], d["mediaType"]) for d in parsed["layers"]]
            == [(d["digest"], d["size"], d["mediaType"]) for d in layers]
        )
        if same:
            return data
    return None


def _add_to_index(root: str, entry: dict[str, Any], ref: str) -> None:
    path = os.path.join(root, "index.json")
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    with contextlib.suppress(FileNotFoundError):
        with open(path, "rb") as existing:
            try:
                index = json.load(existing)
            except ValueError as exc:
                raise InvalidImage(f"{path} is not valid JSON: {exc}") from None
    manifests = [
        item
        for item in index.get("manifests") or []
        if not ref or (item.get("annotations") or {}).get(REF_NAME) != ref
    ]
    manifests.append(entry)
    index["manifests"] = manifests
    write_atomic(os.path.join(root, "oci-layout"), b'{"imageLayoutVersion": "1.0.0"}', mode=0o644)
    write_atomic(path, json.dumps(index, separators=(",", ":")).encode(), mode=0o644)


# -- docker archives -------------------------------------------------------------------------


def _write_docker(
    store: LayerStore,
    image: Image,
    layers: list[Layer],
    config: bytes,
    root: str,
    workers: int | None,
    progress: LayerProgress | None,
) -> str:
    blobs = _write_blobs(store, layers, root, lambda digest, _diff_id: f"{digest[7:]}.tar",
                         Compression.NONE, workers, progress)  # fmt: skip
    config = describe_config(config, [blob.diff_id for blob in blobs])
    config_name = f"{_sha256(config)[7:]}.json"
    write_atomic(os.path.join(root, config_name), config, mode=0o644)
    manifest = [
        {
            "Config": config_name,
            "RepoTags": list(image.names),
            "Layers": [f"{blob.digest[7:]}.tar" for blob in blobs],
        }
    ]
    data = json.dumps(manifest, separators=(",", ":")).encode()
    write_atomic(os.path.join(root, "manifest.json"), data, mode=0o644)
    return _sha256(data)


# -- archives --------------------------------------------------------------------------------


def _tar_directory(directory: str, target: str) -> None:
    """The files below ``directory`` as a tar at ``target`` (atomically replaced)."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".layerstore-")
    try:
        with os.fdopen(handle, "wb") as output:
            with tarfile.open(fileobj=output, mode="w", format=tarfile.PAX_FORMAT) as archive:
                for path in _files_below(directory):
                    info = archive.gettarinfo(os.path.join(directory, path), arcname=path)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mtime = 0
                    info.mode = 0o755 if info.isdir() else 0o644
                    if info.isdir():
                        archive.addfile(info)
                    else:
                        with open(os.path.join(directory, path), "rb") as data:
                            archive.addfile(info, data)
            output.flush()
            os.fsync(output.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _files_below(directory: str) -> Iterator[str]:
    for current, subdirectories, files in os.walk(directory):
        subdirectories.sort()
        relative = os.path.relpath(current, directory)
        if relative != ".":
            yield relative
        for name in sorted(files):
            yield os.path.normpath(os.path.join(relative, name))
