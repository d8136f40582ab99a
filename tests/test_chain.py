"""put_chain: the layers of one image applied at once, committed in order."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from layerstore import ChainBlob, ChainFailed, LayerStore, chain_layer_id
from layerstore.layer import Compression

from .reliability.invariants import assert_consistent, staging_leftovers
from .tarballs import Entry, build_tar, compress


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_tars() -> list[bytes]:
    """Four layers, each changing the one below: a later file replaces an earlier one, a
    whiteout removes one, an opaque directory hides a tree."""
    return [
        build_tar([Entry(b"etc", "dir", mode=0o755), Entry(b"etc/os", "file", data=b"one"),
                   Entry(b"etc/gone", "file", data=b"soon removed"),
                   Entry(b"opt", "dir", mode=0o755), Entry(b"opt/old", "file", data=b"hidden"),
                   Entry(b"big", "file", data=os.urandom(300 << 10))]),
        build_tar([Entry(b"etc", "dir", mode=0o755), Entry(b"etc/os", "file", data=b"two"),
                   Entry(b"etc/.wh.gone", "file")]),
        build_tar([Entry(b"opt", "dir", mode=0o755), Entry(b"opt/.wh..wh..opq", "file"),
                   Entry(b"opt/new", "file", data=b"visible")]),
        build_tar([Entry(b"usr", "dir", mode=0o755),
                   *[Entry(f"usr/f{n}".encode(), "file", data=os.urandom(n * 37))
                     for n in range(50)]]),
    ]  # fmt: skip


COMPRESSIONS = [Compression.GZIP, Compression.ZSTD, Compression.NONE, Compression.GZIP]


def image_blobs() -> tuple[list[bytes], list[bytes]]:
    tars = image_tars()
    return tars, [compress(tar, kind) for tar, kind in zip(tars, COMPRESSIONS, strict=True)]


def expected_ids(tars: list[bytes], parent: str = "") -> list[str]:
    """containers/image's ids, computed here from its definition (storage_dest.go)."""
    ids = []
    for tar in tars:
        hex_digest = hashlib.sha256(tar).hexdigest()
        parent = (
            hashlib.sha256(f"{parent}+{hex_digest}".encode()).hexdigest() if parent else hex_digest
        )
        ids.append(parent)
    return ids


def test_chain_ids_diffs_and_tree(store: LayerStore) -> None:
    tars, blobs = image_blobs()
    layers = store.put_chain(blobs)
    assert [layer.id for layer in layers] == expected_ids(tars)
    assert [layer.parent for layer in layers] == ["", *[layer.id for layer in layers[:-1]]]
    assert [layer.uncompressed_digest for layer in layers] == [digest(tar) for tar in tars]
    assert [layer.compressed_digest for layer in layers] == [digest(blob) for blob in blobs]
    assert [layer.id for layer in store.layers()] == [layer.id for layer in layers]
    for layer, tar in zip(layers, tars, strict=True):
        with store.diff(layer.id, compression="none") as stream:
            assert stream.read() == tar
    point = Path(store.mount(layers[-1].id))
    try:
        assert (point / "etc/os").read_bytes() == b"two"
        assert not (point / "etc/gone").exists()
        assert sorted(os.listdir(point / "opt")) == ["new"]
        assert len(os.listdir(point / "usr")) == 50
    finally:
        store.unmount(layers[-1].id)
    assert_consistent(store)


def test_chain_layer_id_matches_containers_image() -> None:
    diff_id = digest(b"layer")
    assert chain_layer_id("", diff_id) == diff_id.removeprefix("sha256:")
    parent = "a" * 64
    assert (
        chain_layer_id(parent, diff_id)
        == hashlib.sha256(f"{parent}+{diff_id.removeprefix('sha256:')}".encode()).hexdigest()
    )


def test_chain_on_a_parent_with_names_and_one_worker(store: LayerStore) -> None:
    base, _ = store.put(build_tar([Entry(b"base", "file", data=b"base")]), names=["base"])
    tars, blobs = image_blobs()
    items = [ChainBlob(blob, names=(f"layer{n}",)) for n, blob in enumerate(blobs)]
    layers = store.put_chain(items, parent="base", workers=1)
    assert [layer.id for layer in layers] == expected_ids(tars, base.id)
    assert [store.get(f"layer{n}").id for n in range(4)] == [layer.id for layer in layers]
    assert layers[0].parent == base.id


class Unreadable(io.RawIOBase):
    """A blob that must never be read: the layer it stands for is in the store already."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        raise AssertionError("a reused layer's blob was read")


def test_layers_in_the_store_are_reused(store: LayerStore) -> None:
    tars, blobs = image_blobs()
    first = store.put_chain(blobs[:2])
    # Known DiffIDs: the ids are known before any blob is read, so none is.
    known = [ChainBlob(Unreadable(), uncompressed_digest=digest(tar)) for tar in tars[:2]]
    assert [layer.id for layer in store.put_chain(known)] == [layer.id for layer in first]
    # Unknown DiffIDs: applied, then found to be there already; the copy is dropped.
    again = store.put_chain(blobs)
    assert [layer.id for layer in again[:2]] == [layer.id for layer in first]
    assert [layer.id for layer in store.layers()] == expected_ids(tars)
    assert_consistent(store)


def test_a_failed_blob_leaves_the_layers_before_it_only(store: LayerStore) -> None:
    tars, blobs = image_blobs()
    broken = list(blobs)
    broken[2] = blobs[2][:700]  # cut inside its second header
    with pytest.raises(ChainFailed) as caught:
        store.put_chain(broken)
    assert caught.value.index == 2
    assert [layer.id for layer in caught.value.committed] == expected_ids(tars[:2])
    assert caught.value.__cause__ is not None
    assert [layer.id for layer in store.layers()] == expected_ids(tars[:2])
    assert staging_leftovers(store) == []
    assert_consistent(store)
    # The rest can be put afterwards, on what stayed.
    assert [layer.id for layer in store.put_chain(blobs)] == expected_ids(tars)


def test_an_empty_chain(store: LayerStore) -> None:
    assert store.put_chain([]) == []
    assert store.layers() == []
