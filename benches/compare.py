"""layerstore (native and pure engines) side by side with the Go containers-storage CLI.

    python benches/compare.py [--quick] [--rounds N] [--operations put,diff,...] [--layers ...]

Data sets are generated deterministically (``datasets.py``; the sha256 of each tar is printed
with the results): 20,000 small files, six large files, and a rootfs-like layer with symlinks,
hard links and whiteouts, each as gzip and zstd blobs. Operations: put (``import-layer``) on vfs
and overlay, diff (uncompressed and gzip, from tar-split), tree diff (uncompressed and gzip, of
a container-like layer: the small-files and rootfs data sets extracted into a created layer's
mount point, so no tar-split), delete, mount and unmount of a 100-layer overlay chain, opening
and listing a store of 10,000 layers, start-up (a bare interpreter, ``import layerstore``, and
``layerstore layers`` beside ``containers-storage layers`` on a 10-layer store), and a 4-layer
image: put layer by layer
and as one chain (chain), loaded from an OCI layout (load) and saved to one, gzip (save), pulled
from a local registry (pull, beside load of the same layout) and pushed to one, gzip (push), each
beside ``skopeo copy`` into or out of containers-storage. The registry is Debian's
``docker-registry`` (distribution 2.8), plain HTTP on 127.0.0.1, its storage on tmpfs. Beside
them, the machine's own limits on the same data: ``cat``, ``sha256sum``, ``gzip -dc``, ``zstd
-dc`` and ``tar -x``, and for the tree diff ``tar -c`` of the same tree, ``pigz -1 -c`` of the
tar and ``tar -c | pigz -1`` (pigz uses every core, as our gzip does).

Each implementation runs as its own process on the same data, in alternating order (A B C A B
C ...), on tmpfs. For each operation the table gives the median wall time of the process and
its spread (min-max), layerstore's own timing of the operation inside its process (without the
interpreter's start-up and imports, which the Go CLI does not pay; the document gives their
time on the machine), the throughput in
MB of uncompressed tar per second (or operations per second), CPU time (user + system), peak
memory (max RSS of the process) and the ratio against Go. The results go to
``docs/performance.md`` (between its ``compare.py`` markers; text outside them is kept) and a
bar chart to ``docs/performance.png``.

The Go tool comes from Debian's ``containers-storage`` package; without it the other columns are
still measured. pigz comes from Debian's ``pigz`` package (``apt-get install pigz``; CI does not
install it, as CI runs no benchmark): without it the pigz limits are left out. The chart needs
matplotlib (``pip install '.[bench]'``).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import itertools
import json
import os
import platform
import re
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from datasets import (
    CHAIN,
    LAYERS,
    LayerFiles,
    layer_files,
    scratch_directory,
    write_store_of_layers,
)

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
CHILD = HERE / "compare_child.py"
GO_CLI = shutil.which("containers-storage")
IMPLEMENTATIONS = ("go", "native", "pure")
OPERATIONS = (
    "limits", "put", "diff", "tree", "delete", "mount", "open", "startup", "chain", "load", "save",
    "pull", "push", "reader",
)  # fmt: skip
CHAIN_DEPTH = 100
STORE_SIZE = 10_000
LIMIT_TOOLS = ("cat", "sha256sum", "gzip -dc", "zstd -dc", "tar -x")
TREE_LAYERS = ("small-files", "rootfs")
"""The data sets the tree operation writes into a container-like layer."""
TREE_LIMIT_TOOLS = ("tar -c", "pigz -1 -c", "tar -c | pigz -1")
STARTUP_STORE_SIZE = 10
STARTUP_ROUNDS = 4
"""Rounds of the start-up operation per short round: its processes last tens of milliseconds."""
BEGIN_MARKER = "<!-- compare.py: begin (generated; edit outside these markers) -->"
END_MARKER = "<!-- compare.py: end -->"


# -- measuring one process -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one child process cost, and what it printed."""

    seconds: float
    cpu_seconds: float
    peak_kib: int | None
    in_process: float | None
    output: str


def gnu_time() -> str | None:
    """GNU time, if installed: the launcher that makes peak memory figures true.

    A child's ``ru_maxrss`` never reads below the RSS of the process that spawned it (Linux
    carries the spawner's high-water mark across ``exec``), so ``os.wait4`` here would report
    at least this script's own 20-odd MB for every command. GNU time (about 1 MB) forks the
    command and reports the command's own peak.
    """
    path = shutil.which("time")
    if path is None:
        return None
    try:
        result = subprocess.run(
            [path, "-f", "%M", "-o", "/dev/stdout", "true"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if result.returncode == 0 and result.stdout.strip().isdigit() else None


GNU_TIME = gnu_time()


def run_process(command: list[str], stdin: Path | None = None, capture: bool = True) -> Outcome:
    """Run ``command`` to its end: wall time around it, CPU time (user + system) from
    ``os.wait4``, peak RSS from GNU time (see :func:`gnu_time`; none without it).

    With ``capture``, standard output goes to a file on tmpfs and is read back afterwards (the
    layerstore child prints its own timing last); otherwise to /dev/null (diff streams, tools).
    """
    with (
        open(stdin or os.devnull, "rb") as source,
        tempfile.TemporaryFile(dir=scratch_directory())
        if capture
        else open(os.devnull, "wb") as sink,
        tempfile.NamedTemporaryFile("r", dir=scratch_directory()) as report,
    ):
        launched = command
        if GNU_TIME is not None:
            launched = [GNU_TIME, "-f", "%M", "-o", report.name, *command]
        started = time.perf_counter()
        child = subprocess.Popen(launched, stdin=source, stdout=sink)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait again
        output = ""
        if capture:
            sink.seek(0)
            output = sink.read().decode("utf-8", "replace")
        lines = report.read().split()
        peak = int(lines[-1]) if GNU_TIME is not None and lines and lines[-1].isdigit() else None
    if child.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed with status {child.returncode}")
    in_process = None
    lines = output.splitlines()
    if lines and lines[-1].startswith("in-process "):
        in_process = float(lines[-1].split()[1])
        output = "\n".join(lines[:-1])
    return Outcome(elapsed, usage.ru_utime + usage.ru_stime, peak, in_process, output)


def go_command(root: Path, driver: str, *verb: str) -> list[str]:
    assert GO_CLI is not None
    return [
        GO_CLI,
        "--graph",
        str(root),
        "--run",
        str(root / "run"),
        "--storage-driver",
        driver,
        *verb,
    ]


def child_command(operation: str, root: Path, driver: str, engine: str, *rest: str) -> list[str]:
    return [sys.executable, str(CHILD), operation, str(root), driver, engine, *rest]


def unmount_below(root: Path) -> None:
    """Unmount whatever is mounted at or below ``root``, deepest first.

    Layer mounts left by either tool, and the Go overlay driver's bind mount of its home onto
    itself (it makes its home a private mount).
    """
    prefix = str(root)
    points = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


@contextmanager
def scratch_root(prefix: str = "compare-") -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=scratch_directory()))
    try:
        yield root
    finally:
        unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)


# -- results -------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """Every round of one implementation on one operation."""

    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    in_process: list[float] = field(default_factory=list)
    peak_kib: int | None = None

    def add(self, outcome: Outcome) -> None:
        self.seconds.append(outcome.seconds)
        self.cpu_seconds.append(outcome.cpu_seconds)
        if outcome.in_process is not None:
            self.in_process.append(outcome.in_process)
        if outcome.peak_kib is not None:
            self.peak_kib = max(self.peak_kib or 0, outcome.peak_kib)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def in_process_median(self) -> float | None:
        return statistics.median(self.in_process) if self.in_process else None


@dataclass
class Row:
    """One operation on one data set, measured for each implementation (or tool)."""

    section: str
    operation: str
    amount: float
    """MB of uncompressed tar, or a count of the things the unit names."""
    unit: str
    """``MB/s``, or e.g. ``mounts/s``, ``layers/s``."""
    results: dict[str, Measurement]
    baseline: str = "go"
    """What the ratios are against: the Go CLI, or skopeo for whole images (chain, load, save,
    pull, push)."""

    def throughput(self, seconds: float) -> float:
        return self.amount / seconds

    def versus(self, name: str, in_process: bool = False) -> float | None:
        """The baseline's median process time over ``name``'s (above 1: ``name`` is faster)."""
        if self.baseline not in self.results or name == self.baseline:
            return None
        ours = self.results[name].in_process_median if in_process else self.results[name].median
        return self.results[self.baseline].median / ours if ours else None


def format_throughput(value: float, unit: str) -> str:
    if unit == "MB/s":
        return f"{value:,.0f} MB/s"
    return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"


def format_peak(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}" if kib >= 10 * 1024 else f"{kib / 1024:.1f}"


def format_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


TABLE_HEADER = (
    "| operation | implementation | median s | spread s | in-process s | throughput | CPU s "
    "| peak MB | vs Go (skopeo) | vs Go (skopeo), in-process |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def cell(text: str) -> str:
    """``text`` for a cell of a markdown table: a ``|`` in it (``tar -c | pigz -1``) escaped,
    which GitHub's tables need even inside code spans."""
    return text.replace("|", "\\|")


def table_lines(row: Row) -> list[str]:
    lines = []
    for name, measured in row.results.items():
        in_process = measured.in_process_median
        cpu = f"{statistics.median(measured.cpu_seconds):.2f}" if measured.cpu_seconds else "-"
        lines.append(
            f"| {cell(row.operation)} | {cell(name)} | {measured.median:.3f} | "
            f"{min(measured.seconds):.3f}-{max(measured.seconds):.3f} | "
            f"{'-' if in_process is None else f'{in_process:.3f}'} | "
            f"{format_throughput(row.throughput(measured.median), row.unit)} | "
            f"{cpu} | {format_peak(measured.peak_kib)} | "
            f"{format_ratio(row.versus(name))} | "
            f"{format_ratio(row.versus(name, in_process=True))} |"
        )
    return lines


# -- the operations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    names: list[str]
    rounds: int
    drivers: list[str]
    compressions: list[str]
    """Blob compressions put reads."""
    short_rounds: int
    """Rounds of the short operations (mount, unmount, open), which are noisier."""


def alternate(
    plan: Plan, names: list[str], measure: Callable[[str], Outcome], rounds: int | None = None
) -> dict[str, Measurement]:
    """``measure`` each of ``names`` in turn, A B C A B C, for the plan's rounds."""
    results = {name: Measurement() for name in names}
    for _ in range(rounds or plan.rounds):
        for name in names:
            results[name].add(measure(name))
    return results


def compare_limits(plan: Plan, data: LayerFiles) -> list[Row]:
    """The machine's own speed on the same bytes: what no implementation can beat."""

    def measure(tool: str) -> Outcome:
        if tool == "tar -x":
            with scratch_root("compare-tar-") as directory:
                return run_process(["tar", "-x", "-f", str(data.tar), "-C", str(directory)])
        command = {
            "cat": ["cat", str(data.tar)],
            "sha256sum": ["sha256sum", str(data.tar)],
            "gzip -dc": ["gzip", "-dc", str(data.gzip)],
            "zstd -dc": ["zstd", "-dc", str(data.zstd)],
        }[tool]
        return run_process(command, capture=False)

    tools = [tool for tool in LIMIT_TOOLS if shutil.which(tool.split()[0])]
    results = alternate(plan, tools, measure)
    return [
        Row("limits", f"{tool} {data.name}", data.size / 1e6, "MB/s", {tool: results[tool]})
        for tool in tools
    ]


def compare_put(plan: Plan, data: LayerFiles, driver: str, compression: str) -> Row:
    blob = data.blob(compression)

    def measure(name: str) -> Outcome:
        with scratch_root() as root:
            if name == "go":
                return run_process(go_command(root, driver, "import-layer"), stdin=blob)
            return run_process(child_command("put", root, driver, name, str(blob)))

    return Row(
        "put",
        f"put {data.name} {compression} ({driver})",
        data.size / 1e6,
        "MB/s",
        alternate(plan, plan.names, measure),
    )


@contextmanager
def stored(maker: str, driver: str, data: LayerFiles) -> Iterator[tuple[Path, str]]:
    """A store holding ``data`` as a layer ``maker`` (go or native) put; yields (root, id)."""
    with scratch_root("compare-store-") as root:
        if maker == "go":
            outcome = run_process(go_command(root, driver, "import-layer"), stdin=data.gzip)
            layer_id = outcome.output.split()[0]
        else:
            outcome = run_process(child_command("put", root, driver, maker, str(data.gzip)))
            layer_id = outcome.output.strip()
        yield root, layer_id


def maker_of(name: str) -> str:
    """Who made the stored layer an implementation reads: Go reads Go's, ours read ours."""
    return "go" if name == "go" else "native"


def compare_diff(
    plan: Plan, data: LayerFiles, driver: str, stores: dict[str, tuple[Path, str]]
) -> list[Row]:
    return diff_rows(plan, data, driver, "diff", lambda name: stores[maker_of(name)])


def diff_rows(
    plan: Plan,
    data: LayerFiles,
    driver: str,
    section: str,
    store_of: Callable[[str], tuple[Path, str]],
) -> list[Row]:
    """A row per compression (none, gzip) of ``section``: ``containers-storage diff -u|-c``
    against layerstore's diff of the layer ``store_of(implementation)`` names (root, id)."""
    label = "diff" if section == "diff" else "tree diff"
    rows = []
    for compression in ("none", "gzip"):

        def measure(name: str, compression: str = compression) -> Outcome:
            root, layer_id = store_of(name)
            if name == "go":
                flag = "-u" if compression == "none" else "-c"
                return run_process(go_command(root, driver, "diff", flag, layer_id), capture=False)
            return run_process(child_command("diff", root, driver, name, layer_id, compression))

        rows.append(
            Row(
                section,
                f"{label} {data.name} {compression} ({driver})",
                data.size / 1e6,
                "MB/s",
                alternate(plan, plan.names, measure),
            )
        )
    return rows


def compare_delete(
    plan: Plan, data: LayerFiles, driver: str, stores: dict[str, tuple[Path, str]]
) -> Row:
    """Each round deletes the layer from a fresh copy (``cp -a``, not timed) of the store."""

    def measure(name: str) -> Outcome:
        template, layer_id = stores[maker_of(name)]
        with scratch_root() as root:
            subprocess.run(["cp", "-a", f"{template}/.", str(root)], check=True)
            if name == "go":
                return run_process(go_command(root, driver, "delete-layer", layer_id))
            return run_process(child_command("delete", root, driver, name, layer_id))

    return Row(
        "delete",
        f"delete {data.name} ({driver})",
        data.size / 1e6,
        "MB/s",
        alternate(plan, plan.names, measure),
    )


@contextmanager
def chain(maker: str, depth: int) -> Iterator[tuple[Path, str]]:
    """An overlay store with a chain of ``depth`` one-file layers; yields (root, top id)."""
    with scratch_root("compare-chain-") as root:
        if maker == "go":
            parent: list[str] = []
            for number in range(depth):
                with tempfile.NamedTemporaryFile(dir=scratch_directory()) as blob:
                    blob.write(one_file_layer(number))
                    blob.flush()
                    outcome = run_process(
                        go_command(root, "overlay", "import-layer", *parent), stdin=Path(blob.name)
                    )
                parent = [outcome.output.split()[0]]
            yield root, parent[0]
        else:
            outcome = run_process(child_command("chain", root, "overlay", maker, str(depth)))
            yield root, outcome.output.strip()


def one_file_layer(number: int) -> bytes:
    from compare_child import one_file_layer as make

    return make(number)


def compare_mount(plan: Plan) -> list[Row]:
    """Mount then unmount the top of a deep overlay chain, each in a process of its own."""
    mounts = {name: Measurement() for name in plan.names}
    unmounts = {name: Measurement() for name in plan.names}
    with ExitStack() as stack:
        chains = {
            maker: stack.enter_context(chain(maker, CHAIN_DEPTH))
            for maker in {maker_of(name) for name in plan.names}
        }
        for _ in range(plan.short_rounds):
            for name in plan.names:
                root, top = chains[maker_of(name)]
                if name == "go":
                    mounts[name].add(run_process(go_command(root, "overlay", "mount", top)))
                    unmounts[name].add(run_process(go_command(root, "overlay", "unmount", top)))
                else:
                    mounts[name].add(
                        run_process(child_command("mount", root, "overlay", name, top))
                    )
                    unmounts[name].add(
                        run_process(child_command("unmount", root, "overlay", name, top))
                    )
    label = f"{CHAIN_DEPTH}-layer overlay chain"
    return [
        Row("mount", f"mount {label}", 1, "mounts/s", mounts),
        Row("mount", f"unmount {label}", 1, "unmounts/s", unmounts),
    ]


OPEN_ONLY = f"open {STORE_SIZE:,} layers, no listing (vfs)"


def compare_open(plan: Plan) -> list[Row]:
    """Open a store of 10,000 layers and list them (Go: ``containers-storage layers``); and,
    for layerstore alone (Go's CLI has no verb that opens and does nothing), only open it:
    ``LayerStore(...)`` reads and indexes layers.json, then ``close``."""
    with scratch_root("compare-open-") as root:
        write_store_of_layers(root, STORE_SIZE, "vfs")

        def measure(name: str) -> Outcome:
            if name == "go":
                return run_process(go_command(root, "vfs", "layers"))
            engine, _, only = name.partition(" ")
            return run_process(child_command("open" if only else "layers", root, "vfs", engine))

        for name in plan.names:  # the first open of each creates its lock files and directories
            measure(name)
        ways = plan.names + [f"{name} open" for name in engines(plan)]
        results = alternate(plan, ways, measure, plan.short_rounds)
    listed = {name: results[name] for name in plan.names}
    opened = {name: results[f"{name} open"] for name in engines(plan)}
    return [
        Row("open", f"open + list {STORE_SIZE:,} layers (vfs)", STORE_SIZE, "layers/s", listed),
        Row("open", OPEN_ONLY, STORE_SIZE, "layers/s", opened),
    ]


@contextmanager
def container_layer(maker: str, driver: str, data: LayerFiles) -> Iterator[tuple[Path, str]]:
    """A store holding one container-like layer; yields (root, layer id).

    The layer is made as a container's is: created empty and writeable, mounted, the data
    set's tar extracted into the mount point with ``tar -x`` (setup, not timed), unmounted.
    Its files came in through the file system, not from a blob, so it has no tar-split: a diff
    of it is built by walking its tree. ``maker``: ``go`` (``containers-storage create-layer``,
    ``mount``, ``unmount``), or ``native`` (layerstore's) when the Go CLI is not measured.
    """
    with scratch_root("compare-tree-") as root:
        if maker == "go":
            layer_id = run_process(go_command(root, driver, "create-layer")).output.split()[0]
            mounted = run_process(go_command(root, driver, "mount", layer_id)).output.strip()
        else:
            layer_id = run_process(child_command("create", root, driver, maker)).output.strip()
            mounted = run_process(child_command("mount", root, driver, maker, layer_id)).output
        subprocess.run(["tar", "-x", "-f", str(data.tar), "-C", mounted.strip()], check=True)
        if maker == "go":
            run_process(go_command(root, driver, "unmount", layer_id))
        else:
            run_process(child_command("unmount", root, driver, maker, layer_id))
        yield root, layer_id


def tree_maker(names: list[str]) -> str:
    """Who makes the container-like layer: the Go CLI when it is measured, else layerstore."""
    return "go" if "go" in names else "native"


def compare_tree(plan: Plan, data: LayerFiles, driver: str, root: Path, layer_id: str) -> list[Row]:
    """diff of a container-like layer (see :func:`container_layer`), uncompressed and gzip:
    ``containers-storage diff -u|-c`` against layerstore's diff, each stream to nowhere (Go's
    standard output is /dev/null, the child reads the stream and drops it, as the diff
    operation does).

    Every implementation reads the same store, made once: without tar-split, all a diff reads
    is the layer's record and its tree, which Go and layerstore keep the same way on disk, so
    one store gives each the very same files (inodes, directory order) and any difference in
    the figures is the diff's. Separate stores would each need their own extraction, whose
    directory order and layout on tmpfs would differ.
    """
    for name in plan.names:  # the first open of each makes its lock files: not timed
        if name == "go":
            run_process(go_command(root, driver, "layers"))
        else:
            run_process(child_command("layers", root, driver, name))
    return diff_rows(plan, data, driver, "tree", lambda name: (root, layer_id))


def compare_tree_limits(plan: Plan, data: LayerFiles) -> list[Row]:
    """The machine's own speed at what a tree diff does, on the same tree (the data set's tar
    extracted with ``tar -x``, as into the container-like layer): ``tar -c`` of it, ``pigz -1
    -c`` of the data set's tar (compression alone, on both cores) and ``tar -c | pigz -1``.

    ``tar -c`` writes into a pipe to ``cat``: GNU tar does not read the files at all when its
    archive is /dev/null, so ``tar -c > /dev/null`` measures nothing.
    """
    tools = [tool for tool in TREE_LIMIT_TOOLS if "pigz" not in tool or shutil.which("pigz")]
    with scratch_root("compare-tree-") as tree:
        subprocess.run(["tar", "-x", "-f", str(data.tar), "-C", str(tree)], check=True)
        walk = f"tar -c -f - -C {shlex.quote(str(tree))} ."

        def measure(tool: str) -> Outcome:
            if tool == "pigz -1 -c":
                return run_process(["pigz", "-1", "-c", str(data.tar)], capture=False)
            pipe = f"{walk} | cat" if tool == "tar -c" else f"{walk} | pigz -1 -c"
            return run_process(["bash", "-o", "pipefail", "-c", pipe], capture=False)

        results = alternate(plan, tools, measure)
    return [
        Row(
            "limits",
            f"{tool} {data.name}" + ("" if tool == "pigz -1 -c" else " tree"),
            data.size / 1e6,
            "MB/s",
            {tool: results[tool]},
        )
        for tool in tools
    ]


def cli_command(root: Path, driver: str, engine: str, *verb: str) -> list[str]:
    """layerstore's command line, as ``python -m layerstore`` (what the ``layerstore``
    script runs: the same imports, and ``main``)."""
    return [sys.executable, "-m", "layerstore", "--root", str(root), "--run-root",
            str(root / "run"), "--driver", driver, "--engine", engine, *verb]  # fmt: skip


STARTUP_INTERPRETER = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import layerstore'": [sys.executable, "-c", "import layerstore"],
}


def compare_startup(plan: Plan) -> list[Row]:
    """Start-up as whole processes: a bare interpreter, the interpreter importing layerstore,
    and listing a store of ten layers from the command line, ``layerstore layers`` (each
    engine) against ``containers-storage layers``, on the same store. Many rounds: each
    process lasts tens of milliseconds."""
    with scratch_root("compare-startup-") as root:
        write_store_of_layers(root, STARTUP_STORE_SIZE, "vfs")
        commands = dict(STARTUP_INTERPRETER)
        for name in plan.names:
            commands[name] = (
                go_command(root, "vfs", "layers")
                if name == "go"
                else cli_command(root, "vfs", name, "layers")
            )
        for command in commands.values():  # the first open of each makes its lock files
            run_process(command)
        rounds = plan.short_rounds * STARTUP_ROUNDS
        results = alternate(plan, list(commands), lambda way: run_process(commands[way]), rounds)
    rows = [
        Row("startup", way, 1, "starts/s", {"python": results[way]}) for way in STARTUP_INTERPRETER
    ]
    layers = {name: results[name] for name in plan.names}
    label = f"layers, a store of {STARTUP_STORE_SIZE} layers (vfs)"
    rows.append(Row("startup", label, 1, "lists/s", layers))
    return rows


CHAIN_WAYS = ("put-each", "put-chain", "skopeo")
LAYER_MEDIA_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


def write_oci_image(directory: Path, layers: list[tuple[LayerFiles, str]]) -> str:
    """An OCI image layout at ``directory`` of one image whose layers are ``layers`` (data
    set, compression), blobs hard-linked where they can be; returns its reference."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob_file(source: Path) -> dict[str, object]:
        digest = hashlib.sha256()
        with open(source, "rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        target = blobs / digest.hexdigest()
        if not target.exists():
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        return {"digest": f"sha256:{digest.hexdigest()}", "size": source.stat().st_size}

    def blob_bytes(data: bytes) -> dict[str, object]:
        (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
        return {"digest": f"sha256:{hashlib.sha256(data).hexdigest()}", "size": len(data)}

    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [data.diff_id for data, _ in layers]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **blob_bytes(json.dumps(config).encode()),
        },
        "layers": [
            {"mediaType": LAYER_MEDIA_TYPES[kind], **blob_file(data.blob(kind))}
            for data, kind in layers
        ],
    }
    reference = "chain"
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **blob_bytes(json.dumps(manifest).encode()),
                "annotations": {"org.opencontainers.image.ref.name": reference},
            }
        ],
    }
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (directory / "index.json").write_text(json.dumps(index))
    return reference


@dataclass(frozen=True)
class OciImage:
    """The chain benchmark's 4-layer image as an OCI layout, with the files skopeo is run with."""

    work: Path
    """skopeo's private configuration and temporary files; the layout is below it."""
    layout: Path
    reference: str
    layers: list[tuple[LayerFiles, str]]

    @property
    def location(self) -> str:
        """The image as containers/image and ``LayerStore.load`` name it: ``oci:DIR:REF``."""
        return f"oci:{self.layout}:{self.reference}"

    @property
    def stored_name(self) -> str:
        """The name a copy into containers-storage gives it (containers/image normalizes
        ``REF`` to ``docker.io/library/REF:latest``); layerstore's loads are given the same."""
        return f"docker.io/library/{self.reference}:latest"

    @property
    def size(self) -> int:
        """Bytes of tar of all its layers."""
        return sum(data.size for data, _ in self.layers)

    def label(self, operation: str, driver: str) -> str:
        names = " + ".join(f"{data.name} {kind}" for data, kind in self.layers)
        return f"{operation} of 4 ({names}) ({driver})"


@contextmanager
def oci_image() -> Iterator[OciImage]:
    """The layers of ``CHAIN`` written as an OCI layout (blobs hard-linked to the data sets)."""
    layers = [(layer_files(name), kind) for name, kind in CHAIN]
    with scratch_root("compare-image-") as work:
        layout = work / "layout"
        yield OciImage(work, layout, write_oci_image(layout, layers), layers)


def storage_location(root: Path, driver: str, name: str) -> str:
    """The image ``name`` of the store at ``root`` (run root ``root/run``), as containers/image
    names it."""
    return f"containers-storage:[{driver}@{root}+{root / 'run'}]{name}"


def skopeo_copy_command(work: Path, source: str, destination: str, root: Path, driver: str,
                        flags: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """skopeo copy from ``source`` to ``destination`` (containers/image locations; the store
    at ``root``, run root ``root/run``, is one of them), with configuration files of its own
    in ``work``, and a private /var/lib (c/image keeps a blob cache under /var/lib/containers
    when run as root: the machine's must stay untouched). ``flags`` go to ``copy``, e.g.
    ``--src-tls-verify=false``."""
    (work / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    (work / "registries.conf").write_text("unqualified-search-registries = []\n")
    (work / "storage.conf").write_text(
        f'[storage]\ndriver = "{driver}"\ngraphroot = "{root}"\nrunroot = "{root / "run"}"\n'
    )
    (work / "tmp").mkdir(exist_ok=True)
    script = 'mount -t tmpfs -o size=64m compare /var/lib && exec "$@"'
    return ["env", f"CONTAINERS_STORAGE_CONF={work / 'storage.conf'}",
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", script, "isolated",
            "skopeo", "--policy", str(work / "policy.json"),
            "--registries-conf", str(work / "registries.conf"), "--tmpdir", str(work / "tmp"),
            "copy", "--quiet", *flags, source, destination]  # fmt: skip


def skopeo_load(image: OciImage, root: Path, driver: str) -> Outcome:
    """skopeo copy of the layout's image into a store at ``root``: containers/image's pipeline,
    what podman pull uses."""
    destination = storage_location(root, driver, image.reference)
    command = skopeo_copy_command(image.work, image.location, destination, root, driver)
    return run_process(command, capture=False)


def skopeo_save(image: OciImage, root: Path, driver: str, destination: str) -> Outcome:
    """skopeo copy of the image out of the store at ``root`` to ``destination``."""
    source = storage_location(root, driver, image.reference)
    command = skopeo_copy_command(image.work, source, destination, root, driver)
    return run_process(command, capture=False)


def has_skopeo() -> bool:
    return shutil.which("skopeo") is not None


def engines(plan: Plan) -> list[str]:
    """layerstore's engines among the implementations measured."""
    return [name for name in plan.names if name != "go"]


def compare_chain(plan: Plan, driver: str) -> Row:
    """The 4 layers of one image: put one after the other, as one put_chain, and by skopeo
    from an OCI layout of the same blobs."""
    ways = [way for way in CHAIN_WAYS if way != "skopeo" or has_skopeo()]
    with oci_image() as image:
        blobs = [str(data.blob(kind)) for data, kind in image.layers]

        def measure(way: str) -> Outcome:
            with scratch_root() as root:
                if way == "skopeo":
                    return skopeo_load(image, root, driver)
                return run_process(child_command(way, root, driver, "native", *blobs))

        results = alternate(plan, ways, measure)
    return Row(
        "chain", image.label("chain", driver), image.size / 1e6, "MB/s", results, baseline="skopeo"
    )


def compare_load(plan: Plan, driver: str) -> Row:
    """The 4-layer OCI layout loaded into a fresh store: ``LayerStore.load`` against skopeo
    copy into containers-storage (the chain operation's skopeo figure, measured again here
    in alternation with the loads)."""
    ways = engines(plan) + (["skopeo"] if has_skopeo() else [])
    with oci_image() as image:

        def measure(way: str) -> Outcome:
            with scratch_root() as root:
                if way == "skopeo":
                    return skopeo_load(image, root, driver)
                return run_process(
                    child_command("load", root, driver, way, image.location, image.stored_name)
                )

        results = alternate(plan, ways, measure)
    return Row(
        "load", image.label("load", driver), image.size / 1e6, "MB/s", results, baseline="skopeo"
    )


def compare_save(plan: Plan, driver: str) -> Row:
    """The 4-layer image saved from a store to a new OCI layout, layers gzip-compressed:
    ``LayerStore.save`` against skopeo copy out of containers-storage. Both read the same
    store, filled by skopeo (by layerstore's load when skopeo is missing); each round writes
    to a directory of its own."""
    ways = engines(plan) + (["skopeo"] if has_skopeo() else [])
    with oci_image() as image, scratch_root("compare-store-") as root:
        if has_skopeo():
            skopeo_load(image, root, driver)
        else:
            load = child_command("load", root, driver, "native", image.location, image.stored_name)
            run_process(load)
        run_process(child_command("layers", root, driver, "native"))  # its lock files, once

        def measure(way: str) -> Outcome:
            with scratch_root("compare-save-") as output:
                destination = f"oci:{output / 'layout'}:{image.reference}"
                if way == "skopeo":
                    return skopeo_save(image, root, driver, destination)
                return run_process(
                    child_command("save", root, driver, way, image.stored_name, destination, "gzip")
                )

        results = alternate(plan, ways, measure)
    return Row(
        "save", image.label("save", driver), image.size / 1e6, "MB/s", results, baseline="skopeo"
    )


REGISTRY_SERVER = "/usr/bin/docker-registry"
REGISTRY_START_TIMEOUT = 30.0


def has_registry() -> bool:
    return os.access(REGISTRY_SERVER, os.X_OK)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def registry_answers(port: int) -> bool:
    """Whether ``GET /v2/`` on 127.0.0.1:``port`` answers (200: plain HTTP, anonymous)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/v2/")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


@contextmanager
def local_registry() -> Iterator[str]:
    """Debian's ``docker-registry`` (distribution 2.8) on a free 127.0.0.1 port: plain HTTP,
    anonymous pull and push, its config and storage in a scratch directory (tmpfs), stopped
    at the end; yields its host, ``127.0.0.1:PORT``."""
    with scratch_root("compare-registry-") as directory:
        (directory / "storage").mkdir()
        # Only what the registry needs: a REGISTRY_* variable would override the config.
        environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(directory)}
        log = directory / "registry.log"
        for _ in range(5):
            port = free_port()
            config = directory / "config.yml"
            config.write_text(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {directory / 'storage'}\n"
                "  maintenance:\n    uploadpurging:\n      enabled: false\n"
                f"http:\n  addr: 127.0.0.1:{port}\n  secret: {os.urandom(16).hex()}\n"
            )
            with open(log, "ab") as output:
                server = subprocess.Popen(
                    [REGISTRY_SERVER, "serve", str(config)], stdin=subprocess.DEVNULL,
                    stdout=output, stderr=subprocess.STDOUT, env=environment, cwd=directory,
                )  # fmt: skip
            try:
                deadline = time.monotonic() + REGISTRY_START_TIMEOUT
                while server.poll() is None and time.monotonic() < deadline:
                    if registry_answers(port):
                        break
                    time.sleep(0.05)
                if server.poll() is None and registry_answers(port):
                    yield f"127.0.0.1:{port}"
                    return
            finally:
                if server.poll() is None:
                    server.terminate()
                    try:
                        server.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        server.kill()
                        server.wait(timeout=10)
            # It exited (most likely the port was taken meanwhile) or never answered: again.
        raise RuntimeError(f"docker-registry would not start:\n{log.read_text(errors='replace')}")


def skopeo_push_layout(image: OciImage, destination: str) -> None:
    """skopeo copy of the layout's image to ``docker://destination`` (plain HTTP): setup."""
    with scratch_root("compare-store-") as unused:  # skopeo_copy_command writes a storage.conf
        command = skopeo_copy_command(
            image.work, image.location, f"docker://{destination}", unused, "vfs",
            ["--dest-tls-verify=false"],
        )  # fmt: skip
        run_process(command, capture=False)


def compare_pull(plan: Plan, driver: str, registry: str) -> Row:
    """The 4-layer image, pushed once (by skopeo) from the OCI layout to the local registry,
    pulled into a fresh store: ``LayerStore.pull`` against skopeo copy from ``docker://`` into
    containers-storage, and, in the same alternation, ``LayerStore.load`` of the layout (the
    ``ENGINE load`` lines), for what the network path costs over the local one."""
    ways = [way for name in engines(plan) for way in (name, f"{name} load")]
    ways += ["skopeo"] if has_skopeo() else []
    reference = f"{registry}/bench/chain:1"
    with oci_image() as image:
        skopeo_push_layout(image, reference)

        def measure(way: str) -> Outcome:
            with scratch_root() as root:
                if way == "skopeo":
                    command = skopeo_copy_command(
                        image.work, f"docker://{reference}",
                        storage_location(root, driver, reference), root, driver,
                        ["--src-tls-verify=false"],
                    )  # fmt: skip
                    return run_process(command, capture=False)
                engine, _, load = way.partition(" ")
                if load:
                    verb = ["load", image.location, image.stored_name]
                else:
                    verb = ["pull", reference]
                return run_process(child_command(verb[0], root, driver, engine, *verb[1:]))

        results = alternate(plan, ways, measure)
    return Row(
        "pull", image.label("pull", driver), image.size / 1e6, "MB/s", results, baseline="skopeo"
    )


def compare_push(plan: Plan, driver: str, registry: str) -> Row:
    """The 4-layer image pushed from a store to the local registry, layers gzip-compressed:
    ``LayerStore.push`` against skopeo copy from containers-storage to ``docker://``. Both read
    the same store, filled by skopeo (by layerstore's load when skopeo is missing); each round
    pushes to a repository of its own (``bench/pushN``), so that no blob is there already."""
    ways = engines(plan) + (["skopeo"] if has_skopeo() else [])
    numbers = itertools.count(1)
    with oci_image() as image, scratch_root("compare-store-") as root:
        if has_skopeo():
            skopeo_load(image, root, driver)
        else:
            load = child_command("load", root, driver, "native", image.location, image.stored_name)
            run_process(load)
        run_process(child_command("layers", root, driver, "native"))  # its lock files, once

        def measure(way: str) -> Outcome:
            destination = f"{registry}/bench/push{next(numbers)}:1"
            if way == "skopeo":
                command = skopeo_copy_command(
                    image.work, storage_location(root, driver, image.reference),
                    f"docker://{destination}", root, driver, ["--dest-tls-verify=false"],
                )  # fmt: skip
                return run_process(command, capture=False)
            return run_process(
                child_command("push", root, driver, way, image.stored_name, destination, "gzip")
            )

        results = alternate(plan, ways, measure)
    return Row(
        "push", image.label("push", driver), image.size / 1e6, "MB/s", results, baseline="skopeo"
    )


def compare_reader(plan: Plan, driver: str) -> Row:
    """How long listing the layers takes while a large layer is put: layerstore's ``layers()``
    in a second process during a put of the native engine, and ``containers-storage layers``
    processes during a Go ``import-layer``."""
    data = layer_files("large-files")
    results: dict[str, Measurement] = {
        name: Measurement() for name in ("native", "go") if name in plan.names
    }
    for _ in range(plan.rounds):
        if "native" in results:
            with scratch_root() as root:
                stop = root / "stop"
                run_process(child_command("layers", root, driver, "native"))  # make the store
                with tempfile.TemporaryFile(dir=scratch_directory()) as lines:
                    reader = subprocess.Popen(
                        child_command("reader", root, driver, "native", str(stop)), stdout=lines
                    )
                    time.sleep(0.5)  # the reader is listing before the put starts
                    begun = time.monotonic()
                    run_process(child_command("put", root, driver, "native", str(data.gzip)))
                    ended = time.monotonic()
                    stop.touch()
                    reader.wait()
                    lines.seek(0)
                    for line in lines.read().decode().splitlines()[:-1]:
                        start, seconds = map(float, line.split())
                        if begun <= start and start + seconds <= ended:
                            results["native"].seconds.append(seconds)
        if "go" in results:
            with scratch_root() as root:
                run_process(go_command(root, driver, "layers"))
                with open(data.gzip, "rb") as blob:
                    writer = subprocess.Popen(
                        go_command(root, driver, "import-layer"), stdin=blob,
                        stdout=subprocess.DEVNULL,
                    )  # fmt: skip
                    time.sleep(0.2)  # import-layer holds the store by now
                    while writer.poll() is None:
                        results["go"].add(run_process(go_command(root, driver, "layers")))
                    writer.wait()
    return Row(
        "reader",
        f"list layers during a put of {data.name} gzip ({driver})",
        1,
        "lists/s",
        results,
    )


# -- the report ----------------------------------------------------------------------------------


def command_output(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    except OSError:
        return "not found"
    return (
        (result.stdout or result.stderr).strip().splitlines()[0]
        if result.returncode == 0
        else "not found"
    )


def layerstore_version() -> str:
    """The commit measured, and whether the working tree differed from it."""
    commit = command_output(["git", "-C", str(REPOSITORY), "rev-parse", "--short", "HEAD"])
    status = ["git", "-C", str(REPOSITORY), "status", "--porcelain", "--untracked-files=no"]
    changes = subprocess.run(status, capture_output=True, text=True, check=False).stdout.strip()
    return f"commit {commit}" + (" with uncommitted changes in the tree" if changes else "")


def machine_description(version: str) -> list[tuple[str, str]]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    go_tool = "not installed (apt-get install containers-storage)"
    if GO_CLI:
        package = command_output(["dpkg-query", "-W", "-f", "${Version}", "containers-storage"])
        go_tool = f"containers-storage {package}"
        if shutil.which("go"):  # the Go toolchain reads the version the binary was built with
            built = command_output(["go", "version", GO_CLI]).split(": ")[-1]
            go_tool += f" (built with {built})"
    tools = ", ".join(
        command_output([tool, "--version"]).replace("*** ", "").split(", by")[0]
        for tool in ("gzip", "zstd", "tar", "sha256sum")
    )
    scratch = scratch_directory()
    file_system = command_output(["stat", "-f", "-c", "%T", str(scratch)])
    return [
        ("CPU", f"{model}, {os.cpu_count()} logical CPUs"),
        ("memory", memory),
        ("kernel", f"Linux {platform.release()}"),
        ("Python", platform.python_version()),
        ("rustc", command_output(["rustc", "--version"])),
        ("Go tool", go_tool),
        ("tools", tools),
        ("layerstore", version),
        ("scratch space", f"{scratch} ({file_system})"),
    ]


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds the whole machine spent busy, CPU seconds this script and its children used)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    busy = sum(fields[:8]) - fields[3] - fields[4]
    ours = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        ours += usage.ru_utime + usage.ru_stime
    return busy / os.sysconf("SC_CLK_TCK"), ours


def foreign_cpu_seconds(before: tuple[float, float], after: tuple[float, float]) -> float:
    """CPU time other processes took while we measured: what may have slowed the figures."""
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1]))


def compile_layerstore() -> None:
    """Byte-compile the layerstore the children import (the one ``PYTHONPATH`` or the install
    gives), so that no measured child pays for compiling it."""
    where = "import layerstore, os; print(os.path.dirname(layerstore.__file__))"
    package = subprocess.run(
        [sys.executable, "-c", where], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True)


def start_up(names: list[str]) -> dict[str, float]:
    """Median wall time of doing nothing: ``python -c 'import layerstore'`` for our children,
    ``containers-storage layers`` on an empty store for Go."""
    times: dict[str, list[float]] = {"python": [], "go": []}
    with scratch_root() as root:
        for _ in range(5):
            command = [sys.executable, "-c", "import layerstore"]
            times["python"].append(run_process(command).seconds)
            if "go" in names:
                times["go"].append(run_process(go_command(root, "vfs", "layers")).seconds)
    return {name: statistics.median(values) for name, values in times.items() if values}


@dataclass(frozen=True)
class Target:
    text: str
    measured: str
    met: bool


def ratio_target(text: str, wanted: float, measured: list[tuple[str, float]]) -> Target:
    """``measured``: (operation, ratio) pairs; the target holds if the lowest reaches ``wanted``."""
    lowest = min(measured, key=lambda item: item[1])
    highest = max(ratio for _, ratio in measured)
    summary = f"{lowest[1]:.2f}x to {highest:.2f}x (lowest: {lowest[0]})"
    return Target(text, summary, lowest[1] >= wanted)


def chain_bound(row: Row) -> str:
    """The most a chain can gain over the puts one after the other when both do the same
    work: the puts' process time over the time their CPU seconds take on every core."""
    each = row.results["put-each"]
    if not each.cpu_seconds:
        return ""
    cores = len(os.sched_getaffinity(0))
    busy = statistics.median(each.cpu_seconds) / each.median
    return (
        f"; the puts one after the other kept {busy:.2f} of the {cores} cores busy, so no "
        f"schedule of the same work beats {cores / busy:.2f}x"
    )


def targets(rows: list[Row]) -> list[Target]:
    """The acceptance targets, checked on process times (start-up included)."""
    found = []
    for section, data, wanted in [
        ("put", "large-files", 2.5),
        ("put", "small-files", 1.5),
        ("diff", "large-files", 2.0),
        ("diff", "small-files", 1.5),
    ]:
        measured = [
            (row.operation, ratio)
            for row in rows
            if row.section == section
            and row.operation.split()[1] == data
            and (ratio := row.versus("native")) is not None
        ]
        if measured:
            text = f"{section} {data}: native at least {wanted}x the Go CLI"
            found.append(ratio_target(text, wanted, measured))
    found += issue_18_targets(rows)
    speedups = [
        (row.operation, row.results["pure"].median / row.results["native"].median)
        for row in rows
        if row.section == "put" and {"native", "pure"} <= set(row.results)
    ]
    if speedups:
        found.append(ratio_target("put: native at least 5x pure", 5, speedups))
    for row in rows:
        if row.section == "chain" and {"put-each", "put-chain"} <= set(row.results):
            driver = row.operation.rsplit("(", 1)[1].rstrip(")")
            wanted = 1.6 if driver == "overlay" else 1.3
            chain = row.results["put-chain"].median
            target = ratio_target(
                f"chain ({driver}): put_chain at least {wanted}x the puts one after the other",
                wanted, [(row.operation, row.results["put-each"].median / chain)])  # fmt: skip
            found.append(replace(target, measured=target.measured + chain_bound(row)))
            if "skopeo" in row.results:
                found.append(ratio_target(
                    f"chain ({driver}): put_chain at least 3x skopeo copy", 3,
                    [(row.operation, row.results["skopeo"].median / chain)]))  # fmt: skip
        image_wanted = {"load": 3.0, "save": 2.0, "pull": 3.0, "push": 2.0}.get(row.section)
        if image_wanted and (ratio := row.versus("native")) is not None:
            driver = row.operation.rsplit("(", 1)[1].rstrip(")")
            found.append(ratio_target(
                f"{row.section} ({driver}): LayerStore.{row.section} at least {image_wanted:g}x "
                "skopeo copy", image_wanted, [(row.operation, ratio)]))  # fmt: skip
        if row.section == "pull" and {"native", "native load"} <= set(row.results):
            driver = row.operation.rsplit("(", 1)[1].rstrip(")")
            over = row.results["native"].median / row.results["native load"].median
            found.append(Target(
                f"pull ({driver}): LayerStore.pull within 1.25x of LayerStore.load of the "
                "same image from an OCI layout", f"pull / load: {over:.2f}x ({row.operation})",
                over <= 1.25))  # fmt: skip
        if row.section == "reader" and row.results.get("native", Measurement()).seconds:
            median = row.results["native"].median
            found.append(Target(
                f"{row.operation}: the median layers() under 20 ms",
                f"median {median * 1000:.1f} ms, max "
                f"{max(row.results['native'].seconds) * 1000:.1f} ms over "
                f"{len(row.results['native'].seconds)} listings", median < 0.020))  # fmt: skip
    for name in ("native", "pure"):
        # (MB of tar, peak MB) of every put; flat means the biggest layer's puts need no more
        # than 25 % above the smallest layer's.
        peaks = sorted(
            (row.amount, peak / 1024)
            for row in rows
            if row.section == "put"
            and name in row.results
            and (peak := row.results[name].peak_kib) is not None
        )
        smallest, biggest = peaks[0][0] if peaks else 0, peaks[-1][0] if peaks else 0
        if biggest > smallest:
            low = min(peak for amount, peak in peaks if amount == smallest)
            high = max(peak for amount, peak in peaks if amount == biggest)
            summary = (
                f"{min(peak for _, peak in peaks):.0f}-{max(peak for _, peak in peaks):.0f} MB "
                f"over layers of {smallest:.0f}-{biggest:.0f} MB of tar "
                f"({low:.0f} MB at {smallest:.0f} MB, {high:.0f} MB at {biggest:.0f} MB)"
            )
            text = f"put ({name}): peak memory independent of layer size"
            found.append(Target(text, summary, high <= 1.25 * low))
    return found


def issue_18_targets(rows: list[Row]) -> list[Target]:
    """Issue 18's targets: gzip diffs, tree diffs (against Go, and against ``tar -c | pigz -1``
    of the same tree) and start-up."""
    found = []
    for data in LAYERS:  # diff (tar-split), gzip: every data set
        measured = [
            (row.operation, ratio)
            for row in rows
            if row.section == "diff"
            and row.operation.split()[1:3] == [data, "gzip"]
            and (ratio := row.versus("native")) is not None
        ]
        if measured:
            text = f"diff {data} gzip: native at least 2.8x the Go CLI"
            found.append(ratio_target(text, 2.8, measured))
    for data in TREE_LAYERS:
        for compression in ("none", "gzip"):
            measured = [
                (row.operation, ratio)
                for row in rows
                if row.section == "tree"
                and row.operation.split()[2:4] == [data, compression]
                and (ratio := row.versus("native")) is not None
            ]
            if measured:
                text = f"tree diff {data} {compression}: native at least 3x the Go CLI"
                found.append(ratio_target(text, 3, measured))
        pipes = [
            row.results["tar -c | pigz -1"].median
            for row in rows
            if row.section == "limits" and row.operation == f"tar -c | pigz -1 {data} tree"
        ]
        over = [  # (operation, native's time over the pipe's): met when at most 1.3
            (row.operation, row.results["native"].median / pipes[0])
            for row in rows
            if pipes
            and row.section == "tree"
            and row.operation.split()[2:4] == [data, "gzip"]
            and "native" in row.results
        ]
        if over:
            worst = max(over, key=lambda item: item[1])
            found.append(Target(
                f"tree diff {data} gzip: native within 1.3x of `tar -c | pigz -1` of the same "
                "tree", f"{min(ratio for _, ratio in over):.2f}x to {worst[1]:.2f}x the pipe's "
                f"time (highest: {worst[0]}; the pipe: {pipes[0]:.3f} s)",
                worst[1] <= 1.3))  # fmt: skip
    startup = {row.operation: row for row in rows if row.section == "startup"}
    bare, imported = (startup.get(way) for way in STARTUP_INTERPRETER)
    if bare is not None and imported is not None:
        extra = imported.results["python"].median - bare.results["python"].median
        found.append(Target(
            "`import layerstore` within 12 ms of a bare interpreter start",
            f"{extra * 1000:.1f} ms more ({imported.results['python'].median * 1000:.1f} ms "
            f"against {bare.results['python'].median * 1000:.1f} ms)", extra <= 0.012))  # fmt: skip
    for row in startup.values():
        if {"go", "native"} <= set(row.results):
            times = row.results["native"].median / row.results["go"].median
            found.append(Target(
                f"`layerstore layers` on a {STARTUP_STORE_SIZE}-layer store within 3x of "
                "`containers-storage layers` (whole processes)",
                f"{times:.2f}x Go's time ({row.results['native'].median * 1000:.1f} ms against "
                f"{row.results['go'].median * 1000:.1f} ms)", times <= 3))  # fmt: skip
    for row in rows:
        if row.operation == OPEN_ONLY and (opened := row.results.get("native")) is not None:
            inside = opened.in_process_median
            if inside is not None:
                found.append(Target(
                    f"open a store of {STORE_SIZE:,} layers in-process under 70 ms (native)",
                    f"{inside * 1000:.1f} ms", inside < 0.070))  # fmt: skip
    return found


SECTIONS = {
    "limits": "Machine limits on the same data (no store involved)",
    "put": "put / import-layer: apply a blob into a new layer",
    "diff": "diff: the layer's tar rebuilt from tar-split and its files",
    "tree": "tree diff: a container-like layer (files written through a mount, no tar-split), "
    "its tar built from its tree",
    "delete": "delete a layer",
    "mount": f"mount and unmount the top of a {CHAIN_DEPTH}-layer overlay chain",
    "open": f"open a store of {STORE_SIZE:,} layers, and list them",
    "startup": "start-up: whole processes doing little (a bare interpreter, an import, `layers` "
    f"on a store of {STARTUP_STORE_SIZE} layers)",
    "chain": "an image's 4 layers: put one after the other, put_chain, skopeo copy",
    "load": "load the 4-layer image from an OCI layout: LayerStore.load, skopeo copy",
    "save": "save the 4-layer image to an OCI layout, gzip: LayerStore.save, skopeo copy",
    "pull": "pull the 4-layer image from a local registry (plain HTTP): LayerStore.pull, "
    "skopeo copy; beside them LayerStore.load of the same image from its OCI layout",
    "push": "push the 4-layer image to a local registry (plain HTTP), gzip: LayerStore.push, "
    "skopeo copy",
    "reader": "listing the layers while a 420 MB layer is put (each figure: one listing)",
}


def markdown(
    rows: list[Row],
    arguments: argparse.Namespace,
    plan: Plan,
    datasets: list[LayerFiles],
    start_up: dict[str, float],
    duration: float,
    foreign_cpu: float,
    chart: Path | None,
    notes: list[str],
) -> str:
    command = shlex.join(["python", "benches/compare.py", *arguments.argv])
    kind = "a quick run (one round: indicative only)" if arguments.quick else "a full run"
    lines = [
        BEGIN_MARKER,
        "",
        f"Figures from {kind} of `{command}` on {time.strftime('%Y-%m-%d')}, "
        f"which took {duration / 60:.1f} minutes: {plan.rounds} round(s) of each operation, "
        f"{plan.short_rounds} of mount, unmount and open (they are short), "
        f"{plan.short_rounds * STARTUP_ROUNDS} of each start-up.",
        "",
        "| machine | |",
        "|---|---|",
    ]
    lines += [f"| {key} | {value} |" for key, value in machine_description(arguments.version)]
    lines += [
        f"| other work | {foreign_cpu:.0f} CPU seconds used by other processes during the run "
        f"({100 * foreign_cpu / duration:.0f} % of one CPU) |",
        "",
        "Data sets (the tar of each is generated, byte for byte the same on every machine):",
        "",
        "| data set | tar MB | gzip MB | zstd MB | entries | sha256 of the tar (DiffID) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for data in datasets:
        lines.append(
            f"| {data.name} | {data.size / 1e6:.0f} | {data.gzip.stat().st_size / 1e6:.0f} | "
            f"{data.zstd.stat().st_size / 1e6:.0f} | {entry_count(data)} | `{data.diff_id}` |"
        )
    go_start = (
        f" ({start_up['go']:.3f} s for `containers-storage layers` on an empty store)"
        if "go" in start_up
        else ""
    )
    peak = (
        "its largest resident set over the rounds, as GNU time reports it (`os.wait4` "
        "would report at least the parent's own RSS: see `gnu_time()` in compare.py)"
        if GNU_TIME
        else "not measured: GNU time (`apt-get install time`) is missing"
    )
    lines += [
        "",
        "How to read the tables:",
        "",
        "- Every figure comes from a process of its own, implementations alternating (go, "
        "native, pure, go, ...), on tmpfs.",
        "- *median s* and *spread s* (min-max): wall time of the whole process.",
        "- *in-process s*: layerstore's own timing of the operation inside that process, from "
        "after `import layerstore` to the end (opening the store included), so without the "
        f"interpreter's start-up ({start_up['python']:.3f} s for `python -c 'import "
        "layerstore'` here). The Go CLI has no such split: its figure is always the whole "
        f"process, start-up included{go_start}.",
        "- *throughput*: MB of uncompressed tar per second of process time (for mount, "
        "unmount, open and start-up: operations or layers per second; for the tree diff, MB "
        "of the data set's tar, which the tree's tar matches within its directory entries).",
        "- *CPU s*: user + system time of the process (above the wall time: several threads).",
        f"- *peak MB*: {peak}.",
        "- *vs Go (skopeo)*: Go's median process time over ours (above 1: layerstore is "
        "faster); for whole images (chain, load, save, pull, push), skopeo's. *vs Go (skopeo), "
        "in-process*: that process time over our in-process time, which leaves Go's (or "
        "skopeo's) start-up in and ours out; read it as what a long-running Python program "
        "sees.",
        "",
    ]
    if chart is not None:
        lines += [f"![throughput per operation and implementation]({chart.name})", ""]
    found = targets(rows)
    if found:
        lines += [
            "### Targets (on process times)",
            "",
            "| target | measured | met |",
            "|---|---|---|",
        ]
        lines += [
            f"| {cell(t.text)} | {cell(t.measured)} | {'yes' if t.met else '**no**'} |"
            for t in found
        ]
        lines.append("")
    for section, title in SECTIONS.items():
        section_rows = [row for row in rows if row.section == section]
        if not section_rows:
            continue
        lines += [f"### {title}", "", TABLE_HEADER]
        for row in section_rows:
            lines += table_lines(row)
        lines.append("")
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")
    lines.append(END_MARKER)
    return "\n".join(lines) + "\n"


def entry_count(data: LayerFiles) -> str:
    memo = data.tar.with_suffix(".entries")
    if not memo.exists():
        listing = subprocess.run(
            ["tar", "-t", "-f", str(data.tar)], capture_output=True, check=True
        )
        memo.write_text(str(listing.stdout.count(b"\n")))
    return f"{int(memo.read_text()):,}"


def write_document(path: Path, generated: str) -> None:
    """Put ``generated`` between the markers of ``path``, keeping everything outside them."""
    if path.exists():
        text = path.read_text()
        if BEGIN_MARKER in text and END_MARKER in text:
            before = text[: text.index(BEGIN_MARKER)]
            after = text[text.index(END_MARKER) + len(END_MARKER) :].lstrip("\n")
            path.write_text(before + generated + ("\n" + after if after else ""))
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Performance: layerstore beside containers/storage\n\n" + generated)


COLORS = {"go": "#00add8", "native": "#dea584", "pure": "#3572a5"}
LIMIT_COLOR = "#9a9a9a"
CHART_PANELS = [  # (column, sections, title)
    (0, ("put",), "put: MB of tar per second"),
    (0, ("delete",), "delete: MB of tar per second"),
    (0, ("tree",), "tree diff: MB of tar per second"),
    (1, ("diff",), "diff: MB of tar per second"),
    (1, ("mount", "open", "startup"), "mount, unmount, open, start-up: per second"),
    (1, ("limits",), "machine limits: MB of tar per second"),
]


def draw_chart(rows: list[Row], path: Path) -> bool:
    """Bars of throughput per operation and implementation; False without matplotlib.

    Bars are whole processes; a black tick on layerstore's bars marks its in-process figure.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        print("matplotlib is missing (pip install '.[bench]'): no chart", file=sys.stderr)
        return False
    panels = [
        (column, title, [row for row in rows if row.section in sections])
        for column, sections, title in CHART_PANELS
    ]
    panels = [panel for panel in panels if panel[2]]
    bars = [
        [sum(len(row.results) for row in panel[2]) + 2 for panel in panels if panel[0] == c]
        for c in (0, 1)
    ]
    inches = 0.15 * max(sum(column) for column in bars) + 1.2
    figure = plt.figure(figsize=(15, max(4.0, inches)))
    outer = figure.add_gridspec(1, 2, wspace=0.45, left=0.13, right=0.98, top=0.93, bottom=0.03)
    columns = [
        outer[0, c].subgridspec(len(heights), 1, height_ratios=heights, hspace=0.35)
        if heights
        else None
        for c, heights in enumerate(bars)
    ]
    seen: list[int] = [0, 0]
    for column, title, panel_rows in panels:
        grid = columns[column]
        assert grid is not None
        axis = figure.add_subplot(grid[seen[column], 0])
        seen[column] += 1
        labels, positions, position = [], [], 0.0
        highest = max(
            row.throughput(min(measured.median, measured.in_process_median or measured.median))
            for row in panel_rows
            for measured in row.results.values()
        )
        for row in panel_rows:
            names = list(row.results)
            for offset, name in enumerate(names):
                measured = row.results[name]
                y = position + offset
                value = row.throughput(measured.median)
                axis.barh(y, value, height=0.85, color=COLORS.get(name, LIMIT_COLOR))
                if measured.in_process_median:
                    inside = row.throughput(measured.in_process_median)
                    axis.plot([inside, inside], [y - 0.45, y + 0.45], color="black", linewidth=1)
                text = f" {value:,.0f}" if value >= 10 else f" {value:.1f}"
                axis.text(value, y, text, va="center", fontsize=6)
                if row.section == "limits":
                    labels.append(row.operation)
                    positions.append(y)
            if row.section != "limits":
                labels.append(row.operation)
                positions.append(position + (len(names) - 1) / 2)
            position += len(names) + (0.6 if row.section != "limits" else 0)
        axis.set_yticks(positions, labels, fontsize=6.5)
        axis.set_ylim(position - 0.4, -0.6)
        axis.set_xscale("log")
        axis.set_xlim(1 if panel_rows[0].unit != "MB/s" else 10, highest * 2)
        axis.set_title(title + " (log scale)", fontsize=8.5)
        axis.tick_params(axis="x", labelsize=7)
        axis.grid(axis="x", which="both", alpha=0.3)
    legend = [Patch(color=color, label=name) for name, color in COLORS.items()]
    legend.append(Patch(color=LIMIT_COLOR, label="system tool"))
    figure.legend(handles=legend, loc="upper right", ncol=4, fontsize=8, frameon=False)
    figure.suptitle(
        "layerstore (native, pure) beside containers-storage (go): bars are whole processes, "
        "black ticks layerstore's in-process time",
        x=0.02,
        ha="left",
        fontsize=9,
    )
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


# -- main ----------------------------------------------------------------------------------------


def choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list whose every item is one of ``allowed``."""

    def parse(text: str) -> list[str]:
        items = [item for item in text.split(",") if item]
        unknown = [item for item in items if item not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"{','.join(unknown) or 'nothing'}: expected some of {','.join(allowed)}"
            )
        return items

    return parse


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one round of everything, three of the short operations (about 4 minutes on 2 cores)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per operation (default 5)")
    parser.add_argument(
        "--operations",
        type=choices(OPERATIONS),
        default=list(OPERATIONS),
        help=f"comma-separated, of {','.join(OPERATIONS)} (mount includes unmount; open "
        "includes listing; tree: diffs of a container-like layer of the "
        f"{' and '.join(TREE_LAYERS)} data sets, with tar -c and pigz of the same tree; "
        "startup: interpreter, import and CLI start-up)",
    )
    parser.add_argument(
        "--layers",
        type=choices(tuple(LAYERS)),
        default=list(LAYERS),
        help=f"comma-separated data sets, of {','.join(LAYERS)}",
    )
    parser.add_argument(
        "--drivers",
        type=choices(("vfs", "overlay")),
        default=["vfs", "overlay"] if os.geteuid() == 0 else ["vfs"],
        help="comma-separated, of vfs,overlay (overlay needs root)",
    )
    parser.add_argument(
        "--implementations",
        type=choices(IMPLEMENTATIONS),
        default=list(IMPLEMENTATIONS),
        help=f"comma-separated, of {','.join(IMPLEMENTATIONS)}",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=REPOSITORY / "docs" / "performance.md",
        help="Markdown file to write the results into ('-': none)",
    )
    parser.add_argument(
        "--chart",
        type=Path,
        default=REPOSITORY / "docs" / "performance.png",
        help="PNG file to draw the bar chart into ('-': none; needs matplotlib)",
    )
    arguments = parser.parse_args()
    arguments.argv = sys.argv[1:]
    # Before anything is written: the chart and the document themselves are changes to the tree.
    arguments.version = layerstore_version()
    started = time.perf_counter()
    cpu_before = cpu_seconds()
    notes: list[str] = []
    names = list(arguments.implementations)
    if GO_CLI is None and "go" in names:
        message = (
            "the Go CLI (containers-storage) is not installed: `apt-get install "
            "containers-storage` (Debian, Ubuntu) to compare with it; measuring "
            "layerstore alone"
        )
        print(message, file=sys.stderr)
        notes.append(message)
        names.remove("go")
    drivers = list(arguments.drivers)
    operations = list(arguments.operations)
    if os.geteuid() != 0:
        if "overlay" in drivers or "mount" in operations:
            notes.append("not root: no overlay driver and no mounts")
        drivers = [driver for driver in drivers if driver != "overlay"]
        operations = [operation for operation in operations if operation != "mount"]
    rounds = 1 if arguments.quick else arguments.rounds
    plan = Plan(names, rounds, drivers, ["gzip", "zstd"], 3 if arguments.quick else 3 * rounds)

    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        notes.append(
            "PYTHONDONTWRITEBYTECODE was set in the environment: compare.py unsets it for the "
            "children, so that layerstore's byte code is compiled once, as an installed "
            "package's is, and not again at every start"
        )
    compile_layerstore()
    datasets = [layer_files(name) for name in arguments.layers]
    start_ups = start_up(names)
    rows: list[Row] = []

    def emit(new_rows: list[Row]) -> None:
        for row in new_rows:
            print("\n".join(table_lines(row)), flush=True)
        rows.extend(new_rows)

    print(TABLE_HEADER, flush=True)
    for data in datasets:
        if "limits" in operations:
            emit(compare_limits(plan, data))
        for driver in drivers:
            if "put" in operations:
                emit(
                    [
                        compare_put(plan, data, driver, compression)
                        for compression in plan.compressions
                    ]
                )
            if "diff" in operations or "delete" in operations:
                with ExitStack() as stack:
                    stores = {
                        maker: stack.enter_context(stored(maker, driver, data))
                        for maker in {maker_of(name) for name in names}
                    }
                    if "diff" in operations:
                        emit(compare_diff(plan, data, driver, stores))
                    if "delete" in operations:
                        emit([compare_delete(plan, data, driver, stores)])
        if "tree" in operations and data.name in TREE_LAYERS:
            emit(compare_tree_limits(plan, data))
            for driver in drivers:
                with container_layer(tree_maker(names), driver, data) as (root, layer_id):
                    emit(compare_tree(plan, data, driver, root, layer_id))
    if "mount" in operations:
        emit(compare_mount(plan))
    if "open" in operations:
        emit(compare_open(plan))
    if "startup" in operations:
        emit(compare_startup(plan))
    registry_operations = [operation for operation in ("pull", "push") if operation in operations]
    if registry_operations and not has_registry():
        message = (
            f"{REGISTRY_SERVER} is missing (apt-get install docker-registry): no "
            f"{' and no '.join(registry_operations)}"
        )
        print(message, file=sys.stderr)
        notes.append(message)
        registry_operations = []
    for driver in drivers:
        if "chain" in operations:
            emit([compare_chain(plan, driver)])
        if "load" in operations:
            emit([compare_load(plan, driver)])
        if "save" in operations:
            emit([compare_save(plan, driver)])
        if registry_operations:
            with local_registry() as registry:
                if "pull" in registry_operations:
                    emit([compare_pull(plan, driver, registry)])
                if "push" in registry_operations:
                    emit([compare_push(plan, driver, registry)])
        if "reader" in operations:
            emit([compare_reader(plan, driver)])

    duration = time.perf_counter() - started
    print(f"\n{len(rows)} operations measured in {duration / 60:.1f} minutes", flush=True)
    for found in targets(rows):
        print(f"target: {found.text}: {found.measured}: {'met' if found.met else 'NOT met'}")
    chart = None
    if str(arguments.chart) != "-" and draw_chart(rows, arguments.chart):
        chart = arguments.chart
        print(f"chart: {chart}")
    if str(arguments.output) != "-":
        document = markdown(
            rows,
            arguments,
            plan,
            datasets,
            start_ups,
            duration,
            foreign_cpu_seconds(cpu_before, cpu_seconds()),
            chart,
            notes,
        )
        write_document(arguments.output, document)
        print(f"table: {arguments.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
