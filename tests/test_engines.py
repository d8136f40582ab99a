"""Both engines offer the same interface and give the same results."""

from __future__ import annotations

import inspect
import os
import stat
import sys
import warnings
from pathlib import Path

import pytest

from layerstore.engines import Engine, select_engine
from layerstore.engines.native import NativeEngine
from layerstore.engines.pure import PureEngine

from .manifest import tree_manifest


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_engines_have_the_same_interface() -> None:
    native, pure = public_methods(NativeEngine), public_methods(PureEngine)
    assert native == pure
    assert set(native) == set(public_methods(Engine)), "the Protocol lists every engine function"


def test_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERSTORE_ENGINE", "pure")
    assert select_engine().name == "pure"
    assert select_engine("native").name == "native", "the argument wins over the environment"
    monkeypatch.delenv("LAYERSTORE_ENGINE")
    assert select_engine().name == "native"
    with pytest.raises(ValueError, match="unknown engine"):
        select_engine("turbo")


def test_missing_extension_falls_back_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    import layerstore

    # As if the extension were not installed: the import of layerstore._native fails.
    monkeypatch.delattr(layerstore, "_native", raising=False)
    monkeypatch.setitem(sys.modules, "layerstore._native", None)
    monkeypatch.delitem(sys.modules, "layerstore.engines.native", raising=False)
    with pytest.warns(RuntimeWarning, match="native engine is not available"):
        assert select_engine("native").name == "pure"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_engine(None).name == "pure", "no warning when native was not asked for"


def build_tree(root: Path) -> None:
    root.mkdir()
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "file").write_bytes(b"x" * 100_000)
    (root / "empty").write_bytes(b"")
    os.chmod(root / "file", 0o4755)
    (root / "dir" / "sticky").mkdir()
    os.chmod(root / "dir" / "sticky", 0o1777)
    os.link(root / "file", root / "dir" / "hardlink")
    os.symlink("../file", root / "dir" / "symlink")
    os.symlink("/nonexistent/absolute", root / "dangling")
    os.mkfifo(root / "fifo")
    os.setxattr(root / "empty", "user.comment", b"hello")
    if os.geteuid() == 0:
        os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.setxattr(root / "dir", "trusted.overlay.opaque", b"y")
        os.chown(root / "dir" / "sub", 1234, 5678)
        os.lchown(root / "dir" / "symlink", 42, 43)
    os.utime(root / "dir" / "sub", ns=(1, 1_500_000_000_123_456_789))
    os.utime(root / "dir" / "symlink", ns=(1, 1_400_000_000_000_000_001), follow_symlinks=False)
    os.chmod(root / "dir", 0o555)


def test_copy_tree_reproduces_everything(tmp_path: Path, engine: Engine) -> None:
    source = tmp_path / "source"
    build_tree(source)
    engine.copy_tree(str(source), str(tmp_path / "copy"))
    assert tree_manifest(tmp_path / "copy") == tree_manifest(source)


def test_copy_tree_engines_agree(tmp_path: Path) -> None:
    source = tmp_path / "source"
    build_tree(source)
    select_engine("native").copy_tree(str(source), str(tmp_path / "native"))
    select_engine("pure").copy_tree(str(source), str(tmp_path / "pure"))
    assert tree_manifest(tmp_path / "native") == tree_manifest(tmp_path / "pure")


def test_copy_tree_errors_are_os_errors_naming_the_path(tmp_path: Path, engine: Engine) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        engine.copy_tree(str(tmp_path / "missing"), str(tmp_path / "copy"))
    assert missing.value.filename == str(tmp_path / "missing")
    (tmp_path / "target").mkdir()
    with pytest.raises(FileExistsError) as exists:
        engine.copy_tree(str(tmp_path), str(tmp_path / "target"))
    assert exists.value.filename == str(tmp_path / "target")
    (tmp_path / "plain").write_text("x")
    with pytest.raises(NotADirectoryError):
        engine.copy_tree(str(tmp_path / "plain"), str(tmp_path / "copy"))
