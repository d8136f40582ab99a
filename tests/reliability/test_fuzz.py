"""Fuzzing with hypothesis: the tar-split reader and writer, the tar walker and ApplyDiff of both
engines on arbitrary and mutated input.

Whatever the input, an engine either refuses it with InvalidLayerData (or fails with the same
OSError as the other engine, such as ENAMETOOLONG), or gives a result; never another
exception, and the two engines always agree: same refusal, or same lines, entries, digests,
tar-split and tree. The example counts are bounded in CI (derandomized, so CI is reproducible)
and much larger, with fresh random seeds, under ``--long``.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import astuple
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerstore import InvalidLayerData, _native
from layerstore.engines import select_engine
from layerstore.engines.pure import tarsplit
from layerstore.layer import Compression

from ..manifest import tree_manifest
from ..tarballs import layer_tarballs
from .hostile_blobs import COMPRESSORS, valid_layer

T = TypeVar("T")

NATIVE = select_engine("native")
PURE = select_engine("pure")


def examples(request: pytest.FixtureRequest, bounded: int, long: int) -> settings:
    """``bounded`` examples in CI (the same ones each run), ``long`` fresh ones with --long."""
    is_long = bool(request.config.getoption("--long"))
    return settings(
        max_examples=long if is_long else bounded,
        deadline=None,
        derandomize=not is_long,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


def outcome(call: Callable[[], T]) -> tuple[str, T | str]:
    """("ok", result), ("invalid", message) or ("oserror", errno); anything else propagates."""
    try:
        return "ok", call()
    except InvalidLayerData as exc:
        return "invalid", str(exc)
    except OSError as exc:
        return "oserror", str(exc.errno)


_DECODER_ERROR = re.compile(r"(gzip|bzip2|xz|zstd) data is corrupt")


# A character escape of Python's repr (not an escaped backslash before one).
_REPR_ESCAPE = re.compile(r"(?<!\\)\\(U[0-9a-f]{8}|u[0-9a-f]{4}|x[0-9a-f]{2})")


def comparable(result: tuple[str, Any]) -> tuple[str, Any]:
    """What both engines must agree on. The reason a decompressor gives, and how far it got,
    belong to its library (zlib-rs or zlib, libbz2-rs or libbz2, liblzma builds). Names in
    messages are Python's repr in the pure engine, which escapes the characters Python's
    Unicode tables call unprintable (an unassigned code point, say); the native engine has no
    such tables and shows them as they are."""
    kind, value = result
    if kind == "invalid":
        match = _DECODER_ERROR.match(value)
        if match:
            return kind, match.group(0)
        return kind, _REPR_ESCAPE.sub(lambda escape: chr(int(escape.group(1)[1:], 16)), value)
    return result


# -- mutations ------------------------------------------------------------------------------------

# Values a header field can be given (then the block's checksum is made valid again).
_FIELDS = {
    "name": (0, 100),
    "mode": (100, 8),
    "uid": (108, 8),
    "gid": (116, 8),
    "size": (124, 12),
    "mtime": (136, 12),
    "typeflag": (156, 1),
    "linkname": (157, 100),
    "magic": (257, 8),
    "devmajor": (329, 8),
    "prefix": (345, 155),
}
_FIELD_VALUES = st.one_of(
    st.sampled_from(
        [
            b"../",
            b"/",
            b"..",
            b"./a/../../x",
            b".wh.",
            b".wh..wh..opq",
            b"\0",
            b" " * 12,
            b"7" * 11,
            b"\x80" + b"\0" * 7 + b"\x01",
            b"\xff" * 12,
            b"\x80" + b"\xff" * 11,
            b"ustar\x0000",
            b"ustar  \0",
            b"0",
            b"1",
            b"2",
            b"5",
            b"x",
            b"g",
            b"L",
            b"K",
            b"S",
            b"V",
        ]
    ),
    st.binary(min_size=1, max_size=16),
    st.integers(0, 8**11 - 1).map(lambda value: f"{value:011o}\0".encode()),
)


def fix_checksum(data: bytearray, start: int) -> None:
    block = data[start : start + 512]
    if len(block) < 512:
        return
    block[148:156] = b" " * 8
    data[start + 148 : start + 156] = f"{sum(block):06o}\0 ".encode()


@st.composite
def mutated(draw: st.DrawFn, data: bytes, tar_aware: bool = True) -> bytes:
    """``data`` with a few bytes flipped, inserted or deleted, cut short, or (for a tar) a
    header field set to an odd value with a valid checksum."""
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        operations = ["flip", "insert", "delete", "truncate", "repeat"]
        if tar_aware and len(buffer) >= 512:
            operations += ["field", "field", "field"]
        operation = draw(st.sampled_from(operations))
        position = draw(st.integers(0, max(len(buffer) - 1, 0)))
        if operation == "flip" and buffer:
            buffer[position] ^= draw(st.integers(1, 255))
        elif operation == "insert":
            buffer[position:position] = draw(st.binary(min_size=1, max_size=600))
        elif operation == "delete":
            del buffer[position : position + draw(st.integers(1, 600))]
        elif operation == "truncate":
            del buffer[position:]
        elif operation == "repeat":
            buffer[position:position] = buffer[position : position + draw(st.integers(1, 1024))]
        elif operation == "field":
            block = draw(st.integers(0, len(buffer) // 512 - 1)) * 512
            offset, width = _FIELDS[draw(st.sampled_from(sorted(_FIELDS)))]
            value = draw(_FIELD_VALUES)[:width]
            buffer[block + offset : block + offset + len(value)] = value
            fix_checksum(buffer, block)
    return bytes(buffer)


@st.composite
def hostile_blobs(draw: st.DrawFn) -> bytes:
    """A valid layer tarball, mutated as a tar or after compression (or both)."""
    _entries, tar = draw(layer_tarballs())
    if draw(st.booleans()):
        tar = draw(mutated(tar))
    compression = draw(st.sampled_from(["none", "none", "gzip", "zstd", "bzip2", "xz"]))
    if compression == "none":
        return tar
    blob = COMPRESSORS[compression](tar)
    if draw(st.booleans()):
        blob = draw(mutated(blob, tar_aware=False))
    return blob


# -- the tar walker -------------------------------------------------------------------------------


def test_tar_walkers_agree_on_mutated_tarballs(request: pytest.FixtureRequest) -> None:
    """tar-split of mutated tarballs: the same lines from both walkers, or the same refusal;
    what both accept reads back through both readers."""

    @examples(request, bounded=400, long=20_000)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        _entries, tar = data.draw(layer_tarballs())
        tar = data.draw(mutated(tar))
        native = outcome(lambda: _native.tar_split_encode(tar))
        pure = outcome(lambda: tarsplit.encode(tar))
        assert comparable(native) == comparable(pure)
        if native[0] == "ok":
            lines = native[1]
            assert isinstance(lines, bytes)
            assert _native.tar_split_decode(lines) == tarsplit.decode(lines)

    check()


# -- the tar-split reader and writer --------------------------------------------------------------

_JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
        st.sampled_from(["AAAAAAAAAAA=", "/w==", "aGVsbG8=", "a", "====", "AQIDBAUGBwg"]),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
_KEYS = st.sampled_from(["type", "name", "name_raw", "size", "payload", "position", "x"])


@st.composite
def tar_split_lines(draw: st.DrawFn) -> bytes:
    """Lines that are nearly tar-split: objects with the right keys and odd values, escapes
    Go and Python read differently (lone surrogates, NUL), mutated real lines, raw bytes."""
    kind = draw(st.sampled_from(["objects", "real", "raw", "escapes"]))
    if kind == "objects":
        lines = []
        for _ in range(draw(st.integers(1, 4))):
            record = draw(st.dictionaries(_KEYS, _JSON_VALUES, max_size=5))
            if draw(st.booleans()):
                record["type"] = draw(st.sampled_from([1, 2]))
            lines.append(json.dumps(record).encode() + b"\n")
        return b"".join(lines)
    if kind == "escapes":
        name = draw(
            st.lists(
                st.sampled_from(
                    [
                        "a",
                        "\\u0000",
                        "\\ud800",
                        "\\udc80",
                        "\\ud83d\\ude00",
                        "\\u00e9",
                        "\\\\",
                        "\\/",
                        "\\b",
                        "\\x41",
                        "\\u12",
                        "é",
                        "\x7f",
                        '\\"',
                    ]
                ),
                min_size=1,
                max_size=6,
            )
        )
        size = draw(st.sampled_from(["1", "-1", "0", "1.0", "1e2", "9223372036854775808", "01"]))
        payload = draw(st.sampled_from(['"AAAAAAAAAAA="', "null", '"AAAAAAAAAAA"', '"A"', "1"]))
        line = f'{{"type":1,"name":"{"".join(name)}","size":{size},"payload":{payload}}}\n'
        return line.encode("utf-8", "surrogatepass")
    if kind == "real":
        _entries, tar = draw(layer_tarballs())
        lines = tarsplit.encode(tar)
        return draw(mutated(lines, tar_aware=False))
    return draw(st.binary(max_size=400))


def test_tar_split_readers_agree(request: pytest.FixtureRequest) -> None:
    """Arbitrary and mutated lines: the same entries from both readers, or InvalidLayerData
    from both; never another exception."""

    @examples(request, bounded=1000, long=50_000)
    @given(tar_split_lines())
    def check(lines: bytes) -> None:
        native = outcome(lambda: _native.tar_split_decode(lines))
        pure = outcome(lambda: tarsplit.decode(lines))
        assert native[0] != "oserror"
        assert (native[0], native[1] if native[0] == "ok" else "") == (
            pure[0],
            pure[1] if pure[0] == "ok" else "",
        )

    check()


_SIZES = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 1, 511, 512, -1]))


def test_tar_split_writer_round_trips(request: pytest.FixtureRequest) -> None:
    """What the writer puts in a line (any name bytes, size, CRC, segment bytes) both readers
    give back exactly."""

    @examples(request, bounded=500, long=20_000)
    @given(
        st.lists(
            st.one_of(
                st.tuples(st.just(2), st.just(b""), st.just(0), st.binary(max_size=700)),
                st.tuples(
                    st.just(1),
                    st.binary(max_size=40),
                    _SIZES,
                    st.one_of(st.none(), st.binary(min_size=8, max_size=8)),
                ),
            ),
            min_size=1,
            max_size=8,
        )
    )
    def check(entries: list[tuple[int, bytes, int, bytes | None]]) -> None:
        lines = b"".join(
            tarsplit.segment_line(payload or b"", number)
            if kind == 2
            else tarsplit.file_line(name, size, payload, number)
            for number, (kind, name, size, payload) in enumerate(entries)
        )
        assert _native.tar_split_decode(lines) == entries
        assert tarsplit.decode(lines) == entries

    check()


# -- ApplyDiff ------------------------------------------------------------------------------------


def applied(engine_name: str, blob: bytes, scratch: Path, whiteout_format: str) -> tuple[Any, ...]:
    """Everything an apply gives or leaves: its outcome, tar-split lines, tree, and diff."""
    engine = NATIVE if engine_name == "native" else PURE
    destination = scratch / engine_name / "layer"
    destination.mkdir(parents=True)
    tar_split = scratch / engine_name / "layer.tar-split.gz"
    result = outcome(
        lambda: engine.apply_layer(
            blob, str(destination), str(tar_split), whiteout_format=whiteout_format
        )
    )
    leftovers = sorted(os.listdir(destination.parent))
    if result[0] != "ok":
        # Nothing at the tar-split's name, nor a temporary file beside it.
        assert leftovers == ["layer"], leftovers
        return (comparable(result),)
    facts = astuple(result[1])
    lines = gzip.decompress(tar_split.read_bytes())
    tree = tree_manifest(destination, times=False)
    with engine.open_diff(str(tar_split), str(destination), Compression.NONE) as stream:
        diff = outcome(stream.read)
    return ("ok", facts, lines, tree, diff)


@pytest.mark.parametrize("whiteout_format", ["overlay", "vfs"])
def test_apply_agrees_on_mutated_blobs(
    request: pytest.FixtureRequest, whiteout_format: str
) -> None:
    """Mutated tarballs, plain or compressed: both engines refuse alike, or give the same
    digests, sizes, ids, tar-split, tree and diff; nothing else is raised, nothing is left."""

    @examples(request, bounded=150, long=5_000)
    @given(hostile_blobs())
    def check(blob: bytes) -> None:
        with tempfile.TemporaryDirectory(prefix="layerstore-fuzz-") as scratch:
            native = applied("native", blob, Path(scratch), whiteout_format)
            pure = applied("pure", blob, Path(scratch), whiteout_format)
        if native != pure and native[0][0] == pure[0][0] == "invalid":
            # A corrupt stream whose decoded part is bad too: which error comes first depends
            # on how far each engine decompresses ahead of the walker.
            assert _DECODER_ERROR.match(native[0][1]) or _DECODER_ERROR.match(pure[0][1])
        else:
            assert native == pure

    check()


def test_diff_agrees_on_mutated_tar_split(request: pytest.FixtureRequest) -> None:
    """A real layer with a damaged tar-split file: both engines' diffs give the same bytes, or
    both refuse with InvalidLayerData."""

    @examples(request, bounded=200, long=10_000)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        _entries, tar = data.draw(layer_tarballs())
        with tempfile.TemporaryDirectory(prefix="layerstore-fuzz-") as scratch:
            layer = Path(scratch, "layer")
            layer.mkdir()
            tar_split = Path(scratch, "layer.tar-split.gz")
            if (
                outcome(
                    lambda: NATIVE.apply_layer(
                        tar, str(layer), str(tar_split), whiteout_format="vfs"
                    )
                )[0]
                != "ok"
            ):
                return  # duplicate names after cleaning, say: nothing to diff
            lines = gzip.decompress(tar_split.read_bytes())
            damaged = data.draw(st.one_of(mutated(lines, tar_aware=False), _line_mutation(lines)))
            tar_split.write_bytes(gzip.compress(damaged))
            results = []
            for engine in (NATIVE, PURE):

                def read(engine: Any = engine) -> bytes:
                    with engine.open_diff(str(tar_split), str(layer), Compression.NONE) as stream:
                        return bytes(stream.read())

                results.append(outcome(read))
        (native_kind, native_value), (pure_kind, _pure_value) = results
        assert native_kind != "oserror", results
        assert native_kind == pure_kind, (results, damaged)
        if native_kind == "ok":
            assert results[0] == results[1]
        else:
            assert isinstance(native_value, str)

    check()


@st.composite
def _line_mutation(draw: st.DrawFn, lines: bytes) -> bytes:
    """Whole lines dropped, repeated or swapped, or one field of a line changed."""
    parts = lines.splitlines(keepends=True)
    index = draw(st.integers(0, len(parts) - 1))
    operation = draw(st.sampled_from(["drop", "repeat", "swap", "field"]))
    if operation == "drop":
        del parts[index]
    elif operation == "repeat":
        parts.insert(index, parts[index])
    elif operation == "swap":
        other = draw(st.integers(0, len(parts) - 1))
        parts[index], parts[other] = parts[other], parts[index]
    else:
        record = json.loads(parts[index])
        key = draw(st.sampled_from(["type", "name", "size", "payload", "name_raw"]))
        record[key] = draw(
            st.one_of(
                _JSON_VALUES,
                st.sampled_from(["../../etc/passwd", "/", "..", "a/../../b"]),
                st.binary(min_size=8, max_size=8).map(lambda raw: base64.b64encode(raw).decode()),
                st.integers(-5, 5000),
            )
        )
        parts[index] = json.dumps(record).encode() + b"\n"
    return b"".join(parts)


def test_mutations_reach_past_the_checksum() -> None:
    """The tar-aware mutation keeps header blocks valid, so the fuzzing reaches the fields."""
    tar = bytearray(valid_layer())
    tar[0:3] = b"../"
    fix_checksum(tar, 0)
    result = outcome(lambda: tarsplit.encode(bytes(tar)))
    assert result[0] == "ok"
