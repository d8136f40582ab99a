"""Reading an image from an OCI layout, an OCI archive or a docker archive.

Each source resolves to one :class:`ResolvedImage`: the manifest (as stored, or as
containers/image makes it for a docker archive), the config and the layer blobs in order, each
blob opened on demand as a stream of its own so the layers of a chain are read in parallel.
Archives are read in place: each blob is a window on the tar file at the member's offset,
never extracted to a temporary directory (a compressed archive is decompressed to one file
first, as its members cannot be reached otherwise).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import platform as host_platform
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..errors import InvalidImage
from .references import ImageReference, normalize_name

__all__ = [
    "BlobFiles",
    "BlobOpener",
    "LayerBlob",
    "Platform",
    "ResolvedImage",
    "from_manifest",
    "machine_platform",
    "open_image",
    "pick_platform",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_NAME = "io.containerd.image.name"
_INDEXES = (OCI_INDEX, DOCKER_LIST)
_MAX_JSON = 64 << 20  # an index, manifest or config larger than this is not one

BlobOpener = Callable[[], BinaryIO]


@dataclass(frozen=True, slots=True)
class Platform:
    """``os/architecture[/variant]`` as OCI indexes give it."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidImage(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
        return cls(*parts)

    def matches(self, entry: Any) -> bool:
        if not isinstance(entry, dict):
            return False
        variant = entry.get("variant") or ""
        return (
            entry.get("os") == self.os
            and entry.get("architecture") == self.architecture
            and (not self.variant or variant == self.variant)
        )

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
                  "i386": "386"}  # fmt: skip


def machine_platform() -> Platform:
    """The platform of this machine, in OCI's words."""
    machine = host_platform.machine()
    return Platform("linux", _ARCHITECTURES.get(machine, machine))


@dataclass(frozen=True, slots=True)
class LayerBlob:
    """One layer of the image: how to read it and what its descriptor says."""

    open: BlobOpener
    digest: str
    """The blob's digest as the manifest gives it; for a docker archive its DiffID."""
    size: int
    media_type: str
    verify_digest: bool
    """False where the digest is not the blob's own (a docker archive's compressed layer)."""
    path: str = ""
    """The blob's file, when it is one (a layout's): read directly, without a Python stream."""


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    manifest: bytes
    manifest_digest: str
    config: bytes
    config_digest: str
    layers: tuple[LayerBlob, ...]
    names: tuple[str, ...]
    """Names the source gives the image (a docker archive's RepoTags), normalized."""


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise InvalidImage(f"{what} is not valid JSON: {exc}") from None


def _digest_hex(digest: Any, what: str) -> str:
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise InvalidImage(f"{what}: unsupported digest {digest!r} (only sha256 is)")
    hex_part = digest.removeprefix("sha256:")
    if len(hex_part) != 64 or not all(c in "0123456789abcdef" for c in hex_part):
        raise InvalidImage(f"{what}: malformed digest {digest!r}")
    return hex_part


# -- windows on files ------------------------------------------------------------------------


class _Window(io.RawIOBase):
    """``size`` bytes of a file from ``offset``, through a descriptor of its own."""

    def __init__(self, path: str, offset: int, size: int) -> None:
        self._file = open(path, "rb")
        self._file.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._left)
        if wanted <= 0:
            return 0
        count = self._file.readinto(view[:wanted])
        if not count:
            raise InvalidImage(f"{self._file.name}: truncated ({self._left} bytes missing)")
        self._left -= count
        return count

    def close(self) -> None:
        self._file.close()
        super().close()


def _window_opener(path: str, offset: int, size: int) -> BlobOpener:
    return lambda: io.BufferedReader(_Window(path, offset, size), 1 << 20)


# -- the layouts and archives ----------------------------------------------------------------


class BlobFiles:
    """The files of a layout directory or an archive, by path (a registry's blobs, for pull)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def size(self, name: str) -> int:
        raise NotImplementedError

    def opener(self, name: str) -> BlobOpener:
        raise NotImplementedError

    def read(self, name: str, what: str) -> bytes:
        size = self.size(name)
        if size > _MAX_JSON:
            raise InvalidImage(f"{self.where}: {what} ({name}) is {size} bytes: too large")
        with self.opener(name)() as stream:
            return stream.read()

    def blob_name(self, digest: Any, what: str) -> str:
        return f"blobs/sha256/{_digest_hex(digest, what)}"


class _Directory(BlobFiles):
    def __init__(self, where: str, root: str) -> None:
        super().__init__(where)
        self._root = root

    def _path(self, name: str) -> str:
        return os.path.join(self._root, *name.split("/"))

    def size(self, name: str) -> int:
        try:
            return os.stat(self._path(name)).st_size
        except FileNotFoundError:
            raise InvalidImage(f"{self.where}: {name} is missing") from None

    def opener(self, name: str) -> BlobOpener:
        path, size = self._path(name), self.size(name)
        return _window_opener(path, 0, size)

    def path(self, name: str) -> str:
        return self._path(name)


class _Archive(BlobFiles):
    """A tar file's members, each read in place."""

    def __init__(self, where: str, path: str) -> None:
        super().__init__(where)
        self._path = path
        self._members: dict[str, tarfile.TarInfo] = {}
        length = os.stat(path).st_size
        try:
            with tarfile.open(path, "r:") as archive:
                for member in archive:
                    self._members[os.path.normpath(member.name.lstrip("/"))] = member
        except tarfile.TarError as exc:
            raise InvalidImage(f"{where}: not a readable tar archive: {exc}") from None
        for member in self._members.values():
            if member.isreg() and member.offset_data + member.size > length:
                raise InvalidImage(f"{where}: truncated: {member.name} ends past the file's end")

    def _member(self, name: str) -> tarfile.TarInfo:
        member = self._members.get(os.path.normpath(name))
        for _ in range(16):  # links to links, as docker's duplicate layers are
            if member is None or not (member.issym() or member.islnk()):
                break
            base = os.path.dirname(member.name) if member.issym() else ""
            member = self._members.get(os.path.normpath(os.path.join(base, member.linkname)))
        if member is None or not member.isreg():
            raise InvalidImage(f"{self.where}: {name} is missing")
        return member

    def size(self, name: str) -> int:
        return self._member(name).size

    def opener(self, name: str) -> BlobOpener:
        member = self._member(name)
        return _window_opener(self._path, member.offset_data, member.size)


@contextlib.contextmanager
def _plain_archive(path: str) -> Iterator[str]:
    """``path``, or a decompressed copy of it when it is gzip-compressed."""
    try:
        with open(path, "rb") as head:
            magic = head.read(2)
    except FileNotFoundError:
        raise InvalidImage(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidImage(f"{path}: a directory, not an archive (use oci:{path})") from None
    if magic != b"\x1f\x8b":
        yield path
        return
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(os.path.abspath(path)) or ".") as copy:
        try:
            with gzip.open(path, "rb") as source:
                while chunk := source.read(1 << 20):
                    copy.write(chunk)
        except (OSError, EOFError) as exc:
            raise InvalidImage(f"{path}: a damaged gzip archive: {exc}") from None
        copy.flush()
        yield copy.name


@contextlib.contextmanager
def open_image(
    reference: ImageReference, platform: Platform | None = None
) -> Iterator[ResolvedImage]:
    """The image at ``reference``; its blob openers work until the context ends."""
    if reference.transport == "oci":
        if not os.path.isdir(reference.path):
            raise InvalidImage(f"{reference}: {reference.path} is not a directory")
        yield _resolve_oci(_Directory(str(reference), reference.path), reference.ref, platform)
        return
    with _plain_archive(reference.path) as path:
        files = _Archive(str(reference), path)
        if reference.transport == "oci-archive":
            yield _resolve_oci(files, reference.ref, platform)
        else:
            yield _resolve_docker(files, reference.ref)


def _resolve_oci(files: BlobFiles, ref: str, platform: Platform | None) -> ResolvedImage:
    where = files.where
    index = _json(files.read("index.json", "index.json"), f"{where}: index.json")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not manifests:
        raise InvalidImage(f"{where}: index.json lists no manifests")
    named = [
        entry for entry in manifests
        if isinstance(entry, dict) and (entry.get("annotations") or {}).get(REF_NAME) == ref
    ] if ref else manifests  # fmt: skip
    if not named:
        refs = sorted(
            str((entry.get("annotations") or {}).get(REF_NAME))
            for entry in manifests
            if isinstance(entry, dict) and (entry.get("annotations") or {}).get(REF_NAME)
        )
        raise InvalidImage(f"{where}: no image {ref!r} in the layout; it has {refs or 'none'}")
    if len(named) > 1 and not all(entry.get("platform") for entry in named):
        refs = [str((entry.get("annotations") or {}).get(REF_NAME, "?")) for entry in named]
        raise InvalidImage(f"{where}: {len(named)} images, name one of {refs} ({where}:REF)")
    if len(named) > 1:
        descriptor = pick_platform(named, platform, where)
    else:
        descriptor = named[0]
    names: tuple[str, ...] = ()
    annotations = descriptor.get("annotations") or {}
    if isinstance(annotations.get(IMAGE_NAME), str):
        names = (normalize_name(annotations[IMAGE_NAME]),)
    for _ in range(4):  # an index may name another index
        if descriptor.get("mediaType") not in _INDEXES:
            break
        nested = _verified(files, descriptor, "image index")
        entries = _json(nested, f"{where}: image index").get("manifests") or []
        descriptor = pick_platform(entries, platform, where)
    manifest = _verified(files, descriptor, "manifest")
    return from_manifest(files, manifest, descriptor["digest"], names)


def pick_platform(entries: list[Any], platform: Platform | None, where: str) -> dict[str, Any]:
    wanted = platform or machine_platform()
    for entry in entries:
        if isinstance(entry, dict) and wanted.matches(entry.get("platform")):
            return entry
    offered = sorted(
        str(Platform(str(p.get("os")), str(p.get("architecture")), str(p.get("variant") or "")))
        for entry in entries
        if isinstance(entry, dict) and isinstance(p := entry.get("platform"), dict)
    )
    raise InvalidImage(
        f"{where}: no image for {wanted}; the index has {', '.join(offered) or 'none'} "
        "(choose one with --platform)"
    )


def _verified(files: BlobFiles, descriptor: Any, what: str) -> bytes:
    if not isinstance(descriptor, dict):
        raise InvalidImage(f"{files.where}: a malformed {what} descriptor")
    digest = descriptor.get("digest")
    data = files.read(files.blob_name(digest, f"{files.where}: {what}"), what)
    if _sha256(data) != digest:
        raise InvalidImage(f"{files.where}: the {what} {digest} does not match its digest")
    return data


def from_manifest(
    files: BlobFiles, manifest: bytes, digest: str, names: tuple[str, ...]
) -> ResolvedImage:
    where = files.where
    parsed = _json(manifest, f"{where}: manifest {digest}")
    if not isinstance(parsed, dict) or parsed.get("schemaVersion") != 2:
        raise InvalidImage(f"{where}: manifest {digest} is not a schema 2 image manifest")
    config = _verified(files, parsed.get("config"), "config")
    layers = []
    for number, descriptor in enumerate(parsed.get("layers") or []):
        what = f"{where}: layer {number}"
        if not isinstance(descriptor, dict):
            raise InvalidImage(f"{what}: a malformed descriptor")
        name = files.blob_name(descriptor.get("digest"), what)
        size = files.size(name)
        if isinstance(descriptor.get("size"), int) and descriptor["size"] != size:
            raise InvalidImage(
                f"{what}: blob {descriptor['digest']} is {size} bytes, the manifest says "
                f"{descriptor['size']}"
            )
        path = files.path(name) if isinstance(files, _Directory) else ""
        layers.append(
            LayerBlob(
                files.opener(name),
                descriptor["digest"],
                size,
                str(descriptor.get("mediaType", "")),
                True,
                path,
            )
        )
    return ResolvedImage(manifest, digest, config, parsed["config"]["digest"], tuple(layers), names)


def _resolve_docker(files: BlobFiles, ref: str) -> ResolvedImage:
    where = files.where
    try:
        listing = files.read("manifest.json", "manifest.json")
    except InvalidImage:
        raise InvalidImage(
            f"{where}: no manifest.json: not a docker archive (docker before 1.10 wrote "
            "archives without one; they are not supported)"
        ) from None
    entries = _json(listing, f"{where}: manifest.json")
    if not isinstance(entries, list) or not entries:
        raise InvalidImage(f"{where}: manifest.json lists no images")
    if ref.startswith("@"):
        try:
            entry = entries[int(ref[1:])]
        except (ValueError, IndexError):
            raise InvalidImage(f"{where}: no image {ref} (it has {len(entries)})") from None
    elif ref:
        wanted = normalize_name(ref)
        matching = [
            item for item in entries
            if isinstance(item, dict)
            and wanted in (normalize_name(tag) for tag in item.get("RepoTags") or [])
        ]  # fmt: skip
        if not matching:
            raise InvalidImage(f"{where}: no image tagged {ref!r}")
        entry = matching[0]
    elif len(entries) == 1:
        entry = entries[0]
    else:
        raise InvalidImage(f"{where}: {len(entries)} images: name one ({where}:NAME or :@N)")
    if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
        raise InvalidImage(f"{where}: a manifest.json entry without a Config")
    config = files.read(entry["Config"], "config")
    parsed = _json(config, f"{where}: config")
    diff_ids = (parsed.get("rootfs") or {}).get("diff_ids") if isinstance(parsed, dict) else None
    paths = entry.get("Layers") or []
    if not isinstance(diff_ids, list) or len(diff_ids) != len(paths):
        raise InvalidImage(
            f"{where}: the config lists {len(diff_ids or [])} DiffIDs for {len(paths)} layers"
        )
    config_digest = _sha256(config)
    layers = []
    descriptors = []
    for path, diff_id in zip(paths, diff_ids, strict=True):
        _digest_hex(diff_id, f"{where}: config")
        size = files.size(path)
        # containers/image describes a docker archive's layers by their DiffIDs: the blob it
        # hands on is the layer's tar, decompressed if the archive held it compressed.
        layers.append(LayerBlob(files.opener(path), diff_id, size, DOCKER_LAYER, False))
        descriptors.append({"mediaType": DOCKER_LAYER, "size": size, "digest": diff_id})
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": config_digest},
            "layers": descriptors,
        },
        separators=(",", ":"),
    ).encode()
    names = tuple(
        normalize_name(tag) for tag in entry.get("RepoTags") or [] if isinstance(tag, str)
    )
    return ResolvedImage(manifest, _sha256(manifest), config, config_digest, tuple(layers), names)
