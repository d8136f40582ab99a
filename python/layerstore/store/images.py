"""The image store: ``ROOT/<driver>-images/images.json`` under ``images.lock``, and big data.

The records go through the same :class:`~.records.RecordFile` as ``layers.json``: a writer
records a fresh token in ``images.lock`` and replaces the file atomically; a reader reloads when
the token or the file changed. Big data items live one file each in ``ROOT/<driver>-images/<id>/``,
named as containers/storage names them (:func:`~layerstore.paths.big_data_file_name`).

Locks are taken in containers/storage's order: the layer store's first, then this one. The
:class:`~.layer_store.LayerStore` methods that touch images take them; :class:`ImageRecords`
only keeps the view and writes the files, its callers hold the lock.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .. import gojson
from ..atomic import write_atomic
from ..errors import DuplicateID, DuplicateName, ImageUnknown, StoreIsReadOnly
from ..paths import big_data_file_name
from .index import resolve_prefix
from .locking import LockFile
from .records import RecordFile, decode_records

if TYPE_CHECKING:
    from ..image import Image

__all__ = ["ImageIndex", "ImageRecords"]


class ImageIndex:
    """Images in file order, with lookups by id, name, unique id prefix and digest."""

    __slots__ = ("_by_digest", "_by_id", "_by_name", "_sorted_ids")

    def __init__(self, images: Iterable[Image] = ()) -> None:
        self._by_id: dict[str, Image] = {image.id: image for image in images}
        self._by_name: dict[str, str] = {}
        self._by_digest: dict[str, list[str]] = {}
        for image in self._by_id.values():
            self._index(image)
        self._sorted_ids = sorted(self._by_id)

    def __iter__(self) -> Iterator[Image]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._by_id

    def get(self, image_id: str) -> Image:
        try:
            return self._by_id[image_id]
        except KeyError:
            raise ImageUnknown(f"image not known: {image_id!r}") from None

    def owner_of(self, name: str) -> str | None:
        return self._by_name.get(name)

    def lookup(self, name: str) -> str:
        """Resolve an id, a name or a unique id prefix to an id, in that order (as Go does)."""
        if name in self._by_id:
            return name
        owner = self._by_name.get(name)
        if owner is not None:
            return owner
        return resolve_prefix(self._sorted_ids, name, ImageUnknown, "image")

    def by_digest(self, digest: str) -> list[Image]:
        return [self._by_id[image_id] for image_id in self._by_digest.get(digest, ())]

    def put(self, image: Image) -> None:
        """Add an image at the end, or replace the record of one with its id in place."""
        old = self._by_id.get(image.id)
        if old is not None:
            self._unindex(old)
        else:
            self._sorted_ids.insert(_position(self._sorted_ids, image.id), image.id)
        self._by_id[image.id] = image
        self._index(image)

    def remove(self, image_id: str) -> Image:
        image = self._by_id.pop(image_id)
        self._unindex(image)
        del self._sorted_ids[_position(self._sorted_ids, image_id)]
        return image

    def _index(self, image: Image) -> None:
        for name in image.names:
            self._by_name[name] = image.id
        for digest in image.digests:
            self._by_digest.setdefault(digest, []).append(image.id)

    def _unindex(self, image: Image) -> None:
        for name in image.names:
            if self._by_name.get(name) == image.id:
                del self._by_name[name]
        for digest in image.digests:
            ids = self._by_digest[digest]
            ids.remove(image.id)
            if not ids:
                del self._by_digest[digest]


def _position(sorted_ids: list[str], image_id: str) -> int:
    return bisect.bisect_left(sorted_ids, image_id)


class ImageRecords:
    """The image store of one store root and driver: its view, its lock and its files."""

    def __init__(self, root: str, driver_name: str, *, read_only: bool) -> None:
        self.directory = os.path.join(root, f"{driver_name}-images")
        self.read_only = read_only
        lock_path = os.path.join(self.directory, "images.lock")
        lock: LockFile | None
        if read_only:
            try:
                lock = LockFile.open(lock_path, read_only=True)
            except FileNotFoundError:
                lock = None  # no image store yet: no images, and nothing to lock
        else:
            lock = LockFile.open(lock_path)  # makes the directory and the file, as Go does
        self._file = RecordFile(os.path.join(self.directory, "images.json"), lock)
        self.index = ImageIndex()
        self._load_mutex = threading.Lock()

    # -- locking -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[ImageIndex]:
        """Hold images.lock shared, with the view current."""
        lock = self._file.lock
        if lock is None:
            yield self.index
            return
        with lock.shared():
            with self._load_mutex:
                if self._file.modified():
                    self._load()
            yield self.index

    @contextlib.contextmanager
    def writing(self) -> Iterator[ImageIndex]:
        """Hold images.lock exclusively, with the view current."""
        lock = self._file.lock
        if self.read_only or lock is None:
            raise StoreIsReadOnly(f"the image store at {self.directory} is opened read-only")
        with lock.exclusive():
            if self._file.modified():
                self._load()
            yield self.index

    def _load(self) -> None:
        try:
            records = decode_records(self._file.read(), self._file.path, "images")
            images = _decode_images(records, self._file.path, self.read_only)
        except BaseException:
            self._file.forget()
            raise
        # Names are unique: where two images claim one, the earlier loses it (as Go repairs it;
        # the repair reaches the file with the next write).
        owners: dict[str, int] = {}
        for position, image in enumerate(images):
            for name in image.names:
                earlier = owners.get(name)
                if earlier is not None:
                    loser = images[earlier]
                    images[earlier] = _without_names(loser, {name})
                owners[name] = position
        self.index = ImageIndex(images)

    # -- writing (the caller holds the lock exclusively) ---------------------------------------

    def save(self) -> None:
        """Write images.json; on failure read it again so the view matches the disk."""
        try:
            data = gojson.dumps([image.to_json() for image in self.index]).encode("utf-8")
            self._file.write(data)
        except BaseException:
            self._file.forget()
            with contextlib.suppress(Exception):
                self._load()
            raise

    def add(self, image: Image) -> None:
        """Record a new image whose id and names are free."""
        if image.id in self.index:
            raise DuplicateID(f"an image with id {image.id} already exists")
        for name in image.names:
            owner = self.index.owner_of(name)
            if owner is not None:
                raise DuplicateName(f"image name {name!r} is already used by image {owner}")
        self.index.put(image)
        self.save()

    def rename(self, image: Image, names: tuple[str, ...]) -> Image:
        """Give ``image`` exactly ``names``, taking them from the images that had them."""
        for name in names:
            owner = self.index.owner_of(name)
            if owner is not None and owner != image.id:
                self.index.put(_without_names(self.index.get(owner), {name}))
        renamed = image.with_names(names)
        self.index.put(renamed)
        self.save()
        return renamed

    def remove(self, *image_ids: str) -> None:
        """Drop the records (one save for all), then their big data (a crash in between leaves
        only directories, which the next read-write open removes)."""
        if not image_ids:
            return
        for image_id in image_ids:
            self.index.remove(image_id)
        self.save()
        import shutil

        for image_id in image_ids:
            shutil.rmtree(self.data_dir(image_id), ignore_errors=True)

    def with_big_data(self, image: Image, key: str, data: bytes, digest: str | None) -> Image:
        """Write ``data`` as the item ``key`` of ``image`` and return the record that names
        it, not yet indexed or saved; ``digest`` is the item's digest when it is not the
        sha256 of its bytes (a manifest's, as containers/image gives it)."""
        path = os.path.join(self.data_dir(image.id), big_data_file_name(key))
        os.makedirs(self.data_dir(image.id), mode=0o700, exist_ok=True)
        write_atomic(path, data)
        if not digest:
            import hashlib  # loads OpenSSL: only where big data is written

            digest = "sha256:" + hashlib.sha256(data).hexdigest()
        names = image.big_data_names
        if key not in names:
            names = (*names, key)
        changed = replace(
            image,
            big_data_names=names,
            big_data_sizes=MappingProxyType({**image.big_data_sizes, key: len(data)}),
            big_data_digests=MappingProxyType({**image.big_data_digests, key: digest}),
        )
        if not changed.digest and changed.digests:
            # Go's recomputeDigests: an image without a digest takes its first manifest's.
            changed = replace(changed, digest=changed.digests[0])
        return changed

    def set_big_data(self, image: Image, key: str, data: bytes, digest: str | None) -> Image:
        """Store the item ``key`` of a recorded image and save the record."""
        changed = self.with_big_data(image, key, data, digest)
        if changed != image:
            self.index.put(changed)
            self.save()
        return changed

    def remove_orphan_data(self) -> None:
        """Remove the big data directories no record names: what a process killed while
        creating an image left (it writes the items before the record). Go writes the record
        first and removes the directory after the record, so none of these is Go's work in
        progress."""
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and entry.name not in self.index:
                import shutil

                shutil.rmtree(entry.path, ignore_errors=True)

    # -- reading -------------------------------------------------------------------------------

    def data_dir(self, image_id: str) -> str:
        return os.path.join(self.directory, image_id)

    def big_data(self, image: Image, key: str) -> bytes:
        path = os.path.join(self.data_dir(image.id), big_data_file_name(key))
        with open(path, "rb") as item:
            return item.read()


def _decode_images(records: list[Any], source: str, read_only: bool) -> list[Image]:
    if not records:
        return []
    # Imported here: a store without images (most opens of the CLI) never needs the class.
    from ..image import Image

    return [Image.from_json(record, source=source, read_only=read_only) for record in records]


def _without_names(image: Image, names: set[str]) -> Image:
    return replace(image, names=tuple(name for name in image.names if name not in names))
