"""Seed corpora for the fuzz targets, made with the standard library only (run.sh calls it).

tar_walker: small archives of every entry type in USTAR, GNU and PAX form (long names, PAX
records, xattrs, a global header, trailing bytes), each behind the target's switch byte.
tar_split_parser: tar-split lines as layerstore writes them, and a few odd ones.
gzip_decoder: gzip members (plain, with every optional header field, stored and compressed
blocks, several back to back), each behind the target's read-size byte.
"""

from __future__ import annotations

import base64
import gzip
import io
import struct
import sys
import tarfile
import zlib
from pathlib import Path


def _archive(tar_format: int, long: bool) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as archive:
        name = "d" * 150 if long else "dir"
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        archive.addfile(info)
        for index, data in enumerate([b"", b"x", b"y" * 511, b"z" * 513]):
            info = tarfile.TarInfo(f"{name}/file{index}")
            info.size = len(data)
            info.uid, info.gid, info.mtime = 1000, 100, 1_700_000_000
            if tar_format == tarfile.PAX_FORMAT:
                info.pax_headers = {"SCHILY.xattr.user.x": "v", "mtime": "1700000000.5"}
            archive.addfile(info, io.BytesIO(data))
        for kind, target in [(tarfile.SYMTYPE, "../up"), (tarfile.LNKTYPE, f"{name}/file1")]:
            info = tarfile.TarInfo(f"{name}/link{kind.decode()}")
            info.type, info.linkname = kind, target * (30 if long else 1)
            archive.addfile(info)
        info = tarfile.TarInfo(f"{name}/.wh.gone")
        archive.addfile(info, io.BytesIO(b""))
        info = tarfile.TarInfo("fifo")
        info.type = tarfile.FIFOTYPE
        archive.addfile(info)
    return buffer.getvalue()


def tar_seeds() -> list[bytes]:
    seeds = []
    for tar_format in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        for long in (False, True):
            if long and tar_format == tarfile.USTAR_FORMAT:
                continue
            seeds.append(_archive(tar_format, long))
    pax = b"20 path=paxname/x\n"
    with_global = io.BytesIO()
    with tarfile.open(fileobj=with_global, mode="w", format=tarfile.PAX_FORMAT) as archive:
        archive.pax_headers = {"comment": "global"}
        archive.addfile(tarfile.TarInfo("after-global"), io.BytesIO(b""))
    seeds.append(with_global.getvalue() + b"trailing bytes")
    seeds.append(pax)
    return seeds


def tar_split_seeds() -> list[bytes]:
    def segment(payload: bytes, position: int) -> bytes:
        encoded = base64.b64encode(payload).decode()
        return f'{{"type":2,"payload":"{encoded}","position":{position}}}\n'.encode()

    crc = base64.b64encode(bytes(range(8))).decode()
    lines = [
        segment(b"\0" * 512, 0),
        f'{{"type":1,"name":"a/b","size":5,"payload":"{crc}","position":1}}\n'.encode(),
        b'{"type":1,"name":"d\\u003c\\u2028\\"","payload":null,"position":2}\n',
        b'{"type":1,"name_raw":"/w==","size":-3,"payload":null,"position":3}\n',
        segment(b"", 4),
    ]
    return [
        b"".join(lines),
        lines[1],
        b'{"type":1,"x":[1,{"y":null}],"size":1e3}\n',
        b'{"type":2,"payload":"AAA="}\n\n',
    ]


def gzip_seeds() -> list[bytes]:
    text = b"".join(b"line %d of a layer's file\n" % (n % 37) for n in range(300))
    plain = gzip.compress(text, mtime=0)
    stored = gzip.compress(bytes(range(256)) * 3, compresslevel=0, mtime=0)
    fields = bytes([0x1F, 0x8B, 8, 0x1E]) + struct.pack("<IBB", 0, 0, 3)
    fields += struct.pack("<H", 4) + b"ab\0c" + b"name\0" + b"comment\0"
    fields += struct.pack("<H", zlib.crc32(fields) & 0xFFFF)
    every_field = fields + plain[10:]
    members = [plain, stored, every_field, plain + gzip.compress(b"", mtime=0) + stored]
    return [bytes([step]) + member for member in members for step in (0, 6, 255)]


def main(corpus: Path) -> None:
    for target, seeds in (
        ("tar_walker", [switch + tar for tar in tar_seeds() for switch in (b"\0", b"\1")]),
        ("tar_split_parser", tar_split_seeds()),
        ("gzip_decoder", gzip_seeds()),
    ):
        directory = corpus / target
        directory.mkdir(parents=True, exist_ok=True)
        for number, seed in enumerate(seeds):
            (directory / f"seed-{number:02d}").write_bytes(seed)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
