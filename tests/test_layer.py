"""The layer record and its layers.json form."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError

import pytest

from layerstore import Compression, IDMap, Layer, gojson
from layerstore.errors import InvalidBigDataName, InvalidStoreData
from layerstore.layer import check_layer_id, check_name, format_created, new_layer_id
from layerstore.paths import big_data_file_name

# Written by containers-storage 1.43 (Debian 12) for an imported gzip layer.
GO_RECORD = (
    '{"id":"2fb016802769aeac0c9a22dc8942d1b9b833c3fbae7da4cb29576084cead1013","names":["imp"],'
    '"created":"2026-11-29T18:54:39.772935181Z","compressed-diff-digest":"sha256:8b09e46d7358ea9'
    '2caa95d4aba7b02c494f26b67b251e6579b44ef4e467eb77f","compressed-size":143,"diff-digest":"sha'
    '256:7bce347f9b87c8d193130c2454667cf1b6f187d362910293fda2f30b8a672af0","diff-size":10240,'
    '"compression":2,"uidset":[0],"gidset":[0]}'
)


def test_go_record_round_trips_byte_for_byte() -> None:
    layer = Layer.from_json(json.loads(GO_RECORD), source="test")
    assert layer.names == ("imp",)
    assert layer.compression is Compression.GZIP
    assert layer.compressed_size == 143
    assert layer.uncompressed_size == 10240
    assert layer.uids == (0,)
    assert gojson.dumps(layer.to_json()) == GO_RECORD


def test_every_field_in_go_order_and_escaped() -> None:
    layer = Layer(
        id="a" * 64,
        names=("n<1>",),
        parent="b" * 64,
        metadata="m&d",
        mount_label="system_u:object_r:container_file_t:s0",
        created="2026-01-02T03:04:05.5Z",
        compressed_digest="sha256:" + "c" * 64,
        compressed_size=10,
        uncompressed_digest="sha256:" + "d" * 64,
        uncompressed_size=20,
        compression=Compression.ZSTD,
        uids=(0, 1000),
        gids=(0, 5),
        flags={"z": 1, "a": {"y": True, "b": None}},
        uid_map=(IDMap(0, 100000, 65536),),
        gid_map=(IDMap(0, 200000, 65536),),
        big_data_names=("manifest",),
    )
    text = gojson.dumps(layer.to_json())
    keys = list(json.loads(text))
    assert keys == [
        "id", "names", "parent", "metadata", "mountlabel", "created", "compressed-diff-digest",
        "compressed-size", "diff-digest", "diff-size", "compression", "uidset", "gidset", "flags",
        "uidmap", "gidmap", "big-data-names",
    ]  # fmt: skip
    assert '"names":["n\\u003c1\\u003e"]' in text
    assert '"flags":{"a":{"b":null,"y":true},"z":1}' in text
    assert '"uidmap":[{"container_id":0,"host_id":100000,"size":65536}]' in text
    again = Layer.from_json(json.loads(text), source="test")
    assert again == layer


def test_empty_values_are_omitted_but_created_is_not() -> None:
    assert Layer(id="x" * 64).to_json() == {"id": "x" * 64, "created": "0001-01-01T00:00:00Z"}


def test_unknown_keys_survive_a_rewrite() -> None:
    record = json.loads(GO_RECORD)
    record["toc-digest"] = "sha256:" + "e" * 64
    record["future"] = {"nested": [1, 2]}
    layer = Layer.from_json(record, source="test")
    assert layer.to_json()["future"] == {"nested": [1, 2]}
    assert layer.to_json()["toc-digest"] == record["toc-digest"]


def test_layers_are_immutable_values() -> None:
    layer = Layer.from_json(json.loads(GO_RECORD) | {"flags": {"k": [1]}}, source="test")
    with pytest.raises(FrozenInstanceError):
        layer.names = ("other",)  # type: ignore[misc]
    with pytest.raises(TypeError):
        layer.flags["k"] = 2  # type: ignore[index]
    assert isinstance(layer.flags["k"], tuple)
    assert hash(layer) == hash(layer.id)


@pytest.mark.parametrize(
    "record",
    [
        {"names": ["x"]},
        {"id": 5},
        {"id": "x", "names": "not-a-list"},
        {"id": "x", "diff-size": "big"},
        {"id": "x", "compression": 9},
        {"id": "x", "uidmap": [{"container_id": "0"}]},
    ],
)
def test_malformed_records_name_the_file(record: dict[str, object]) -> None:
    with pytest.raises(InvalidStoreData, match=r"layers\.json"):
        Layer.from_json(record, source="/store/layers.json")


def test_created_is_formatted_like_go() -> None:
    assert format_created(1_700_000_000_123_400_000) == "2023-11-14T22:13:20.1234Z"
    assert format_created(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert format_created(1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"


def test_new_ids_are_64_hex_and_not_numeric() -> None:
    ids = {new_layer_id() for _ in range(200)}
    assert len(ids) == 200
    for layer_id in ids:
        assert len(layer_id) == 64
        assert int(layer_id, 16) >= 0
        assert not layer_id.isdigit()


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "with space", "\u00e9"])
def test_bad_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid layer id"):
        check_layer_id(bad)


@pytest.mark.parametrize("bad", ["", "\udcff"])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid layer name"):
        check_name(bad)


@pytest.mark.parametrize(
    ("key", "file_name"),
    [
        ("manifest", "manifest"),
        ("v1.0", "v1.0"),
        ("Manifest", "=TWFuaWZlc3Q="),
        ("sha256:ab", "=c2hhMjU2OmFi"),
        ("??>", "=Pz8+"),
    ],
)
def test_big_data_file_names_match_go(key: str, file_name: str) -> None:
    assert big_data_file_name(key) == file_name


@pytest.mark.parametrize("key", ["", ".", "..", "???"])
def test_unstorable_big_data_keys_are_refused(key: str) -> None:
    # "???" encodes to "=Pz8/": Go would try to write into a subdirectory and fail.
    with pytest.raises(InvalidBigDataName):
        big_data_file_name(key)
