"""The ``layerstore`` command (also ``python -m layerstore``): the store from a shell.

The verbs are those of Go's ``containers-storage`` command in a Pythonic form. Each opens the
store, makes one or two calls of :class:`~layerstore.LayerStore` and prints the result: a
table or a line for people, ``--json`` (the API's own data) for scripts. A failure is one line
on stderr that names the layer or file and says what to do, with exit status 1 (2 for usage
errors); ``--debug`` adds the traceback.

``common`` holds the defaults and output helpers, ``streams`` the blob input, the atomic
output and the progress bar, ``verbs`` one function per verb and ``demo`` the tour.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from .. import __version__
from ..drivers import DRIVER_NAMES
from ..engines import ENGINE_NAMES
from ..errors import (
    DuplicateID,
    DuplicateName,
    ImageUnknown,
    LayerStoreError,
    LayerUnknown,
    MountError,
    StoreIsReadOnly,
)
from .common import (
    PROG,
    CommandError,
    UsageError,
    default_root,
    default_run_root,
    one_line,
    os_error,
)

if TYPE_CHECKING:
    from .. import Layer, LayerStore

__all__ = ["main"]

Verb = Callable[["LayerStore", argparse.Namespace], None]
"""A verb's function: it takes the open store and the parsed arguments. The parser names it as
``MODULE.FUNCTION`` of this package (``"verbs.layers"``), and it is imported only once its verb
is chosen: ``layerstore layers`` loads neither the image, transfer and registry code nor the
demo's."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, like every other failure of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {one_line(message)} (see '{self.prog} --help')\n")


def _add_global_options(parser: argparse.ArgumentParser, *, after_verb: bool) -> None:
    """The options every verb shares, accepted before the verb and after it. After it they
    are left out of the verb's help, and only override what was given before."""

    def shown(text: str) -> str:
        return argparse.SUPPRESS if after_verb else text

    unset: Any = argparse.SUPPRESS if after_verb else None
    unset_flag: Any = argparse.SUPPRESS if after_verb else False
    parser.add_argument(
        "--root",
        metavar="DIR",
        default=unset,
        help=shown(
            "the store (default: $LAYERSTORE_ROOT, else /var/lib/layerstore for root and "
            "$XDG_DATA_HOME/layerstore for other users)"
        ),
    )
    parser.add_argument(
        "--run-root",
        metavar="DIR",
        default=unset,
        help=shown(
            "where mount counts live (default: $LAYERSTORE_RUN_ROOT, else /run/layerstore for "
            "root and $XDG_RUNTIME_DIR/layerstore for other users, else ROOT/run)"
        ),
    )
    parser.add_argument(
        "--driver",
        choices=DRIVER_NAMES,
        default=unset,
        help=shown("the storage driver (default: the store's, else overlay where it mounts)"),
    )
    parser.add_argument(
        "--engine",
        choices=ENGINE_NAMES,
        default=unset,
        help=shown("who does the byte work (default: $LAYERSTORE_ENGINE, else native)"),
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        default=unset_flag,
        help=shown("open the store read-only: shared locks only, changes refused"),
    )
    parser.add_argument(
        "--force-mask",
        metavar="MODE",
        default=unset,
        help=shown(
            "keep files with this mode (private = 0700, shared = 0755, or octal) and their "
            "owners and modes in the user.containers.override_stat xattr, as containers/storage "
            "does without root (vfs; docs/rootless.md)"
        ),
    )
    parser.add_argument(
        "--ignore-chown-errors",
        action="store_true",
        default=unset_flag,
        help=shown("leave owners that cannot be set as they are (containers/storage's option)"),
    )
    parser.add_argument(
        "--podman-store",
        action="store_true",
        default=unset_flag,
        help=shown(
            "without --root: the store rootless podman uses ($XDG_DATA_HOME/containers/storage, "
            "run root $XDG_RUNTIME_DIR/containers); run it in 'layerstore unshare'"
        ),
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=unset_flag,
        help=shown("print the traceback of a failure"),
    )


class _Unbuilt(argparse.ArgumentParser):
    """Takes the arguments of the verbs a parser leaves out (``build_parser(only=...)``) and
    drops them: adding them to real parsers is most of the time of a short command."""

    def __init__(self) -> None:
        super().__init__(add_help=False)
        self._dropped = argparse.Action([], argparse.SUPPRESS)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return self._dropped


_GLOBAL_FLAGS = frozenset(("--read-only", "--debug", "--ignore-chown-errors", "--podman-store"))
_GLOBAL_OPTIONS = ("--root", "--run-root", "--driver", "--engine", "--force-mask")
_GLOBAL_ASSIGNED = tuple(f"{option}=" for option in _GLOBAL_OPTIONS)


def _named_verb(argv: Sequence[str]) -> str | None:
    """The verb ``argv`` names where that is plain to see: its first word after global options
    written out in full. None otherwise (help, --version, abbreviations, mistakes), and then
    the whole parser is built, so that argparse says what it always said."""
    words = iter(argv)
    for word in words:
        if word in _GLOBAL_FLAGS or word.startswith(_GLOBAL_ASSIGNED):
            continue
        if word in _GLOBAL_OPTIONS:
            if next(words, None) is None:
                return None
            continue
        return None if word.startswith("-") else word
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line parser: global options, then one subcommand per verb.

    ``only``: the subcommand of that verb alone (what :func:`main` parses once it has seen the
    verb in the arguments), the same parser for that verb's arguments built in a fraction of
    the time; the whole parser if no verb has that name.
    """
    parser = _Parser(
        prog=PROG,
        description=(
            "Container image layers on disk, kept as containers/storage (podman, buildah, "
            "CRI-O) keeps them."
        ),
        epilog=f"'{PROG} demo' shows what it does; '{PROG} COMMAND --help' explains a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_options(parser, after_verb=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    unbuilt = _Unbuilt()

    def verb(name: str, handler: str | None, summary: str) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return unbuilt
        sub = commands.add_parser(name, help=summary, description=summary)
        _add_global_options(sub, after_verb=True)
        sub.set_defaults(handler=handler)
        return sub

    def with_layer(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("layer", metavar="LAYER", help="a layer's id, name or unique id prefix")
        return sub

    def with_json(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--json", action="store_true", help="print JSON, for scripts")
        return sub

    def with_from(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument(
            "--from", dest="from_layer", metavar="L", help="compare with L, not the parent"
        )
        return sub

    def with_new_layer(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--parent", metavar="P", help="the layer to build on (default: none)")
        sub.add_argument(
            "--name", metavar="N", action="append", default=[], help="a name (repeatable)"
        )
        sub.add_argument("--id", metavar="ID", help="the new layer's id (default: random)")
        return sub

    with_json(verb("layers", "verbs.layers", "list the layers, parents first"))
    with_new_layer(
        verb("create-layer", "verbs.create_layer", "create an empty layer; print its id")
    )

    sub = with_new_layer(
        verb(
            "import",
            "verbs.import_layer",
            "create a layer from a blob, or a chain of layers from several; print their ids",
        )
    )
    sub.add_argument(
        "files",
        metavar="FILE|-",
        nargs="+",
        help="a tar, plain or compressed ('-': stdin); several: the layers of one image, "
        "first to last, each on the one before and the first on --parent, applied at once "
        "with containers/image's ids; --name names the last",
    )

    sub = with_layer(verb("apply-diff", "verbs.apply_diff", "apply a blob to an existing layer"))
    sub.add_argument("file", metavar="FILE|-", help="a tar, plain or compressed ('-': stdin)")

    sub = with_from(with_layer(verb("diff", "verbs.diff", "write the tarball of a layer")))
    sub.add_argument(
        "--compression",
        choices=("none", "gzip", "zstd"),
        help="compress it so (default: as the layer's blob was)",
    )
    sub.add_argument("-o", "--output", metavar="FILE", help="write FILE atomically, not stdout")

    with_json(
        with_from(with_layer(verb("changes", "verbs.changes", "list the paths a layer changes")))
    )
    with_from(with_layer(verb("diff-size", "verbs.diff_size", "estimate a diff's size in bytes")))

    sub = with_layer(verb("mount", "verbs.mount", "mount a layer on its parents; print where"))
    sub.add_argument(
        "-o", "--option", metavar="OPT", action="append", default=[], help="e.g. ro (repeatable)"
    )

    sub = verb("unmount", "verbs.unmount", "drop a use of a mount; unmount when none is left")
    sub.add_argument("target", metavar="LAYER|PATH", help="a layer, or where it is mounted")
    sub.add_argument("--force", action="store_true", help="unmount now, for every user")

    with_layer(verb("mounted", "verbs.mounted", "print how many times a layer is mounted"))
    sub = with_layer(verb("delete-layer", "verbs.delete_layer", "delete a layer without children"))
    sub.add_argument(
        "--force", action="store_true", help="delete it even if an image or a container uses it"
    )
    for name, handler, summary, count in (
        ("add-names", "verbs.add_names", "add names, moving them from other layers", "+"),
        ("remove-names", "verbs.remove_names", "remove names from a layer", "+"),
        ("set-names", "verbs.set_names", "replace a layer's names (none: clear them)", "*"),
    ):
        with_layer(verb(name, handler, summary)).add_argument("names", metavar="NAME", nargs=count)

    sub = with_layer(verb("metadata", "verbs.metadata", "print a layer's metadata, or set it"))
    sub.add_argument("--set", metavar="TEXT", help="replace the metadata with TEXT")

    sub = with_json(with_layer(verb("big-data", "verbs.big_data", "list, print or store data")))
    sub.add_argument("key", metavar="KEY", nargs="?", help="the item (leave out: list the keys)")
    sub.add_argument("--set", metavar="FILE|-", help="store FILE ('-': stdin) as the item")

    sub = with_json(with_layer(verb("flags", "verbs.flags", "print a layer's flags, or set them")))
    sub.add_argument(
        "--set",
        metavar="K=V",
        action="append",
        default=[],
        help="set flag K to V, JSON if V parses as JSON, else a string (repeatable)",
    )
    sub.add_argument("--unset", metavar="K", action="append", default=[], help="clear flag K")

    with_json(verb("status", "verbs.status", "describe the store"))
    for name, handler, summary in (
        (
            "check",
            "verbs.check",
            "list what is wrong with the store, exit 1 if anything (opening it read-write "
            "already removes orphans and half-made layers: add --read-only to see them)",
        ),
        ("repair", "verbs.repair", "fix what check finds, as far as it is safe"),
    ):
        sub = with_json(verb(name, handler, summary))
        sub.add_argument(
            "--contents", action="store_true", help="also rebuild every layer's diff and check it"
        )
        if name == "repair":
            sub.add_argument("--yes", action="store_true", help="really remove and delete")
    sub = verb("wipe", "verbs.wipe", "delete every layer of the store")
    sub.add_argument("--yes", action="store_true", help="really delete them all")
    sub.add_argument(
        "--force",
        action="store_true",
        help="delete them even if images or containers use them (and the images with them)",
    )
    _add_image_verbs(verb, with_json)
    unshare = verb(
        "unshare",
        None,
        "run a command in a user namespace mapped as rootless podman maps it (podman unshare)",
    )
    unshare.add_argument(
        "unshare_command",
        metavar="COMMAND",
        nargs=argparse.REMAINDER,
        help="the command and its arguments (default: $SHELL); put -- before it",
    )
    verb("demo", None, "import, mount and diff two layers in a temporary store, timing each step")
    if only is not None and only not in commands.choices:
        return build_parser()
    return parser


def _add_image_verbs(
    verb: Callable[[str, str | None, str], argparse.ArgumentParser],
    with_json: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    image_help = "an image's id, name or unique id prefix"
    with_json(verb("images", "image_verbs.images", "list the images"))
    sub = with_json(verb("image", "image_verbs.image", "show an image: its record and layers"))
    sub.add_argument("image", metavar="IMAGE", help=image_help)
    sub = verb("tag", "image_verbs.tag", "add names to an image, moving them from other images")
    sub.add_argument("image", metavar="IMAGE", help=image_help)
    sub.add_argument("names", metavar="NAME", nargs="+")
    sub = verb("rmi", "image_verbs.rmi", "delete images and the layers only they use")
    sub.add_argument("images", metavar="IMAGE", nargs="+", help=image_help)
    sub.add_argument(
        "--keep-layers", action="store_true", help="delete the record only, keep every layer"
    )
    sub.add_argument(
        "--untag",
        action="store_true",
        help="for a NAME of an image that has others, remove just that name",
    )
    sub = verb("load", "image_verbs.load", "load an image's layers and record; print its id")
    sub.add_argument(
        "source",
        metavar="SOURCE",
        help="oci:DIR[:REF], oci-archive:FILE[:REF] or docker-archive:FILE[:NAME|:@N]",
    )
    sub.add_argument(
        "--name",
        metavar="NAME",
        action="append",
        default=[],
        help="name the image (repeatable; default: the names the source gives)",
    )
    sub.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="the image to take from a multi-platform index (default: this machine's)",
    )
    sub = verb("save", "image_verbs.save", "write an image out; print its manifest's digest")
    sub.add_argument("image", metavar="IMAGE", help=image_help)
    sub.add_argument(
        "-o",
        "--output",
        metavar="DEST",
        required=True,
        help="oci:DIR[:REF], oci-archive:FILE[:REF] or docker-archive:FILE",
    )
    sub.add_argument(
        "--compression",
        choices=("none", "gzip", "zstd"),
        help="compress the layers so (default: gzip; docker archives: none)",
    )
    _add_registry_verbs(verb, with_json, image_help)


def _add_registry_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--creds", metavar="USER:PASSWORD", help="log in with these")
    sub.add_argument(
        "--authfile",
        metavar="FILE",
        help="credentials file (default: $REGISTRY_AUTH_FILE, podman's auth.json, then "
        "~/.docker/config.json)",
    )
    sub.add_argument("--ca-file", metavar="FILE", help="trust the CAs in FILE too")
    sub.add_argument(
        "--tls-verify",
        type=_boolean,
        default=True,
        metavar="BOOL",
        help="verify the registry's certificate (default: true)",
    )
    sub.add_argument(
        "--plain-http",
        action="store_true",
        help="speak plain HTTP (default only for a registry on this machine without TLS)",
    )


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _add_registry_verbs(
    verb: Callable[[str, str | None, str], argparse.ArgumentParser],
    with_json: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    image_help: str,
) -> None:
    sub = with_json(verb("pull", "image_verbs.pull", "pull an image from a registry; print its id"))
    sub.add_argument("reference", metavar="REGISTRY/REPO[:TAG|@DIGEST]")
    sub.add_argument(
        "--name", metavar="NAME", action="append", default=[],
        help="name the image (repeatable; default: the reference)",
    )  # fmt: skip
    sub.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="as for load")
    _add_registry_options(sub)
    sub = with_json(
        verb("push", "image_verbs.push", "push an image to a registry; print its digest")
    )
    sub.add_argument("image", metavar="IMAGE", help=image_help)
    sub.add_argument("reference", metavar="REGISTRY/REPO[:TAG]")
    sub.add_argument(
        "--compression", choices=("none", "gzip", "zstd"),
        help="compress the layers so (default: as each layer's blob was)",
    )  # fmt: skip
    _add_registry_options(sub)


# -- failures, worded ---------------------------------------------------------------------------

_LAYER_ARGUMENTS = ("layer", "target", "parent", "from_layer")


def _unknown_layer(store: LayerStore, arguments: argparse.Namespace, exc: LayerUnknown) -> str:
    """Which layer argument is unknown, and the store's ids and names closest to it."""
    try:
        layers = store.layers()
        for attribute in _LAYER_ARGUMENTS:
            word = getattr(arguments, attribute, None)
            if not word or store.exists(word):
                continue
            if attribute == "target" and os.sep in word:
                return f"no layer of the store at {store.root!r} is mounted at {word!r}"
            prefixed = sum(layer.id.startswith(word) for layer in layers)
            if prefixed > 1:
                return (
                    f"the id prefix {word!r} matches {prefixed} layers: "
                    "type more of the id, or use a name"
                )
            return f"no layer has the id, name or id prefix {word!r}{_suggestion(word, layers)}"
    except LayerStoreError:
        pass
    return f"{exc}; '{PROG} layers' lists them"


def _suggestion(word: str, layers: list[Layer]) -> str:
    if not layers:
        return ": the store has no layers (are --root and --driver right?)"
    # Names are compared whole; ids by their prefix as long as the word, which is how
    # people type them, and shown 12 digits long.
    shown: dict[str, str] = {}
    for layer in layers:
        shown.setdefault(layer.id[: len(word)], layer.id[:12])
        for name in layer.names:
            shown[name] = name
    import difflib

    matches = difflib.get_close_matches(word, shown, n=3)
    if not matches:
        return f"; '{PROG} layers' lists them"
    return "; did you mean " + " or ".join(repr(shown[match]) for match in matches) + "?"


def describe(exc: BaseException, arguments: argparse.Namespace, store: LayerStore | None) -> str:
    """The one line that says what went wrong and what to do about it."""
    if isinstance(exc, CommandError):
        return str(exc)
    if isinstance(exc, LayerUnknown):
        return _unknown_layer(store, arguments, exc) if store is not None else str(exc)
    if isinstance(exc, ImageUnknown):
        return f"{exc}; '{PROG} images' lists them"
    if isinstance(exc, DuplicateName):
        return f"{exc}: choose another name, or move it with '{PROG} add-names LAYER NAME'"
    if isinstance(exc, DuplicateID):
        return f"{exc}: choose another --id, or leave it out for a random one"
    if isinstance(exc, StoreIsReadOnly):
        return f"{exc}: leave out --read-only to change it"
    if isinstance(exc, MountError) and exc.errno in (errno.EPERM, errno.EACCES):
        return f"cannot mount: {exc}: overlay mounts need root; --driver vfs works for anyone"
    if isinstance(exc, LayerStoreError | ValueError | TypeError):
        return str(exc)
    if isinstance(exc, OSError):
        return os_error(exc, owner=_owns_store(store))
    return f"unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)"


def _owns_store(store: LayerStore | None) -> bool:
    """Whether this user owns the store's root (and so needs no other user to write it)."""
    if store is None or os.geteuid() == 0:
        return False
    try:
        return os.stat(store.root).st_uid == os.geteuid()
    except OSError:
        return False


def _warn_in_one_line() -> None:
    """Show warnings (such as a missing native engine) as one line, like failures."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        print(f"{PROG}: warning: {one_line(str(message))}", file=sys.stderr)

    warnings.showwarning = show


def _open_store(arguments: argparse.Namespace) -> LayerStore:
    root, run_root = arguments.root, arguments.run_root
    if getattr(arguments, "podman_store", False) and root is None:
        from ..store.locations import podman_rootless_locations

        try:
            root, podman_run_root = podman_rootless_locations()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        run_root = run_root or podman_run_root
    root = root or default_root()
    run_root = run_root or default_run_root(root=root)
    from ..store.layer_store import LayerStore

    try:
        return LayerStore(
            root,
            run_root,
            driver=arguments.driver,
            read_only=arguments.read_only,
            engine=arguments.engine,
            force_mask=getattr(arguments, "force_mask", None),
            ignore_chown_errors=bool(getattr(arguments, "ignore_chown_errors", False)),
        )
    except OSError as exc:
        raise CommandError(f"cannot open the store at {root!r}: {os_error(exc)}") from None


def _unshare(command: list[str]) -> int:
    """``unshare``: COMMAND's exit status, run as root of a user namespace (and a mount
    namespace) with the user's subordinate ids, as ``podman unshare`` runs it."""
    from ..userns import run_in_namespace

    if command[:1] == ["--"]:
        command = command[1:]
    return run_in_namespace(command or [os.environ.get("SHELL", "/bin/sh")])


def _verb(name: str) -> Verb:
    """The function the parser named ``MODULE.FUNCTION``, imported now."""
    module, _, function = name.partition(".")
    verb: Verb = getattr(importlib.import_module(f".{module}", __name__), function)
    return verb


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``layerstore`` command on ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    parser = build_parser(only=_named_verb(sys.argv[1:] if argv is None else argv))
    try:
        arguments, extra = parser.parse_known_args(argv)
        # argparse fills an optional positional (big-data's KEY) together with the one before
        # it, so in `big-data LAYER --json KEY` the KEY is left over: give it its place.
        if (
            len(extra) == 1
            and not extra[0].startswith("-")
            and vars(arguments).get("key", 0) is None
        ):
            arguments.key = extra.pop()
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 2
    if not arguments.debug:
        _warn_in_one_line()
    store: LayerStore | None = None
    try:
        if arguments.command == "unshare":
            return _unshare(arguments.unshare_command)
        if arguments.command == "demo":
            from .demo import run_demo

            run_demo(arguments)
        else:
            store = _open_store(arguments)
            _verb(arguments.handler)(store, arguments)
        return 0
    except UsageError as exc:
        print(f"{PROG} {arguments.command}: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Whoever read our output went away (`| head`): no traceback. Point stdout at
        # /dev/null so the interpreter's last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if arguments.debug:
            import traceback

            traceback.print_exc()
        print(f"{PROG}: {one_line(describe(exc, arguments, store))}", file=sys.stderr)
        return 1
    finally:
        if store is not None:
            store.close()
