"""The image half of :class:`~.layer_store.LayerStore`: images beside the layers, as podman
keeps them, and the rules of containers/storage's store that tie the two.

* An image names its top layer; that layer is not deleted while the image exists (the layer
  store refuses, see ``users``).
* Deleting an image deletes, top down, the layers only it used: a layer goes unless another
  image names it, a container is based on it, or a layer outside the deleted run builds on it
  (containers/storage's ``DeleteImage(id, commit=true)``).
* Locks are taken in containers/storage's order: ``layers.lock``, then ``images.lock``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import (
    BigDataUnknown,
    DuplicateID,
    DuplicateName,
    ImageUnknown,
    ImageUsedByContainer,
)
from ..faults import fault
from ..layer import check_layer_id, check_name, format_created, new_layer_id
from ..paths import big_data_file_name

if TYPE_CHECKING:
    from ..image import Image
    from ..layer import Layer
    from ..transfer import BlobWrapper, LayerProgress
    from .images import ImageRecords
    from .index import LayerIndex
    from .users import LayerUsers

__all__ = ["ImageMethods"]


def _dedupe(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(check_name(name) for name in names))


class ImageMethods:
    """Methods of :class:`~.layer_store.LayerStore` for its images."""

    if TYPE_CHECKING:
        _images: ImageRecords
        _index: LayerIndex
        _users: LayerUsers

        def _check_open(self) -> None: ...
        def _reading(self) -> contextlib.AbstractContextManager[None]: ...
        def _writing(self) -> contextlib.AbstractContextManager[None]: ...
        def _graph_lock(self) -> contextlib.AbstractContextManager[None]: ...
        def _delete_locked(self, layer_id: str) -> None: ...

    # -- reading -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _images_reading(self) -> Iterator[ImageRecords]:
        self._check_open()
        with self._images.reading():
            yield self._images

    def images(self) -> list[Image]:
        """Every image, in the order of images.json."""
        with self._images_reading() as records:
            return list(records.index)

    def image(self, name: str) -> Image:
        """The image with this id, name or unique id prefix; raises ImageUnknown."""
        with self._images_reading() as records:
            return records.index.get(records.index.lookup(name))

    def image_exists(self, name: str) -> bool:
        try:
            self.image(name)
        except ImageUnknown:
            return False
        return True

    def images_by_digest(self, digest: str) -> list[Image]:
        """The images whose digest, or one of whose manifests' digests, is ``digest``."""
        with self._images_reading() as records:
            return records.index.by_digest(digest)

    def image_big_data(self, name: str, key: str) -> bytes:
        """The contents of the image's big data item ``key``; raises BigDataUnknown."""
        big_data_file_name(key)
        with self._images_reading() as records:
            image = records.index.get(records.index.lookup(name))
            try:
                return records.big_data(image, key)
            except FileNotFoundError:
                raise BigDataUnknown(f"image {image.id} has no big data item {key!r}") from None

    def image_layers(self, name: str) -> list[Layer]:
        """The image's layers, base first (empty for an image without layers)."""
        top = self.image(name).layer
        with self._reading():
            chain: list[Layer] = []
            while top:
                layer = self._index.get(top)
                chain.append(layer)
                top = layer.parent
        return chain[::-1]

    # -- creating and changing -----------------------------------------------------------------

    def create_image(
        self,
        layer: str | None,
        *,
        id: str | None = None,
        names: Iterable[str] = (),
        metadata: str = "",
        digest: str = "",
        created: str | None = None,
        big_data: Iterable[tuple[str, bytes, str | None]] = (),
    ) -> Image:
        """Record an image whose top layer is ``layer`` (an id, name or prefix; None: an image
        without layers). ``big_data`` items are ``(key, data, digest)``, the digest None for
        the sha256 of the data; they are stored before the record is saved, so the record
        never names an item that is missing. Raises DuplicateID, DuplicateName, LayerUnknown.
        """
        image_id = check_layer_id(id) if id is not None else new_layer_id()
        wanted = _dedupe(names)
        items = list(big_data)
        for key, _data, _digest in items:
            big_data_file_name(key)
        from ..image import Image

        with self._writing():
            top = self._index.lookup(layer) if layer else ""
            with self._images.writing() as index:
                if image_id in index:
                    raise DuplicateID(f"an image with id {image_id} already exists")
                image = Image(
                    id=image_id,
                    digest=digest,
                    layer=top,
                    metadata=metadata,
                    created=created or format_created(),
                ).with_names(wanted)
                for name in wanted:
                    owner = index.owner_of(name)
                    if owner is not None:
                        raise DuplicateName(f"image name {name!r} is already used by image {owner}")
                try:
                    for key, data, item_digest in items:
                        image = self._images.with_big_data(image, key, data, item_digest)
                    fault("image:big-data-written")
                    self._images.add(image)
                except BaseException:
                    import shutil

                    shutil.rmtree(self._images.data_dir(image_id), ignore_errors=True)
                    raise
                return image

    def set_image_big_data(
        self, name: str, key: str, data: bytes, digest: str | None = None
    ) -> None:
        """Store ``data`` as the image's big data item ``key`` (atomically replacing it);
        ``digest`` for a manifest whose digest is not the sha256 of its bytes."""
        big_data_file_name(key)
        with self._images.writing() as index:
            image = index.get(index.lookup(name))
            self._images.set_big_data(image, key, bytes(data), digest)

    def set_image_metadata(self, name: str, text: str) -> None:
        with self._images.writing() as index:
            image = index.get(index.lookup(name))
            index.put(replace(image, metadata=text))
            self._images.save()

    def add_image_names(self, name: str, names: Iterable[str]) -> Image:
        """Add names (``tag``) to the image, taking them from any image that has them."""
        extra = _dedupe(names)
        return self._rename_image(name, lambda current: (*current, *extra))

    def remove_image_names(self, name: str, names: Iterable[str]) -> Image:
        """Remove names from the image (``untag``); names it does not have are ignored."""
        unwanted = set(names)
        return self._rename_image(name, lambda current: [n for n in current if n not in unwanted])

    def set_image_names(self, name: str, names: Iterable[str]) -> Image:
        """Give the image exactly ``names``, taking them from any image that has them."""
        wanted = _dedupe(names)
        return self._rename_image(name, lambda _current: wanted)

    def _rename_image(self, name: str, compute: Any) -> Image:
        with self._images.writing() as index:
            image = index.get(index.lookup(name))
            new_names = _dedupe(compute(image.names))
            if new_names == image.names:
                return image
            return self._images.rename(image, new_names)

    # -- deleting ------------------------------------------------------------------------------

    def delete_image(self, name: str, *, keep_layers: bool = False) -> list[str]:
        """Delete the image and, unless ``keep_layers``, the layers only it used, top down;
        returns the ids of the layers deleted. Raises ImageUsedByContainer when a container
        of the store (podman's) is based on it."""
        with self._graph_lock(), self._writing():
            with self._images.writing() as index:
                image = index.get(index.lookup(name))
                for container in self._users.containers():
                    if container.get("image") == image.id:
                        raise ImageUsedByContainer(
                            f"image {image.id} is in use by container "
                            f"{container.get('id', '?')}: remove the container first (podman rm)"
                        )
                doomed = [] if keep_layers else self._layers_only_used_by(image)
                self._images.remove(image.id)
            fault("rmi:record-removed")
            for layer_id in doomed:
                self._delete_locked(layer_id)
            return doomed

    def _layers_only_used_by(self, image: Image) -> list[str]:
        """The layers deleting ``image`` removes: its mapped top layers, then its top layer and
        each parent in turn, as long as nothing else uses them."""
        index = self._images.index
        used_by_others: set[str] = set()
        for other in index:
            if other.id != image.id:
                used_by_others.update((other.layer, *other.mapped_layers))
        containers = {
            str(record.get("layer")) for record in self._users.containers() if "layer" in record
        }
        doomed: list[str] = []

        def removable(layer_id: str) -> bool:
            if layer_id not in self._index or layer_id in used_by_others | containers:
                return False
            children = {child.id for child in self._index.children(layer_id)}
            return children <= set(doomed)

        for layer_id in image.mapped_layers:
            if removable(layer_id):
                doomed.append(layer_id)
        layer_id = image.layer
        while layer_id and removable(layer_id):
            doomed.append(layer_id)
            layer_id = self._index.get(layer_id).parent
        return doomed

    # -- loading and saving --------------------------------------------------------------------

    def load(
        self,
        source: str,
        names: Iterable[str] = (),
        *,
        platform: str | None = None,
        workers: int | None = None,
        wrap_blob: BlobWrapper | None = None,
    ) -> Image:
        """Load the image at ``source`` (``oci:DIR[:REF]``, ``oci-archive:FILE[:REF]``,
        ``docker-archive:FILE[:NAME]``) and name it ``names`` (default: the names the
        source gives, a docker archive's RepoTags); returns the image.

        From an index, the image for ``platform`` (``OS/ARCH[/VARIANT]``, default this
        machine's) is taken. The layers are applied as a chain with containers/image's ids,
        each blob checked against its digest and its DiffID against the config; layers the
        store has are reused. The image is recorded as containers/image records it (id: the
        config's digest hex), so podman sees it. Raises InvalidImage when the source is
        malformed or a check fails; then nothing of the load is left.
        """
        from ..transfer import load_image

        return load_image(self, source, names, platform=platform, workers=workers,  # type: ignore[arg-type]
                          wrap_blob=wrap_blob)  # fmt: skip

    def save(
        self,
        image: str,
        destination: str,
        *,
        compression: str | None = None,
        workers: int | None = None,
        progress: LayerProgress | None = None,
    ) -> str:
        """Write the image (an id, name or prefix) to ``destination`` (``oci:DIR[:REF]``,
        ``oci-archive:FILE[:REF]``, ``docker-archive:FILE``), its layers compressed as
        ``compression`` (``none``, ``gzip`` (default) or ``zstd``; docker archives hold them
        uncompressed); returns the digest of the manifest written."""
        from ..transfer import save_image

        return save_image(self, image, destination, compression=compression,  # type: ignore[arg-type]
                          workers=workers, progress=progress)  # fmt: skip

    # -- registries ----------------------------------------------------------------------------

    def pull(
        self,
        reference: str,
        *,
        names: Iterable[str] | None = None,
        platform: str | None = None,
        credentials: tuple[str, str] | None = None,
        auth_file: str | None = None,
        ca_file: str | None = None,
        tls_verify: bool = True,
        plain_http: bool | None = None,
        timeout: float = 60.0,
        wrap_blob: BlobWrapper | None = None,
    ) -> Image:
        """Pull ``REGISTRY/REPOSITORY[:TAG|@DIGEST]`` into the store and name it so (or
        ``names``); returns the image. As :meth:`load` for the rest: the platform from an
        index, the layers as a verified chain with containers/image's ids (streamed from the
        registry into their applies, resumed where a connection breaks; layers the store has
        are not fetched), the image recorded as skopeo records it. ``credentials`` are
        ``(user, password)``, else looked up in ``auth_file`` or the auth files podman and
        docker use. TLS is verified (``ca_file`` adds a CA bundle) unless ``tls_verify`` is
        False; plain HTTP is used when ``plain_http``, or for a registry on this machine that
        does not speak TLS. ``timeout`` is how long to wait for a registry to answer or to send
        more, in seconds (a slow request is retried). Raises RegistryError (with the HTTP
        ``status``) or InvalidImage; nothing of a failed pull stays.
        """
        from ..registry import pull_image

        return pull_image(self, reference, names=names, platform=platform,  # type: ignore[arg-type]
                          credentials=credentials, auth_file=auth_file, ca_file=ca_file,
                          tls_verify=tls_verify, plain_http=plain_http, timeout=timeout,
                          wrap_blob=wrap_blob)  # fmt: skip

    def push(
        self,
        image: str,
        reference: str,
        *,
        compression: str | None = None,
        credentials: tuple[str, str] | None = None,
        auth_file: str | None = None,
        ca_file: str | None = None,
        tls_verify: bool = True,
        plain_http: bool | None = None,
        timeout: float = 60.0,
        progress: LayerProgress | None = None,
    ) -> str:
        """Push the image to ``REGISTRY/REPOSITORY[:TAG]``; returns the manifest's digest.
        Blobs the registry has are not sent, blobs of another repository the image is named
        from are mounted; layers are compressed as their blobs were unless ``compression``
        (``none``, ``gzip``, ``zstd``) says otherwise. Options as for :meth:`pull`."""
        from ..registry import push_image

        return push_image(self, image, reference, compression=compression,  # type: ignore[arg-type]
                          credentials=credentials, auth_file=auth_file, ca_file=ca_file,
                          tls_verify=tls_verify, plain_http=plain_http, timeout=timeout,
                          progress=progress)  # fmt: skip
