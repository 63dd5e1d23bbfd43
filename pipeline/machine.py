"""The machine a run trains on, as reports describe it."""

from __future__ import annotations

import os
import time


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


#: Above this many cores kept busy by other processes (on average over a training), a training's
#: time is not a measurement of its speed: reports say so instead of comparing it.
BUSY_CORES = 0.25


def _machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (idle and I/O wait excluded)."""
    import psutil

    t = psutil.cpu_times()
    busy = t.user + t.system
    for name in ("nice", "irq", "softirq", "steal"):  # Linux; guest time is inside user's
        busy += getattr(t, name, 0.0)
    return busy


def _own_seconds() -> float:
    """CPU seconds this process (all its threads) and its finished children have spent."""
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system + t.children_user + t.children_system


class LoadMeter:
    """How busy other processes kept the machine during a ``with`` block.

    ``other_cores``: the machine's busy CPU time minus this process's, over the wall time, i.e.
    the cores other processes kept busy on average (0.0 on a quiet machine; 1.0: one core's
    worth). Measured from the kernel's counters (``/proc/stat`` through psutil), which tick every
    10 ms: a block of a fraction of a second gives a rough number.
    """

    def __init__(self) -> None:
        self.other_cores: float | None = None
        self.seconds: float | None = None

    def __enter__(self) -> LoadMeter:
        self._start = time.perf_counter()
        self._busy, self._own = _machine_busy_seconds(), _own_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
        others = (_machine_busy_seconds() - self._busy) - (_own_seconds() - self._own)
        self.other_cores = max(0.0, others / self.seconds) if self.seconds > 0 else 0.0
