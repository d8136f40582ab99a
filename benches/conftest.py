"""Benchmarks run with pytest-benchmark: ``pytest benches --benchmark-enable``."""

from __future__ import annotations

import sys
from pathlib import Path

# The data-set helpers live beside the benchmarks.
sys.path.insert(0, str(Path(__file__).parent))
