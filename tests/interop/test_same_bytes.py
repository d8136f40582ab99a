"""The same input gives the same tar-split lines and layers.json records in Go and layerstore."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from layerstore import Compression, LayerStore

from ..tarballs import Entry, build_tar, compress
from .conftest import GoStore
from .layers import BASE_BLOB, WHITEOUT_BLOB

BLOBS = {
    "gzip base": BASE_BLOB,
    "gzip whiteouts": WHITEOUT_BLOB,
    "plain with long and non-UTF-8 names": build_tar(
        [
            Entry(b"d" * 120, "dir", mode=0o755),
            Entry(b"d" * 120 + b"/" + b"f" * 150, "file", data=os.urandom(5000)),
            Entry(b"caf\xe9", "file", data=b"latin-1 name"),
            Entry(b"x<&>y", "file", data=b"escaped in JSON"),
            Entry(b"xattrs", "file", data=b"x", xattrs={"user.comment": b"hello"}),
        ]
    ),
    "zstd": compress(build_tar([Entry(b"z", "file", data=b"zstd" * 1000)]), Compression.ZSTD),
    # Go's xz reader, like its zstd reader, returns the last bytes together with end-of-file.
    "xz": compress(build_tar([Entry(b"x", "file", data=b"xz" * 1000)]), Compression.XZ),
    "bzip2": compress(build_tar([Entry(b"b", "file", data=b"bz" * 1000)]), Compression.BZIP2),
}


def tar_split_lines(root: Path, driver: str, layer_id: str) -> list[bytes]:
    path = root / f"{driver}-layers" / f"{layer_id}.tar-split.gz"
    return gzip.decompress(path.read_bytes()).splitlines()


@pytest.mark.parametrize("blob_name", sorted(BLOBS))
def test_tar_split_lines_equal_gos(
    go: GoStore, ours: Callable[[], LayerStore], blob_name: str
) -> None:
    blob = BLOBS[blob_name]
    go_id = go.import_layer(blob)
    layer, _ = ours().put(blob)
    assert tar_split_lines(go.root, go.driver, layer.id) == tar_split_lines(
        go.root, go.driver, go_id
    )


def test_records_have_gos_keys_in_gos_order(go: GoStore, ours: Callable[[], LayerStore]) -> None:
    go_id = go.import_layer(BASE_BLOB, "from-go")
    go.run("set-metadata", "-m", "m", go_id)
    go.run("set-layer-data", go_id, "k", stdin=b"v")
    store = ours()
    layer, _ = store.put(BASE_BLOB, names=["from-layerstore"])
    store.set_metadata(layer.id, "m")
    store.set_big_data(layer.id, "k", b"v")
    raw = json.loads(Path(go.root, f"{go.driver}-layers", "layers.json").read_text())
    records = {record["id"]: record for record in raw}
    go_record, ours_record = records[go_id], records[layer.id]
    assert list(ours_record) == list(go_record)
    for key in ("metadata", "compressed-diff-digest", "compressed-size", "diff-digest",
                "diff-size", "compression", "uidset", "gidset", "big-data-names"):  # fmt: skip
        assert ours_record[key] == go_record[key], key
