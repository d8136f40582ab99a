"""Benchmarks run with pytest-benchmark: ``python -m pytest benches --benchmark-enable``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The data-set helpers live beside the benchmarks.
sys.path.insert(0, str(Path(__file__).parent))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collect ``bench_*.py`` (pytest's own pattern is ``test_*.py``) when given the folder;
    a file named on the command line is collected by pytest itself."""
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
