"""The machine a run trains on, as reports describe it."""

from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_description() -> str:
    """``"CPU, 2 cores"``: the processing unit of a NumPy or TensorFlow CPU run."""
    cores = available_cores()
    return f"CPU, {cores} core" + ("s" if cores != 1 else "")
