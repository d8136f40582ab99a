"""Loading an image into the store: :meth:`LayerStore.load`.

The layers go in as one chain with containers/image's ids (so a store filled by layerstore and
one filled by skopeo hold the same layers), each blob checked against its manifest digest and
its DiffID against the config's ``rootfs.diff_ids`` before it is committed. A layer the store
has (by id, then by DiffID on the same parent) is reused, its blob never read. The image is
then recorded as containers/image's ``storage_dest.go`` records it: the config's digest hex as
the id, the config under its digest, the manifest under ``manifest-<digest>`` and
``manifest``, an empty signatures item, and ``metadata`` giving the signature sizes. If any of
it fails, the layers this load made are deleted again: nothing of a failed load stays.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, BinaryIO

from ..engines import DiffSource
from ..errors import ChainFailed, DuplicateID, InvalidImage, InvalidLayerData, LayerStoreError
from ..image import MANIFEST_KEY, Image
from ..layer import format_created
from ..store.chain import ChainBlob
from .references import normalize_name, parse_reference
from .sources import LayerBlob, Platform, ResolvedImage, open_image

if TYPE_CHECKING:
    from ..store.layer_store import LayerStore

__all__ = ["BlobWrapper", "load_image", "store_image"]

BlobWrapper = Callable[[int, LayerBlob, BinaryIO], BinaryIO]
"""Wraps the stream of layer N as it is applied (the CLI counts it for a progress bar)."""


def load_image(
    store: LayerStore,
    source: str,
    names: Iterable[str] = (),
    *,
    platform: str | None = None,
    workers: int | None = None,
    wrap_blob: BlobWrapper | None = None,
) -> Image:
    """What :meth:`LayerStore.load` does."""
    reference = parse_reference(source)
    wanted = Platform.parse(platform) if platform else None
    given = tuple(normalize_name(name) for name in names)
    with open_image(reference, wanted) as image:
        return store_image(store, image, str(reference), given or image.names, workers, wrap_blob)


def store_image(
    store: LayerStore,
    image: ResolvedImage,
    where: str,
    names: tuple[str, ...],
    workers: int | None,
    wrap_blob: BlobWrapper | None,
) -> Image:
    """Apply a resolved image's layers as a verified chain and record it (load and pull)."""
    with contextlib.ExitStack() as streams:
        diff_ids = _diff_ids(image, where)
        blobs = [
            ChainBlob(
                _diff_source(number, layer, wrap_blob, streams),
                compressed_digest=layer.digest if layer.verify_digest else None,
                uncompressed_digest=diff_id,
                verify=True,
            )
            for number, (layer, diff_id) in enumerate(zip(image.layers, diff_ids, strict=True))
        ]
        known = {layer.id for layer in store.layers()}
        try:
            layers = store.put_chain(blobs, workers=workers) if blobs else []
        except ChainFailed as failure:
            _remove_new(store, [layer.id for layer in failure.committed], known)
            cause = failure.__cause__
            if isinstance(cause, InvalidLayerData | InvalidImage):
                digest = image.layers[failure.index].digest
                raise InvalidImage(
                    f"{where}: layer {failure.index} ({digest}): {cause}; nothing was loaded"
                ) from cause
            if isinstance(cause, LayerStoreError):
                raise cause from None  # a registry's error says what failed, and where
            raise
        try:
            return _record(store, image, layers[-1].id if layers else "", names)
        except BaseException:
            _remove_new(store, [layer.id for layer in layers], known)
            raise


def _diff_ids(image: ResolvedImage, where: str) -> list[str]:
    try:
        config = json.loads(image.config)
    except ValueError as exc:
        raise InvalidImage(f"{where}: the config is not valid JSON: {exc}") from None
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise InvalidImage(f"{where}: the config has no rootfs.diff_ids list")
    if len(diff_ids) != len(image.layers):
        raise InvalidImage(
            f"{where}: the manifest lists {len(image.layers)} layers, the config "
            f"{len(diff_ids)} DiffIDs"
        )
    return diff_ids


def _diff_source(
    number: int, layer: LayerBlob, wrap: BlobWrapper | None, streams: contextlib.ExitStack
) -> DiffSource:
    if wrap is None and layer.path:
        return layer.path
    stream = streams.enter_context(io.BufferedReader(_Lazy(layer.open), 1 << 20))
    return wrap(number, layer, stream) if wrap is not None else stream


class _Lazy(io.RawIOBase):
    """A blob opened on its first read: a chain's applies start one by one (a vfs layer
    waits for its parent), so a registry is asked for a blob only when it is read."""

    def __init__(self, opener: Callable[[], BinaryIO]) -> None:
        self._opener = opener
        self._stream: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._stream is None:
            self._stream = self._opener()
        count: int | None = self._stream.readinto(buffer)  # type: ignore[attr-defined]
        return count or 0

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        super().close()


def _remove_new(store: LayerStore, layer_ids: list[str], known: set[str]) -> None:
    """Delete, top down, the layers of ``layer_ids`` that were not there before the load."""
    for layer_id in reversed(layer_ids):
        if layer_id not in known:
            with contextlib.suppress(LayerStoreError):
                store.delete(layer_id)


def _created(config: bytes) -> str | None:
    """The config's creation time in Go's form, or None."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        text = json.loads(config).get("created")
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        seconds = int(moment.timestamp())
        nanoseconds = seconds * 1_000_000_000 + moment.microsecond * 1000
        # fromisoformat keeps microseconds only; nanoseconds written in the text are kept.
        fraction = text.rpartition(".")[2].rstrip("Z").split("+")[0] if "." in text else ""
        if fraction.isdigit():
            nanoseconds = seconds * 1_000_000_000 + int(fraction[:9].ljust(9, "0"))
        return format_created(nanoseconds)
    return None


def _record(store: LayerStore, image: ResolvedImage, top: str, names: tuple[str, ...]) -> Image:
    """Record the image as containers/image does, or give an existing one the new names."""
    image_id = image.config_digest.removeprefix("sha256:")
    manifest_hex = image.manifest_digest.removeprefix("sha256:")
    items: list[tuple[str, bytes, str | None]] = [
        (image.config_digest, image.config, None),
        (f"{MANIFEST_KEY}-{image.manifest_digest}", image.manifest, image.manifest_digest),
        (MANIFEST_KEY, image.manifest, image.manifest_digest),
        (f"signature-{manifest_hex}", b"", None),
    ]
    metadata = json.dumps({"signatures-sizes": {image.manifest_digest: []}}, separators=(",", ":"))
    try:
        return store.create_image(
            top,
            id=image_id,
            names=names,
            metadata=metadata,
            digest=image.manifest_digest,
            created=_created(image.config),
            big_data=items,
        )
    except DuplicateID:
        pass
    existing = store.image(image_id)
    if existing.layer != top:
        raise InvalidImage(
            f"image {image_id} is in the store already with top layer {existing.layer}, not {top}"
        )
    for key, data, digest in items[1:3]:
        if key not in existing.big_data_names:
            store.set_image_big_data(image_id, key, data, digest)
    return store.add_image_names(image_id, names) if names else store.image(image_id)
