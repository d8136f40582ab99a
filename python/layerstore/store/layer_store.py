"""The layer store: records, names, metadata, big data and their files, shared between processes.

:class:`LayerStore` is the public face of layerstore. It owns *what* happens and *when*: the
records in ``layers.json``, the indexes over them, the locks that let many processes (layerstore
and the Go tools) share one store, and the order of steps that keeps the store consistent when a
process dies at any point. Drivers and engines do the file and byte work it asks for.

Consistency rules (SPEC section 3):

* every write of ``layers.json`` records a new last-writer token in ``layers.lock`` first, then
  replaces the file atomically; readers compare tokens to know when to reload;
* a layer being created or deleted carries the ``incomplete`` flag on disk before any driver
  work starts; opening the store read-write removes such layers with their files;
* a failure in the middle of an operation removes what the operation made, and the in-memory
  view is reloaded from disk whenever a save fails, so memory never claims what disk does not.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import (
    TYPE_CHECKING,
    Any,
    BinaryIO,
    Literal,
    NamedTuple,
    Self,
    TypedDict,
    Unpack,
    cast,
)

from .. import gojson
from ..atomic import write_atomic
from ..drivers import Driver, choose_driver, existing_drivers, open_driver, remove_tree
from ..engines import (
    ApplyResult,
    DiffSource,
    Engine,
    check_diff_compression,
    check_force_mask,
    select_engine,
)
from ..errors import (
    BigDataUnknown,
    DuplicateID,
    DuplicateLayerNames,
    DuplicateName,
    LayerHasChildren,
    LayerNotMounted,
    LayerStoreError,
    LayerUnknown,
    NotSupported,
    OwnersLostWarning,
    StoreIsReadOnly,
)
from ..faults import fault
from ..layer import (
    INCOMPLETE_FLAG,
    Compression,
    IDMap,
    Layer,
    check_layer_id,
    check_name,
    format_created,
    freeze,
    id_maps,
    new_layer_id,
)
from ..paths import big_data_dir, big_data_file_name, big_data_path, tar_split_path
from . import check
from .check import Problem, find_orphans
from .image_store import ImageMethods
from .images import ImageRecords
from .index import LayerIndex
from .locations import default_run_root
from .locking import LockFile
from .mounts import MountPoint, decode_mounts, encode_mounts
from .records import RecordFile, decode_records
from .staging import STAGING_FLAG, Staging, StagingArea
from .users import LayerUsers

if TYPE_CHECKING:
    from ..drivers.changes import Change
    from .chain import ChainBlob

__all__ = ["LayerOptions", "LayerStore"]


class _HeldStream(io.BufferedIOBase):
    """An engine's diff stream that releases the store's lock when it is closed."""

    def __init__(self, stream: BinaryIO, holding: contextlib.ExitStack) -> None:
        super().__init__()
        self._stream = stream
        self._holding = holding

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._stream.read(-1 if size is None else size)

    def read1(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def readinto(self, buffer: Any) -> int:
        return self._stream.readinto(buffer)  # type: ignore[attr-defined, no-any-return]

    def close(self) -> None:
        if not self.closed:
            try:
                self._stream.close()
            finally:
                try:
                    self._holding.close()
                finally:
                    super().close()


def _compression(value: Compression | str) -> Compression:
    if isinstance(value, Compression):
        return value
    try:
        return Compression[str(value).upper()]
    except KeyError:
        raise ValueError(f"unknown compression {value!r}: choose none, gzip or zstd") from None


class LayerOptions(TypedDict, total=False):
    """What :meth:`LayerStore.create` and :meth:`LayerStore.put` take besides id and parent."""

    names: Iterable[str]
    """Names for the new layer (each unique in the store)."""
    mount_label: str
    """The SELinux label for its mounts."""
    writeable: bool
    """Whether the layer is a container's read-write layer."""
    flags: Mapping[str, Any] | None
    """Free-form JSON values stored with the record."""
    uid_map: Iterable[IDMap | tuple[int, int, int]] | None
    """User id mappings: ``(container_id, host_id, size)``."""
    gid_map: Iterable[IDMap | tuple[int, int, int]] | None
    """Group id mappings, like ``uid_map``."""


# The two records below are named tuples, not dataclasses: making a dataclass takes about a
# millisecond at import, which every process that opens a store would pay for records that
# only create and put use.


class _CreateRequest(NamedTuple):
    """The checked arguments of create and put, validated before the lock is taken."""

    id: str | None
    parent: str | None
    names: tuple[str, ...]
    mount_label: str
    writeable: bool
    flags: dict[str, Any]
    uid_map: tuple[IDMap, ...]
    gid_map: tuple[IDMap, ...]

    @classmethod
    def of(cls, layer_id: str | None, parent: str | None, options: LayerOptions) -> Self:
        unknown = set(options) - LayerOptions.__optional_keys__
        if unknown:
            raise TypeError(f"unknown layer option(s): {', '.join(sorted(unknown))}")
        if layer_id is not None:
            check_layer_id(layer_id)
        flags = dict(options.get("flags") or {})
        gojson.dumps(flags)  # refuse flags that cannot be stored before touching disk
        return cls(
            id=layer_id,
            parent=parent,
            names=_dedupe(options.get("names", ())),
            mount_label=options.get("mount_label", ""),
            writeable=options.get("writeable", False),
            flags=flags,
            uid_map=id_maps(options.get("uid_map")),
            gid_map=id_maps(options.get("gid_map")),
        )


class _Reservation(NamedTuple):
    """A staged put between its reservation and its commit."""

    layer: Layer
    """The record as reserved: flagged incomplete, naming the staging."""
    staging: Staging
    stage_from: str
    """The whole layer the driver starts the staged layer from ("" for nothing)."""
    flags: dict[str, Any]
    """The flags the layer has once whole."""


class _RepairNeededError(Exception):
    """Raised inside a reload under a shared lock when repairs need the exclusive lock."""


def _dedupe(names: Iterable[str]) -> tuple[str, ...]:
    # Go's dedupeNames: keep the first of each name, in order.
    return tuple(dict.fromkeys(check_name(name) for name in names))


def _check_root(root: str) -> None:
    """Refuse a root that cannot be a store, saying why (a file, or out of reach)."""
    try:
        info = os.stat(root)
    except FileNotFoundError:
        return  # made on the first read-write open
    except NotADirectoryError:
        raise LayerStoreError(f"cannot use {root} as a store: a part of it is a file") from None
    except PermissionError:
        raise LayerStoreError(
            f"cannot reach the store at {root}: permission denied on a directory above it"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise LayerStoreError(f"cannot use {root} as a store: it is a file, not a directory")


def _owner(path: str) -> str:
    try:
        return str(os.stat(path).st_uid)
    except OSError:
        return "unknown"


def parse_force_mask(value: int | str | None) -> int | None:
    """A ``force_mask`` as a mode: ``"private"`` is 0700, ``"shared"`` 0755, other strings are
    octal (as containers/storage's overlay driver reads storage.conf); ValueError otherwise."""
    if isinstance(value, str):
        named = {"private": 0o700, "shared": 0o755}
        if value in named:
            value = named[value]
        else:
            try:
                value = int(value, 8)
            except ValueError:
                raise ValueError(
                    f"force_mask {value!r} is not private, shared or an octal mode"
                ) from None
    return check_force_mask(value)


def _with_contents(layer: Layer, contents: Layer | ApplyResult) -> Layer:
    """``layer`` described as holding the files of ``contents``: a template layer's, or those
    an apply just wrote."""
    return replace(
        layer,
        compressed_digest=contents.compressed_digest,
        compressed_size=contents.compressed_size,
        uncompressed_digest=contents.uncompressed_digest,
        uncompressed_size=contents.uncompressed_size,
        compression=contents.compression,
        uids=contents.uids,
        gids=contents.gids,
    )


class LayerStore(ImageMethods):
    """A store of container image layers, on disk as containers/storage 1.43 keeps them.

    ``root`` holds the layers (``ROOT/<driver>-layers``, ``ROOT/<driver>``); ``run_root`` holds
    what lasts only until reboot, such as mount counts. The run root defaults to what the
    ``layerstore`` command uses, so both see the same mounts: ``LAYERSTORE_RUN_ROOT``, else
    ``/run/layerstore`` for root (``$XDG_RUNTIME_DIR/layerstore`` for other users), with a
    directory per store below it for stores other than the default one (see
    :func:`~layerstore.default_run_root`); ``ROOT/run`` without a runtime directory. ``driver`` is
    ``"overlay"`` or ``"vfs"``; by default the store's existing driver, else overlay where the
    kernel offers it. ``engine`` is ``"native"`` or ``"pure"`` (default: ``LAYERSTORE_ENGINE``,
    else native). A store opened ``read_only`` takes shared locks only and refuses mutations.

    ``force_mask`` and ``ignore_chown_errors`` are containers/storage's options of those names,
    for stores kept without root (docs/rootless.md): with ``force_mask`` (an octal mode such as
    ``0o700``, or ``"private"``/``"shared"``/``"0755"`` as storage.conf spells it) applied files
    and directories get that mode, nothing is chowned, and each file's owner, mode and device
    numbers from the tar are kept in the ``user.containers.override_stat`` xattr, which
    changes and diffs read; ``ignore_chown_errors`` leaves owners that cannot be set as they
    are. Neither is recorded in the store: open it with the same options every time.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        run_root: str | os.PathLike[str] | None = None,
        driver: str | None = None,
        read_only: bool = False,
        engine: str | Engine | None = None,
        *,
        force_mask: int | str | None = None,
        ignore_chown_errors: bool = False,
    ) -> None:
        self.force_mask = parse_force_mask(force_mask)
        self.ignore_chown_errors = bool(ignore_chown_errors)
        self.root = os.path.abspath(os.fspath(root))
        if run_root is None:
            run_root = default_run_root(root=self.root) or os.path.join(self.root, "run")
        self.run_root = os.path.abspath(os.fspath(run_root))
        self.read_only = read_only
        self.engine: Engine = (
            engine if not isinstance(engine, str | None) else select_engine(engine)
        )
        _check_root(self.root)
        driver_name, self._driver_reason = choose_driver(self.root, driver, self.engine)
        others = [name for name in existing_drivers(self.root) if name != driver_name]
        if others and not read_only and driver_name not in existing_drivers(self.root):
            warnings.warn(
                f"the store at {self.root} holds {', '.join(others)} layers; a separate "
                f"{driver_name} layer store is made beside them (it shares none of them)",
                stacklevel=2,
            )
        self.driver: Driver = open_driver(driver_name, self.root, self.engine)
        if self.force_mask is not None and not self.driver.supports_force_mask:
            raise NotSupported(
                f"force_mask is not supported with the {driver_name} driver yet "
                "(containers/storage needs a mount program such as fuse-overlayfs for it): "
                "use the vfs driver"
            )
        self.driver.override_stat = self.force_mask is not None
        self.layers_dir = os.path.join(self.root, f"{driver_name}-layers")
        self.mounts_dir = os.path.join(self.run_root, f"{driver_name}-layers")
        self._index = LayerIndex()
        self._staging = StagingArea(self.driver.home, self.layers_dir)
        self._images = ImageRecords(self.root, driver_name, read_only=read_only)
        self._users = LayerUsers(self.root, driver_name, self._images)
        self._mounts: dict[str, MountPoint] = {}
        self._load_mutex = threading.Lock()  # one reload at a time among reader threads
        self._closed = False

        layers_lock_path = os.path.join(self.layers_dir, "layers.lock")
        mounts_lock_path = os.path.join(self.mounts_dir, "mountpoints.lock")
        if read_only:
            try:
                os.stat(os.path.join(self.layers_dir, "layers.lock"))
            except PermissionError:
                raise LayerStoreError(
                    f"cannot read the store at {self.root}: permission denied on "
                    f"{self.layers_dir} (it belongs to uid {_owner(self.layers_dir)})"
                ) from None
            except (FileNotFoundError, NotADirectoryError):
                if not os.path.isdir(self.layers_dir):
                    raise LayerStoreError(
                        f"no {driver_name} layer store at {self.root} to open read-only "
                        f"({self.layers_dir} does not exist)"
                    ) from None
            try:
                layers_lock = LockFile.open(layers_lock_path, read_only=True)
            except FileNotFoundError:
                raise LayerStoreError(
                    f"cannot open the store at {self.root} read-only: its lock file "
                    f"{layers_lock_path} is missing (opening the store read-write once makes it)"
                ) from None
            # The mount table is read where it exists (check reports stale counts as a
            # read-write check does); otherwise it is made on the first ro mount.
            mounts_lock = None
            if os.path.exists(mounts_lock_path):
                mounts_lock = LockFile.open(
                    mounts_lock_path, read_only=not os.access(mounts_lock_path, os.W_OK)
                )
        else:
            for directory in (self.layers_dir, self.mounts_dir):
                os.makedirs(directory, mode=0o700, exist_ok=True)
            layers_lock = LockFile.open(layers_lock_path)
            mounts_lock = LockFile.open(mounts_lock_path)
        self._layers_file = RecordFile(os.path.join(self.layers_dir, "layers.json"), layers_lock)
        self._mounts_file = RecordFile(
            os.path.join(self.mounts_dir, "mountpoints.json"), mounts_lock
        )
        if read_only:
            with self._reading():
                pass
        else:
            with self._graph_lock(), self._writing():
                # Loading for writing removed incomplete layers and repaired names; what
                # a process that died left without any record goes too.
                self._remove(find_orphans(self.layers_dir, self.driver, self._index_ids()))
                self._staging.remove_all_dead()
                self._settle_mount_table()
            with self._images.writing():
                self._images.remove_orphan_data()

    # -- life cycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop using the store; later calls raise. The process keeps its lock descriptors."""
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return (
            f"LayerStore({self.root!r}, driver={self.driver.name!r}, "
            f"engine={self.engine.name!r}, {mode})"
        )

    # -- locking and loading -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LayerStoreError(f"the layer store at {self.root} is closed")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Hold the shared lock, with the in-memory view current."""
        self._check_open()
        lock = self._layers_lock
        while True:
            lock.acquire_read()
            try:
                with self._load_mutex:
                    if self._layers_file.modified():
                        self._load("read")
                    elif self._mounts_file.modified():
                        self._load_mounts()
                break
            except _RepairNeededError:
                # Another process died mid-operation; cleaning up needs the exclusive lock.
                lock.release_read()
                with self._writing():
                    pass
            except BaseException:
                lock.release_read()
                raise
        try:
            yield
        finally:
            lock.release_read()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the exclusive lock, with the in-memory view current."""
        self._check_open()
        if self.read_only:
            raise StoreIsReadOnly(f"the layer store at {self.root} is opened read-only")
        lock = self._layers_lock
        lock.acquire_write()
        try:
            if self._layers_file.modified():
                self._load("write")
            elif self._mounts_file.modified():
                self._load_mounts()
            yield
        finally:
            lock.release_write()

    @property
    def _layers_lock(self) -> LockFile:
        lock = self._layers_file.lock
        assert lock is not None
        return lock

    def _load(self, mode: Literal["read", "write", "rollback"]) -> None:
        """Read layers.json (and the mount table) into a new index.

        ``read``: under the shared lock; raises _RepairNeededError when repairs are due.
        ``write``: under the exclusive lock; repairs duplicate names, removes incomplete layers.
        ``rollback``: after a failed save, take what is on disk as it is.
        """
        try:
            layers = self._decode_layers(self._layers_file.read())
        except BaseException:
            self._layers_file.forget()  # read again next time, and fail again if still bad
            raise

        # Names are unique: where two layers claim one, the earlier loses it (as Go repairs it).
        owners: dict[str, int] = {}
        names_repaired = False
        for position, layer in enumerate(layers):
            for name in layer.names:
                earlier = owners.get(name)
                if earlier is not None:
                    loser = layers[earlier]
                    layers[earlier] = replace(
                        loser, names=tuple(n for n in loser.names if n != name)
                    )
                    names_repaired = True
                owners[name] = position
        # Incomplete layers are left by a process that died mid-operation, except those a
        # living staged put is filling: they stay, unseen by lookups, until it commits.
        incomplete = [
            layer.id
            for layer in layers
            if layer.flags and layer.incomplete and not self._being_staged(layer)
        ]

        if names_repaired and self.read_only:
            self._layers_file.forget()
            raise DuplicateLayerNames(
                f"{self._layers_file.path}: several layers share a name, and the store is "
                "opened read-only so it cannot be repaired; open it read-write once"
            )
        if (names_repaired or incomplete) and not self.read_only and mode == "read":
            self._layers_file.forget()
            raise _RepairNeededError
        if self.read_only and incomplete:
            # Another host may be writing these; a read-only store skips them, never deletes.
            layers = [layer for layer in layers if not layer.incomplete]

        self._index = LayerIndex(layers)
        self._load_mounts()
        if mode != "write":
            return
        if incomplete:
            for layer_id in incomplete:
                token = self._index.get(layer_id).flags.get(STAGING_FLAG)
                self._remove_layer_files(layer_id)
                if isinstance(token, str):
                    self._staging.remove_dead(token)
                self._index.remove(layer_id)
                self._mounts.pop(layer_id, None)
            self._save(mounts=True)
        elif names_repaired:
            self._save()

    def _being_staged(self, layer: Layer) -> bool:
        """Whether a living process is applying the layer (a staged put's reservation)."""
        token = layer.flags.get(STAGING_FLAG)
        return isinstance(token, str) and self._staging.is_live(token)

    def _decode_layers(self, data: bytes) -> list[Layer]:
        source = self._layers_file.path
        records = decode_records(data, source, "layers")
        read_only = self.read_only
        return [Layer.from_json(record, source=source, read_only=read_only) for record in records]

    def _load_mounts(self) -> None:
        lock = self._mounts_file.lock
        if lock is None:
            return
        with lock.shared():
            self._read_mounts()

    def _read_mounts(self) -> None:
        """Read mountpoints.json; the caller holds the mounts lock (either way)."""
        try:
            table = decode_mounts(self._mounts_file.read(), source=self._mounts_file.path)
        except BaseException:
            self._mounts_file.forget()
            raise
        self._mounts = {
            layer_id: mount for layer_id, mount in table.items() if layer_id in self._index
        }

    def _save(self, *, mounts: bool = False) -> None:
        """Write layers.json (and mountpoints.json); on failure reload so memory matches disk."""
        try:
            data = gojson.dumps([layer.to_json() for layer in self._index]).encode("utf-8")
            self._layers_file.write(data)
            if mounts:
                fault("save:layers-written")
                self._save_mounts()
        except BaseException:
            self._layers_file.forget()
            with contextlib.suppress(Exception):
                self._load("rollback")
            raise

    def _save_mounts(self) -> None:
        lock = self._mounts_file.lock
        assert lock is not None
        with lock.exclusive():
            self._write_mounts()

    def _write_mounts(self) -> None:
        """Write mountpoints.json; the caller holds the mounts lock exclusively."""
        self._mounts_file.write(encode_mounts(self._mounts, self._index_ids()))

    def reload_if_changed(self) -> bool:
        """Reload the store's view if another process changed it; True when it did."""
        self._check_open()
        with self._load_mutex:
            before = self._layers_file.token, self._mounts_file.token
        with self._reading():
            return (self._layers_file.token, self._mounts_file.token) != before

    # -- reading -------------------------------------------------------------------------------

    def _public(self, layer: Layer) -> Layer:
        mount = self._mounts.get(layer.id)
        if mount is None:
            return layer
        return replace(layer, mount_point=mount.path, mount_count=mount.count)

    def get(self, name: str) -> Layer:
        """The layer with this id, name or unique id prefix; raises LayerUnknown."""
        with self._reading():
            return self._public(self._index.get(self._index.lookup(name)))

    def exists(self, name: str) -> bool:
        """Whether a layer has this id, name or unique id prefix."""
        with self._reading():
            try:
                self._index.lookup(name)
            except LayerUnknown:
                return False
            return True

    def lookup(self, name: str) -> str:
        """The id of the layer with this id, name or unique id prefix; raises LayerUnknown."""
        with self._reading():
            return self._index.lookup(name)

    def layers(self) -> list[Layer]:
        """Every layer, in the order of layers.json (parents before children)."""
        with self._reading():
            if not self._mounts:  # nothing to add to any record
                return list(self._index.visible())
            return [self._public(layer) for layer in self._index.visible()]

    def metadata(self, name: str) -> str:
        """The layer's free-form metadata text."""
        return self.get(name).metadata

    def big_data(self, name: str, key: str) -> bytes:
        """The contents of the layer's big data item ``key``; raises BigDataUnknown."""
        big_data_file_name(key)  # a bad key is refused before the lock is taken
        with self._reading():
            layer_id = self._index.lookup(name)
            path = big_data_path(self.layers_dir, layer_id, key)
            try:
                with open(path, "rb") as item:
                    return item.read()
            except FileNotFoundError:
                raise BigDataUnknown(f"layer {layer_id} has no big data item {key!r}") from None

    def big_data_names(self, name: str) -> list[str]:
        """Keys of the layer's big data items."""
        return list(self.get(name).big_data_names)

    def layers_by_compressed_digest(self, digest: str) -> list[Layer]:
        """Layers whose blob, as given, had this digest (``sha256:<hex>``)."""
        with self._reading():
            return [self._public(layer) for layer in self._index.by_compressed_digest(digest)]

    def layers_by_uncompressed_digest(self, digest: str) -> list[Layer]:
        """Layers whose uncompressed tar (DiffID) had this digest (``sha256:<hex>``)."""
        with self._reading():
            return [self._public(layer) for layer in self._index.by_uncompressed_digest(digest)]

    def size(self, name: str) -> int:
        """The layer's uncompressed size as recorded when its diff was applied, else -1."""
        layer = self.get(name)
        # A digest says the size was set on purpose, not left at its default (as Go reads it).
        return layer.uncompressed_size if layer.uncompressed_digest else -1

    # -- mounts --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _mount_table(self) -> Iterator[None]:
        """Hold mountpoints.lock exclusively with the mount table current (lock order: the
        caller already holds layers.lock)."""
        if self._mounts_file.lock is None:
            os.makedirs(self.mounts_dir, mode=0o700, exist_ok=True)
            self._mounts_file.lock = LockFile.open(
                os.path.join(self.mounts_dir, "mountpoints.lock")
            )
        with self._mounts_file.lock.exclusive():
            if self._mounts_file.modified():
                self._read_mounts()
            yield

    def mount(
        self,
        name: str,
        options: Iterable[str] = (),
        *,
        uid_map: Iterable[IDMap | tuple[int, int, int]] | None = None,
        gid_map: Iterable[IDMap | tuple[int, int, int]] | None = None,
    ) -> str:
        """Mount the layer (its merged tree with its parents) and return where.

        Counts are shared by every process using the store: mounting a mounted layer only
        counts one more user, unless the kernel dropped the mount behind the store's back, in
        which case it is mounted again. ``options``: ``ro`` (the only option read-only stores
        allow), ``nodev``, ``nosuid``, ``noexec`` and overlay options. Raises MountError when
        the kernel refuses, with the errno and the mount data tried.
        """
        wanted = tuple(options)
        if self.read_only and "ro" not in wanted:
            raise StoreIsReadOnly(
                f"the layer store at {self.root} is opened read-only: only ro mounts are allowed"
            )
        maps = (id_maps(uid_map), id_maps(gid_map))
        with self._graph_lock(), self._reading():
            layer_id = self._index.lookup(name)
            if (uid_map is not None or gid_map is not None) and maps != self._maps_of(layer_id):
                raise NotSupported(
                    f"cannot mount layer {layer_id} with other id maps than its own: "
                    "this driver cannot shift ids at mount time; create a layer with those maps"
                )
            with self._mount_table():
                current = self._mounts.get(layer_id)
                if (
                    current is not None
                    and current.count > 0
                    and self.driver.is_mounted(current.path)
                ):
                    self._mounts[layer_id] = MountPoint(current.path, current.count + 1)
                    self._write_mounts()
                    return current.path
                leaked = self.driver.mounted_at(layer_id) if current is None else None
                # A mount the kernel has but no count records (its process died right after
                # mounting) is adopted rather than stacked over.
                path = leaked or self.driver.mount(layer_id, wanted)
                fault("mount:mounted")
                # A count left by a mount the kernel dropped stays: its users still unmount.
                count = (current.count if current is not None else 0) + 1
                self._mounts[layer_id] = MountPoint(os.path.normpath(path), count)
                try:
                    self._write_mounts()
                except BaseException:
                    self.driver.unmount(layer_id)
                    raise
                return path

    def unmount(self, name: str, force: bool = False) -> bool:
        """Drop one user of the layer's mount (all of them with ``force``); the last one
        unmounts it. ``name`` may also be the mount path. Returns whether it is still mounted;
        raises LayerNotMounted if it was not mounted."""
        with self._graph_lock(), self._reading():
            with self._mount_table():
                layer_id = self._mounted_layer(name)
                current = self._mounts.get(layer_id)
                if current is None or current.count <= 0:
                    raise LayerNotMounted(f"layer {layer_id} is not mounted")
                if current.count > 1 and not force:
                    self._mounts[layer_id] = MountPoint(current.path, current.count - 1)
                    self._write_mounts()
                    return True
                # The count goes first: a kill between the two leaves a kernel mount nobody
                # counts, which the next read-write open unmounts, never a count for a mount
                # that is gone.
                del self._mounts[layer_id]
                self._write_mounts()
                fault("unmount:uncounted")
                try:
                    self.driver.unmount(layer_id)
                except BaseException:
                    self._mounts[layer_id] = current
                    self._write_mounts()
                    raise
                if not self._mounts:
                    self._release_mount_setup()
                return False

    @contextlib.contextmanager
    def _graph_lock(self) -> Iterator[None]:
        """Hold ``ROOT/storage.lock`` (Go's graph lock) exclusively, first, as Go's store does
        around mounts: its Shutdown removes the overlay home's bind under it, and a process
        that sees its token change sets the bind up again before it mounts. Only a driver that
        sets anything up for mounts needs it; a store that cannot write it goes without."""
        if self.driver.name != "overlay":
            yield
            return
        lock = self._graph_lock_file()
        if lock is None:
            yield
            return
        with lock.exclusive():
            yield

    def _graph_lock_file(self) -> LockFile | None:
        path = os.path.join(self.root, "storage.lock")
        if self.read_only and not os.access(path, os.W_OK):
            return None
        return LockFile.open(path)

    def _release_mount_setup(self) -> None:
        """Nothing is counted as mounted any more: take down what the driver set up for
        mounts (the overlay home's bind) and tell Go processes so (a new storage.lock token),
        as Go's Shutdown does. The caller holds the graph lock."""
        lock = self._graph_lock_file() if self.driver.name == "overlay" else None
        if lock is None or not lock.held_exclusive:
            return  # only under storage.lock, so that Go processes hear of it
        if self.driver.release_home():
            lock.record_write()

    def _settle_mount_table(self) -> None:
        """Put right what a process killed half-way through a mount, an unmount or a delete
        left in the mount table (under the exclusive lock, on a read-write open).

        Counts for layers that are gone are dropped (a kill between writing layers.json and
        mountpoints.json), and kernel mounts of our layers that no count records (a kill
        between a mount and its count, or between an unmount's count and the unmount) are
        unmounted: every user, Go's too, counts its mounts in this table. A count the kernel
        no longer backs stays, as Go keeps it: its users still unmount (check reports it).
        """
        with self._mount_table():
            on_disk = decode_mounts(self._mounts_file.read(), source=self._mounts_file.path)
            self._mounts = {key: value for key, value in on_disk.items() if key in self._index}
            if set(on_disk) - set(self._mounts):
                self._write_mounts()
            for layer_id in self.driver.mounted_layers():
                if layer_id in self._index and layer_id not in self._mounts:
                    self.driver.unmount(layer_id)
            if not self._mounts and not self.driver.hidden_mounts():
                self._release_mount_setup()

    def _mounted_layer(self, name: str) -> str:
        try:
            return self._index.lookup(name)
        except LayerUnknown:
            path = os.path.normpath(os.path.abspath(name))
            for layer_id, mount in self._mounts.items():
                if mount.path == path:
                    return layer_id
            raise

    def mounted(self, name: str) -> int:
        """How many users hold the layer mounted, in every process (0 when it is not)."""
        with self._reading():
            layer_id = self._index.lookup(name)
            lock = self._mounts_file.lock
            if lock is None:
                return 0
            with lock.shared():
                if self._mounts_file.modified():
                    self._read_mounts()
            mount = self._mounts.get(layer_id)
            return mount.count if mount is not None else 0

    # -- diffs ---------------------------------------------------------------------------------

    def _diff_base(self, to: str, from_: str | None) -> tuple[Layer, str, bool]:
        """The layer, the layer to diff against ("" for nothing) and whether it is the parent."""
        layer = self._index.get(self._index.lookup(to))
        from_id = self._index.lookup(from_) if from_ else layer.parent
        return layer, from_id, from_id == layer.parent

    def diff(
        self,
        to: str,
        from_: str | None = None,
        compression: Compression | str | None = None,
    ) -> BinaryIO:
        """A readable stream of the tarball that turns ``from_`` (default: the parent) into
        ``to``; use it as a context manager, or close it.

        Against the parent, a layer applied from a blob gives back that blob's tar byte for
        byte, rebuilt from its tar-split file and its files, each file's CRC checked as it is
        read (a changed file raises InvalidLayerData naming it). Otherwise the tarball is
        built from the trees. ``compression`` is "none", "gzip" or "zstd"; by default the
        compression the layer's blob had. The store's shared lock is held until the stream is
        closed, as containers/storage holds it: close it before changing the store from the
        same thread.
        """
        holding = contextlib.ExitStack()
        holding.enter_context(self._reading())
        try:
            layer, from_id, from_is_parent = self._diff_base(to, from_)
            wanted = check_diff_compression(
                _compression(compression) if compression is not None else layer.compression
            )
            tar_split = tar_split_path(self.layers_dir, layer.id)
            if from_is_parent and os.path.exists(tar_split):
                # Readable by the store's owner until the stream is closed (drivers/unlock.py).
                holding.enter_context(self.driver.unlocked(layer.id))
                stream = self.engine.open_diff(tar_split, self.driver.layer_dir(layer.id), wanted)
                return cast(BinaryIO, _HeldStream(stream, holding))
            # Both trees readable by the store's owner until the stream is closed; headers take
            # the modes the tar gave, not the grant's (drivers/unlock.py).
            if from_id:
                holding.enter_context(self.driver.unlocked(from_id))
            modes = holding.enter_context(self.driver.unlocked(layer.id))
            entries = self.driver.diff_entries(layer.id, from_id, from_is_parent)
            stream = self.engine.open_tree_diff(
                entries,
                wanted,
                override_stat=self.driver.override_stat,
                original_modes=modes,
            )
            return cast(BinaryIO, _HeldStream(stream, holding))
        except BaseException:
            holding.close()
            raise

    def diff_size(self, to: str, from_: str | None = None) -> int:
        """Bytes of the files the diff from ``from_`` (default: the parent) to ``to`` adds or
        changes (an estimate of the diff's length, from the same walk as :meth:`changes`)."""
        with self._reading():
            layer, from_id, from_is_parent = self._diff_base(to, from_)
            return self.driver.diff_size(layer.id, from_id, from_is_parent)

    def changes(self, to: str, from_: str | None = None) -> list[Change]:
        """The paths added, modified and deleted from ``from_`` (default: the parent) to
        ``to``, sorted by path."""
        with self._reading():
            layer, from_id, from_is_parent = self._diff_base(to, from_)
            return self.driver.changes(layer.id, from_id, from_is_parent)

    def status(self) -> list[tuple[str, str]]:
        """Facts about the store for people, as (key, value) pairs."""
        with self._reading():
            count = sum(1 for _ in self._index.visible())
        from ..userns import describe_ownership

        ownership, why = describe_ownership(self.force_mask, self.ignore_chown_errors)
        return [
            ("Root", self.root),
            ("Run root", self.run_root),
            *self.driver.status(),
            ("Driver chosen because", self._driver_reason),
            ("Engine", self.engine.name),
            ("Ownership", ownership),
            ("Ownership because", why),
            ("Read-only", "yes" if self.read_only else "no"),
            ("Layers", str(count)),
        ]

    # -- creating and deleting -----------------------------------------------------------------

    def create(
        self,
        id: str | None = None,
        parent: str | None = None,
        *,
        template: str | None = None,
        **options: Unpack[LayerOptions],
    ) -> Layer:
        """Create an empty layer on top of ``parent`` (an id, name or prefix; None: a base).

        ``options`` are those of :class:`LayerOptions`: ``names``, ``mount_label``,
        ``writeable``, ``flags``, ``uid_map`` and ``gid_map``. With ``template``, the new layer
        starts as a copy of that layer's own files, with its digests, sizes, uid/gid sets and
        tar-split. With ``uid_map``/``gid_map`` other than the parent's (or template's), the
        layer's files are chowned to the new maps. The record is saved flagged ``incomplete``
        before the driver makes any directory and the flag is cleared when the layer is whole;
        on failure everything made is removed. Raises DuplicateID, DuplicateName, LayerUnknown
        (parent) or StoreIsReadOnly.
        """
        request = _CreateRequest.of(id, parent, options)
        with self._writing():
            layer = self._create_locked(request, template)
            try:
                return self._finish_locked(layer)
            except BaseException:
                self._abandon(layer.id)
                raise

    def put(
        self,
        diff: DiffSource,
        id: str | None = None,
        parent: str | None = None,
        *,
        compressed_digest: str | None = None,
        uncompressed_digest: str | None = None,
        **options: Unpack[LayerOptions],
    ) -> tuple[Layer, int]:
        """Create a layer and apply ``diff`` to it, as an image pull does; returns the layer and
        the bytes its files take.

        ``diff`` is a path, a bytes-like object or a binary file object holding a tar, plain or
        compressed (gzip, zstd, bzip2, xz). ``compressed_digest``/``uncompressed_digest`` are
        trusted ``sha256:`` digests of the blob as given and uncompressed: when known they are
        not computed again. ``options`` are those of :meth:`create`. If anything fails,
        nothing of the layer remains. Raises InvalidLayerData for a bad blob, plus whatever
        :meth:`create` raises.
        """
        request = _CreateRequest.of(id, parent, options)
        with self._writing():
            reservation = self._reserve_locked(request)
            if reservation is None:
                return self._put_in_place_locked(
                    request, diff, compressed_digest, uncompressed_digest
                )
        try:
            result = self._stage(reservation, diff, compressed_digest, uncompressed_digest)
        except BaseException:
            self._abandon_reservation(reservation)
            raise
        with self._writing():
            layer = self._commit_locked(reservation, result)
        return self._public(layer), result.size

    def _put_in_place_locked(
        self,
        request: _CreateRequest,
        diff: DiffSource,
        compressed_digest: str | None,
        uncompressed_digest: str | None,
    ) -> tuple[Layer, int]:
        """A put applied in the layer's own directory, holding the store throughout (a layer
        whose id maps differ from its parent's: its parent's files are shifted into it first)."""
        layer = self._create_locked(request)
        try:
            size = self._apply_locked(layer, diff, compressed_digest, uncompressed_digest)
            return self._finish_locked(self._index.get(layer.id)), size
        except BaseException:
            self._abandon(layer.id)
            raise

    # -- staged puts: reserve under the lock, apply without it, commit under it ----------------

    def _reserve_locked(
        self, request: _CreateRequest, stage_parent: str | None = None
    ) -> _Reservation | None:
        """Save the new layer's record flagged incomplete, naming a fresh staging; None when
        the layer cannot be staged (its id maps differ from its parent's).

        ``stage_parent``: the whole layer the driver takes the staged layer's start from, when
        it is not the parent (a chain's later layers, whose parents are staged too)."""
        layer_id = request.id if request.id is not None else self._fresh_id()
        if layer_id in self._index:
            raise DuplicateID(f"a layer with id {layer_id} already exists")
        parent_id = self._parent_of(request)
        if (request.uid_map, request.gid_map) != self._maps_of(stage_parent or parent_id):
            return None
        for name in request.names:
            owner = self._index.owner_of(name)
            if owner is not None:
                raise DuplicateName(f"the name {name!r} is already used by layer {owner}")
        staging = self._staging.new()
        try:
            flags = {**request.flags, INCOMPLETE_FLAG: True, STAGING_FLAG: staging.token}
            layer = Layer(
                id=layer_id,
                names=request.names,
                parent=parent_id,
                mount_label=request.mount_label,
                created=format_created(),
                flags=freeze(flags),
                uid_map=request.uid_map,
                gid_map=request.gid_map,
            )
            self._index.add(layer)
            self._save()
        except BaseException:
            if layer_id in self._index and self._index.get(layer_id).flags.get(STAGING_FLAG):
                self._index.remove(layer_id)
            staging.discard()
            raise
        fault("put:reserved")
        stage_from = parent_id if stage_parent is None else stage_parent
        return _Reservation(layer, staging, stage_from, request.flags)

    def _parent_of(self, request: _CreateRequest) -> str:
        if not request.parent:
            return ""
        if request.parent in self._index:  # a chain's staged parent, by its exact id
            return request.parent
        return self._index.lookup(request.parent)

    def _stage(
        self,
        reservation: _Reservation,
        diff: DiffSource,
        compressed_digest: str | None,
        uncompressed_digest: str | None,
        start: str | None = None,
    ) -> ApplyResult:
        """Apply the blob into the reservation's staging (no store lock held), the staged layer
        started from ``start`` (default: the reservation's)."""
        staging = reservation.staging
        target = self.driver.stage(
            staging.directory, reservation.stage_from if start is None else start
        )
        try:
            result = self.engine.apply_layer(
                diff,
                target,
                staging.tar_split,
                whiteout_format=self.driver.whiteout_format,
                trusted_compressed_digest=compressed_digest,
                trusted_uncompressed_digest=uncompressed_digest,
                force_mask=self.force_mask,
                ignore_chown_errors=self.ignore_chown_errors,
            )
        except BaseException:
            self.driver.staged_applied(target, None)
            raise
        self.driver.staged_applied(target, staging.tar_split)
        self._warn_if_owners_lost(result)
        fault("put:staged")
        return result

    def _warn_if_owners_lost(self, result: ApplyResult) -> None:
        """Say so when an unprivileged put, asked for neither force_mask nor
        ignore_chown_errors, gave the tar's files to the caller (chown needs root), so that
        owners are not lost without a word (issue 19)."""
        if self.force_mask is not None or self.ignore_chown_errors or os.geteuid() == 0:
            return
        from ..userns import running_in_user_namespace

        own_uid, own_gid = os.getuid(), os.getgid()
        lost_uids = sorted(set(result.uids) - {own_uid})
        lost_gids = sorted(set(result.gids) - {own_gid})
        if (not lost_uids and not lost_gids) or running_in_user_namespace():
            return
        warnings.warn(
            f"{self.root}: without root the layer's owners (uids {lost_uids or 'none'}, gids "
            f"{lost_gids or 'none'} in its tar) became you (uid {own_uid}, gid {own_gid}) and "
            "device nodes were left out; its diff is unchanged, but its tree and changes() no "
            "longer show them. force_mask keeps them (user.containers.override_stat), "
            "ignore_chown_errors=True accepts the loss without this warning, and 'layerstore "
            "unshare' with subordinate ids sets them for real (docs/rootless.md)",
            OwnersLostWarning,
            stacklevel=3,
        )

    def _commit_locked(
        self,
        reservation: _Reservation,
        result: ApplyResult,
        layer_id: str | None = None,
        parent_id: str | None = None,
    ) -> Layer:
        """Rename a staged layer into place and save it whole; on failure nothing of it is
        left, the reservation included. A chain's layer gives its ``layer_id`` when it was
        known only once its DiffID was, and its ``parent_id`` (the previous layer's final id)."""
        try:
            reserved = self._check_reservation_locked(reservation, parent_id)
            final_id = layer_id or reserved.id
            if final_id != reserved.id and final_id in self._index:
                raise DuplicateID(f"a layer with id {final_id} already exists")
            layer = replace(
                _with_contents(reserved, result), id=final_id, flags=freeze(reservation.flags)
            )
            self.driver.commit_staged(final_id, reserved.parent, reservation.staging.directory)
            try:
                os.replace(reservation.staging.tar_split, tar_split_path(self.layers_dir, final_id))
                fault("put:renamed")
                if final_id == reserved.id:
                    self._index.replace(layer)
                else:
                    self._index.remove(reserved.id)
                    self._index.add(layer)
                    for child in self._index.children(reserved.id):  # a chain's next layer
                        self._index.replace(replace(child, parent=final_id))
                self._save()
            except BaseException:
                self._remove_layer_files(final_id)
                raise
        except BaseException:
            with contextlib.suppress(Exception):
                self._layers_file.forget()
                self._load("rollback")  # memory as disk has it, before dropping the record
            self._drop_reservation_locked(reservation)
            reservation.staging.discard()
            raise
        reservation.staging.discard()
        return layer

    def _check_reservation_locked(self, reservation: _Reservation, parent_id: str | None) -> Layer:
        """The reservation's record, still in the index or made again; its parent still there,
        whole, with the same id maps. A Go process that reads the store while a layer is
        staged takes the incomplete record for the leftover of a dead process and deletes it:
        the record is then made again, if its id and names are still free."""
        token = reservation.staging.token
        reserved = reservation.layer
        current = self._index.get(reserved.id) if reserved.id in self._index else None
        if current is not None and current.flags.get(STAGING_FLAG) != token:
            raise DuplicateID(
                f"layer {reserved.id} was made by another process while this one applied it"
            )
        if current is None:
            for name in reserved.names:
                owner = self._index.owner_of(name)
                if owner is not None:
                    raise DuplicateName(
                        f"the name {name!r} was given to layer {owner} while layer "
                        f"{reserved.id} was being applied"
                    )
        record = current or reserved
        if parent_id is not None and record.parent != parent_id:
            record = replace(record, parent=parent_id)
            if current is not None:
                self._index.replace(record)
        parent = record.parent
        if parent and (parent not in self._index or self._index.get(parent).incomplete):
            raise LayerUnknown(
                f"layer {parent}, the parent of layer {reserved.id}, was deleted while the "
                "layer was being applied"
            )
        if parent and self._maps_of(parent) != (record.uid_map, record.gid_map):
            raise LayerStoreError(
                f"the id maps of layer {parent} changed while its child {reserved.id} was "
                "being applied"
            )
        if current is None:
            self._index.add(record)
        return record

    def _drop_reservation_locked(self, reservation: _Reservation) -> None:
        """Remove the reservation's record, if it is still ours, and what its staging holds
        (first: a put that filled the disk leaves room to save the records)."""
        with contextlib.suppress(Exception):
            reservation.staging.clear()
        layer_id = reservation.layer.id
        if layer_id not in self._index:
            return
        if self._index.get(layer_id).flags.get(STAGING_FLAG) != reservation.staging.token:
            return
        with contextlib.suppress(Exception):
            self._index.remove(layer_id)
            self._save()

    def _abandon_reservation(self, reservation: _Reservation) -> None:
        """Undo a reservation whose staging failed; the original error is what the caller sees."""
        try:
            with contextlib.suppress(Exception), self._writing():
                self._drop_reservation_locked(reservation)
                reservation.staging.discard()
        finally:
            reservation.staging.discard()  # whatever happened above, the lock goes

    def put_chain(
        self,
        blobs: Iterable[DiffSource | ChainBlob],
        parent: str | None = None,
        *,
        workers: int | None = None,
    ) -> list[Layer]:
        """Put the layers of one image, each on the one before (the first on ``parent``), with
        up to ``workers`` applies at a time (default: the cores this process may use); returns
        the layers, first to last.

        Each item is a blob as :meth:`put` takes it, or a :class:`ChainBlob` that also gives its
        trusted digests, id and names. Ids are the caller's or containers/image's (from each
        layer's DiffID and its parent's id, as skopeo and podman make them); a layer the store
        already has under that id is reused, not applied again. The store's lock is held only
        to reserve the layers and to commit each, in order, so readers never wait for an apply.
        If a blob fails, the layers before it stay and nothing of it or the layers after it
        does: ChainFailed says which, with the blob's error as its cause.
        """
        from .chain import default_workers, run_chain

        return run_chain(self, blobs, parent, workers or default_workers())

    def apply_diff(
        self,
        name: str,
        diff: DiffSource,
        *,
        compressed_digest: str | None = None,
        uncompressed_digest: str | None = None,
    ) -> int:
        """Apply ``diff`` (see :meth:`put`) to an existing layer; returns the bytes its files take.

        The layer's digests, sizes, uid/gid sets and tar-split are replaced when the whole blob
        was applied. If it fails part-way, the record and tar-split stay as they were but the
        layer's files may be partly changed: delete the layer.
        """
        with self._writing():
            layer = self._index.get(self._index.lookup(name))
            return self._apply_locked(layer, diff, compressed_digest, uncompressed_digest)

    def _create_locked(self, request: _CreateRequest, template: str | None = None) -> Layer:
        """Save a new record flagged incomplete and make its driver directories."""
        if request.id is not None:
            check_layer_id(request.id)
        layer_id = request.id if request.id is not None else self._fresh_id()
        if layer_id in self._index:
            raise DuplicateID(f"a layer with id {layer_id} already exists")
        parent_id = self._index.lookup(request.parent) if request.parent else ""
        source = self._index.get(self._index.lookup(template)) if template else None
        for name in request.names:
            owner = self._index.owner_of(name)
            if owner is not None:
                raise DuplicateName(f"the name {name!r} is already used by layer {owner}")
        layer = Layer(
            id=layer_id,
            names=request.names,
            parent=parent_id,
            mount_label=request.mount_label,
            created=format_created(),
            flags=freeze({**request.flags, INCOMPLETE_FLAG: True}),
            uid_map=request.uid_map,
            gid_map=request.gid_map,
        )
        if source is not None:
            # A template's contents come with what describes them (as Go's TemplateLayer).
            layer = _with_contents(layer, source)
        self._index.add(layer)
        self._save(mounts=True)
        fault("create:record-saved")
        try:
            if source is None:
                self.driver.create(layer_id, parent_id, writeable=request.writeable)
                old_maps = self._maps_of(parent_id)
            else:
                self.driver.create_from_template(
                    layer_id, source.id, parent_id, writeable=request.writeable
                )
                self._copy_tar_split(source.id, layer_id)
                old_maps = (source.uid_map, source.gid_map)
            if old_maps != (request.uid_map, request.gid_map):
                self.driver.update_id_map(layer_id, old_maps, (request.uid_map, request.gid_map))
        except BaseException:
            self._abandon(layer_id)
            raise
        return layer

    def _maps_of(self, layer_id: str) -> tuple[tuple[IDMap, ...], tuple[IDMap, ...]]:
        if not layer_id:
            return (), ()
        layer = self._index.get(layer_id)
        return layer.uid_map, layer.gid_map

    def _copy_tar_split(self, source_id: str, layer_id: str) -> None:
        source = tar_split_path(self.layers_dir, source_id)
        try:
            with open(source, "rb") as tar_split:
                data = tar_split.read()
        except FileNotFoundError:
            return
        write_atomic(tar_split_path(self.layers_dir, layer_id), data)

    def _finish_locked(self, layer: Layer) -> Layer:
        """Clear the incomplete flag: the layer is whole."""
        flags = {key: value for key, value in layer.flags.items() if key != INCOMPLETE_FLAG}
        finished = replace(layer, flags=freeze(flags))
        self._index.replace(finished)
        self._save()
        return finished

    def _apply_locked(
        self,
        layer: Layer,
        diff: DiffSource,
        compressed_digest: str | None,
        uncompressed_digest: str | None,
    ) -> int:
        result = self.engine.apply_layer(
            diff,
            self.driver.layer_dir(layer.id),
            tar_split_path(self.layers_dir, layer.id),
            whiteout_format=self.driver.whiteout_format,
            trusted_compressed_digest=compressed_digest,
            trusted_uncompressed_digest=uncompressed_digest,
            force_mask=self.force_mask,
            ignore_chown_errors=self.ignore_chown_errors,
        )
        self._warn_if_owners_lost(result)
        applied = _with_contents(layer, result)
        fault("put:applied")
        self._index.replace(applied)
        self._save()
        return result.size

    def _fresh_id(self) -> str:
        layer_id = new_layer_id()
        while layer_id in self._index:
            layer_id = new_layer_id()
        return layer_id

    def _abandon(self, layer_id: str) -> None:
        """Remove a layer whose creation failed; the original error is what the caller sees."""
        with contextlib.suppress(Exception):
            self._remove_layer_files(layer_id)
            if layer_id in self._index:
                self._index.remove(layer_id)
                self._mounts.pop(layer_id, None)
                self._save(mounts=True)

    def delete(self, name: str, force: bool = False) -> None:
        """Delete a layer and all its files.

        Raises LayerHasChildren if layers build on it, and LayerUsedByImage or
        LayerUsedByContainer if an image or a container of the store (podman's, in
        ``ROOT/<driver>-images`` and ``ROOT/<driver>-containers``) uses it, unless ``force``:
        deleting such a layer breaks podman for the whole store.
        """
        with self._graph_lock(), self._writing():
            layer_id = self._index.lookup(name)
            children = self._index.children(layer_id)
            if children:
                raise LayerHasChildren(
                    f"layer {layer_id} is the parent of {len(children)} layer(s), "
                    f"e.g. {children[0].id}: delete those first"
                )
            if not force:
                self._users.refuse_deleting({layer_id})
            self._delete_locked(layer_id)

    def _delete_locked(self, layer_id: str) -> None:
        layer = self._index.get(layer_id)
        if not layer.incomplete:
            # On disk first: if we die from here on, the next open finishes the deletion.
            self._index.replace(
                replace(layer, flags=freeze({**layer.flags, INCOMPLETE_FLAG: True}))
            )
            self._save()
        fault("delete:marked")
        self._remove_layer_files(layer_id)
        fault("delete:files-removed")
        self._index.remove(layer_id)
        had_mount = self._mounts.pop(layer_id, None) is not None
        self._save(mounts=had_mount)
        if had_mount and not self._mounts:
            self._release_mount_setup()

    def _remove_layer_files(self, layer_id: str) -> None:
        self.driver.unmount(layer_id)  # delete unmounts first, whatever the count says
        self.driver.remove(layer_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tar_split_path(self.layers_dir, layer_id))
        remove_tree(big_data_dir(self.layers_dir, layer_id))

    def wipe(self, force: bool = False) -> None:
        """Delete every layer, children before their parents; like :meth:`delete`, refused
        when an image or a container uses any of them, unless ``force``: then the image
        records go too, as they would name layers that are gone."""
        with self._graph_lock(), self._writing():
            staged = [layer for layer in self._index if layer.incomplete and layer.parent]
            if staged:
                raise LayerHasChildren(
                    f"layer {staged[0].parent} is the parent of layer {staged[0].id}, which a "
                    "put is applying right now: wipe once it is done"
                )
            whole = [layer.id for layer in self._index.visible()]
            if not force:
                self._users.refuse_deleting(set(whole))
            elif not self.read_only:
                with self._images.writing() as images:
                    self._images.remove(*(image.id for image in images))
            for layer_id in reversed(whole):
                self._delete_locked(layer_id)

    # -- checking and repairing ------------------------------------------------------------------

    def _index_ids(self) -> list[str]:
        return [layer.id for layer in self._index]

    def _remove(self, problems: Iterable[Problem]) -> None:
        """Remove orphaned files (under the exclusive lock)."""
        for problem in problems:
            if problem.kind != "orphan" or not problem.path:
                continue
            if os.path.dirname(problem.path) == self._staging.home:
                self._staging.remove_dead(os.path.basename(problem.path))
                continue
            if (
                problem.layer
                and self.driver.exists(problem.layer)
                and (problem.path == self.driver.layer_dir(problem.layer))
            ):
                self.driver.remove(problem.layer)
            else:
                remove_tree(problem.path)

    def check(self, contents: bool = False) -> list[Problem]:
        """What is wrong with the store, without changing anything.

        Finds layers whose driver data, parent, tar-split file or big data items are missing,
        mount counts the kernel no longer backs, and orphaned files. With ``contents``, every
        layer with tar-split is also rebuilt and its digest compared (reads all the data).
        """
        with self._reading():
            return check.find_problems(self, contents)

    def repair(self, contents: bool = False) -> list[Problem]:
        """Fix what :meth:`check` finds, as far as it is safe; returns what was fixed.

        Orphaned files are removed; layers whose data or parent is missing (or, with
        ``contents``, whose files no longer rebuild their diff) are deleted with the layers
        built on them; big data names without files are dropped; stale mount counts are
        cleared; modes widened for a reader that was killed are put back (docs/rootless.md).
        A missing tar-split file is reported but left: the layer still works.
        """
        with self._graph_lock(), self._writing():
            return check.repair_problems(self, contents)

    def _clear_stale_mount(self, layer_id: str) -> None:
        with self._mount_table():
            mount = self._mounts.get(layer_id)
            if mount is not None and not self.driver.is_mounted(mount.path):
                del self._mounts[layer_id]
                self._write_mounts()

    # -- names, metadata, flags, big data ------------------------------------------------------

    def _update(self, name: str, change: Callable[[Layer], Layer]) -> Layer:
        with self._writing():
            layer = self._index.get(self._index.lookup(name))
            changed = change(layer)
            if changed != layer:
                self._index.replace(changed)
                self._save()
            return self._public(changed)

    def _update_names(self, name: str, compute: Callable[[tuple[str, ...]], Iterable[str]]) -> None:
        with self._writing():
            layer = self._index.get(self._index.lookup(name))
            new_names = _dedupe(compute(layer.names))
            if new_names == layer.names:
                return
            # A name another layer holds moves to this one.
            for new_name in new_names:
                owner = self._index.owner_of(new_name)
                if owner is not None and owner != layer.id:
                    other = self._index.get(owner)
                    self._index.replace(
                        replace(other, names=tuple(n for n in other.names if n != new_name))
                    )
            self._index.replace(replace(layer, names=new_names))
            self._save()

    def add_names(self, name: str, names: Iterable[str]) -> None:
        """Add names to the layer, taking them from any layer that has them."""
        extra = list(names)
        self._update_names(name, lambda current: (*current, *extra))

    def remove_names(self, name: str, names: Iterable[str]) -> None:
        """Remove names from the layer; names it does not have are ignored."""
        unwanted = set(names)
        self._update_names(name, lambda current: (n for n in current if n not in unwanted))

    def set_names(self, name: str, names: Iterable[str]) -> None:
        """Replace the layer's names, taking them from any layer that has them."""
        wanted = list(names)
        self._update_names(name, lambda _current: wanted)

    def set_metadata(self, name: str, text: str) -> None:
        """Replace the layer's metadata text."""
        if not isinstance(text, str):
            raise TypeError(f"metadata is text, not {type(text).__name__}")
        self._update(name, lambda layer: replace(layer, metadata=text))

    def set_flag(self, name: str, key: str, value: Any) -> None:
        """Set a flag on the layer; ``value`` must be JSON-serializable."""
        gojson.dumps(value)
        self._update(name, lambda layer: replace(layer, flags=freeze({**layer.flags, key: value})))

    def clear_flag(self, name: str, key: str) -> None:
        """Remove a flag from the layer; a flag it does not have is ignored."""

        def without(layer: Layer) -> Layer:
            flags = {k: v for k, v in layer.flags.items() if k != key}
            return replace(layer, flags=freeze(flags))

        self._update(name, without)

    def set_big_data(self, name: str, key: str, data: bytes) -> None:
        """Store ``data`` as the layer's big data item ``key`` (atomically replacing it)."""
        big_data_file_name(key)  # a bad key is refused before the lock is taken
        payload = bytes(data)
        with self._writing():
            layer = self._index.get(self._index.lookup(name))
            os.makedirs(big_data_dir(self.layers_dir, layer.id), mode=0o700, exist_ok=True)
            write_atomic(big_data_path(self.layers_dir, layer.id, key), payload)
            fault("set-big-data:written")
            if key not in layer.big_data_names:
                self._index.replace(replace(layer, big_data_names=(*layer.big_data_names, key)))
                self._save()
