"""Deterministic data sets for the benchmarks."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def write_store_of_layers(root: Path, count: int, driver: str = "vfs") -> list[str]:
    """A store whose layers.json holds ``count`` realistic records (a chain of ten-layer images).

    Only the records are written, as a store of that size would hold them: ids, names, parents,
    digests, sizes and uid/gid sets. Returns the ids in file order.
    """
    layers_dir = root / f"{driver}-layers"
    layers_dir.mkdir(parents=True, exist_ok=True)
    records = []
    ids: list[str] = []
    for number in range(count):
        layer_id = hashlib.sha256(f"layer {number}".encode()).hexdigest()
        digest = hashlib.sha256(f"diff {number}".encode()).hexdigest()
        record: dict[str, object] = {"id": layer_id}
        if number % 3 == 0:
            record["names"] = [f"image-{number // 10}-layer-{number % 10}"]
        if number % 10:
            record["parent"] = ids[-1]
        record |= {
            "created": "2026-11-29T18:54:39.772935181Z",
            "compressed-diff-digest": f"sha256:{hashlib.sha256(digest.encode()).hexdigest()}",
            "compressed-size": 1000 + number,
            "diff-digest": f"sha256:{digest}",
            "diff-size": 10240 + number,
            "compression": 2,
            "uidset": [0],
            "gidset": [0],
        }
        records.append(record)
        ids.append(layer_id)
    (layers_dir / "layers.json").write_text(json.dumps(records, separators=(",", ":")))
    return ids


def scratch_directory() -> Path:
    """Where benchmarks put their files: tmpfs, whose speed does not drift as files come and go."""
    base = Path(os.environ.get("LAYERSTORE_BENCH_DIR", "/dev/shm"))
    return base if base.is_dir() else Path("/tmp")


# -- layer blobs ---------------------------------------------------------------------------------

DATA_VERSION = 2  # bump when the generators change, so cached blobs are made again
MTIME = 1_700_000_000


def data_directory() -> Path:
    """Where generated blobs are cached between runs (tmpfs by default)."""
    configured = os.environ.get("LAYERSTORE_BENCH_DATA")
    directory = Path(configured) if configured else scratch_directory() / "layerstore-bench-data"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _compressible(rng: random.Random, size: int) -> bytes:
    """Bytes that gzip to about half their size, like the binaries and text of real images."""
    return rng.randbytes((size + 1) // 2).hex().encode()[:size]


@contextmanager
def _gzip_writer(path: Path) -> Iterator[gzip.GzipFile]:
    """gzip at level 6 with no time and no name in its header: the same bytes on every run."""
    with (
        open(path, "wb") as raw,
        gzip.GzipFile("", mode="wb", compresslevel=6, fileobj=raw, mtime=0) as compressed,
    ):
        yield compressed


def _write_layer(path: Path, files: Iterator[tuple[str, bytes]]) -> Path:
    temporary = path.with_suffix(".partial")
    with (
        _gzip_writer(temporary) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        directories: set[str] = set()
        for name, data in files:
            parent = os.path.dirname(name)
            if parent and parent not in directories:
                directories.add(parent)
                info = tarfile.TarInfo(parent)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
                archive.addfile(info)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, MTIME
            archive.addfile(info, io.BytesIO(data))
    temporary.rename(path)
    return path


def small_files_layer(variant: int = 0) -> Path:
    """A gzip layer of 20,000 files of 1-16 KiB in 200 directories (about 190 MB of tar);
    another ``variant`` has the same shape and other bytes (another DiffID)."""
    suffix = f"-{variant}" if variant else ""
    path = data_directory() / f"small-files{suffix}-v{DATA_VERSION}.tar.gz"
    if path.exists():
        return path
    rng = random.Random(20_000 + variant)

    def files() -> Iterator[tuple[str, bytes]]:
        for number in range(20_000):
            yield (
                f"usr/share/d{number // 100:03d}/f{number:05d}",
                _compressible(rng, rng.randint(1024, 16 * 1024)),
            )

    return _write_layer(path, files())


def large_files_layer() -> Path:
    """A gzip layer of six files of 70 MB each (about 420 MB of tar)."""
    path = data_directory() / f"large-files-v{DATA_VERSION}.tar.gz"
    if path.exists():
        return path
    rng = random.Random(420)

    def files() -> Iterator[tuple[str, bytes]]:
        for number in range(6):
            yield f"opt/blobs/big{number}.bin", _compressible(rng, 70 * 1000 * 1000)

    return _write_layer(path, files())


def rootfs_layer(variant: int = 0) -> Path:
    """A gzip layer shaped like a distribution's root file system (about 190 MB of tar).

    About 14,500 entries: a merged /usr (``bin -> usr/bin`` symlinks), executables and shared
    libraries with their ``.so`` symlink chains, headers, Python modules, documentation,
    compressed man pages and translations (incompressible), time zones with hard links,
    ``/etc`` with absolute ``alternatives`` symlinks, dpkg's database, a few owners other than
    root, setuid and sticky modes, empty files, and the whiteouts an upper layer carries
    (``.wh.<name>`` files and ``.wh..wh..opq`` opaque-directory markers). File sizes follow a
    log-normal law, as in real images: most files are small, most bytes are in a few big ones.
    """
    suffix = f"-{variant}" if variant else ""
    path = data_directory() / f"rootfs{suffix}-v{DATA_VERSION}.tar.gz"
    if path.exists():
        return path
    temporary = path.with_suffix(".partial")
    with (
        _gzip_writer(temporary) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for info, data in _rootfs_entries(random.Random(150 + variant)):
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    temporary.rename(path)
    return path


def _rootfs_entries(rng: random.Random) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """The rootfs layer's entries, parents before children, in a fixed order."""

    def entry(
        name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, owner: tuple[int, int] = (0, 0)
    ) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, mode, MTIME
        info.uid, info.gid = owner
        info.uname, info.gname = ("root", "root") if owner == (0, 0) else ("", "")
        return info

    def directory(
        name: str, mode: int = 0o755, owner: tuple[int, int] = (0, 0)
    ) -> tuple[tarfile.TarInfo, None]:
        return entry(name, tarfile.DIRTYPE, mode, owner), None

    def regular(
        name: str, data: bytes, mode: int = 0o644, owner: tuple[int, int] = (0, 0)
    ) -> tuple[tarfile.TarInfo, bytes]:
        info = entry(name, tarfile.REGTYPE, mode, owner)
        info.size = len(data)
        return info, data

    def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
        info = entry(name, kind, 0o777 if kind == tarfile.SYMTYPE else 0o644)
        info.linkname = target
        return info, None

    def size(median: float, sigma: float, cap: int) -> int:
        return max(0, min(cap, int(rng.lognormvariate(0, sigma) * median)))

    def text(median: float, sigma: float = 1.0, cap: int = 1 << 20) -> bytes:
        return _compressible(rng, size(median, sigma, cap))

    def packed(median: float, sigma: float = 0.8, cap: int = 1 << 20) -> bytes:
        return rng.randbytes(size(median, sigma, cap))  # already compressed: .gz, .mo, .png

    for top, target in [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"),
                        ("sbin", "usr/sbin")]:  # fmt: skip
        yield link(top, target)
    yield directory("etc")
    for number in range(300):
        yield regular(f"etc/conf{number:03d}.conf", text(1500, 1.2, 64 << 10))
    yield regular("etc/shadow", text(900), 0o640, (0, 42))
    yield regular("etc/.pwd.lock", b"", 0o600)
    yield directory("etc/alternatives")
    for number in range(100):
        yield link(f"etc/alternatives/alt{number:03d}", f"/usr/bin/tool{number:03d}")
    yield regular("etc/.wh.motd", b"", 0o600)  # this layer removes its parent's /etc/motd
    yield directory("etc/ssl")
    yield directory("etc/ssl/certs")
    for number in range(150):
        target = f"../../../usr/share/ca-certificates/mozilla/ca{number:03d}.crt"
        yield link(f"etc/ssl/certs/ca{number:03d}.pem", target)
    yield directory("home")
    yield directory("home/user", 0o750, (1000, 1000))
    for number in range(20):
        yield regular(f"home/user/.file{number:02d}", text(2000), 0o644, (1000, 1000))
    yield directory("root", 0o700)
    yield directory("tmp", 0o1777)
    yield directory("usr")
    yield directory("usr/bin")
    for number in range(400):
        mode = 0o4755 if number % 97 == 0 else 0o755
        yield regular(f"usr/bin/tool{number:03d}", text(25_000, 1.3, 8 << 20), mode)
    for number in range(10):  # an interpreter under two names, as perl and perl5.36.0 are
        yield link(f"usr/bin/tool{number:03d}-1.0", f"usr/bin/tool{number:03d}", tarfile.LNKTYPE)
    yield directory("usr/sbin")
    for number in range(120):
        yield regular(f"usr/sbin/daemon{number:03d}", text(20_000, 1.2, 4 << 20), 0o755)
    yield directory("usr/include")
    for group in range(30):
        yield directory(f"usr/include/h{group:02d}")
        for number in range(50):
            yield regular(f"usr/include/h{group:02d}/header{number:02d}.h", text(4000, 1.1))
    yield directory("usr/lib")
    yield directory("usr/lib/x86_64-linux-gnu")
    for number in range(600):
        base = f"usr/lib/x86_64-linux-gnu/lib{number:03d}"
        yield regular(f"{base}.so.1.2.3", text(40_000, 1.3, 16 << 20))
        yield link(f"{base}.so.1", f"lib{number:03d}.so.1.2.3")
        if number % 3 == 0:
            yield link(f"{base}.so", f"lib{number:03d}.so.1")
    yield directory("usr/lib/python3")
    yield directory("usr/lib/python3/dist-packages")
    for package in range(150):
        base = f"usr/lib/python3/dist-packages/pkg{package:03d}"
        yield directory(base)
        yield directory(f"{base}/__pycache__")
        for number in range(10):
            yield regular(f"{base}/module{number}.py", text(6000, 1.1))
            yield regular(f"{base}/__pycache__/module{number}.cpython-311.pyc", packed(4000))
    yield directory("usr/lib64")
    yield link("usr/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/lib000.so.1.2.3")
    yield directory("usr/share")
    yield directory("usr/share/ca-certificates")
    yield directory("usr/share/ca-certificates/mozilla")
    for number in range(150):
        yield regular(f"usr/share/ca-certificates/mozilla/ca{number:03d}.crt", text(2000, 0.3))
    yield directory("usr/share/doc")
    for package in range(800):
        yield directory(f"usr/share/doc/pkg{package:03d}")
        yield regular(f"usr/share/doc/pkg{package:03d}/copyright", text(3000, 1.0))
        yield regular(f"usr/share/doc/pkg{package:03d}/changelog.Debian.gz", packed(3000))
    for number in range(20):  # documentation of packages this layer removes
        yield regular(f"usr/share/doc/.wh.oldpkg{number:02d}", b"", 0o600)
    yield directory("usr/share/man")
    yield directory("usr/share/man/man1")
    for number in range(1000):
        yield regular(f"usr/share/man/man1/tool{number:04d}.1.gz", packed(2500))
    yield directory("usr/share/locale")
    for language in range(60):
        yield directory(f"usr/share/locale/l{language:02d}")
        yield directory(f"usr/share/locale/l{language:02d}/LC_MESSAGES")
        for number in range(15):
            yield regular(f"usr/share/locale/l{language:02d}/LC_MESSAGES/d{number:02d}.mo",
                          packed(6000))  # fmt: skip
    yield directory("usr/share/zoneinfo")
    zones = []
    for region in range(12):
        yield directory(f"usr/share/zoneinfo/R{region:02d}")
        for number in range(50):
            zones.append(f"usr/share/zoneinfo/R{region:02d}/Z{number:02d}")
            yield regular(zones[-1], text(1200, 0.6))
    yield directory("usr/share/zoneinfo/posix")
    for zone in zones[:300]:  # hard links to zones under other names, as tzdata ships them
        area, name = zone.split("/")[-2:]
        yield link(f"usr/share/zoneinfo/posix/{area}-{name}", zone, tarfile.LNKTYPE)
    yield directory("var")
    yield directory("var/cache")
    yield directory("var/cache/apt")
    yield regular("var/cache/apt/.wh..wh..opq", b"", 0o600)  # the layer empties apt's cache
    yield regular("var/cache/apt/pkgcache.bin", packed(2_000_000, 0.1, 4 << 20))
    yield directory("var/lib")
    yield directory("var/lib/dpkg")
    yield directory("var/lib/dpkg/info")
    for package in range(800):
        yield regular(f"var/lib/dpkg/info/pkg{package:03d}.list", text(1500, 1.0))
        yield regular(f"var/lib/dpkg/info/pkg{package:03d}.md5sums", text(1500, 1.0))
    yield regular("var/lib/dpkg/lock", b"", 0o640)
    yield directory("var/lib/apt")
    yield directory("var/lib/apt/lists")
    yield regular("var/lib/apt/lists/.wh..wh..opq", b"", 0o600)
    yield directory("var/log")
    yield regular("var/log/dpkg.log", text(300_000, 0.1))
    yield directory("var/mail", 0o2775, (0, 8))
    yield directory("opt")
    yield directory("opt/app")
    for number in range(4):  # a bundled runtime: a few big files hold much of the bytes
        yield regular(f"opt/app/runtime{number}.bin", text(6_000_000, 0.3, 16 << 20), 0o755)


LAYERS = {
    "small-files": small_files_layer,
    "large-files": large_files_layer,
    "rootfs": rootfs_layer,
}

CHAIN = [
    ("rootfs", "gzip"),
    ("small-files", "zstd"),
    ("rootfs-1", "zstd"),
    ("small-files-1", "gzip"),
]
"""The 4-layer image of the chain benchmark, bottom first: (data set, compression). The upper
two are other variants of the lower two (the same shapes, other bytes), as an image whose
later layers update files of the earlier ones."""

_VARIANTS = {"rootfs-1": lambda: rootfs_layer(1), "small-files-1": lambda: small_files_layer(1)}


def plain_tar(blob: Path) -> Path:
    """The uncompressed tar inside a gzip blob, cached beside it."""
    path = blob.with_suffix("")  # x.tar.gz -> x.tar
    if not path.exists():
        temporary = path.with_suffix(".tar.partial")
        with gzip.open(blob, "rb") as source, open(temporary, "wb") as target:
            while chunk := source.read(1 << 20):
                target.write(chunk)
        temporary.rename(path)
    return path


def zstd_blob(blob: Path) -> Path:
    """The same layer compressed with zstd at level 3 (the default of ``zstd`` and of Go's)."""
    import zstandard

    path = blob.with_suffix(".zst")  # x.tar.gz -> x.tar.zst
    if not path.exists():
        temporary = path.with_suffix(".zst.partial")
        compressor = zstandard.ZstdCompressor(level=3)
        with open(plain_tar(blob), "rb") as source, open(temporary, "wb") as target:
            compressor.copy_stream(source, target, size=os.path.getsize(source.name))
        temporary.rename(path)
    return path


def uncompressed_size(path: Path) -> int:
    """Bytes of tar inside a gzip blob (read once, remembered beside it)."""
    memo = path.with_suffix(".size")
    if memo.exists():
        return int(memo.read_text())
    size = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            size += len(chunk)
    memo.write_text(str(size))
    return size


@dataclass(frozen=True)
class LayerFiles:
    """One data set in every form the comparison reads."""

    name: str
    gzip: Path
    zstd: Path
    tar: Path
    size: int
    """Bytes of tar: every throughput is this over a time."""
    diff_id: str
    """sha256 of the tar, the same on every machine: the data sets are generated, not stored."""

    def blob(self, compression: str) -> Path:
        """The blob compressed as named: ``gzip``, ``zstd`` or ``none``."""
        return {"gzip": self.gzip, "zstd": self.zstd, "none": self.tar}[compression]


def layer_files(name: str) -> LayerFiles:
    """The data set ``name`` (a key of LAYERS, or one of CHAIN), generated and cached on first
    use."""
    blob = (LAYERS.get(name) or _VARIANTS[name])()
    tar = plain_tar(blob)
    memo = blob.with_suffix(".diffid")
    if not memo.exists():
        digest = hashlib.sha256()
        with open(tar, "rb") as source:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
        memo.write_text(f"sha256:{digest.hexdigest()}")
    return LayerFiles(
        name, blob, zstd_blob(blob), tar, uncompressed_size(blob), memo.read_text().strip()
    )
