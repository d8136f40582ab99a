"""Fixtures shared by the test suite: every test that touches bytes runs once per engine."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore import LayerStore, default_run_root
from layerstore.engines import ENGINE_NAMES, Engine, select_engine


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="run the long versions of slow tests")
    parser.addoption(
        "--engine",
        action="append",
        choices=ENGINE_NAMES,
        help="run engine-parametrized tests only for this engine (repeatable)",
    )


def _engine_names(config: pytest.Config) -> list[str]:
    chosen = config.getoption("--engine")
    return list(chosen) if chosen else list(ENGINE_NAMES)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine_name" in metafunc.fixturenames:
        names = _engine_names(metafunc.config)
        if metafunc.definition.get_closest_marker("records_only"):
            names = names[:1]  # no byte work: the engines cannot differ here
        metafunc.parametrize("engine_name", names)


@pytest.fixture
def engine(engine_name: str) -> Engine:
    """The engine under test; native must really be native, never a silent fallback."""
    chosen = select_engine(engine_name)
    assert chosen.name == engine_name, f"the {engine_name} engine is not available"
    return chosen


@pytest.fixture(autouse=True, scope="session")
def _remove_default_run_roots() -> Iterator[None]:
    """Stores made without a run root get one of their own below the default run root's
    ``stores/``: remove those this session made, once it is over."""
    sample = default_run_root(root="/nonexistent/store")
    stores = Path(sample).parent if sample else None
    before = set(stores.iterdir()) if stores and stores.is_dir() else set()
    yield
    if stores and stores.is_dir():
        for made in set(stores.iterdir()) - before:
            shutil.rmtree(made, ignore_errors=True)


def overlay_usable() -> bool:
    return os.geteuid() == 0 and "overlay" in Path("/proc/filesystems").read_text()


@pytest.fixture(params=["vfs", "overlay"])
def driver_name(request: pytest.FixtureRequest) -> str:
    if request.param == "overlay" and not overlay_usable():
        pytest.skip("the overlay driver needs root and a kernel with overlay")
    return str(request.param)


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_root: Path, driver_name: str, engine: Engine) -> Iterator[LayerStore]:
    """A fresh read-write store for each driver and engine."""
    with LayerStore(store_root, driver=driver_name, engine=engine) as opened:
        yield opened
