"""The single stages that the micro benchmarks time give the same results in both engines.

``layerstore._native`` exposes CRC-64, sha256, tar-split encoding and decoding on their own
(benches/bench_kernels.py); the pure engine's modules hold the same functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerstore import _native
from layerstore.engines.pure import crc64, digest, tarsplit
from layerstore.errors import InvalidLayerData

from .tarballs import Entry, build_tar, layer_tarballs


@given(st.binary(max_size=1 << 12))
def test_crc64(data: bytes) -> None:
    assert _native.crc64(data) == crc64.crc64(data)


def test_crc64_check_value() -> None:
    assert _native.crc64(b"123456789") == crc64.crc64(b"123456789") == 0xB90956C775A41001


@given(st.binary(max_size=1 << 12))
def test_sha256_digest(data: bytes) -> None:
    expected = "sha256:" + hashlib.sha256(data).hexdigest()
    assert _native.sha256_digest(data) == digest.sha256_digest(data) == expected


@settings(max_examples=50, deadline=None)
@given(layer_tarballs())
def test_tar_split_encode_and_decode(tarball: tuple[list[Entry], bytes]) -> None:
    _, tar = tarball
    lines = _native.tar_split_encode(tar)
    assert tarsplit.encode(tar) == lines
    entries = _native.tar_split_decode(lines)
    assert tarsplit.decode(lines) == entries
    # Segments and file contents add up to the archive, byte for byte.
    assert sum(
        len(payload or b"") if kind == 2 else size for kind, _, size, payload in entries
    ) == len(tar)


def test_tar_split_files_carry_their_crc() -> None:
    tar = build_tar([Entry(b"a", "file", b"abc"), Entry(b"d", "dir"), Entry(b"e", "file")])
    files = [
        entry for entry in _native.tar_split_decode(_native.tar_split_encode(tar)) if entry[0] == 1
    ]
    assert files == [
        (1, b"a", 3, _native.crc64(b"abc").to_bytes(8, "big")),
        (1, b"d/", 0, None),
        (1, b"e", 0, None),
    ]


@pytest.mark.parametrize(
    ("encode", "decode"),
    [(_native.tar_split_encode, _native.tar_split_decode), (tarsplit.encode, tarsplit.decode)],
    ids=["native", "pure"],
)
def test_bad_input_is_invalid_layer_data(
    encode: Callable[[bytes], bytes], decode: Callable[[bytes], list[object]]
) -> None:
    tar = build_tar([Entry(b"a", "file", b"abc"), Entry(b"a", "file", b"xyz")])
    with pytest.raises(InvalidLayerData, match="duplicate path"):
        encode(tar)
    with pytest.raises(InvalidLayerData, match="empty"):
        decode(b"")
    with pytest.raises(InvalidLayerData, match="line 1 is not a tar-split entry"):
        decode(b'{"type":7}\n')
