"""Corrupt stores: clear errors naming the file, never a silent wrong answer; safe repairs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerstore import InvalidLayerData, InvalidStoreData, LayerStore, LayerStoreError
from layerstore.drivers import remove_tree

from ..tarballs import Entry, build_tar
from .invariants import assert_consistent


def reopen(store: LayerStore, **options: object) -> LayerStore:
    return LayerStore(store.root, run_root=store.run_root, driver=store.driver.name,
                      engine=store.engine, **options)  # type: ignore[arg-type]  # fmt: skip


def two_layers(store: LayerStore) -> tuple[str, str]:
    first, _ = store.put(build_tar([Entry(b"a", "file", data=b"first" * 100)]), names=["one"])
    second, _ = store.put(build_tar([Entry(b"a", "file", data=b"other" * 100)]), names=["two"])
    return first.id, second.id


@pytest.mark.records_only
@pytest.mark.parametrize("damage", ["truncated", "garbage", "not a list", "bad record"])
def test_a_damaged_layers_json_is_named(store: LayerStore, damage: str) -> None:
    two_layers(store)
    path = Path(store.layers_dir, "layers.json")
    text = path.read_bytes()
    path.write_bytes(
        {
            "truncated": text[: len(text) // 2],
            "garbage": os.urandom(300),
            "not a list": b'{"id": "x"}',
            "bad record": b'[{"id": "x", "names": "not a list"}]',
        }[damage]
    )
    for read_only in (False, True):
        with pytest.raises(InvalidStoreData, match=r"layers\.json"):
            reopen(store, read_only=read_only)


@pytest.mark.records_only
def test_a_missing_lock_file(store: LayerStore) -> None:
    first, _ = two_layers(store)
    Path(store.layers_dir, "layers.lock").unlink()
    with pytest.raises(LayerStoreError, match=r"layers\.lock"):
        reopen(store, read_only=True)
    assert reopen(store).get("one").id == first  # read-write opening makes it again
    assert reopen(store, read_only=True).get("one").id == first


def test_a_tar_split_that_does_not_match_its_layer(store: LayerStore) -> None:
    first, second = two_layers(store)
    # Swap the tar-split files: each names a file whose content is not what it recorded.
    one = Path(store.layers_dir, f"{first}.tar-split.gz")
    two = Path(store.layers_dir, f"{second}.tar-split.gz")
    one_bytes, two_bytes = one.read_bytes(), two.read_bytes()
    one.write_bytes(two_bytes)
    two.write_bytes(one_bytes)
    with pytest.raises(InvalidLayerData, match="'a'"), store.diff(first) as stream:
        stream.read()
    problems = store.check(contents=True)
    assert sorted((problem.kind, problem.layer) for problem in problems) == sorted(
        [("content-mismatch", first), ("content-mismatch", second)]
    )
    assert store.check() == [], "without contents nothing reads the data"
    fixed = store.repair(contents=True)
    assert {problem.layer for problem in fixed} == {first, second}
    assert store.layers() == []
    assert_consistent(store)


def test_missing_data_and_missing_parents_are_repaired(store: LayerStore) -> None:
    base, _ = store.put(build_tar([Entry(b"a", "file", data=b"a")]))
    child, _ = store.put(build_tar([Entry(b"b", "file", data=b"b")]), parent=base.id)
    grandchild = store.create(parent=child.id)
    healthy, _ = store.put(build_tar([Entry(b"c", "file", data=b"c")]))
    remove_tree(store.driver.layer_dir(child.id))  # its data is gone, the record is not
    problems = reopen(store, read_only=True).check()
    assert ("missing-data", child.id) in {(problem.kind, problem.layer) for problem in problems}
    fixed = store.repair()
    assert {problem.layer for problem in fixed} >= {child.id}
    assert [layer.id for layer in store.layers()] == [base.id, healthy.id]
    assert not store.exists(grandchild.id), "layers built on a broken one go with it"
    assert_consistent(store)


def test_orphans_are_seen_read_only_and_removed_on_open(store: LayerStore) -> None:
    first, _ = two_layers(store)
    orphan_id = "f" * 64
    Path(store.layers_dir, f"{orphan_id}.tar-split.gz").write_bytes(b"")
    Path(store.layers_dir, orphan_id).mkdir()
    Path(store.layers_dir, ".layers.json.12345.tmp").write_text("half a write")
    store.set_big_data(first, "manifest", b"{}")
    Path(store.layers_dir, first, ".manifest.999.tmp").write_text("half a big data write")
    store.driver.create(orphan_id, "", writeable=False)
    kinds = [problem.kind for problem in reopen(store, read_only=True).check()]
    assert kinds.count("orphan") >= 5
    assert_consistent(reopen(store))  # opening read-write removed them


def test_the_cli_checks_and_repairs(store: LayerStore) -> None:
    first, second = two_layers(store)
    remove_tree(store.driver.layer_dir(second))
    command = [sys.executable, "-m", "layerstore", "--root", store.root, "--run-root",
               store.run_root, "--driver", store.driver.name]  # fmt: skip
    checked = subprocess.run([*command, "check", "--json"], capture_output=True, text=True)
    assert checked.returncode == 1
    assert [problem["kind"] for problem in json.loads(checked.stdout)] == ["missing-data"]
    assert "repair --yes" in checked.stderr
    refused = subprocess.run([*command, "repair"], capture_output=True, text=True)
    assert refused.returncode == 1
    assert "--yes" in refused.stderr
    repaired = subprocess.run([*command, "repair", "--yes"], capture_output=True, text=True)
    assert repaired.returncode == 0, repaired.stderr
    assert subprocess.run([*command, "check"], capture_output=True).returncode == 0
    assert [layer.id for layer in reopen(store).layers()] == [first]
