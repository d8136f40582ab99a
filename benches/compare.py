"""layerstore (native and pure engines) side by side with the Go containers-storage CLI.

    python benches/compare.py [--quick] [--rounds N] [--operations put,diff] [--layers ...]

Each implementation runs as its own process on the same data, in alternating order (A B C A B C
...), on tmpfs; the table gives the median wall time, the spread (min-max), the throughput in MB
of uncompressed tar per second, CPU time, peak memory (max RSS of the process) and the ratio
against Go. Process times include start-up: about 0.12 s for Python, next to nothing for Go.
The Go tool comes from Debian's ``containers-storage`` package; without it the other columns
are still measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from datasets import LAYERS, scratch_directory, uncompressed_size

GO_CLI = shutil.which("containers-storage")
IMPLEMENTATIONS = ("go", "native", "pure")


@dataclass
class Measurement:
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    peak_kib: int = 0


def run_process(command: list[str], stdin: Path | None = None) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (KiB) of one child process."""
    with open(stdin or os.devnull, "rb") as source:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdin=source, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command[:4])}... failed with status {status}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def go_command(root: Path, driver: str, *verb: str) -> list[str]:
    assert GO_CLI is not None
    return [GO_CLI, "--graph", str(root), "--run", str(root / "run"),
            "--storage-driver", driver, *verb]  # fmt: skip


def python_command(script: str, *arguments: str) -> list[str]:
    return [sys.executable, "-c", script, *arguments]


PUT = (
    "import sys; from layerstore import LayerStore; "
    "LayerStore(sys.argv[1], driver=sys.argv[2], engine=sys.argv[3]).put(sys.argv[4])"
)
DIFF = (
    "import sys; from layerstore import LayerStore\n"
    "store = LayerStore(sys.argv[1], driver=sys.argv[2], engine=sys.argv[3])\n"
    "buffer = bytearray(1 << 20)\n"
    "with store.diff(sys.argv[4], compression=sys.argv[5]) as stream:\n"
    "    while stream.readinto(buffer): pass\n"
)


@contextmanager
def scratch_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="compare-", dir=scratch_directory()))
    try:
        yield root
    finally:
        # The Go overlay driver bind-mounts its home onto itself.
        subprocess.run(["umount", str(root / "overlay")], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def measure_put(implementation: str, driver: str, blob: Path) -> tuple[float, float, int]:
    with scratch_root() as root:
        if implementation == "go":
            return run_process(go_command(root, driver, "import-layer"), stdin=blob)
        return run_process(python_command(PUT, str(root), driver, implementation, str(blob)))


@contextmanager
def imported(implementation: str, driver: str, blob: Path) -> Iterator[tuple[Path, str]]:
    """A store holding ``blob`` as a layer made by ``implementation``; yields (root, id)."""
    with scratch_root() as root:
        if implementation == "go":
            with open(blob, "rb") as source:
                output = subprocess.run(go_command(root, driver, "import-layer"), stdin=source,
                                        capture_output=True, check=True, text=True)  # fmt: skip
            yield root, output.stdout.split()[0]
        else:
            script = (
                "import sys; from layerstore import LayerStore; "
                "print(LayerStore(sys.argv[1], driver=sys.argv[2]).put(sys.argv[3])[0].id)"
            )
            output = subprocess.run(python_command(script, str(root), driver, str(blob)),
                                    capture_output=True, check=True, text=True)  # fmt: skip
            yield root, output.stdout.strip()


def measure_diff(
    implementation: str, driver: str, root: Path, layer: str, compression: str
) -> tuple[float, float, int]:
    if implementation == "go":
        verb = ["diff", "-u", layer] if compression == "none" else ["diff", layer]
        return run_process(go_command(root, driver, *verb))
    return run_process(python_command(DIFF, str(root), driver, implementation, layer, compression))


def report(title: str, megabytes: float, results: dict[str, Measurement]) -> None:
    go_median = statistics.median(results["go"].seconds) if "go" in results else None
    for name, measured in results.items():
        median = statistics.median(measured.seconds)
        ratio = f"{go_median / median:.2f}x" if go_median else "-"
        print(
            f"| {title} | {name} | {median:.2f} | "
            f"{min(measured.seconds):.2f}-{max(measured.seconds):.2f} | "
            f"{megabytes / median:.0f} | {statistics.median(measured.cpu_seconds):.2f} | "
            f"{measured.peak_kib / 1024:.0f} | {ratio} |",
            flush=True,
        )


def record(results: dict[str, Measurement], name: str, outcome: tuple[float, float, int]) -> None:
    seconds, cpu, peak = outcome
    results[name].seconds.append(seconds)
    results[name].cpu_seconds.append(cpu)
    results[name].peak_kib = max(results[name].peak_kib, peak)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, no pure engine")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--operations", default="put,diff")
    parser.add_argument("--layers", default=",".join(sorted(LAYERS)))
    parser.add_argument("--drivers", default="vfs,overlay" if os.geteuid() == 0 else "vfs")
    arguments = parser.parse_args()
    rounds = 1 if arguments.quick else arguments.rounds
    names = [name for name in IMPLEMENTATIONS if not (arguments.quick and name == "pure")]
    if GO_CLI is None:
        print("containers-storage not found (apt-get install containers-storage): "
              "measuring layerstore only", file=sys.stderr)  # fmt: skip
        names.remove("go")

    print("| operation | implementation | median s | spread s | MB/s | CPU s | peak MB | vs go |")
    print("|---|---|---|---|---|---|---|---|")
    operations = arguments.operations.split(",")
    for layer in arguments.layers.split(","):
        blob = LAYERS[layer]()
        megabytes = uncompressed_size(blob) / 1e6
        for driver in arguments.drivers.split(","):
            if "put" in operations:
                results = compare_put(names, driver, blob, rounds)
                report(f"put {layer} ({driver})", megabytes, results)
            if "diff" in operations:
                for compression in ("none", "gzip"):
                    results = compare_diff(names, driver, blob, compression, rounds)
                    report(f"diff {layer} {compression} ({driver})", megabytes, results)
    return 0


def compare_put(names: list[str], driver: str, blob: Path, rounds: int) -> dict[str, Measurement]:
    results = {name: Measurement() for name in names}
    for _ in range(rounds):
        for name in names:
            record(results, name, measure_put(name, driver, blob))
    return results


def compare_diff(
    names: list[str], driver: str, blob: Path, compression: str, rounds: int
) -> dict[str, Measurement]:
    """Each implementation diffs a layer its own kind of store holds (Go's made by Go)."""
    results = {name: Measurement() for name in names}
    with ExitStack() as stack:
        stores = {
            name: stack.enter_context(imported("go" if name == "go" else "native", driver, blob))
            for name in names
        }
        for _ in range(rounds):
            for name in names:
                root, layer_id = stores[name]
                record(results, name, measure_diff(name, driver, root, layer_id, compression))
    return results


if __name__ == "__main__":
    raise SystemExit(main())
