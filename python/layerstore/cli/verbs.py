"""The verbs: each takes the open store and the parsed arguments, calls the API, prints.

A verb prints results on stdout and nothing else; it raises :class:`CommandError` with a sentence
for the user when the generic wording of an error (see ``cli.describe``) would not say enough.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from argparse import Namespace
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, NoReturn

from ..atomic import write_atomic
from ..errors import BigDataUnknown, ChainFailed, InvalidLayerData, NotSupported
from .common import (
    PROG,
    CommandError,
    UsageError,
    cell,
    human_size,
    layer_to_json,
    os_error,
    print_json,
    print_table,
)
from .streams import Progress, copy_stream, open_blob, read_all

if TYPE_CHECKING:
    from .. import LayerStore, Problem

__all__ = [
    "add_names",
    "apply_diff",
    "big_data",
    "changes",
    "check",
    "create_layer",
    "delete_layer",
    "diff",
    "diff_size",
    "flag_value",
    "flags",
    "import_layer",
    "layers",
    "metadata",
    "mount",
    "mounted",
    "remove_names",
    "repair",
    "set_names",
    "status",
    "unmount",
    "wipe",
]


def layers(store: LayerStore, arguments: Namespace) -> None:
    """``layers``: a table of the layers, parents first, or every field with ``--json``."""
    found = store.layers()
    if arguments.json:
        print_json([layer_to_json(layer) for layer in found])
        return
    rows = [
        [
            layer.id[:12],
            ",".join(cell(name) for name in layer.names) or "-",
            layer.parent[:12] or "-",
            human_size(layer.uncompressed_size) if layer.uncompressed_digest else "-",
            str(layer.mount_count or "-"),
            layer.created[:19].replace("T", " "),
        ]
        for layer in found
    ]
    print_table(["ID", "NAMES", "PARENT", "SIZE", "MOUNTS", "CREATED (UTC)"], rows)


def create_layer(store: LayerStore, arguments: Namespace) -> None:
    """``create-layer``: an empty layer; prints its id."""
    layer = store.create(id=arguments.id, parent=arguments.parent, names=arguments.name)
    print(layer.id)


def import_layer(store: LayerStore, arguments: Namespace) -> None:
    """``import``: create a layer and apply a blob to it in one go, or a chain of layers from
    several blobs at once; prints the ids, first to last."""
    files: list[str] = arguments.files
    if len(files) > 1:
        import_chain(store, arguments)
        return
    (path,) = files
    with open_blob(path, "import") as source:
        try:
            layer, _size = store.put(
                source, id=arguments.id, parent=arguments.parent, names=arguments.name
            )
        except InvalidLayerData as exc:
            raise CommandError(f"cannot import {path!r}: {exc}; nothing was stored") from None
    if layer.compressed_size == 0:
        # Go makes an empty layer of an empty stream too; say so, as it may be a mistake.
        print(f"{PROG}: {path} was empty: the new layer is empty", file=sys.stderr)
    print(layer.id)


def import_chain(store: LayerStore, arguments: Namespace) -> None:
    """``import FILE FILE...``: the layers of one image, one progress bar each."""
    files: list[str] = arguments.files
    if arguments.id is not None:
        raise CommandError("--id names one layer: a chain's ids are containers/image's")
    if files.count("-") > 1:
        raise CommandError("standard input ('-') can be one of the blobs only once")
    from ..store.chain import ChainBlob

    with ExitStack() as blobs:
        sources = [
            blobs.enter_context(
                open_blob(path, f"layer {number}/{len(files)}", position=number - 1)
            )
            for number, path in enumerate(files, start=1)
        ]
        chain = [
            ChainBlob(source, names=tuple(arguments.name) if number == len(files) else ())
            for number, source in enumerate(sources, start=1)
        ]
        try:
            layers = store.put_chain(chain, parent=arguments.parent)
        except ChainFailed as exc:
            for layer in exc.committed:
                print(layer.id)
            cause = exc.__cause__
            raise CommandError(
                f"cannot import {files[exc.index]!r} (blob {exc.index + 1} of {len(files)}): "
                f"{cause if cause is not None else exc}; "
                f"{len(exc.committed)} layer(s) before it were stored, none after it"
            ) from None
    for path, layer in zip(files, layers, strict=True):
        if layer.compressed_size == 0:
            print(f"{PROG}: {path} was empty: its layer is empty", file=sys.stderr)
        print(layer.id)


def apply_diff(store: LayerStore, arguments: Namespace) -> None:
    """``apply-diff``: apply a blob to an existing layer."""
    with open_blob(arguments.file, "apply-diff") as source:
        try:
            store.apply_diff(arguments.layer, source)
        except InvalidLayerData as exc:
            raise CommandError(
                f"cannot apply {arguments.file!r} to layer {arguments.layer!r}: {exc}; "
                "its files may be partly changed: delete the layer and import the blob again"
            ) from None


_SUFFIX_COMPRESSIONS = ((".tar", "none"), (".tar.gz", "gzip"), (".tgz", "gzip"),
                        (".tar.zst", "zstd"), (".tzst", "zstd"))  # fmt: skip


def compression_of_name(path: str) -> str | None:
    """The compression a file name's suffix asks for (``.tar``, ``.tar.gz``/``.tgz``,
    ``.tar.zst``), or None."""
    name = os.path.basename(path).lower()
    for suffix, compression in _SUFFIX_COMPRESSIONS:
        if name.endswith(suffix):
            return compression
    return None


def diff(store: LayerStore, arguments: Namespace) -> None:
    """``diff``: the layer's tarball, to stdout or (atomically) to ``-o FILE``."""
    to_stdout = arguments.output in (None, "-")
    if to_stdout and sys.stdout.isatty():
        raise CommandError(
            "refusing to write a tarball to a terminal: redirect stdout, or use -o FILE"
        )
    layer = store.get(arguments.layer)
    # Without --compression, a file's name says what it holds (base.tar is a plain tar); a
    # name with no known suffix, and stdout, get the compression of the layer's own blob.
    compression = arguments.compression or (
        None if to_stdout else compression_of_name(arguments.output)
    )
    try:
        stream = store.diff(layer.id, arguments.from_layer, compression)
    except NotSupported as exc:
        raise CommandError(f"{exc} with --compression") from None
    compression = compression or layer.compression.name.lower()
    # Only an uncompressed diff against the parent has a length known before it is written.
    exact = compression == "none" and not arguments.from_layer and layer.uncompressed_digest
    # No bar when the tarball goes to stdout: it is piped on to another program (a terminal
    # is refused above), whose own output the bar would garble.
    total = layer.uncompressed_size if exact else None
    progress = Progress("diff", total, enabled=False if to_stdout else None)
    with stream, progress:
        try:
            if to_stdout:
                copy_stream(stream, sys.stdout.buffer, progress)
                sys.stdout.buffer.flush()
            else:
                write_atomic(
                    arguments.output,
                    lambda target: copy_stream(stream, target, progress),
                    mode=None,
                )
        except InvalidLayerData as exc:
            where = "what reached stdout is incomplete" if to_stdout else "no file was written"
            raise CommandError(
                f"cannot diff layer {layer.id[:12]}: {exc} ({where}); its files changed "
                "since it was applied: delete the layer and import its blob again"
            ) from None
        except OSError as exc:
            # Blame the output only for errors about it (or its temporary file beside it).
            beside = os.path.dirname(os.path.abspath(arguments.output or "."))
            about_output = exc.filename is None or (
                os.path.dirname(os.path.abspath(os.fsdecode(exc.filename))) == beside
            )
            if to_stdout or not about_output:
                raise
            raise CommandError(f"cannot write {os_error(exc, arguments.output)}") from None
    if not to_stdout and not arguments.compression:
        # The compression was chosen here, not asked for: say which.
        print(
            f"{PROG}: wrote {arguments.output} ({compression}, "
            f"{os.path.getsize(arguments.output)} bytes)",
            file=sys.stderr,
        )


def changes(store: LayerStore, arguments: Namespace) -> None:
    """``changes``: a table of the paths added, modified and deleted, or ``--json``."""
    found = store.changes(arguments.layer, arguments.from_layer)
    if arguments.json:
        print_json([{"path": change.path, "kind": change.kind} for change in found])
        return
    print_table(["KIND", "PATH"], [[change.kind, cell(change.path)] for change in found])


def diff_size(store: LayerStore, arguments: Namespace) -> None:
    """``diff-size``: the estimated length of the diff, in bytes."""
    print(store.diff_size(arguments.layer, arguments.from_layer))


def mount(store: LayerStore, arguments: Namespace) -> None:
    """``mount``: mount the layer with its parents; prints the mount point."""
    print(store.mount(arguments.layer, options=tuple(arguments.option)))


def unmount(store: LayerStore, arguments: Namespace) -> None:
    """``unmount``: drop one use of the mount (all with ``--force``)."""
    if store.unmount(arguments.target, force=arguments.force):
        # Not an error: other users still hold the mount, as intended. Say so on stderr,
        # keeping stdout empty as it is for a full unmount.
        print(
            f"{PROG}: {arguments.target} is still mounted for other users; --force unmounts it now",
            file=sys.stderr,
        )


def mounted(store: LayerStore, arguments: Namespace) -> None:
    """``mounted``: how many times the layer is mounted (0: not mounted)."""
    print(store.mounted(arguments.layer))


def delete_layer(store: LayerStore, arguments: Namespace) -> None:
    """``delete-layer``: delete a layer that no other layer builds on (and, without
    ``--force``, that no image or container uses)."""
    store.delete(arguments.layer, force=arguments.force)


def add_names(store: LayerStore, arguments: Namespace) -> None:
    """``add-names``: add names, moving them from any layer that has them."""
    store.add_names(arguments.layer, arguments.names)


def remove_names(store: LayerStore, arguments: Namespace) -> None:
    """``remove-names``: remove names; names the layer does not have are ignored."""
    store.remove_names(arguments.layer, arguments.names)


def set_names(store: LayerStore, arguments: Namespace) -> None:
    """``set-names``: replace the layer's names (none given: clear them)."""
    store.set_names(arguments.layer, arguments.names)


def metadata(store: LayerStore, arguments: Namespace) -> None:
    """``metadata``: print the layer's metadata text, or replace it with ``--set``."""
    if arguments.set is not None:
        store.set_metadata(arguments.layer, arguments.set)
        return
    text = store.metadata(arguments.layer)
    if text:
        print(text, end="" if text.endswith("\n") else "\n")


def big_data(store: LayerStore, arguments: Namespace) -> None:
    """``big-data``: list the keys, write one item to stdout, or store one with ``--set``."""
    if arguments.key is None:
        if arguments.set is not None:
            raise UsageError("--set needs a KEY to store the data under")
        keys = store.big_data_names(arguments.layer)
        if arguments.json:
            print_json(keys)
        else:
            for key in keys:
                print(cell(key))
        return
    if arguments.json:
        raise UsageError("--json lists the keys: leave out KEY")
    if arguments.set is not None:
        store.set_big_data(arguments.layer, arguments.key, read_all(arguments.set))
        return
    try:
        data = store.big_data(arguments.layer, arguments.key)
    except BigDataUnknown as exc:
        raise CommandError(f"{exc}: '{PROG} big-data {arguments.layer}' lists its keys") from None
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def flag_value(text: str) -> Any:
    """A flag value from the command line: JSON when it parses as JSON, else the text.

    ``true`` is a boolean, ``3`` a number and ``{"a": 1}`` an object; ``hello`` (not JSON)
    stays a string, and ``'"3"'`` is the string ``3``. NaN and Infinity stay strings: Go's
    encoder cannot write them, so they could not be stored.
    """

    def refuse(name: str) -> NoReturn:
        raise ValueError(name)

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError:
        return text


def flags(store: LayerStore, arguments: Namespace) -> None:
    """``flags``: print the layer's flags, or change them with ``--set K=V`` and ``--unset K``."""
    if arguments.set or arguments.unset:
        assignments = []
        for assignment in arguments.set:
            key, equals, value = assignment.partition("=")
            if not equals or not key:
                raise UsageError(f"--set wants KEY=VALUE, not {assignment!r}")
            assignments.append((key, flag_value(value)))
        for key, value in assignments:
            store.set_flag(arguments.layer, key, value)
        for key in arguments.unset:
            store.clear_flag(arguments.layer, key)
        return
    found = layer_to_json(store.get(arguments.layer))["flags"]
    if arguments.json:
        print_json(found)
        return
    for key, value in found.items():
        print(f"{cell(key)}={json.dumps(value)}")


def status(store: LayerStore, arguments: Namespace) -> None:
    """``status``: facts about the store and its driver, or a JSON object of them."""
    facts = store.status()
    if arguments.json:
        print_json(dict(facts))
        return
    width = max(len(key) for key, _value in facts) + 1
    for key, value in facts:
        print(f"{key + ':':<{width}} {value}")


def _print_problems(problems: list[Problem], as_json: bool, verb: str) -> None:
    if as_json:
        print_json([dataclasses.asdict(problem) for problem in problems])
        return
    for problem in problems:
        print(f"{problem.kind}: {cell(problem.message)}")


def check(store: LayerStore, arguments: Namespace) -> None:
    """``check``: list what is wrong with the store; exit status 1 when anything is."""
    problems = store.check(contents=arguments.contents)
    _print_problems(problems, arguments.json, "check")
    if problems:
        raise CommandError(
            f"{len(problems)} problem(s) in the store at {store.root!r}: "
            f"'{PROG} repair --yes' fixes what can be fixed safely"
        )
    if not arguments.json:
        print("no problems found")


def repair(store: LayerStore, arguments: Namespace) -> None:
    """``repair``: fix what ``check`` finds, as far as it is safe; refuses without ``--yes``."""
    if not arguments.yes:
        raise CommandError(
            "repair removes orphaned files and deletes layers whose data is missing or "
            "damaged (and the layers built on them): add --yes to do it"
        )
    fixed = store.repair(contents=arguments.contents)
    _print_problems(fixed, arguments.json, "repair")
    if not arguments.json:
        print(f"fixed {len(fixed)} problem(s)")


def wipe(store: LayerStore, arguments: Namespace) -> None:
    """``wipe``: delete every layer; refuses without ``--yes``."""
    if not arguments.yes:
        count = len(store.layers())
        raise CommandError(
            f"wipe deletes all {count} layer(s) of the {store.driver.name} store at "
            f"{store.root!r}: add --yes to do it"
        )
    store.wipe(force=arguments.force)
