"""A Go process and a layerstore process change one store at the same time: nothing is lost."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable

from layerstore import LayerStore

from .conftest import GO_CLI, GoStore

ROUNDS = 25


def test_concurrent_go_and_layerstore(go: GoStore, ours: Callable[[], LayerStore]) -> None:
    store = ours()  # creates the store's files before both start
    base = store.create(names=["base"])
    python_side = textwrap.dedent(
        f"""
        from layerstore import LayerStore
        store = LayerStore({str(go.root)!r}, run_root={str(go.run_root)!r},
                           driver={go.driver!r}, engine={store.engine.name!r})
        for number in range({ROUNDS}):
            layer = store.create(parent="base", names=[f"py-{{number}}"])
            store.set_names(layer.id, [f"py-{{number}}-renamed"])
            if number % 2 == 0:
                store.delete(layer.id)
        """
    )
    go_side = textwrap.dedent(
        f"""
        import subprocess
        go = [{GO_CLI!r}, "--graph", {str(go.root)!r}, "--run", {str(go.run_root)!r},
              "--storage-driver", {go.driver!r}]
        def run(*arguments):
            return subprocess.run(go + list(arguments), check=True, capture_output=True,
                                  text=True).stdout
        for number in range({ROUNDS}):
            layer = run("create-layer", "-n", f"go-{{number}}", "base").split()[0]
            run("set-names", "-n", f"go-{{number}}-renamed", layer)
            if number % 2 == 0:
                run("delete-layer", layer)
        """
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        for code in (python_side, go_side)
    ]
    for process in processes:
        _, errors = process.communicate(timeout=300)
        assert process.returncode == 0, errors

    expected = {"base"} | {
        f"{side}-{number}-renamed" for side in ("py", "go") for number in range(1, ROUNDS, 2)
    }
    go_names = {name for record in go.layers() for name in record.get("names", [])}
    ours_names = {name for layer in ours().layers() for name in layer.names}
    assert go_names == ours_names == expected
    assert len(go.layers()) == len(expected)
    assert {record["id"] for record in go.layers()} == {layer.id for layer in ours().layers()}
    assert base.id in {layer.id for layer in ours().layers()}
