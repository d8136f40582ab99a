"""Images for tests: OCI layouts (with multi-platform indexes), OCI archives and docker
archives in both of their layouts, built from layer tarballs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerstore import LayerStore

from .tarballs import Entry, build_tar

LAYER_TYPES = {
    b"\x1f\x8b": "application/vnd.oci.image.layer.v1.tar+gzip",
    b"\x28\xb5": "application/vnd.oci.image.layer.v1.tar+zstd",
}
PLAIN_LAYER = "application/vnd.oci.image.layer.v1.tar"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def image_diffs(store: LayerStore, image: str) -> list[bytes]:
    """The image's layers as uncompressed diffs, base first."""
    diffs = []
    for layer in store.image_layers(image):
        with store.diff(layer.id, compression="none") as stream:
            diffs.append(stream.read())
    return diffs


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tars() -> list[bytes]:
    """Three small layers, each changing the one below."""
    return [
        build_tar([Entry(b"etc", "dir", mode=0o755), Entry(b"etc/os", "file", data=b"one\n"),
                   Entry(b"etc/gone", "file", data=b"soon removed")]),
        build_tar([Entry(b"etc", "dir", mode=0o755), Entry(b"etc/os", "file", data=b"two\n"),
                   Entry(b"etc/.wh.gone", "file")]),
        build_tar([Entry(b"srv", "dir", mode=0o755),
                   Entry(b"srv/data", "file", data=os.urandom(64 << 10))]),
    ]  # fmt: skip


@dataclass
class ImageParts:
    """One image: its layer tars, the blobs that carry them, its config."""

    tars: list[bytes]
    blobs: list[bytes]
    architecture: str = "amd64"
    created: str = "2024-01-02T03:04:05.123456789Z"
    diff_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.diff_ids:
            self.diff_ids = [sha256(tar) for tar in self.tars]

    def config(self) -> bytes:
        return json.dumps(
            {
                "created": self.created,
                "architecture": self.architecture,
                "os": "linux",
                "config": {"Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": self.diff_ids},
            }
        ).encode()


class Layout:
    """An OCI image layout being written."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.blobs = directory / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.manifests: list[dict[str, Any]] = []

    def blob(self, data: bytes, media_type: str) -> dict[str, Any]:
        (self.blobs / sha256(data)[7:]).write_bytes(data)
        return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}

    def manifest(self, image: ImageParts) -> dict[str, Any]:
        """Write the image's blobs and manifest; its descriptor."""
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": self.blob(image.config(), "application/vnd.oci.image.config.v1+json"),
            "layers": [self.blob(blob, LAYER_TYPES.get(blob[:2], PLAIN_LAYER))
                       for blob in image.blobs],
        }  # fmt: skip
        return self.blob(json.dumps(manifest).encode(), MANIFEST)

    def add(self, descriptor: dict[str, Any], ref: str | None = None) -> None:
        if ref is not None:
            descriptor = {**descriptor, "annotations": {"org.opencontainers.image.ref.name": ref}}
        self.manifests.append(descriptor)

    def add_index(self, images: list[ImageParts], ref: str) -> None:
        """A multi-platform index of ``images`` (one per architecture), tagged ``ref``."""
        entries = [
            {**self.manifest(image), "platform": {"os": "linux",
                                                  "architecture": image.architecture}}
            for image in images
        ]  # fmt: skip
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}
        self.add(self.blob(json.dumps(index).encode(), INDEX), ref)

    def finish(self) -> Path:
        (self.directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": self.manifests}
        (self.directory / "index.json").write_text(json.dumps(index))
        return self.directory


def oci_layout(directory: Path, image: ImageParts, ref: str = "latest") -> Path:
    layout = Layout(directory)
    layout.add(layout.manifest(image), ref)
    return layout.finish()


def tar_of(files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    """A tar archive (uncompressed) holding ``files``, with directories as needed."""
    output = io.BytesIO()
    with tarfile.open(fileobj=output, mode="w", format=tarfile.PAX_FORMAT) as archive:
        seen: set[str] = set()
        for name, data in files.items():
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth])
                if directory not in seen:
                    seen.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    archive.addfile(info)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return output.getvalue()


def oci_archive(path: Path, layout: Path) -> Path:
    files = {
        str(item.relative_to(layout)): item.read_bytes()
        for item in sorted(layout.rglob("*"))
        if item.is_file()
    }
    path.write_bytes(tar_of(files))
    return path


def docker_archive(path: Path, image: ImageParts, tags: list[str], *, legacy: bool) -> Path:
    """What ``docker save`` writes: the legacy layout (``<id>/layer.tar``, ``repositories``) or
    the newer one (an OCI layout's ``blobs/sha256`` with ``manifest.json``)."""
    config = image.config()
    files: dict[str, bytes] = {}
    symlinks: dict[str, str] = {}
    layers = []
    for number, tar in enumerate(image.tars):
        if legacy:
            layer_id = hashlib.sha256(f"layer {number}".encode()).hexdigest()
            name = f"{layer_id}/layer.tar"
            files[f"{layer_id}/VERSION"] = b"1.0"
            files[f"{layer_id}/json"] = json.dumps({"id": layer_id}).encode()
            if tar in image.tars[:number]:  # docker links a layer it has already written
                earlier = layers[image.tars.index(tar)]
                symlinks[name] = f"../{earlier}"
            else:
                files[name] = tar
        else:
            name = f"blobs/sha256/{sha256(tar)[7:]}"
            files[name] = tar
        layers.append(name)
    config_name = f"{sha256(config)[7:]}.json" if legacy else f"blobs/sha256/{sha256(config)[7:]}"
    files[config_name] = config
    files["manifest.json"] = json.dumps(
        [{"Config": config_name, "RepoTags": tags, "Layers": layers}]
    ).encode()
    if legacy:
        files["repositories"] = json.dumps({}).encode()
    path.write_bytes(tar_of(files, symlinks))
    return path
