"""The stages of apply and diff on their own, per engine: CRC-64, sha256, tar-split encoding and
decoding, extraction and reassembly.

Run: ``python -m pytest benches/bench_kernels.py --benchmark-enable`` (``--benchmark-group-by
group`` is the default: one table per stage, native beside pure). Each result records whether
the engine's answer was right in ``extra_info["correct"]``, checked against an independent
reference where there is one (hashlib, the tar's own length and digest), else against the other
engine.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from layerstore import Compression, _native
from layerstore.engines import select_engine
from layerstore.engines.pure import crc64, digest, tarsplit

from datasets import LayerFiles, layer_files, scratch_directory

ENGINES = ["native", "pure"]
CHECKSUM_BYTES = 64 << 20


@dataclass(frozen=True)
class Kernels:
    """One engine's single-stage functions."""

    crc64: Callable[[bytes], int]
    sha256_digest: Callable[[bytes], str]
    tar_split_encode: Callable[[bytes], bytes]
    tar_split_decode: Callable[[bytes], list[tuple[int, bytes, int, bytes | None]]]


KERNELS = {
    "native": Kernels(
        _native.crc64, _native.sha256_digest, _native.tar_split_encode, _native.tar_split_decode
    ),
    "pure": Kernels(crc64.crc64, digest.sha256_digest, tarsplit.encode, tarsplit.decode),
}


@pytest.fixture(scope="module")
def rootfs() -> LayerFiles:
    return layer_files("rootfs")


@pytest.fixture(scope="module")
def rootfs_tar(rootfs: LayerFiles) -> bytes:
    return rootfs.tar.read_bytes()


@pytest.fixture(scope="module")
def rootfs_tar_split(rootfs_tar: bytes) -> bytes:
    return _native.tar_split_encode(rootfs_tar)


@pytest.fixture(scope="module")
def payload() -> bytes:
    """64 MiB of file content (the start of the large-file layer's tar)."""
    with open(layer_files("large-files").tar, "rb") as source:
        return source.read(CHECKSUM_BYTES)


@pytest.fixture
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="layerstore-bench-", dir=scratch_directory()))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("engine", ENGINES)
def test_crc64(benchmark: BenchmarkFixture, payload: bytes, engine: str) -> None:
    benchmark.group = "crc64 of 64 MiB"
    benchmark.extra_info["bytes"] = len(payload)
    value = benchmark.pedantic(KERNELS[engine].crc64, (payload,), rounds=3, iterations=1)
    other = KERNELS["pure" if engine == "native" else "native"].crc64(payload)
    benchmark.extra_info["correct"] = value == other


@pytest.mark.parametrize("engine", ENGINES)
def test_sha256(benchmark: BenchmarkFixture, payload: bytes, engine: str) -> None:
    benchmark.group = "sha256 of 64 MiB"
    benchmark.extra_info["bytes"] = len(payload)
    value = benchmark.pedantic(KERNELS[engine].sha256_digest, (payload,), rounds=5, iterations=1)
    benchmark.extra_info["correct"] = value == "sha256:" + hashlib.sha256(payload).hexdigest()


def layer_bytes(entries: list[tuple[int, bytes, int, bytes | None]]) -> int:
    """Bytes of tar that decoded entries stand for: segments plus file contents."""
    return sum(len(payload or b"") if kind == 2 else size for kind, _, size, payload in entries)


@pytest.mark.parametrize("engine", ENGINES)
def test_tar_split_encode(benchmark: BenchmarkFixture, rootfs_tar: bytes, engine: str) -> None:
    benchmark.group = f"tar-split encode: the rootfs tar ({len(rootfs_tar) / 1e6:.0f} MB)"
    benchmark.extra_info["bytes"] = len(rootfs_tar)
    lines = benchmark.pedantic(KERNELS[engine].tar_split_encode, (rootfs_tar,), rounds=3)
    other = KERNELS["pure" if engine == "native" else "native"].tar_split_encode(rootfs_tar)
    entries = _native.tar_split_decode(lines)
    benchmark.extra_info["correct"] = lines == other and layer_bytes(entries) == len(rootfs_tar)


@pytest.mark.parametrize("engine", ENGINES)
def test_tar_split_decode(
    benchmark: BenchmarkFixture, rootfs_tar: bytes, rootfs_tar_split: bytes, engine: str
) -> None:
    lines = rootfs_tar_split.count(b"\n")
    benchmark.group = f"tar-split decode: the rootfs tar-split ({lines:,} lines)"
    benchmark.extra_info["bytes"] = len(rootfs_tar_split)
    entries = benchmark.pedantic(KERNELS[engine].tar_split_decode, (rootfs_tar_split,), rounds=5)
    benchmark.extra_info["correct"] = len(entries) == lines and layer_bytes(entries) == len(
        rootfs_tar
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_extract(
    benchmark: BenchmarkFixture, rootfs: LayerFiles, rootfs_tar: bytes, scratch: Path, engine: str
) -> None:
    """apply_layer of the plain tar: walk, sha256, CRC-64, tar-split and extraction, no inflate."""
    chosen = select_engine(engine)
    rounds: list[Path] = []

    def fresh() -> tuple[tuple[Path], dict[str, object]]:
        for old in rounds:
            shutil.rmtree(old, ignore_errors=True)
        rounds.append(Path(tempfile.mkdtemp(dir=scratch)))
        (rounds[-1] / "layer").mkdir()
        return (rounds[-1],), {}

    def extract(directory: Path) -> str:
        result = chosen.apply_layer(
            rootfs_tar,
            str(directory / "layer"),
            str(directory / "tar-split.gz"),
            whiteout_format="vfs",
        )
        return result.uncompressed_digest

    benchmark.group = f"extract: apply_layer of the rootfs tar ({len(rootfs_tar) / 1e6:.0f} MB)"
    benchmark.extra_info["bytes"] = len(rootfs_tar)
    found = benchmark.pedantic(extract, setup=fresh, rounds=3)
    # The tree is right if the tar rebuilt from it and its tar-split is the original tar.
    layer, tar_split = str(rounds[-1] / "layer"), str(rounds[-1] / "tar-split.gz")
    with _native.open_diff(tar_split, layer, int(Compression.NONE)) as stream:
        rebuilt = hashlib.sha256(stream.read()).hexdigest()
    benchmark.extra_info["correct"] = found == rootfs.diff_id == f"sha256:{rebuilt}"


@pytest.fixture(scope="module")
def extracted(rootfs: LayerFiles) -> Iterator[tuple[str, str]]:
    """The rootfs layer applied once: (tar-split path, layer directory)."""
    root = Path(tempfile.mkdtemp(prefix="layerstore-bench-", dir=scratch_directory()))
    (root / "layer").mkdir()
    select_engine("native").apply_layer(
        rootfs.gzip, str(root / "layer"), str(root / "tar-split.gz"), whiteout_format="vfs"
    )
    yield str(root / "tar-split.gz"), str(root / "layer")
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("engine", ENGINES)
def test_reassemble(
    benchmark: BenchmarkFixture, rootfs: LayerFiles, extracted: tuple[str, str], engine: str
) -> None:
    """open_diff, uncompressed: the tar rebuilt from tar-split and the files, CRCs checked."""
    chosen = select_engine(engine)
    tar_split, layer = extracted
    buffer = bytearray(1 << 20)

    def reassemble(digesting: bool = False) -> tuple[int, str]:
        total, hasher = 0, hashlib.sha256()
        with chosen.open_diff(tar_split, layer, Compression.NONE) as stream:
            while count := stream.readinto(buffer):
                total += count
                if digesting:
                    hasher.update(memoryview(buffer)[:count])
        return total, f"sha256:{hasher.hexdigest()}"

    benchmark.group = f"reassemble: diff of the rootfs layer ({rootfs.size / 1e6:.0f} MB)"
    benchmark.extra_info["bytes"] = rootfs.size
    produced, _ = benchmark.pedantic(reassemble, rounds=3)
    _, found = reassemble(digesting=True)  # checked outside the timing
    benchmark.extra_info["correct"] = produced == rootfs.size and found == rootfs.diff_id
