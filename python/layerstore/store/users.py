"""Who else uses the layers: the images and containers that containers/storage keeps beside them.

podman, buildah and CRI-O record images in ``ROOT/<driver>-images/images.json`` (each names its
top layer, ``layer``, and ``mapped-layers``) and containers in
``ROOT/<driver>-containers/containers.json`` (each names its own read-write ``layer``). A layer
one of them uses must not be deleted, or podman fails for the whole store ("layer not known").
The files are read here, read-only, under their own lock files taken shared, after the layer
store's lock (containers/storage takes them in the same order: layers, images, containers).
"""

from __future__ import annotations

import os
from typing import Any, Literal, NamedTuple

from ..errors import LayerUsedByContainer, LayerUsedByImage
from .images import ImageRecords
from .locking import LockFile
from .records import RecordFile, decode_records

__all__ = ["LayerUser", "LayerUsers"]

UserKind = Literal["image", "container"]


class LayerUser(NamedTuple):
    """An image or a container that uses a layer."""

    kind: UserKind
    id: str
    names: tuple[str, ...]

    def describe(self) -> str:
        named = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.kind} {self.id}{named}"


class LayerUsers:
    """The image and container stores of one store root, for the layers they use."""

    def __init__(self, root: str, driver_name: str, images: ImageRecords) -> None:
        self._images = images
        self._containers = os.path.join(root, f"{driver_name}-containers")

    def of(self, layer_ids: set[str]) -> dict[str, list[LayerUser]]:
        """The users of each of ``layer_ids`` that has any."""
        users: dict[str, list[LayerUser]] = {}
        with self._images.reading() as images:
            for image in images:
                user = LayerUser("image", image.id, image.names)
                for layer_id in (image.layer, *image.mapped_layers):
                    if layer_id in layer_ids:
                        users.setdefault(layer_id, []).append(user)
        for record in self.containers():
            used = record.get("layer")
            if isinstance(used, str) and used in layer_ids:
                user = LayerUser("container", str(record.get("id", "")), _names(record))
                users.setdefault(used, []).append(user)
        return users

    def containers(self) -> list[dict[str, Any]]:
        """The records of containers.json (podman's containers), read under its lock."""
        return self._records(self._containers, "containers")

    def refuse_deleting(self, layer_ids: set[str]) -> None:
        """Raise LayerUsedByImage or LayerUsedByContainer when one of ``layer_ids`` is used."""
        for layer_id, users in self.of(layer_ids).items():
            user = users[0]
            error = LayerUsedByImage if user.kind == "image" else LayerUsedByContainer
            more = f" and {len(users) - 1} more" if len(users) > 1 else ""
            raise error(
                f"layer {layer_id} is used by {user.describe()}{more}: delete the "
                f"{user.kind} first (podman rmi / podman rm), or pass force=True"
            )

    @staticmethod
    def _records(directory: str, stem: str) -> list[dict[str, Any]]:
        path = os.path.join(directory, f"{stem}.json")
        if not os.path.exists(path):
            return []
        try:
            lock: LockFile | None = LockFile.open(
                os.path.join(directory, f"{stem}.lock"), read_only=True
            )
        except FileNotFoundError:
            lock = None  # nobody who locks has written it: read it as it is
        if lock is None:
            with open(path, "rb") as data_file:
                data = data_file.read()
        else:
            with lock.shared():
                data = RecordFile(path, lock).read()
        records = decode_records(data, path, f"{stem}")
        return [record for record in records if isinstance(record, dict)]


def _names(record: dict[str, Any]) -> tuple[str, ...]:
    names = record.get("names")
    return tuple(name for name in names if isinstance(name, str)) if isinstance(names, list) else ()
