"""The layers of one image applied at once: :meth:`LayerStore.put_chain`.

A chain is reserved in one hold of the store's lock (one incomplete record per layer to apply,
each naming its staging), applied by a pool of threads without the lock, and committed in order
as each layer and those before it are done. On overlay every layer is independent, so all
applies run together, as many at a time as there are workers. On vfs a layer starts as a copy
of its parent's tree, so each apply starts as soon as its parent is committed, while the
applies that follow wait their turn.

Ids are the caller's, or containers/image's (``storage_dest.go``): a base layer's id is the hex
of its DiffID, any other's is the sha256 hex of ``PARENT_ID + "+" + DIFFID_HEX``, so a store
filled by layerstore and one filled by skopeo hold the same ids. An id known before the apply
(given, or computed from a DiffID the caller gave) that the store already has is reused and
its blob never read; an id known only once the blob's DiffID is (a reservation holds a
provisional id until then) that the store has by then is reused too, and the staged copy
dropped.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..engines import ApplyResult, DiffSource
from ..errors import ChainFailed, DuplicateID, InvalidLayerData, LayerStoreError
from ..faults import fault
from ..layer import Layer, check_layer_id

if TYPE_CHECKING:
    from .layer_store import LayerStore, _Reservation

__all__ = ["ChainBlob", "chain_layer_id", "run_chain"]

_WAIT_SECONDS = 0.05  # how often a commit looks again at a layer another process is making


@dataclass(frozen=True, slots=True)
class ChainBlob:
    """One layer of a chain: its blob and what the caller already knows of it."""

    diff: DiffSource
    """A path, a bytes-like object or a binary file object (as :meth:`LayerStore.put`)."""
    compressed_digest: str | None = None
    """The trusted ``sha256:`` digest of the blob as given (a manifest's layer digest)."""
    uncompressed_digest: str | None = None
    """The trusted DiffID (the image config's ``rootfs.diff_ids``): with it the layer's id is
    known before the blob is read, and a layer the store has is never applied again."""
    id: str | None = None
    """The layer's id; by default containers/image's."""
    names: tuple[str, ...] = ()
    """Names for the layer."""
    verify: bool = False
    """Check the digests instead of trusting them: the apply computes both and the layer is
    not committed when one differs (InvalidLayerData). An image load verifies what the
    manifest and the config claim; the DiffID still gives the layer's id beforehand."""


def chain_layer_id(parent_id: str, diff_id: str) -> str:
    """containers/image's id of the layer with DiffID ``diff_id`` on ``parent_id``."""
    hex_digest = diff_id.removeprefix("sha256:")
    if not parent_id:
        return hex_digest
    return hashlib.sha256(f"{parent_id}+{hex_digest}".encode("ascii")).hexdigest()


def as_chain_blob(item: DiffSource | ChainBlob) -> ChainBlob:
    if isinstance(item, ChainBlob):
        if item.id is not None:
            check_layer_id(item.id)
        return ChainBlob(
            item.diff,
            item.compressed_digest,
            item.uncompressed_digest,
            item.id,
            tuple(item.names),
            item.verify,
        )
    return ChainBlob(item)


@dataclass
class _Step:
    """One layer of a running chain."""

    index: int
    blob: ChainBlob
    reused: Layer | None = None
    reservation: _Reservation | None = None
    known_id: str | None = None
    """The final id, when known before the apply."""
    future: Future[ApplyResult] | None = None
    committed: threading.Event = field(default_factory=threading.Event)
    final_id: str = ""


def run_chain(
    store: LayerStore, blobs: Iterable[DiffSource | ChainBlob], parent: str | None, workers: int
) -> list[Layer]:
    """What :meth:`LayerStore.put_chain` does."""
    steps = [_Step(index, as_chain_blob(item)) for index, item in enumerate(blobs)]
    if not steps:
        return []
    with store._writing():
        base = store._index.lookup(parent) if parent else ""
        _reserve_locked(store, steps, base)
    pending = [step for step in steps if step.reservation is not None]
    failed = threading.Event()
    committed: list[Layer] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="chain") as pool:
            try:
                for step in pending:
                    step.future = pool.submit(_apply, store, steps, step, base, failed)
                previous = base
                for step in steps:
                    layer = step.reused or _commit(store, step, previous)
                    step.final_id = layer.id
                    step.committed.set()
                    committed.append(store._public(layer))
                    fault("chain:committed")
                    previous = layer.id
            except BaseException:
                failed.set()
                for step in steps:
                    step.committed.set()  # wake the vfs applies waiting for a parent
                raise
    except BaseException as error:
        _abandon(store, [step for step in steps if step.reservation is not None])
        failed_step = next(
            (step for step in steps if step.reused is None and not step.final_id), steps[-1]
        )
        if not isinstance(error, Exception):
            raise
        raise ChainFailed(
            f"blob {failed_step.index} of the chain could not be applied: {error}; "
            f"{len(committed)} layer(s) before it are in the store, none after it",
            failed_step.index,
            committed,
        ) from error
    return committed


def _reserve_locked(store: LayerStore, steps: list[_Step], base: str) -> None:
    """Reuse the layers the store has, reserve the others (one save for all)."""
    from .layer_store import _CreateRequest

    previous = base
    previous_known = True
    reserving = False
    for step in steps:
        blob = step.blob
        known = blob.id
        if known is None and previous_known and blob.uncompressed_digest:
            known = chain_layer_id(previous, blob.uncompressed_digest)
        existing = store._index.get(known) if known and known in store._index else None
        if existing is None and blob.id is None and blob.uncompressed_digest and not reserving:
            existing = _same_contents(store, previous, blob.uncompressed_digest)
            if existing is not None:
                known = existing.id
        if existing is not None and not existing.incomplete and not reserving:
            if existing.parent != previous:
                raise DuplicateID(
                    f"layer {known} exists already, on parent {existing.parent or 'none'}, "
                    f"not on {previous or 'none'}"
                )
            step.reused = existing
            previous = known or ""
            continue
        reserving = True
        step.known_id = known
        # A layer another put is making under that id: ours waits under a provisional id,
        # and the commit takes theirs if they finish first.
        provisional = known is None or known in store._index
        request = _CreateRequest.of(None if provisional else known, previous, {"names": blob.names})
        reservation = store._reserve_locked(request, stage_parent=_start_of(steps, step, base))
        if reservation is None:  # pragma: no cover - a chain never asks for other id maps
            raise LayerStoreError("a chain's layers cannot be staged")
        step.reservation = reservation
        previous = reservation.layer.id
        previous_known = known is not None


def _same_contents(store: LayerStore, parent_id: str, diff_id: str) -> Layer | None:
    """A whole layer on ``parent_id`` whose DiffID is ``diff_id``, made under another id (by
    a put that did not compute containers/image's): the same contents, so it is reused."""
    maps = store._maps_of(parent_id)
    for layer in store._index.by_uncompressed_digest(diff_id):
        if layer.parent == parent_id and (layer.uid_map, layer.gid_map) == maps:
            return layer
    return None


def _start_of(steps: list[_Step], step: _Step, base: str) -> str:
    """The whole layer a staged overlay layer starts from: the chain's last whole layer (only
    its diff's mode is taken, and no apply changes it). vfs starts from the parent's tree
    instead, once the parent is committed (see _apply)."""
    for earlier in reversed(steps[: step.index]):
        if earlier.reused is not None:
            return earlier.reused.id
    return base


def _apply(
    store: LayerStore, steps: list[_Step], step: _Step, base: str, failed: threading.Event
) -> ApplyResult:
    reservation = step.reservation
    assert reservation is not None
    if store.driver.name != "overlay" and step.index > 0:
        parent_step = steps[step.index - 1]
        parent_step.committed.wait()
        if failed.is_set():
            raise LayerStoreError("an earlier layer of the chain failed")
        start = parent_step.final_id
    elif store.driver.name != "overlay":
        start = base
    else:
        start = reservation.stage_from
    if failed.is_set():
        raise LayerStoreError("an earlier layer of the chain failed")
    blob = step.blob
    if not blob.verify:
        return store._stage(
            reservation, blob.diff, blob.compressed_digest, blob.uncompressed_digest, start
        )
    result = store._stage(reservation, blob.diff, None, None, start)
    for what, expected, found in (
        ("blob", blob.compressed_digest, result.compressed_digest),
        ("uncompressed tar (DiffID)", blob.uncompressed_digest, result.uncompressed_digest),
    ):
        if expected and expected != found:
            raise InvalidLayerData(f"the {what} has digest {found}, not {expected} as claimed")
    return result


def _commit(store: LayerStore, step: _Step, parent_id: str) -> Layer:
    reservation = step.reservation
    assert reservation is not None
    assert step.future is not None
    result = step.future.result()
    final_id = step.blob.id or chain_layer_id(parent_id, result.uncompressed_digest)
    while True:
        with store._writing():
            existing = store._index.get(final_id) if final_id in store._index else None
            if existing is None or existing.id == reservation.layer.id:
                layer = store._commit_locked(reservation, result, final_id, parent_id)
                step.reservation = None
                return layer
            if not existing.incomplete:
                if existing.parent != parent_id:
                    raise DuplicateID(
                        f"layer {final_id} exists already, on parent "
                        f"{existing.parent or 'none'}, not on {parent_id or 'none'}"
                    )
                store._drop_reservation_locked(reservation)
                reservation.staging.discard()
                step.reservation = None
                return existing
        time.sleep(_WAIT_SECONDS)  # another process is making this very layer


def _abandon(store: LayerStore, steps: list[_Step]) -> None:
    """Remove the reservations of the steps not committed (after a failure)."""
    try:
        with store._writing():
            for step in steps:
                if step.reservation is not None:
                    store._drop_reservation_locked(step.reservation)
                    step.reservation.staging.discard()
    finally:
        for step in steps:
            if step.reservation is not None:
                step.reservation.staging.discard()
                step.reservation = None


def default_workers() -> int:
    """As many applies at once as the machine has cores for this process."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1
