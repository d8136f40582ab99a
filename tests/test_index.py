"""Lookups by id, name, unique id prefix and digest."""

from __future__ import annotations

import pytest

from layerstore import Layer, LayerUnknown
from layerstore.store.index import LayerIndex

IDS = ["abc" + "0" * 61, "abd" + "0" * 61, "f00" + "1" * 61]


def make_index() -> LayerIndex:
    return LayerIndex(
        [
            Layer(id=IDS[0], names=("base", "f00")),
            Layer(id=IDS[1], names=("app",), uncompressed_digest="sha256:u", compressed_digest="c"),
            Layer(id=IDS[2], uncompressed_digest="sha256:u"),
        ]
    )


def test_exact_id_then_name_then_prefix() -> None:
    index = make_index()
    assert index.lookup(IDS[1]) == IDS[1]
    assert index.lookup("app") == IDS[1]
    # "f00" is both a name and a prefix of IDS[2]: the name wins, as in Go.
    assert index.lookup("f00") == IDS[0]
    assert index.lookup("f001") == IDS[2]
    assert index.lookup("abc") == IDS[0]


def test_ambiguous_prefix_is_unknown() -> None:
    with pytest.raises(LayerUnknown, match="ambiguous"):
        make_index().lookup("ab")


@pytest.mark.parametrize("name", ["", "zz", "abc0x", IDS[0] + "0"])
def test_unknown_and_too_short(name: str) -> None:
    with pytest.raises(LayerUnknown) as caught:
        make_index().lookup(name)
    assert isinstance(caught.value, KeyError)


def test_digests_and_children() -> None:
    index = make_index()
    assert [layer.id for layer in index.by_uncompressed_digest("sha256:u")] == IDS[1:]
    assert [layer.id for layer in index.by_compressed_digest("c")] == [IDS[1]]
    assert index.by_compressed_digest("nothing") == []


def test_changes_keep_every_index_in_step() -> None:
    index = make_index()
    index.add(Layer(id="abe" + "0" * 61, names=("new",), parent=IDS[0]))
    assert index.lookup("abe") == "abe" + "0" * 61
    assert [child.id for child in index.children(IDS[0])] == ["abe" + "0" * 61]
    index.replace(Layer(id=IDS[1], names=("renamed",)))
    assert index.owner_of("app") is None
    assert index.lookup("renamed") == IDS[1]
    assert [layer.id for layer in index.by_uncompressed_digest("sha256:u")] == [IDS[2]]
    assert [layer.id for layer in index] == [IDS[0], IDS[1], IDS[2], "abe" + "0" * 61]
    index.remove(IDS[0])
    assert index.owner_of("base") is None
    with pytest.raises(LayerUnknown):
        index.lookup("ab")
    assert index.lookup("abd") == IDS[1]
    assert len(index) == 3
