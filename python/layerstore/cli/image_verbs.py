"""The image verbs: ``images``, ``image``, ``tag``, ``rmi``, ``load`` and ``save``.

They follow the layer verbs' conventions (see ``verbs``): a table for people, ``--json`` for
scripts, one progress bar per layer on a terminal.
"""

from __future__ import annotations

import os
import sys
from argparse import Namespace
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, BinaryIO

from .common import CommandError, cell, human_size, image_to_json, print_json, print_table
from .streams import Progress, ProgressReader

if TYPE_CHECKING:
    from .. import LayerStore
    from ..image import Image
    from ..layer import Layer
    from ..transfer import LayerBlob

__all__ = ["image", "images", "load", "pull", "push", "rmi", "save", "tag"]


def _image_size(store: LayerStore, found: Image) -> int:
    return sum(layer.uncompressed_size for layer in store.image_layers(found.id))


def images(store: LayerStore, arguments: Namespace) -> None:
    """``images``: a table of the images, or every field with ``--json``."""
    found = store.images()
    if arguments.json:
        print_json([image_to_json(entry) for entry in found])
        return
    rows = [
        [
            entry.id[:12],
            ",".join(cell(name) for name in entry.names) or "-",
            entry.layer[:12] or "-",
            human_size(_image_size(store, entry)),
            entry.created[:19].replace("T", " "),
        ]
        for entry in found
    ]
    print_table(["ID", "NAMES", "TOP LAYER", "SIZE", "CREATED (UTC)"], rows)


def image(store: LayerStore, arguments: Namespace) -> None:
    """``image IMAGE``: one image's record and layers."""
    found = store.image(arguments.image)
    layers = store.image_layers(found.id)
    if arguments.json:
        print_json({**image_to_json(found), "layers": [layer.id for layer in layers]})
        return
    print_table(
        ["FIELD", "VALUE"],
        [
            ["id", found.id],
            ["names", ", ".join(cell(name) for name in found.names) or "-"],
            ["digest", found.digest or "-"],
            ["created", found.created],
            ["layers", str(len(layers))],
            ["size", human_size(sum(layer.uncompressed_size for layer in layers))],
            *[["layer", layer.id] for layer in layers],
            *[["big data", cell(key)] for key in found.big_data_names],
        ],
    )


def tag(store: LayerStore, arguments: Namespace) -> None:
    """``tag IMAGE NAME...``: add names, moving them from other images."""
    store.add_image_names(arguments.image, arguments.names)


def rmi(store: LayerStore, arguments: Namespace) -> None:
    """``rmi IMAGE...``: delete images and the layers only they used; print what went."""
    for name in arguments.images:
        target = store.image(name)
        if arguments.untag and len(target.names) > 1 and name in target.names:
            store.remove_image_names(target.id, [name])
            print(f"untagged {name}")
            continue
        deleted = store.delete_image(target.id, keep_layers=arguments.keep_layers)
        print(target.id)
        for layer_id in deleted:
            print(f"deleted layer {layer_id}")


def load(store: LayerStore, arguments: Namespace) -> None:
    """``load SOURCE``: the image's layers as a chain, one progress bar each; prints its id."""
    with ExitStack() as bars:

        def counted(number: int, blob: LayerBlob, stream: BinaryIO) -> BinaryIO:
            progress = bars.enter_context(
                Progress(f"layer {number + 1}", blob.size, position=number)
            )
            return ProgressReader(stream, progress) if progress.wanted else stream  # type: ignore[return-value]

        loaded = store.load(
            arguments.source,
            names=arguments.name,
            platform=arguments.platform,
            wrap_blob=counted if _on_terminal() else None,
        )
    print(loaded.id)


def save(store: LayerStore, arguments: Namespace) -> None:
    """``save IMAGE -o DESTINATION``: prints the manifest's digest."""
    with ExitStack() as bars:

        def counted(number: int, layer: Layer) -> Callable[[int], None]:
            progress = bars.enter_context(
                Progress(f"layer {number + 1}", layer.uncompressed_size or None, position=number)
            )
            return progress.update

        digest = store.save(
            arguments.image,
            arguments.output,
            compression=arguments.compression,
            progress=counted if _on_terminal() else None,
        )
    print(digest)


def _registry_options(arguments: Namespace) -> dict[str, Any]:
    credentials = None
    if arguments.creds:
        username, colon, password = arguments.creds.partition(":")
        if not colon:
            raise CommandError("--creds takes USER:PASSWORD")
        credentials = (username, password)
    return {
        "credentials": credentials,
        "auth_file": arguments.authfile,
        "ca_file": arguments.ca_file,
        "tls_verify": arguments.tls_verify,
        "plain_http": True if arguments.plain_http else None,
    }


def pull(store: LayerStore, arguments: Namespace) -> None:
    """``pull REFERENCE``: one progress bar per blob; prints the image's id (``--json``: its
    record)."""
    with ExitStack() as bars:

        def counted(number: int, blob: LayerBlob, stream: BinaryIO) -> BinaryIO:
            progress = bars.enter_context(
                Progress(f"blob {blob.digest[7:19]}", blob.size, position=number)
            )
            return ProgressReader(stream, progress) if progress.wanted else stream  # type: ignore[return-value]

        pulled = store.pull(
            arguments.reference,
            names=arguments.name or None,
            platform=arguments.platform,
            wrap_blob=counted if _on_terminal() else None,
            **_registry_options(arguments),
        )
    if arguments.json:
        print_json(image_to_json(pulled))
    else:
        print(pulled.id)


def push(store: LayerStore, arguments: Namespace) -> None:
    """``push IMAGE REFERENCE``: prints the manifest's digest (``--json``: the image's record
    and the digest)."""
    with ExitStack() as bars:

        def counted(number: int, layer: Layer) -> Callable[[int], None]:
            total = layer.compressed_size or None
            progress = bars.enter_context(Progress(f"layer {number + 1}", total, position=number))
            return progress.update

        digest = store.push(
            arguments.image,
            arguments.reference,
            compression=arguments.compression,
            progress=counted if _on_terminal() else None,
            **_registry_options(arguments),
        )
    if arguments.json:
        print_json({**image_to_json(store.image(arguments.image)), "pushed": digest})
    else:
        print(digest)


def _on_terminal() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
