"""layerstore (native and pure engines) side by side with the Go containers-storage CLI.

    python benches/compare.py [--quick] [--rounds N] [--layers small-files,large-files]

Each implementation runs as its own process on the same data, in alternating order (A B C A B C
...), on tmpfs; the table gives the median wall time, the spread (min-max), the throughput in MB
of uncompressed tar per second, peak memory (max RSS of the process) and the ratio against Go.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from datasets import LAYERS, scratch_directory, uncompressed_size

GO_CLI = shutil.which("containers-storage")


@dataclass
class Measurement:
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    peak_kib: int = 0


def run_process(command: list[str], stdin: Path | None = None) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (KiB) of one child process."""
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as source:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdin=source, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{command[0]} failed with status {child.returncode}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def put_with_layerstore(engine: str) -> Callable[[Path, str, Path], tuple[float, float, int]]:
    def put(root: Path, driver: str, blob: Path) -> tuple[float, float, int]:
        script = (
            "import sys; from layerstore import LayerStore; "
            "LayerStore(sys.argv[1], driver=sys.argv[2], engine=sys.argv[3]).put(sys.argv[4])"
        )
        return run_process([sys.executable, "-c", script, str(root), driver, engine, str(blob)])

    return put


def put_with_go(root: Path, driver: str, blob: Path) -> tuple[float, float, int]:
    assert GO_CLI is not None
    command = [GO_CLI, "--graph", str(root), "--run", str(root / "run"), "--storage-driver",
               driver, "import-layer"]  # fmt: skip
    try:
        return run_process(command, stdin=blob)
    finally:
        # The Go overlay driver bind-mounts its home onto itself.
        subprocess.run(["umount", str(root / "overlay")], capture_output=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, no pure engine")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", default=",".join(sorted(LAYERS)))
    parser.add_argument("--drivers", default="vfs,overlay" if os.geteuid() == 0 else "vfs")
    arguments = parser.parse_args()
    rounds = 1 if arguments.quick else arguments.rounds

    implementations: dict[str, Callable[[Path, str, Path], tuple[float, float, int]]] = {}
    if GO_CLI:
        implementations["go"] = put_with_go
    else:
        print("containers-storage not found (apt-get install containers-storage): "
              "measuring layerstore only", file=sys.stderr)  # fmt: skip
    implementations["native"] = put_with_layerstore("native")
    if not arguments.quick:
        implementations["pure"] = put_with_layerstore("pure")

    print("| operation | implementation | median s | spread s | MB/s | CPU s | peak MB | vs go |")
    print("|---|---|---|---|---|---|---|---|")
    for layer in arguments.layers.split(","):
        blob = LAYERS[layer]()
        megabytes = uncompressed_size(blob) / 1e6
        for driver in arguments.drivers.split(","):
            results = {name: Measurement() for name in implementations}
            for _ in range(rounds):
                for name, put in implementations.items():
                    root = Path(tempfile.mkdtemp(prefix="compare-", dir=scratch_directory()))
                    try:
                        seconds, cpu, peak = put(root, driver, blob)
                    finally:
                        shutil.rmtree(root, ignore_errors=True)
                    results[name].seconds.append(seconds)
                    results[name].cpu_seconds.append(cpu)
                    results[name].peak_kib = max(results[name].peak_kib, peak)
            go_median = statistics.median(results["go"].seconds) if "go" in results else None
            for name, measured in results.items():
                median = statistics.median(measured.seconds)
                ratio = f"{go_median / median:.2f}x" if go_median else "-"
                print(
                    f"| put {layer} ({driver}) | {name} | {median:.2f} | "
                    f"{min(measured.seconds):.2f}-{max(measured.seconds):.2f} | "
                    f"{megabytes / median:.0f} | {statistics.median(measured.cpu_seconds):.2f} | "
                    f"{measured.peak_kib / 1024:.0f} | {ratio} |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
