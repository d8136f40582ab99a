"""The command line: the README's demo runs, errors are one line."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*arguments: str, engine: str | None = None) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ)
    if engine:
        environment["LAYERSTORE_ENGINE"] = engine
    return subprocess.run(
        [sys.executable, "-m", "layerstore", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )


def test_demo_runs(engine_name: str) -> None:
    result = run_cli("demo", engine=engine_name)
    assert result.returncode == 0, result.stderr
    assert f"engine {engine_name}" in result.stdout
    assert "read back by the second store" in result.stdout
    assert result.stderr == ""


def test_usage_errors_exit_2() -> None:
    result = run_cli("no-such-command")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
