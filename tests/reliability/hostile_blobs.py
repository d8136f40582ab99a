"""A corpus of malicious layer blobs, built byte by byte (no tar library would write most of them).

Each :class:`Case` builds its blob from the path of a canary directory outside the store, so the
absolute names and symlink targets aim at something real, and says what must happen:
``refused`` (InvalidLayerData), ``confined`` (applied, everything inside the layer) or ``either``.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import zstandard

BLOCK = 512
Expect = Literal["refused", "confined", "either"]


@dataclass(frozen=True)
class Case:
    """One hostile blob and what applying it must do."""

    name: str
    build: Callable[[Path], bytes]
    expect: Expect
    match: str = ""  # a fragment of the InvalidLayerData message, when refused
    parent: Callable[[Path], bytes] | None = None  # a parent layer put first (must be accepted)


# -- raw tar building -----------------------------------------------------------------------------


def octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}\0".encode()


def base256(value: int, width: int) -> bytes:
    """GNU base-256: two's complement, big-endian, the top bit of the first byte set."""
    raw = bytearray(value.to_bytes(width, "big", signed=True))
    raw[0] |= 0x80
    return bytes(raw)


def header(
    name: bytes | str,
    typeflag: bytes = b"0",
    size: int = 0,
    *,
    linkname: bytes | str = b"",
    prefix: bytes = b"",
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = 1_700_000_000,
    device: tuple[int, int] = (0, 0),
    fields: dict[int, bytes] | None = None,
    checksum_delta: int = 0,
) -> bytes:
    """A USTAR header block; ``fields`` overwrite raw bytes at given offsets before the checksum."""
    name = name.encode() if isinstance(name, str) else name
    linkname = linkname.encode() if isinstance(linkname, str) else linkname
    block = bytearray(BLOCK)
    block[0 : len(name[:100])] = name[:100]
    block[100:108] = octal(mode, 8)
    block[108:116] = octal(uid, 8) if 0 <= uid < 8**7 else base256(uid, 8)
    block[116:124] = octal(gid, 8) if 0 <= gid < 8**7 else base256(gid, 8)
    block[124:136] = octal(size, 12) if 0 <= size < 8**11 else base256(size, 12)
    block[136:148] = octal(mtime, 12) if 0 <= mtime < 8**11 else base256(mtime, 12)
    block[156:157] = typeflag
    block[157 : 157 + len(linkname[:100])] = linkname[:100]
    block[257:265] = b"ustar\x0000"
    block[329:337] = octal(device[0], 8) if device[0] < 8**7 else base256(device[0], 8)
    block[337:345] = octal(device[1], 8) if device[1] < 8**7 else base256(device[1], 8)
    block[345 : 345 + len(prefix)] = prefix
    for offset, value in (fields or {}).items():
        block[offset : offset + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block) + checksum_delta:06o}\0 ".encode()
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def entry(name: bytes | str, data: bytes = b"", typeflag: bytes = b"0", **fields: object) -> bytes:
    """A header and its padded content (header-only types carry no content)."""
    size = fields.pop("size", len(data))
    assert isinstance(size, int)
    return header(name, typeflag, size, **fields) + padded(data)  # type: ignore[arg-type]


def directory(name: bytes | str, mode: int = 0o755) -> bytes:
    return header(name, b"5", mode=mode)


def symlink(name: bytes | str, target: bytes | str) -> bytes:
    return header(name, b"2", linkname=target)


def hardlink(name: bytes | str, target: bytes | str) -> bytes:
    return header(name, b"1", linkname=target)


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length).encode() + body) != length:
        length += 1
    return str(length).encode() + body


def pax(records: dict[bytes, bytes] | bytes, kind: bytes = b"x", size: int | None = None) -> bytes:
    """A PAX extended header (``kind`` ``g`` for a global one) with these records (or raw data)."""
    data = (
        records
        if isinstance(records, bytes)
        else b"".join(pax_record(key, value) for key, value in records.items())
    )
    return header(b"././@PaxHeader", kind, len(data) if size is None else size) + padded(data)


def gnu_long(name: bytes, kind: bytes = b"L") -> bytes:
    """A GNU long name (``L``) or long link name (``K``) block."""
    data = name + b"\0"
    return header(b"././@LongLink", kind, len(data)) + padded(data)


def tar(*parts: bytes) -> bytes:
    return b"".join(parts) + bytes(2 * BLOCK)


def valid_layer() -> bytes:
    """A small well-formed layer, the base of the compression cases."""
    return tar(
        directory("dir"),
        entry("dir/file", b"x" * 3000),
        entry("other", b"hello"),
        symlink("dir/link", "../other"),
    )


# -- compression ----------------------------------------------------------------------------------


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "zstd": lambda data: zstandard.ZstdCompressor(write_checksum=True).compress(data),
    "bzip2": bz2.compress,
    "xz": lzma.compress,
}
MAGIC = {
    "gzip": b"\x1f\x8b\x08",
    "zstd": b"\x28\xb5\x2f\xfd",
    "bzip2": b"BZh",
    "xz": b"\xfd7zXZ\x00",
}


def flipped(data: bytes, position: int, mask: int = 0xFF) -> bytes:
    changed = bytearray(data)
    changed[position] ^= mask
    return bytes(changed)


def compression_cases() -> list[Case]:
    cases = []
    for fmt, compress in COMPRESSORS.items():
        good = compress(valid_layer())
        variants: dict[str, Callable[[bytes], bytes]] = {
            "truncated to half": lambda blob: blob[: len(blob) // 2],
            "last byte missing": lambda blob: blob[:-1],
            "only the magic": lambda blob, fmt=fmt: MAGIC[fmt],  # type: ignore[misc]
            "a middle byte flipped": lambda blob: flipped(blob, len(blob) // 2),
            "the last byte flipped": lambda blob: flipped(blob, len(blob) - 1),
            "the fifth-last byte flipped": lambda blob: flipped(blob, len(blob) - 5),
            "garbage after the stream": lambda blob: blob + b"garbage!" * 8,
            "a truncated second stream": lambda blob: blob + blob[: len(blob) // 3],
            "a second stream of only the magic": lambda blob, fmt=fmt: blob + MAGIC[fmt],  # type: ignore[misc]
            "a stream of another format after it": lambda blob, fmt=fmt: (
                blob  # type: ignore[misc]
                + COMPRESSORS["gzip" if fmt != "gzip" else "zstd"](b"x")
            ),
        }
        for variant, change in variants.items():
            blob = change(good)
            cases.append(
                Case(f"{fmt}: {variant}", lambda _canary, blob=blob: blob, "refused")  # type: ignore[misc]
            )
    return cases


# -- the corpus -----------------------------------------------------------------------------------


def _refused(name: str, match: str, build: Callable[[Path], bytes]) -> Case:
    return Case(name, build, "refused", match)


def _confined(name: str, build: Callable[[Path], bytes]) -> Case:
    return Case(name, build, "confined")


def _either(name: str, build: Callable[[Path], bytes]) -> Case:
    return Case(name, build, "either")


ESCAPES = "escapes the layer"
LOOP = "too many levels of symbolic links"


def traversal_cases() -> list[Case]:
    deep = "../" * 12
    cases = [
        _refused(f"dot-dot name {spelling!r}", ESCAPES, lambda c, s=spelling: tar(entry(s, b"x")))
        for spelling in [
            "../x",
            "..",
            "../",
            "./../x",
            "a/../../x",
            "a/b/../../../x",
            ".//..//x",
            "a/./../.././x",
            "..///x",
            "x/../..",
            "x/.././../y",
        ]
    ]
    cases += [
        _refused("dot-dot to the canary", ESCAPES, lambda c: tar(entry(deep + str(c) + "/file"))),
        _refused(
            "dot-dot directory", ESCAPES, lambda c: tar(directory(deep + str(c) + "/subdir/"))
        ),
        _refused("dot-dot symlink entry", ESCAPES, lambda c: tar(symlink("../link", "x"))),
        _refused(
            "dot-dot hard link entry", ESCAPES, lambda c: tar(entry("f"), hardlink("../l", "f"))
        ),
        _refused("dot-dot fifo", ESCAPES, lambda c: tar(header("../fifo", b"6"))),
        _refused("dot-dot whiteout", ESCAPES, lambda c: tar(entry("../.wh.canary"))),
        _refused("dot-dot opaque marker", ESCAPES, lambda c: tar(entry("../.wh..wh..opq"))),
        _refused(
            "dot-dot inside an AUFS metadata name",
            ESCAPES,
            lambda c: tar(entry(".wh..wh.plnk/../../../x", b"x")),
        ),
        _refused(
            "dot-dot in the USTAR prefix",
            ESCAPES,
            lambda c: tar(header("x", prefix=b"../../..") + b""),
        ),
        _refused(
            "dot-dot in a PAX path",
            ESCAPES,
            lambda c: tar(pax({b"path": (deep + str(c) + "/file").encode()}) + entry("safe", b"x")),
        ),
        _refused(
            "dot-dot in a GNU long name",
            ESCAPES,
            lambda c: tar(gnu_long((deep * 10 + str(c) + "/file").encode()) + entry("safe", b"x")),
        ),
        _refused(
            "a GNU long name wins over a safe PAX path",
            ESCAPES,
            lambda c: tar(pax({b"path": b"safe"}) + gnu_long(b"../evil") + entry("hdr", b"x")),
        ),
        _refused(
            "a name of 4097 bytes", "4096", lambda c: tar(pax({b"path": b"a/" * 2049}) + entry("x"))
        ),
        _refused(
            "a link name of 5000 bytes",
            "4096",
            lambda c: tar(entry("f"), pax({b"linkpath": b"a/" * 2500}) + hardlink("l", "f")),
        ),
        # Spellings that only look like an escape: plain names inside the layer.
        _confined("a backslash name", lambda c: tar(entry("..\\..\\x", b"x"))),
        _confined("three dots", lambda c: tar(entry(".../x", b"x"))),
        _confined("an ellipsis character", lambda c: tar(entry("\u2026/x", b"x"))),
        _confined("a one-dot leader pair", lambda c: tar(entry("\u2024\u2024/x", b"x"))),
        _confined("url-encoded dots", lambda c: tar(entry("%2e%2e/%2e%2e/x", b"x"))),
        _confined("dots and letters", lambda c: tar(entry("..x/y..", b"x"))),
        _confined(
            "a NUL cuts the name before the dot-dots",
            lambda c: tar(header("x", fields={0: b"safe\0../../../escape"})),
        ),
        _confined("2000 nested directories", lambda c: tar(entry("a/" * 2000 + "f", b"x"))),
    ]
    return cases


def absolute_cases() -> list[Case]:
    return [
        _confined("absolute file", lambda c: tar(entry(str(c) + "/file", b"pwned"))),
        _confined("double slash", lambda c: tar(entry("//" + str(c) + "/file", b"pwned"))),
        _confined(
            "slash dot-dot (Clean keeps it at the root)",
            lambda c: tar(entry("/../../.." + str(c) + "/file", b"pwned")),
        ),
        _confined(
            "absolute PAX path",
            lambda c: tar(pax({b"path": str(c).encode() + b"/file"}), entry("s", b"pwned")),
        ),
        _confined(
            "absolute directory with other modes",
            lambda c: tar(directory(str(c) + "/subdir/", mode=0o777)),
        ),
        _confined(
            "absolute symlink entry", lambda c: tar(symlink(str(c) + "/file", "/etc/shadow"))
        ),
        _confined(
            "absolute hard link entry",
            lambda c: tar(entry("f", b"x"), hardlink(str(c) + "/file", "f")),
        ),
        _confined("absolute fifo", lambda c: tar(header(str(c) + "/file", b"6"))),
        _confined("absolute whiteout", lambda c: tar(entry(str(c) + "/.wh.file"))),
        _confined("absolute whiteout of a directory", lambda c: tar(entry(str(c) + "/.wh.subdir"))),
        _confined("absolute opaque marker", lambda c: tar(entry(str(c) + "/subdir/.wh..wh..opq"))),
        _confined("the root with mode 0777", lambda c: tar(directory("/", mode=0o777))),
        _confined("the root as ./", lambda c: tar(directory("./", mode=0o700))),
    ]


def symlink_cases() -> list[Case]:
    up = "../" * 12
    cases = [
        _confined(
            "symlink to the canary, then a file through it",
            lambda c: tar(symlink("esc", str(c)), entry("esc/file", b"pwned")),
        ),
        _confined(
            "symlink to the canary, then a new file through it",
            lambda c: tar(symlink("esc", str(c)), entry("esc/new", b"pwned")),
        ),
        _confined(
            "symlink to the canary, then a directory through it",
            lambda c: tar(symlink("esc", str(c)), directory("esc/newdir")),
        ),
        _confined(
            "symlink to the canary, then a mode change of its subdirectory",
            lambda c: tar(symlink("esc", str(c)), directory("esc/subdir", mode=0o700)),
        ),
        _confined(
            "symlink to the canary, then a symlink through it",
            lambda c: tar(symlink("esc", str(c)), symlink("esc/link", "/")),
        ),
        _confined(
            "symlink to the canary, then a fifo through it",
            lambda c: tar(symlink("esc", str(c)), header("esc/fifo", b"6")),
        ),
        _refused(
            "symlink to the canary, then a hard link through it",
            "",
            lambda c: tar(symlink("esc", str(c)), hardlink("esc/hl", "esc/file")),
        ),
        _confined(
            "relative symlink climbing out, then a file",
            lambda c: tar(symlink("esc", up + str(c)), entry("esc/file", b"pwned")),
        ),
        _confined(
            "symlink to dot-dots, then the canary's path below it",
            lambda c: tar(symlink("up", up), entry("up" + str(c) + "/file", b"pwned")),
        ),
        _confined(
            "nested symlink climbing out",
            lambda c: tar(
                directory("d1"),
                directory("d1/d2"),
                symlink("d1/d2/esc", up + str(c)),
                entry("d1/d2/esc/subdir/inner", b"pwned"),
            ),
        ),
        _confined(
            "chain of three symlinks",
            lambda c: tar(
                symlink("a", "b"),
                symlink("b", "d/../c"),
                symlink("c", str(c)),
                entry("a/subdir/inner", b"pwned"),
            ),
        ),
        _confined(
            "chain mixing relative and absolute hops",
            lambda c: tar(
                directory("x"),
                symlink("x/a", "../y"),
                symlink("y", "/z/.."),
                symlink("z", ".."),
                entry("x/a" + str(c) + "/file", b"pwned"),
            ),
        ),
        _confined(
            "symlink to the layer root",
            lambda c: tar(symlink("root", "/"), entry("root" + str(c) + "/file", b"pwned")),
        ),
        _confined(
            "symlink to dot, repeated",
            lambda c: tar(symlink("dot", "."), entry("dot/dot/dot/dot/x", b"x")),
        ),
        _confined(
            "a hard link to a symlink to the canary",
            lambda c: tar(symlink("esc", str(c) + "/file"), hardlink("hl", "esc")),
        ),
        _confined(
            "symlink made by a PAX linkpath, then a file through it",
            lambda c: tar(
                pax({b"linkpath": (up + str(c)).encode()}),
                symlink("esc", "x"),
                entry("esc/file", b"pwned"),
            ),
        ),
        _confined(
            "whiteout through a symlink",
            lambda c: tar(symlink("esc", str(c)), entry("esc/.wh.file")),
        ),
        _confined(
            "whiteout of a directory through a symlink",
            lambda c: tar(symlink("esc", str(c)), entry("esc/.wh.subdir")),
        ),
        _confined(
            "whiteout through a symlink chain",
            lambda c: tar(symlink("a", "b"), symlink("b", str(c)), entry("a/subdir/.wh.inner")),
        ),
        _confined(
            "whiteout through a symlink to the root",
            lambda c: tar(symlink("r", "/"), entry("r" + str(c) + "/.wh.file")),
        ),
        _either(
            "opaque marker through a symlink",
            lambda c: tar(symlink("esc", str(c)), entry("esc/.wh..wh..opq")),
        ),
        _either(
            "opaque marker of a subdirectory through a symlink",
            lambda c: tar(symlink("esc", str(c)), entry("esc/subdir/.wh..wh..opq")),
        ),
        _refused("a symlink to itself", LOOP, lambda c: tar(symlink("a", "a"), entry("a/x", b"x"))),
        _refused(
            "two symlinks to each other",
            LOOP,
            lambda c: tar(symlink("a", "b"), symlink("b", "a"), entry("a/x", b"x")),
        ),
        _refused(
            "a chain of 41 symlinks to the canary",
            LOOP,
            lambda c: tar(
                *[symlink(f"s{n}", f"s{n + 1}") for n in range(41)],
                symlink("s41", str(c)),
                entry("s0/file", b"pwned"),
            ),
        ),
        _either(
            "a symlink named dot pointing at the canary",
            lambda c: tar(symlink(".", str(c)), entry("file", b"pwned")),
        ),
        _either(
            "a symlink with an empty name pointing at the canary",
            lambda c: tar(header("", b"2", linkname=str(c), fields={}), entry("file", b"pwned")),
        ),
        _either("a file named dot", lambda c: tar(entry(".", b"pwned"), entry("file", b"x"))),
        _either("a file named slash", lambda c: tar(entry("/", b"pwned"))),
        _either("a fifo named dot", lambda c: tar(header("./", b"6"))),
    ]
    return cases


def hardlink_cases() -> list[Case]:
    up = "../" * 12
    return [
        _refused(
            "hard link to the canary's file", "", lambda c: tar(hardlink("hl", str(c) + "/file"))
        ),
        _refused(
            "hard link climbing out", ESCAPES, lambda c: tar(hardlink("hl", up + str(c) + "/file"))
        ),
        _refused(
            "hard link through a symlink to the canary",
            "",
            lambda c: tar(symlink("esc", str(c)), hardlink("hl", "esc/file")),
        ),
        _refused(
            "hard link through a symlink chain",
            "",
            lambda c: tar(
                symlink("a", "b"), symlink("b", str(c)), hardlink("hl", "a/subdir/inner")
            ),
        ),
        _refused(
            "hard link by a GNU long link name",
            "",
            lambda c: tar(
                gnu_long((up * 10 + str(c) + "/file").encode(), b"K"), hardlink("hl", "x")
            ),
        ),
        _refused(
            "hard link by a PAX linkpath",
            "",
            lambda c: tar(pax({b"linkpath": str(c).encode() + b"/file"}), hardlink("hl", "x")),
        ),
        _refused("hard link to itself", "", lambda c: tar(hardlink("hl", "hl"))),
        _refused("hard link to nothing", "", lambda c: tar(hardlink("hl", "missing"))),
        _refused(
            "hard link to a directory",
            "which is a directory",
            lambda c: tar(directory("d"), hardlink("hl", "d")),
        ),
        _refused(
            "hard link to the layer root", "not in the layer", lambda c: tar(hardlink("hl", "."))
        ),
        _refused(
            "hard link with an empty target", "not in the layer", lambda c: tar(hardlink("hl", ""))
        ),
        _either(
            "hard link replacing its own target",
            lambda c: tar(entry("f", b"x"), hardlink("f/", "f")),
        ),
        _confined(
            "hard link to a fifo", lambda c: tar(header("fifo", b"6"), hardlink("hl", "fifo"))
        ),
    ]


def whiteout_cases() -> list[Case]:
    return [
        _confined("whiteout of dot-dot", lambda c: tar(entry(".wh..."))),
        _confined("whiteout of dot", lambda c: tar(entry(".wh.."))),
        _confined("whiteout of nothing", lambda c: tar(entry(".wh."))),
        _confined(
            "whiteout of dot-dot in a directory", lambda c: tar(directory("d"), entry("d/.wh..."))
        ),
        _confined("whiteout with content", lambda c: tar(entry(".wh.x", b"abc" * 300))),
        _confined("whiteout as a symlink", lambda c: tar(symlink(".wh.x", str(c)))),
        _confined("whiteout as a directory", lambda c: tar(directory(".wh.x"))),
        _confined(
            "opaque marker at the root", lambda c: tar(entry("f", b"x"), entry(".wh..wh..opq"))
        ),
        _confined("AUFS metadata", lambda c: tar(entry(".wh..wh.plnk/123.456", b"x"))),
        _confined("AUFS metadata as a symlink", lambda c: tar(symlink(".wh..wh.orph", str(c)))),
        _either(
            "opaque marker below a file",
            lambda c: tar(entry("f", b"x"), entry("f/.wh..wh..opq")),
        ),
        _either("whiteout below a file", lambda c: tar(entry("f", b"x"), entry("f/.wh.x"))),
    ]


def size_cases() -> list[Case]:
    return [
        _refused(
            "size beyond the data", "truncated", lambda c: header("f", size=100_000) + b"x" * 1000
        ),
        _refused("size of 8 GiB in octal", "truncated", lambda c: tar(header("f", size=8**11 - 1))),
        _refused("base-256 size of 2^62", "truncated", lambda c: tar(header("f", size=1 << 62))),
        _refused(
            "base-256 size too large for 64 bits",
            "invalid tar header",
            lambda c: tar(header("f", fields={124: b"\x80" + b"\xff" * 11})),
        ),
        _refused("negative base-256 size", "negative", lambda c: tar(header("f", size=-1))),
        _refused(
            "most negative base-256 size",
            "",
            lambda c: tar(header("f", fields={124: b"\xff" + b"\x00" * 11})),
        ),
        _either("negative size on a directory", lambda c: tar(header("d", b"5", size=-512))),
        _either("size on a symlink", lambda c: tar(header("l", b"2", size=1024, linkname="x"))),
        _refused(
            "size field not octal",
            "invalid tar header",
            lambda c: tar(header("f", fields={124: b"12x4"})),
        ),
        _confined("size field of spaces", lambda c: tar(header("f", fields={124: b" " * 12}))),
        _refused("PAX size negative", "negative", lambda c: tar(pax({b"size": b"-1"}), entry("f"))),
        _refused(
            "PAX size beyond 64 bits",
            "PAX",
            lambda c: tar(pax({b"size": b"99999999999999999999"}), entry("f")),
        ),
        _refused(
            "PAX size beyond the data",
            "truncated",
            lambda c: tar(pax({b"size": b"9999999999"}), entry("f")),
        ),
        _refused(
            "PAX size below the header's",
            "",
            lambda c: tar(pax({b"size": b"10"}), entry("f", b"\1" * 2048)),
        ),
        _refused("uid of 2^40", "out-of-range", lambda c: tar(header("f", uid=1 << 40))),
        _refused("negative uid", "out-of-range", lambda c: tar(header("f", uid=-1))),
        _refused(
            "PAX uid 2^32-1",
            "out-of-range",
            lambda c: tar(pax({b"uid": b"4294967295"}), entry("f")),
        ),
        _refused(
            "PAX gid negative", "out-of-range", lambda c: tar(pax({b"gid": b"-7"}), entry("f"))
        ),
        _refused(
            "mtime beyond nanoseconds",
            "out-of-range",
            lambda c: tar(pax({b"mtime": b"9223372037"}), entry("f")),
        ),
        _refused(
            "PAX mtime not a number", "PAX", lambda c: tar(pax({b"mtime": b"1e9"}), entry("f"))
        ),
        _refused(
            "device number of 2^40",
            "out-of-range",
            lambda c: tar(header("d", b"3", device=(1 << 40, 0))),
        ),
        _confined(
            "mode with every bit set", lambda c: tar(header("f", fields={100: b"7777777\0"}))
        ),
        _refused("unknown entry type", "unsupported", lambda c: tar(header("v", b"V"))),
        _refused("sparse entry", "sparse", lambda c: tar(header("s", b"S"))),
        _refused(
            "sparse PAX records",
            "sparse",
            lambda c: tar(pax({b"GNU.sparse.major": b"1", b"GNU.sparse.minor": b"0"}), entry("s")),
        ),
        _refused("bad header checksum", "checksum", lambda c: tar(header("f", checksum_delta=1))),
        _refused("truncated header", "truncated", lambda c: header("f")[:300]),
        _refused("zero block then a header", "zero block", lambda c: bytes(512) + header("f")),
        _refused(
            "truncated inside the padding",
            "padding",
            lambda c: header("f", size=3) + b"abc" + bytes(100),
        ),
        _either("an empty blob", lambda c: b""),
        _either("only end-of-archive blocks", lambda c: bytes(1024)),
    ]


def pax_cases() -> list[Case]:
    def raw(data: bytes) -> Callable[[Path], bytes]:
        return lambda c: tar(pax(data), entry("f", b"x"))

    return [
        _refused("PAX length beyond the data", "PAX", raw(b"99 path=x\n")),
        _refused("PAX length zero", "PAX", raw(b"0 path=x\n")),
        _refused("PAX length below five", "PAX", raw(b"4 a=\n")),
        _refused("PAX length not a number", "PAX", raw(b"ab path=x\n")),
        _confined("PAX length with a plus (Go's ParseInt takes it)", raw(b"+11 path=x\n")),
        _refused("PAX length negative", "PAX", raw(b"-11 path=x\n")),
        _refused("PAX length in hex", "PAX", raw(b"0xb path=x\n")),
        _refused("PAX record without newline", "PAX", raw(b"11 path=xy")),
        _refused("PAX record without equals", "PAX", raw(b"10 pathxy\n")),
        _refused("PAX record with an empty key", "PAX", raw(b"6 =xy\n")),
        _refused("PAX path with a NUL", "PAX", raw(b"13 path=a\0../\n")),
        _refused("PAX key with a NUL", "PAX", raw(b"11 pa\0th=x\n")),
        _refused("PAX record without a space", "PAX", raw(b"10path=xy\n")),
        _refused(
            "PAX data over 1 MiB", "1 MiB", lambda c: tar(pax(b"x" * ((1 << 20) + 1)), entry("f"))
        ),
        _refused(
            "PAX header claiming a terabyte", "1 MiB", lambda c: tar(header("p", b"x", 1 << 40))
        ),
        _refused(
            "GNU long name claiming a terabyte", "1 MiB", lambda c: tar(header("l", b"L", 1 << 40))
        ),
        _refused(
            "truncated GNU long name", "truncated", lambda c: header("l", b"L", 1000) + b"x" * 10
        ),
        _refused("truncated PAX data", "truncated", lambda c: header("p", b"x", 1000) + b"x" * 10),
        _refused(
            "PAX sparse offsets out of order",
            "PAX",
            raw(pax_record(b"GNU.sparse.numbytes", b"1") + pax_record(b"GNU.sparse.offset", b"0")),
        ),
        _confined(
            "a global header naming a dot-dot path",
            lambda c: tar(pax({b"path": b"../../../../escape"}, kind=b"g"), entry("f", b"x")),
        ),
        _refused(
            "two global headers of the same name",
            "duplicate",
            lambda c: tar(pax({b"comment": b"a"}, kind=b"g"), pax({b"comment": b"b"}, kind=b"g")),
        ),
        _confined(
            "10,000 PAX records",
            lambda c: tar(pax({b"k%d" % n: b"v" for n in range(10_000)}), entry("f")),
        ),
        _confined("an empty PAX path keeps the header's name", raw(pax_record(b"path", b""))),
        _refused(
            "an xattr with an empty name", "extended attribute", raw(b"21 SCHILY.xattr.=abc\n")
        ),
        _confined(
            "an overlay redirect xattr",
            lambda c: tar(
                pax({b"SCHILY.xattr.trusted.overlay.redirect": str(c).encode()}), directory("d")
            ),
        ),
        _confined(
            "a PAX linkpath on a symlink climbing out",
            lambda c: tar(pax({b"linkpath": b"../" * 40 + str(c).encode()}), symlink("l", "x")),
        ),
    ]


def duplicate_cases() -> list[Case]:
    return [
        _refused(
            "the same name twice",
            "duplicate",
            lambda c: tar(entry("dup", b"1"), entry("dup", b"2")),
        ),
        _refused(
            "dot-slash spelling",
            "duplicate",
            lambda c: tar(entry("dup", b"1"), entry("./dup", b"2")),
        ),
        _refused(
            "double slashes and a trailing one",
            "duplicate",
            lambda c: tar(directory("a"), directory("a/b"), directory("a//b/")),
        ),
        _refused(
            "a file, then a directory",
            "duplicate",
            lambda c: tar(entry("x", b"1"), directory("x/")),
        ),
        _refused(
            "a PAX path repeating a name",
            "duplicate",
            lambda c: tar(entry("dup", b"1"), pax({b"path": b"dup"}), entry("other", b"2")),
        ),
        _refused(
            "a hard link over its own name",
            "duplicate",
            lambda c: tar(entry("f", b"1"), hardlink("f", "f")),
        ),
        _refused("a whiteout twice", "duplicate", lambda c: tar(entry(".wh.x"), entry(".wh.x"))),
        _refused(
            "a dot-dot spelling of the same name",
            "duplicate",
            lambda c: tar(entry("d/f", b"1"), entry("d/x/../f", b"2")),
        ),
        # Go's path.Clean keeps a leading slash: tar-split takes these as two names; extraction
        # puts both at the same place, so the later one wins (and diff finds the file changed).
        _confined(
            "a name with and without a leading slash",
            lambda c: tar(entry("dup", b"1"), entry("/dup", b"2")),
        ),
    ]


def parent_cases() -> list[Case]:
    """A parent layer plants a symlink or a link; its child's entries meet it (vfs: in the
    child's copy of the parent's tree; overlay: only the child's own diff directory)."""

    def on(
        parent: Callable[[Path], bytes], name: str, expect: Expect, build: Callable[[Path], bytes]
    ) -> Case:
        return Case(f"over a parent's symlink: {name}", build, expect, parent=parent)

    to_canary = lambda c: tar(symlink("esc", str(c)))  # noqa: E731
    to_file = lambda c: tar(symlink("esc", str(c) + "/file"))  # noqa: E731
    return [
        on(to_canary, "a file through it", "confined", lambda c: tar(entry("esc/file", b"pwned"))),
        on(
            to_canary,
            "a directory through it",
            "confined",
            lambda c: tar(directory("esc/subdir", 0o700)),
        ),
        on(to_canary, "a whiteout through it", "confined", lambda c: tar(entry("esc/.wh.file"))),
        on(
            to_canary,
            "an opaque marker through it",
            "either",
            lambda c: tar(entry("esc/.wh..wh..opq")),
        ),
        on(to_canary, "a whiteout of it", "confined", lambda c: tar(entry(".wh.esc"))),
        on(
            to_canary,
            "a hard link through it",
            "refused",
            lambda c: tar(hardlink("hl", "esc/file")),
        ),
        on(
            to_canary,
            "a directory in its place",
            "confined",
            lambda c: tar(directory("esc/.", 0o700)),
        ),
        on(to_file, "a file in its place", "confined", lambda c: tar(entry("esc", b"pwned"))),
        on(to_file, "a fifo in its place", "confined", lambda c: tar(header("esc", b"6"))),
        on(
            to_file,
            "a hard link in its place",
            "confined",
            lambda c: tar(entry("f", b"pwned"), hardlink("esc", "f")),
        ),
        # overlay: the parent's files are not in the child's diff directory (Go refuses too).
        on(to_file, "a hard link to it", "either", lambda c: tar(hardlink("hl", "esc"))),
        Case(
            "over a parent's directory: a symlink in its place, then a deeper file",
            lambda c: tar(symlink("d", str(c)), entry("d/subdir/inner", b"pwned")),
            "confined",
            parent=lambda c: tar(directory("d"), entry("d/file", b"x")),
        ),
        Case(
            "over a parent's hard link: a file in its place",
            lambda c: tar(entry("hl", b"two")),
            "confined",
            parent=lambda c: tar(entry("f", b"one"), hardlink("hl", "f")),
        ),
    ]


def corpus() -> list[Case]:
    """Every case of the corpus (the bombs and the many-entries blobs are separate tests)."""
    cases = [
        *traversal_cases(),
        *absolute_cases(),
        *symlink_cases(),
        *hardlink_cases(),
        *whiteout_cases(),
        *size_cases(),
        *pax_cases(),
        *duplicate_cases(),
        *parent_cases(),
        *compression_cases(),
    ]
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


CASES = {case.name: case for case in corpus()}


# -- bombs and floods -----------------------------------------------------------------------------

_ZERO_CHUNK = 16 << 20


def _repeated_zeros(compression: str, total: int) -> bytes:
    """``total`` zero bytes as a series of streams (every format is multi-stream): one chunk is
    compressed once and repeated, so a bomb of gigabytes takes a second to make."""
    compress = COMPRESSORS[compression]
    chunk = compress(bytes(_ZERO_CHUNK))
    whole, rest = divmod(total, _ZERO_CHUNK)
    return chunk * whole + (compress(bytes(rest)) if rest else b"")


def zero_bomb(compression: str, total: int) -> bytes:
    """A layer of one file of ``total`` zero bytes, compressed to a tiny fraction of that."""
    compress = COMPRESSORS[compression]
    head = compress(header("bomb", size=total))
    tail = compress(bytes(-total % BLOCK) + bytes(2 * BLOCK))
    return head + _repeated_zeros(compression, total) + tail


def trailing_bomb(compression: str, total: int) -> bytes:
    """A small valid layer followed by ``total`` zero bytes after its end-of-archive blocks."""
    return COMPRESSORS[compression](valid_layer()) + _repeated_zeros(compression, total)


def meta_header_bomb() -> bytes:
    """PAX headers, 65 MiB of them, before a single entry (zstd): past the 64 MiB cap."""
    unit = pax({b"comment": b"x" * 400})
    assert len(unit) == 2 * BLOCK
    count = (65 << 20) // len(unit)
    return COMPRESSORS["zstd"](unit * count + entry("f", b"x") + bytes(2 * BLOCK))


def many_entries(count: int) -> bytes:
    """``count`` tiny entries: directories of 1,000 entries each, mostly empty files, with a
    symlink and a hard link in every directory."""
    parts: list[bytes] = []
    made = 0
    directory_number = 0
    while made < count:
        folder = f"d{directory_number:05d}"
        parts.append(directory(folder))
        made += 1
        for index in range(min(999, count - made)):
            name = f"{folder}/e{index:04d}"
            if index == 1:
                parts.append(symlink(name, "e0000"))
            elif index == 2:
                parts.append(hardlink(name, f"{folder}/e0000"))
            else:
                parts.append(header(name))
            made += 1
        directory_number += 1
    return b"".join(parts) + bytes(2 * BLOCK)
