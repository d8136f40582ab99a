"""Fault points for crash tests: a process dies at a named point when the environment says so.

``LAYERSTORE_FAULT_POINT=put:applied`` makes the process SIGKILL itself right there, as a power
cut or an OOM kill would, so the reliability suite can check what the next open finds. Unset,
each point costs one dictionary lookup.
"""

from __future__ import annotations

import os

__all__ = ["FAULT_POINT_VARIABLE", "fault"]

FAULT_POINT_VARIABLE = "LAYERSTORE_FAULT_POINT"


def fault(point: str) -> None:
    """Die here if the environment names this point."""
    if os.environ.get(FAULT_POINT_VARIABLE) == point:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
