"""Start-up cost (issue 18): ``import layerstore`` and the CLI's short verbs load only what
they need.

Times are not asserted (they depend on the machine); what a fresh interpreter has imported is.
Each check runs a new interpreter and compares its ``sys.modules`` with that of a bare one
started the same way, so what the interpreter itself or the site loads (a ``.pth`` file, say)
never counts against layerstore.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import layerstore
from layerstore import LayerStore
from layerstore.cli import _named_verb, build_parser

# Imported only by the calls that need them: image transfer and registries, chains, diffs,
# stagings, compression, progress bars, and the standard library modules behind them.
HEAVY = (
    "certifi",
    "concurrent.futures",
    "filelock",
    "gzip",
    "hashlib",
    "layerstore.cli.demo",
    "layerstore.cli.image_verbs",
    "layerstore.drivers.changes",
    "layerstore.engines.pure",
    "layerstore.image",
    "layerstore.registry",
    "layerstore.store.chain",
    "layerstore.streams",
    "layerstore.transfer",
    "secrets",
    "tarfile",
    "tempfile",
    "tqdm",
    "urllib3",
    "zstandard",
)


def _modules_after(code: str) -> set[str]:
    """The modules that running ``code`` in a new interpreter imports, beyond a bare one's."""
    source = str(Path(layerstore.__file__).parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]))
    env.pop("LAYERSTORE_ENGINE", None)
    dump = "import json, sys; print(json.dumps(sorted(sys.modules)), file=sys.stderr)"

    def modules(program: str) -> set[str]:
        done = subprocess.run(
            [sys.executable, "-c", f"{program}\n{dump}"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        names: list[str] = json.loads(done.stderr.splitlines()[-1])
        return set(names)

    return modules(code) - modules("pass")


def _heavy(modules: set[str]) -> list[str]:
    return sorted(
        name for name in modules if any(name == h or name.startswith(h + ".") for h in HEAVY)
    )


def test_import_layerstore_imports_nothing_else() -> None:
    # (__future__: the `from __future__ import annotations` of every module, a few lines)
    assert _modules_after("import layerstore") - {"__future__"} == {
        "layerstore",
        "layerstore._lazy",
    }


def test_cli_layers_loads_only_what_listing_needs(tmp_path: Path) -> None:
    root, run_root = tmp_path / "store", tmp_path / "run"
    with LayerStore(root, run_root, driver="vfs", engine="native") as store:
        store.create(names=["base"])
    argv = ["--root", str(root), "--run-root", str(run_root), "--driver", "vfs", "layers"]
    loaded = _modules_after(
        f"import sys\nfrom layerstore.cli import main\nassert main({argv!r}) == 0"
    )
    assert "layerstore.store.layer_store" in loaded  # it did open the store
    assert _heavy(loaded) == []


def test_lazy_names_are_the_package_names() -> None:
    for name in layerstore.__all__:
        assert getattr(layerstore, name) is not None
        assert name in dir(layerstore)
    namespace: dict[str, object] = {}
    exec("from layerstore import *", namespace)
    assert set(layerstore.__all__) <= set(namespace)
    assert layerstore.LayerStore is layerstore.store.layer_store.LayerStore
    assert layerstore.errors.LayerUnknown is layerstore.LayerUnknown
    assert layerstore.store.ChainBlob is layerstore.store.chain.ChainBlob
    with pytest.raises(AttributeError):
        _ = layerstore.NoSuchName


def _verbs() -> list[str]:
    return list(build_parser()._subparsers._group_actions[0].choices)


def _parse(only: str | None, argv: list[str]) -> tuple[object, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result: object = build_parser(only=only).parse_known_args(argv)
        except SystemExit as exc:
            result = ("exit", exc.code)
    return result, out.getvalue(), err.getvalue()


def test_one_verb_parser_parses_as_the_whole_one() -> None:
    """main builds only the subcommand of the verb it sees: same results, help and errors."""
    verbs = _verbs()
    assert len(verbs) > 20
    for verb in verbs:
        for argv in (
            [verb, "--help"],
            [verb],
            [verb, "x", "y"],
            ["--root", "/r", "--driver=vfs", verb, "x", "--json"],
            ["--read-only", verb, "--bogus", "a", "b"],
        ):
            assert _named_verb(argv) == verb
            assert _parse(verb, argv) == _parse(None, argv), argv


@pytest.mark.parametrize(
    "argv",
    [[], ["--help"], ["--version"], ["nope"], ["--dri", "vfs", "layers"], ["--root"], ["-x"]],
)
def test_unclear_arguments_get_the_whole_parser(argv: list[str]) -> None:
    only = _named_verb(argv)
    assert only is None or only not in _verbs()
    assert _parse(only, argv) == _parse(None, argv)
