"""The ``layerstore`` command, driven as a user drives it: through a subprocess.

Each test runs ``python -m layerstore`` with ``--root`` and ``--run-root`` in its tmp_path and
checks exit codes, what lands on stdout and stderr, and (by opening the same store with
:class:`LayerStore`) that the command did what the API says. Failures must be one line on
stderr without a traceback; usage errors exit 2.
"""

from __future__ import annotations

import dataclasses
import enum
import fcntl
import gzip
import hashlib
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import zstandard

from layerstore import Compression, IDMap, Layer, LayerStore
from layerstore.cli import main
from layerstore.cli.common import default_root, default_run_root

from .conftest import overlay_usable
from .tarballs import Entry, build_tar

ROOT = os.geteuid() == 0
VERBS = (
    "layers create-layer import apply-diff diff changes diff-size mount unmount mounted "
    "delete-layer add-names remove-names set-names metadata big-data flags status wipe demo"
).split()


# -- running the command ------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode()

    def json(self) -> Any:
        return json.loads(self.stdout)


def _environment() -> dict[str, str]:
    # The user's own settings must not leak into the tests (nor point at a real store).
    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("LAYERSTORE_ROOT", "LAYERSTORE_RUN_ROOT", "LAYERSTORE_ENGINE")
    }


def run(
    *arguments: str,
    input: bytes | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Result:
    completed = subprocess.run(
        [sys.executable, "-m", "layerstore", *arguments],
        input=input,
        stdin=stdin if input is None else None,
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE if stderr is None else stderr,
        env=dict(env) if env is not None else _environment(),
        check=False,
        timeout=60,
    )
    return Result(
        completed.returncode,
        completed.stdout or b"",
        (completed.stderr or b"").decode("utf-8", "replace"),
    )


@dataclasses.dataclass
class Cli:
    """The command bound to one store in tmp_path."""

    root: Path
    run_root: Path
    driver: str
    engine: str | None = None

    def __call__(self, *arguments: str, **options: Any) -> Result:
        store = ["--root", str(self.root), "--run-root", str(self.run_root)]
        store += ["--driver", self.driver]
        if self.engine:
            store += ["--engine", self.engine]
        return run(*store, *arguments, **options)

    def ok(self, *arguments: str, **options: Any) -> Result:
        """Run and insist on success with a silent stderr."""
        result = self(*arguments, **options)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        return result

    def api(self, read_only: bool = False) -> LayerStore:
        return LayerStore(self.root, self.run_root, driver=self.driver, read_only=read_only)


def _force_unmount_all(cli: Cli) -> None:
    # A test that fails while a layer is mounted must not leave a mount in tmp_path.
    if not (cli.root / f"{cli.driver}-layers").exists():
        return
    with cli.api() as store:
        for layer in reversed(store.layers()):
            if store.mounted(layer.id):
                store.unmount(layer.id, force=True)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """The command on a vfs store (works anywhere, as any user)."""
    bound = Cli(tmp_path / "root", tmp_path / "run", "vfs")
    yield bound
    _force_unmount_all(bound)


@pytest.fixture
def any_cli(tmp_path: Path, driver_name: str) -> Iterator[Cli]:
    """The command on a vfs store, and on an overlay store where overlay can mount."""
    bound = Cli(tmp_path / "root", tmp_path / "run", driver_name)
    yield bound
    _force_unmount_all(bound)


def assert_one_line_error(result: Result, *fragments: str, status: int = 1) -> str:
    """The failure is exactly one line on stderr, no traceback, with ``fragments`` in it."""
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.endswith("\n")
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("layerstore"), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    return result.stderr


# -- layer blobs --------------------------------------------------------------------------------


def base_tar() -> bytes:
    return build_tar(
        [
            Entry(b"etc", "dir", mode=0o755),
            Entry(b"etc/hostname", "file", b"base\n"),
            Entry(b"etc/motd", "file", b"hello\n"),
            Entry(b"data", "dir", mode=0o755),
            Entry(b"data/old", "file", b"old data\n"),
        ]
    )


def upper_tar() -> bytes:
    return build_tar(
        [
            Entry(b"etc", "dir", mode=0o755),
            Entry(b"etc/hostname", "file", b"upper\n"),
            Entry(b"etc/.wh.motd", "file"),
            Entry(b"data", "dir", mode=0o755),
            Entry(b"data/.wh..wh..opq", "file"),
            Entry(b"data/new", "file", b"new data\n"),
        ]
    )


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def expected_json(layer: Layer) -> dict[str, Any]:
    """What ``layers --json`` must print for a layer: every field, as JSON values."""

    def plain(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.name.lower()
        if isinstance(value, IDMap):
            return {
                "container_id": value.container_id,
                "host_id": value.host_id,
                "size": value.size,
            }
        if isinstance(value, Mapping):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, tuple):
            return [plain(item) for item in value]
        return value

    return {field.name: plain(getattr(layer, field.name)) for field in dataclasses.fields(Layer)}


def two_layers(cli: Cli, tmp_path: Path) -> tuple[str, str]:
    """Import a gzipped base and an upper layer with whiteouts; their ids."""
    base = cli.ok(
        "import", "--name", "base", write(tmp_path / "base.tar.gz", gzip.compress(base_tar()))
    )
    upper = cli.ok(
        "import", "--parent", "base", "--name", "app", write(tmp_path / "up.tar", upper_tar())
    )
    return base.out.strip(), upper.out.strip()


# -- the command as a whole ---------------------------------------------------------------------


def test_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    result = run("--help")
    assert result.returncode == 0
    for verb in VERBS:
        assert f"    {verb} " in result.out, verb
    # Each verb's own help, in this process: 20 more interpreters would only cost time.
    for verb in VERBS:
        assert main([verb, "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: layerstore {verb}")


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["no-such-verb"], "invalid choice"),
        ([], "required"),
        (["diff"], "LAYER"),
        (["--driver", "btrfs", "layers"], "--driver"),
        (["diff", "x", "--compression", "bzip2"], "--compression"),
        (["add-names", "x"], "NAME"),
    ],
)
def test_usage_errors_exit_2_in_one_line(arguments: list[str], fragment: str) -> None:
    assert_one_line_error(run(*arguments), fragment, "--help", status=2)


def test_usage_errors_found_after_parsing_exit_2(cli: Cli) -> None:
    cli.ok("create-layer", "--name", "base")
    assert_one_line_error(cli("flags", "base", "--set", "novalue"), "KEY=VALUE", status=2)
    assert_one_line_error(cli("big-data", "base", "--set", "-"), "KEY", status=2)


def test_global_options_also_after_the_verb(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    result = run("create-layer", "--name", "x", "--root", root, "--driver", "vfs")
    assert result.returncode == 0, result.stderr
    listed = run("--root", root, "layers", "--driver", "vfs", "--json")
    assert [layer["names"] for layer in listed.json()] == [["x"]]


def test_default_locations_are_our_own() -> None:
    home = {"HOME": "/home/ann"}
    assert default_root(home, euid=0) == "/var/lib/layerstore"
    assert default_root(home, euid=1000) == "/home/ann/.local/share/layerstore"
    assert default_root({**home, "XDG_DATA_HOME": "/d"}, euid=1000) == "/d/layerstore"
    assert default_root({**home, "LAYERSTORE_ROOT": "/s"}, euid=0) == "/s"
    assert default_run_root(home, euid=0) == "/run/layerstore"
    assert default_run_root({"XDG_RUNTIME_DIR": "/run/user/1000"}, 1000) == (
        "/run/user/1000/layerstore"
    )
    assert default_run_root(home, euid=1000) is None  # the store's own ROOT/run
    assert default_run_root({"LAYERSTORE_RUN_ROOT": "/r"}, euid=0) == "/r"
    for euid in (0, 1000):
        assert "containers" not in default_root(home, euid)
        assert "containers" not in (default_run_root(home, euid) or "")


def test_root_from_the_environment(tmp_path: Path) -> None:
    environment = {
        **_environment(),
        "LAYERSTORE_ROOT": str(tmp_path / "env-root"),
        "LAYERSTORE_RUN_ROOT": str(tmp_path / "env-run"),
    }
    result = run("--driver", "vfs", "status", "--json", env=environment)
    assert result.returncode == 0, result.stderr
    status = result.json()
    assert status["Root"] == str(tmp_path / "env-root")
    assert status["Run root"] == str(tmp_path / "env-run")


# -- verbs, checked against the API -------------------------------------------------------------


def test_import_and_layers_json_match_the_api(any_cli: Cli, tmp_path: Path) -> None:
    base_id, upper_id = two_layers(any_cli, tmp_path)
    empty_id = any_cli.ok(
        "create-layer", "--parent", upper_id[:12], "--name", "scratch"
    ).out.strip()
    listed = any_cli.ok("layers", "--json").json()
    with any_cli.api() as store:
        layers = store.layers()
        assert listed == [expected_json(layer) for layer in layers]
        assert [layer.id for layer in layers] == [base_id, upper_id, empty_id]
        base = store.get("base")
        assert base.compression is Compression.GZIP
        assert base.uncompressed_digest == sha256(base_tar())
        assert store.get("app").parent == base_id
        assert store.get("scratch").parent == upper_id
    assert listed[0]["compression"] == "gzip"

    table = any_cli.ok("layers").out.splitlines()
    assert table[0].split()[:3] == ["ID", "NAMES", "PARENT"]
    assert len(table) == 4
    assert table[1].split()[:3] == [base_id[:12], "base", "-"]
    assert table[2].split()[:3] == [upper_id[:12], "app", base_id[:12]]


def test_import_from_stdin_with_an_id(cli: Cli) -> None:
    chosen = "f" * 64
    result = cli.ok("import", "--id", chosen, "--name", "piped", "-", input=base_tar())
    assert result.out == chosen + "\n"
    with cli.api() as store:
        assert store.get("piped").uncompressed_digest == sha256(base_tar())


def test_import_of_several_blobs_is_a_chain(cli: Cli, tmp_path: Path) -> None:
    parent = cli.ok("create-layer", "--name", "root").out.strip()
    base = write(tmp_path / "base.tar.gz", gzip.compress(base_tar()))
    upper = write(tmp_path / "upper.tar.zst", zstandard.ZstdCompressor().compress(upper_tar()))
    result = cli.ok("import", "--parent", "root", "--name", "top", base, upper)
    ids = result.out.split()
    first = hashlib.sha256(f"{parent}+{sha256(base_tar())[7:]}".encode()).hexdigest()
    second = hashlib.sha256(f"{first}+{sha256(upper_tar())[7:]}".encode()).hexdigest()
    assert ids == [first, second]  # containers/image's ids
    with cli.api() as store:
        assert store.get("top").id == second
        assert store.get(second).parent == first
        assert store.get(first).parent == parent
        assert store.get(first).names == ()


def test_a_failed_blob_of_a_chain_is_named(cli: Cli, tmp_path: Path) -> None:
    base = write(tmp_path / "base.tar", base_tar())
    broken = write(tmp_path / "broken.tar.gz", gzip.compress(upper_tar())[:-20])
    result = cli("import", "--name", "top", base, broken)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"cannot import {broken!r} (blob 2 of 2)" in result.stderr
    assert "1 layer(s) before it were stored, none after it" in result.stderr
    (kept,) = result.stdout.split()
    with cli.api() as store:
        assert [layer.id for layer in store.layers()] == [kept.decode()]
        assert not store.exists("top")


def test_a_chain_takes_no_id(cli: Cli, tmp_path: Path) -> None:
    base = write(tmp_path / "base.tar", base_tar())
    result = cli("import", "--id", "f" * 64, base, base)
    assert result.returncode == 1
    assert "--id names one layer" in result.stderr


def test_apply_diff_to_a_created_layer(cli: Cli, tmp_path: Path) -> None:
    layer_id = cli.ok("create-layer", "--name", "target").out.strip()
    blob = zstandard.ZstdCompressor().compress(base_tar())
    assert cli.ok("apply-diff", "target", write(tmp_path / "b.tar.zst", blob)).stdout == b""
    with cli.api() as store:
        layer = store.get(layer_id)
        assert layer.uncompressed_digest == sha256(base_tar())
        assert layer.compressed_digest == sha256(blob)
        assert layer.compression is Compression.ZSTD
    cli.ok("apply-diff", layer_id[:10], "-", input=upper_tar())
    with cli.api() as store:
        assert store.get(layer_id).uncompressed_digest == sha256(upper_tar())


def test_diff_to_a_file_matches_the_digest(any_cli: Cli, tmp_path: Path) -> None:
    base_id, upper_id = two_layers(any_cli, tmp_path)
    with any_cli.api() as store:
        digests = {layer.id: layer.uncompressed_digest for layer in store.layers()}
    for layer_id in (base_id, upper_id):
        target = tmp_path / f"{layer_id}.tar"
        any_cli.ok("diff", layer_id, "--compression", "none", "-o", str(target))
        assert sha256(target.read_bytes()) == digests[layer_id]
        assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()
    # Without --compression the blob's own compression comes back (gzip for the base).
    chosen = any_cli("diff", "base", "-o", str(tmp_path / "base.tgz"))
    assert chosen.returncode == 0
    assert chosen.stderr.startswith(f"layerstore: wrote {tmp_path / 'base.tgz'} (gzip, ")
    assert sha256(gzip.decompress((tmp_path / "base.tgz").read_bytes())) == digests[base_id]
    any_cli.ok("diff", "app", "--compression", "zstd", "-o", str(tmp_path / "app.zst"))
    unzstd = zstandard.ZstdDecompressor().decompressobj()
    assert sha256(unzstd.decompress((tmp_path / "app.zst").read_bytes())) == digests[upper_id]
    # To stdout, and nothing but the tarball there.
    piped = any_cli.ok("diff", "app", "--compression", "none")
    assert sha256(piped.stdout) == digests[upper_id]
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_diff_that_fails_writes_no_file(cli: Cli, tmp_path: Path) -> None:
    base_id, _ = two_layers(cli, tmp_path)
    # Change a file behind the store's back: its CRC no longer matches the tar-split.
    changed = cli.root / "vfs" / "dir" / base_id / "etc" / "hostname"
    changed.write_bytes(b"BASE\n")
    target = tmp_path / "out.tar"
    target.write_bytes(b"an older diff")
    result = cli("diff", "base", "--compression", "none", "-o", str(target))
    assert_one_line_error(result, base_id[:12], "etc/hostname", "no file was written")
    assert target.read_bytes() == b"an older diff"
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["base.tar.gz", "up.tar", "out.tar", "root", "run"]
    )


def test_diff_refuses_a_terminal_on_stdout(cli: Cli, tmp_path: Path) -> None:
    two_layers(cli, tmp_path)
    leader, follower = pty.openpty()
    try:
        result = cli("diff", "base", stdout=follower)
    finally:
        os.close(follower)
        os.close(leader)
    assert_one_line_error(result, "terminal", "-o FILE")


def test_changes_and_diff_size_match_the_api(any_cli: Cli, tmp_path: Path) -> None:
    base_id, upper_id = two_layers(any_cli, tmp_path)
    listed = any_cli.ok("changes", "app", "--json").json()
    against_nothing = any_cli.ok("changes", "app", "--from", "base", "--json").json()
    with any_cli.api() as store:
        assert listed == [{"path": c.path, "kind": c.kind} for c in store.changes(upper_id)]
        assert against_nothing == [
            {"path": c.path, "kind": c.kind} for c in store.changes(upper_id, base_id)
        ]
        size = store.diff_size(upper_id)
    assert {"path": "/etc/motd", "kind": "delete"} in listed
    assert {"path": "/data/new", "kind": "add"} in listed
    table = any_cli.ok("changes", "app").out.splitlines()
    assert table[0].split() == ["KIND", "PATH"]
    assert [line.split() for line in table[1:]] == [[c["kind"], c["path"]] for c in listed]
    assert any_cli.ok("diff-size", "app").out == f"{size}\n"


def test_mount_count_and_unmount(any_cli: Cli, tmp_path: Path) -> None:
    _, upper_id = two_layers(any_cli, tmp_path)
    path = any_cli.ok("mount", "app").out.strip()
    assert (Path(path) / "etc" / "hostname").read_bytes() == b"upper\n"
    assert not (Path(path) / "etc" / "motd").exists()
    assert sorted(os.listdir(Path(path) / "data")) == ["new"]
    assert any_cli.ok("mounted", "app").out == "1\n"
    assert any_cli.ok("mount", upper_id).out.strip() == path
    assert any_cli.ok("mounted", "app").out == "2\n"
    with any_cli.api() as store:
        assert store.get("app").mount_count == 2
    assert any_cli.ok("layers", "--json").json()[1]["mount_count"] == 2

    still = any_cli("unmount", "app")
    assert still.returncode == 0
    assert "still mounted" in still.stderr
    assert any_cli.ok("mounted", "app").out == "1\n"
    assert any_cli.ok("unmount", "--force", path).stdout == b""
    assert any_cli.ok("mounted", "app").out == "0\n"
    assert_one_line_error(any_cli("unmount", "app"), "not mounted")
    assert_one_line_error(any_cli("unmount", "/nowhere/at/all"), "/nowhere/at/all")


def test_names(cli: Cli) -> None:
    first = cli.ok("create-layer", "--name", "one").out.strip()
    second = cli.ok("create-layer", "--name", "two").out.strip()
    cli.ok("add-names", "one", "uno", "latest")
    cli.ok("add-names", "two", "latest")  # a name moves from the layer that had it
    with cli.api() as store:
        assert store.get(first).names == ("one", "uno")
        assert store.get(second).names == ("two", "latest")
    cli.ok("remove-names", "two", "latest", "never-had")
    cli.ok("set-names", first, "only")
    with cli.api() as store:
        assert store.get(first).names == ("only",)
        assert store.get(second).names == ("two",)
    cli.ok("set-names", "only")
    with cli.api() as store:
        assert store.get(first).names == ()


def test_metadata_big_data_and_flags(cli: Cli, tmp_path: Path) -> None:
    cli.ok("create-layer", "--name", "base")
    assert cli.ok("metadata", "base").stdout == b""
    cli.ok("metadata", "base", "--set", "built by ci")
    assert cli.ok("metadata", "base").out == "built by ci\n"

    cli.ok("big-data", "base", "manifest", "--set", "-", input=b'{"schemaVersion": 2}')
    cli.ok("big-data", "base", "blob", "--set", write(tmp_path / "blob", b"\0\1\2"))
    assert cli.ok("big-data", "base", "manifest").stdout == b'{"schemaVersion": 2}'
    assert cli.ok("big-data", "base", "--set", "-", "late", input=b"k").stdout == b""
    assert cli.ok("big-data", "base", "late").stdout == b"k"
    assert_one_line_error(cli("big-data", "base", "--json", "late"), "--json", status=2)
    assert_one_line_error(cli("big-data", "base", "a", "b"), "unrecognized", status=2)
    cli.ok("big-data", "base", "--set", "-", "late", input=b"")
    assert cli.ok("big-data", "base", "blob").stdout == b"\0\1\2"
    assert cli.ok("big-data", "base", "--json").json() == ["manifest", "blob", "late"]
    assert cli.ok("big-data", "base").out == "manifest\nblob\nlate\n"
    assert_one_line_error(cli("big-data", "base", "nope"), "'nope'", "lists its keys")

    cli.ok(
        "flags",
        "base",
        "--set",
        "count=3",
        "--set",
        "on=true",
        "--set",
        "word=hello",
        "--set",
        'quoted="3"',
        "--set",
        'nested={"a": [1, null]}',
        "--set",
        "nan=NaN",
        "--set",
        "gone=1",
    )
    cli.ok("flags", "base", "--unset", "gone")
    expected = {
        "count": 3,
        "on": True,
        "word": "hello",
        "quoted": "3",
        "nested": {"a": [1, None]},
        "nan": "NaN",
    }
    with cli.api() as store:
        layer = store.get("base")
        assert layer.metadata == "built by ci"
        assert store.big_data("base", "manifest") == b'{"schemaVersion": 2}'
        assert expected_json(layer)["flags"] == expected
    assert cli.ok("flags", "base", "--json").json() == expected
    assert "count=3" in cli.ok("flags", "base").out.splitlines()


def test_delete_layer(cli: Cli, tmp_path: Path) -> None:
    base_id, _ = two_layers(cli, tmp_path)
    assert_one_line_error(cli("delete-layer", "base"), "parent", "delete those first")
    cli.ok("delete-layer", "app")
    cli.ok("delete-layer", base_id[:12])
    with cli.api() as store:
        assert store.layers() == []


def test_status_matches_the_api(cli: Cli) -> None:
    cli.ok("create-layer")
    status = cli.ok("status", "--json").json()
    with cli.api() as store:
        assert status == dict(store.status())
    text = cli.ok("status").out
    assert "Layers:" in text
    assert str(cli.root) in text


def test_wipe_needs_yes(cli: Cli, tmp_path: Path) -> None:
    two_layers(cli, tmp_path)
    assert_one_line_error(cli("wipe"), "2 layer(s)", "--yes")
    with cli.api() as store:
        assert len(store.layers()) == 2
    cli.ok("wipe", "--yes")
    with cli.api() as store:
        assert store.layers() == []


# -- failures -----------------------------------------------------------------------------------


def test_unknown_layers_suggest_close_matches(cli: Cli, tmp_path: Path) -> None:
    base_id, _ = two_layers(cli, tmp_path)
    assert_one_line_error(cli("metadata", "bsae"), "'bsae'", "did you mean 'base'")
    assert_one_line_error(cli("diff", "ap", "-o", str(tmp_path / "x")), "'ap'", "'app'")
    assert_one_line_error(cli("changes", "app", "--from", "bas"), "'bas'", "'base'")
    typo = base_id[:7] + ("0" if base_id[7] != "0" else "1")
    assert_one_line_error(cli("mount", typo), repr(typo), f"did you mean '{base_id[:12]}'")
    assert_one_line_error(cli("import", "--parent", "nope", "-", input=base_tar()), "'nope'")
    assert_one_line_error(cli("delete-layer", "zzzzzz"), "'zzzzzz'", "layerstore layers")
    assert not (tmp_path / "x").exists()
    with cli.api() as store:
        assert len(store.layers()) == 2  # the failed import left nothing


def test_unknown_layer_in_an_empty_store(cli: Cli) -> None:
    assert_one_line_error(cli("flags", "base"), "'base'", "no layers", "--root")


def test_an_ambiguous_prefix(cli: Cli) -> None:
    cli.ok("create-layer", "--id", "abc1")
    cli.ok("create-layer", "--id", "abc2")
    assert_one_line_error(cli("metadata", "abc"), "'abc'", "matches 2 layers")


def test_taken_names_and_ids(cli: Cli, tmp_path: Path) -> None:
    base_id = cli.ok("create-layer", "--name", "base").out.strip()
    assert_one_line_error(cli("create-layer", "--name", "base"), "'base'", base_id, "another name")
    blob = write(tmp_path / "b.tar", base_tar())
    assert_one_line_error(cli("import", "--name", "base", blob), "'base'", "another name")
    assert_one_line_error(cli("create-layer", "--id", base_id), base_id, "--id")
    assert_one_line_error(cli("create-layer", "--id", "../x"), "invalid layer id")
    with cli.api() as store:
        assert [layer.id for layer in store.layers()] == [base_id]


def test_wrong_input_files(cli: Cli, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.tar")
    assert_one_line_error(cli("import", missing), "cannot read", repr(missing), "check the path")
    assert_one_line_error(cli("import", str(tmp_path)), repr(str(tmp_path)))
    leader, follower = pty.openpty()
    try:
        assert_one_line_error(cli("import", "-", stdin=follower), "terminal")
    finally:
        os.close(follower)
        os.close(leader)


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        ([Entry(b"../escape", "file", b"x")], "escapes the layer"),
        ([Entry(b"link", "symlink", target=b"/"), Entry(b"link/../../escape", "file")], "escape"),
    ],
    ids=["dotdot", "through-symlink"],
)
def test_hostile_tarballs_are_refused(
    cli: Cli, tmp_path: Path, entries: list[Entry], fragment: str
) -> None:
    blob = write(tmp_path / "evil.tar", build_tar(entries))
    error = assert_one_line_error(cli("import", "--name", "evil", blob), repr(blob))
    assert "nothing was stored" in error
    assert "escape" in error
    with cli.api() as store:
        assert store.layers() == []
    assert not list(tmp_path.rglob("escape"))


def test_garbage_blob_and_apply_diff_failure(cli: Cli, tmp_path: Path) -> None:
    garbage = write(tmp_path / "garbage", b"not a tar at all" * 64)
    assert_one_line_error(cli("import", garbage), repr(garbage), "invalid tar")
    cli.ok("create-layer", "--name", "target")
    evil = write(tmp_path / "evil.tar", build_tar([Entry(b"../escape", "file", b"x")]))
    assert_one_line_error(cli("apply-diff", "target", evil), repr(evil), "delete the layer")
    with cli.api() as store:
        assert store.get("target").uncompressed_digest == ""


def test_read_only_option_refuses_changes(cli: Cli) -> None:
    cli.ok("create-layer", "--name", "base")
    listed = cli.ok("--read-only", "layers", "--json").json()
    with cli.api(read_only=True) as store:
        assert listed == [expected_json(layer) for layer in store.layers()]
    for change in (["create-layer"], ["set-names", "base", "x"], ["wipe", "--yes"]):
        assert_one_line_error(cli("--read-only", *change), "read-only", "leave out --read-only")
    assert_one_line_error(cli("--read-only", "mount", "base"), "read-only")


@pytest.fixture
def unwritable_store(cli: Cli) -> Iterator[Cli]:
    """A store whose directory cannot be written: a read-only bind mount for root (who may
    write anything else), no write permission for other users."""
    cli.ok("create-layer", "--name", "base")
    if ROOT:
        bind = ["mount", "--bind", str(cli.root), str(cli.root)]
        if subprocess.run(bind, capture_output=True, check=False).returncode != 0:
            pytest.skip("cannot bind-mount here")
        try:
            remount = ["mount", "-o", "remount,bind,ro", str(cli.root)]
            subprocess.run(remount, check=True, capture_output=True)
            yield cli
        finally:
            subprocess.run(["umount", str(cli.root)], check=True)
    else:
        layers_dir = cli.root / "vfs-layers"
        modes = {path: path.stat().st_mode for path in (cli.root, layers_dir)}
        try:
            for path in modes:
                path.chmod(0o555)
            (layers_dir / "layers.lock").chmod(0o444)
            yield cli
        finally:
            (layers_dir / "layers.lock").chmod(0o644)
            for path, mode in modes.items():
                path.chmod(mode)


def test_unwritable_store(unwritable_store: Cli) -> None:
    cli = unwritable_store
    error = assert_one_line_error(cli("create-layer"), "cannot open the store", "--read-only")
    assert str(cli.root) in error
    listed = cli.ok("--read-only", "layers", "--json").json()
    assert [layer["names"] for layer in listed] == [["base"]]


def test_debug_shows_the_traceback(cli: Cli) -> None:
    result = cli("--debug", "metadata", "nope")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("layerstore: ")


# -- the progress bar ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uncompressed blob above the 8 MiB from which a progress bar may show."""
    path = tmp_path_factory.mktemp("large") / "large.tar"
    path.write_bytes(build_tar([Entry(b"big", "file", bytes(9 << 20))]))
    return path


def test_progress_is_silent_when_stderr_is_not_a_terminal(
    cli: Cli, tmp_path: Path, large_tar: Path
) -> None:
    layer_id = cli.ok("import", str(large_tar)).out.strip()
    cli.ok("apply-diff", cli.ok("create-layer").out.strip(), "-", input=large_tar.read_bytes())
    out = tmp_path / "again.tar"
    cli.ok("diff", layer_id, "--compression", "none", "-o", str(out))  # stderr "" checked by ok
    assert out.read_bytes() == large_tar.read_bytes()


def _run_with_terminal_stderr(cli: Cli, *arguments: str) -> tuple[Result, str]:
    leader, follower = pty.openpty()
    # A real size, as a terminal has: the bar is laid out to it.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer is gone
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        result = cli(*arguments, stderr=follower)
    finally:
        os.close(follower)
        reader.join(timeout=10)
        os.close(leader)
    return result, b"".join(chunks).decode("utf-8", "replace")


def test_progress_shows_on_a_terminal_for_large_inputs(
    cli: Cli, tmp_path: Path, large_tar: Path, engine_name: str
) -> None:
    # The engines read the counted stream differently (readinto, read): both must count.
    cli.engine = engine_name
    result, shown = _run_with_terminal_stderr(cli, "import", str(large_tar))
    assert result.returncode == 0, shown
    assert "import" in shown
    assert "B/s" in shown or "?B/s" in shown
    layer_id = result.out.strip()
    out = tmp_path / "out.tar"
    result, shown = _run_with_terminal_stderr(
        cli, "diff", layer_id, "--compression", "none", "-o", str(out)
    )
    assert result.returncode == 0, shown
    assert "diff" in shown
    assert out.read_bytes() == large_tar.read_bytes()
    # To stdout the tarball goes on to another program: no bar to garble its output.
    result, shown = _run_with_terminal_stderr(
        cli, "diff", layer_id, "--compression", "none", "-o", "-"
    )
    assert result.returncode == 0
    assert shown == ""
    assert result.stdout == large_tar.read_bytes()
    # A small input draws nothing, terminal or not.
    small = write(tmp_path / "small.tar", base_tar())
    result, shown = _run_with_terminal_stderr(cli, "import", small)
    assert result.returncode == 0
    assert shown == ""


# -- the demo -----------------------------------------------------------------------------------


def _demo_leftovers() -> set[str]:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        mounted = {line.split()[1] for line in mounts if "layerstore-demo-" in line}
    scratch = {
        os.path.join(directory, name)
        for directory in ("/dev/shm", "/tmp")
        if os.path.isdir(directory)
        for name in os.listdir(directory)
        if name.startswith("layerstore-demo-")
    }
    return mounted | scratch


def test_demo_runs_with_each_engine(engine_name: str) -> None:
    before = _demo_leftovers()
    result = run("--engine", engine_name, "demo")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.out
    assert f"engine {engine_name}, driver " in out
    driver = "overlay" if overlay_usable() else "vfs"
    assert f"driver {driver}" in out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("    /")]
    assert "/etc/hostname" in listed
    assert "/etc/motd" not in listed  # deleted by a whiteout
    assert [path for path in listed if path.startswith("/var/cache/app/")] == [
        "/var/cache/app/fresh"  # the base's files are hidden by the opaque directory
    ]
    assert "whiteouts honoured" in out
    assert out.count("= uncompressed_digest of demo-") == 2
    assert " ms" in out
    assert _demo_leftovers() <= before


def test_demo_with_the_vfs_driver() -> None:
    result = run("--driver", "vfs", "demo")
    assert result.returncode == 0, result.stderr
    assert "driver vfs" in result.out
    assert result.out.count("= uncompressed_digest of demo-") == 2


def test_the_api_and_the_cli_share_one_default_run_root(tmp_path: Path) -> None:
    """A layer the API mounts shows as mounted to the CLI given only --root, and the CLI's
    unmount drops the API's count (issue 14, defect 5)."""
    root = tmp_path / "root"
    with LayerStore(root, driver="vfs") as store:
        layer = store.create(names=["top"])
        store.mount(layer.id)
        assert store.run_root == default_run_root(root=str(root))
        mounted = run("--root", str(root), "mounted", "top")
        assert mounted.returncode == 0, mounted.stderr
        assert mounted.stdout.split() == [b"1"]
        assert run("--root", str(root), "unmount", "top").returncode == 0
        assert store.mounted(layer.id) == 0


def test_default_run_roots_of_two_stores_differ(tmp_path: Path) -> None:
    home = {"HOME": "/home/ann"}
    first = default_run_root(home, 0, root=tmp_path / "a")
    second = default_run_root(home, 0, root=tmp_path / "b")
    assert first != second
    assert first is not None
    assert first.startswith("/run/layerstore/stores/")
    assert default_run_root(home, 0, root="/var/lib/layerstore") == "/run/layerstore"
    assert default_run_root(home, 1000, root=tmp_path / "a") is None


def test_a_second_driver_never_takes_over_silently(tmp_path: Path) -> None:
    """Issue 14, defect 7: one --driver overlay command on a vfs store warns that it makes a
    separate store, and from then on a plain command refuses to guess, naming both."""
    root = str(tmp_path / "root")
    assert run("--root", root, "--driver", "vfs", "create-layer", "--name", "mine").returncode == 0
    other = run("--root", root, "--driver", "overlay", "create-layer", "--name", "other")
    assert other.returncode == 0, other.stderr
    assert "holds vfs layers; a separate overlay layer store" in other.stderr
    assert_one_line_error(run("--root", root, "layers"), "several drivers", "overlay, vfs")
    listed = run("--root", root, "--driver", "vfs", "layers", "--json")
    assert [layer["names"] for layer in listed.json()] == [["mine"]]


def test_a_root_that_is_a_file_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    assert_one_line_error(run("--root", str(tmp_path / "file"), "layers"), "it is a file")
    assert_one_line_error(
        run("--root", str(tmp_path / "file" / "sub"), "layers"), "a part of it is a file"
    )


def test_diff_output_compression_follows_the_file_name(cli: Cli, tmp_path: Path) -> None:
    tar = build_tar([Entry(b"f", "file", data=b"x" * 5000)])
    blob = tmp_path / "layer.tar.gz"
    blob.write_bytes(gzip.compress(tar))
    layer_id = cli("import", str(blob)).stdout.split()[0].decode()
    for name, check in (
        ("plain.tar", lambda data: data == tar),
        ("again.tgz", lambda data: gzip.decompress(data) == tar),
        ("small.tar.zst", lambda data: zstd_decompress(data) == tar),
        ("no-suffix", lambda data: gzip.decompress(data) == tar),  # the layer's own: gzip
    ):
        written = cli("diff", layer_id, "-o", str(tmp_path / name))
        assert written.returncode == 0, written.stderr
        assert check((tmp_path / name).read_bytes()), name
        size = (tmp_path / name).stat().st_size
        assert f"wrote {tmp_path / name} (" in written.stderr
        assert f", {size} bytes)" in written.stderr
    forced = cli("diff", layer_id, "--compression", "gzip", "-o", str(tmp_path / "x.tar"))
    assert gzip.decompress((tmp_path / "x.tar").read_bytes()) == tar, forced.stderr


def zstd_decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def test_importing_an_empty_stream_says_so(cli: Cli) -> None:
    result = cli("import", "-", input=b"")
    assert result.returncode == 0, result.stderr
    assert "was empty: the new layer is empty" in result.stderr
    layer_id = result.stdout.split()[0].decode()
    with cli.api() as store:
        assert store.get(layer_id).uncompressed_size == 0
