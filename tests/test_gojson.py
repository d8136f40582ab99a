"""JSON text must be what Go's encoding/json writes, byte for byte."""

from __future__ import annotations

import json

import pytest

from layerstore import gojson


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("b<a>r&", r'"b\u003ca\u003er\u0026"'),
        ("line\u2028para\u2029", r'"line\u2028para\u2029"'),
        ("\b\f\n\r\t", r'"\u0008\u000c\n\r\t"'),
        ("back\\bslash", r'"back\\bslash"'),  # an escaped backslash before "b" stays as it is
        ("back\\\bslash", r'"back\\\u0008slash"'),
        ("\x01\x1f", r'"\u0001\u001f"'),
        ("héllo ✓", '"héllo ✓"'),
        ({"b": 1, "a": [True, None]}, '{"b":1,"a":[true,null]}'),
    ],
)
def test_dumps_matches_go(value: object, expected: str) -> None:
    assert gojson.dumps(value) == expected
    assert json.loads(expected) == value


def test_sort_maps_orders_keys_recursively() -> None:
    value = {"z": {"y": 1, "b": 2}, "a": [{"d": 1, "c": 2}]}
    assert gojson.dumps(gojson.sort_maps(value)) == '{"a":[{"c":2,"d":1}],"z":{"b":2,"y":1}}'
