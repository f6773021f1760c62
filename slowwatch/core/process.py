"""Figures about the whole process, from psutil, read on the reporter thread
when a report is built (:func:`slowwatch.report.build_report`)."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import psutil

_handle: psutil.Process | None = None
#: (monotonic time, process CPU seconds) at the previous call.
_last: tuple[float, float] | None = None


def _process() -> psutil.Process:
    global _handle, _last
    # A handle made before a fork would describe the parent: make one per pid.
    if _handle is None or _handle.pid != os.getpid():
        _handle = psutil.Process()
        _last = None
    return _handle


def _cpu_percent(cpu_seconds: float) -> float | None:
    """Process CPU use since the previous report, in % of one core (None at first)."""
    global _last
    now = time.monotonic()
    previous, _last = _last, (now, cpu_seconds)
    if previous is None or now - previous[0] < 0.5:
        return None
    return 100 * (cpu_seconds - previous[1]) / (now - previous[0])


#: Figures are shared by the reports of one second: when many requests turn
#: slow at once, psutil is asked once, not once per report.
MAX_AGE = 1.0
_cached: tuple[float, int, dict[str, Any]] | None = None


def figures() -> dict[str, Any]:
    """:func:`read`, reused for up to :data:`MAX_AGE` seconds."""
    global _cached
    now = time.monotonic()
    cached = _cached
    if cached is not None and cached[1] == os.getpid() and now - cached[0] < MAX_AGE:
        return dict(cached[2])
    found = read()
    _cached = (now, os.getpid(), found)
    return dict(found)


def read() -> dict[str, Any]:
    """RSS, open files, threads, context switches, CPU and load, or {} on failure.

    ``cpu_seconds`` is the process's CPU time so far; ``cpu_percent`` its CPU
    use since the previous report in this process, in % of one core (None for
    the first report, or one less than half a second after the previous).
    """
    try:
        process = _process()
        with process.oneshot():
            times = process.cpu_times()
            found: dict[str, Any] = {
                "rss": process.memory_info().rss,
                "threads": process.num_threads(),
                "cpu_seconds": round(times.user + times.system, 3),
            }
            found["cpu_percent"] = _cpu_percent(found["cpu_seconds"])
            switches = process.num_ctx_switches()
            found["ctx_switches"] = {
                "voluntary": switches.voluntary,
                "involuntary": switches.involuntary,
            }
            if hasattr(process, "num_fds"):
                found["open_fds"] = process.num_fds()
    except (psutil.Error, OSError):
        return {}
    with contextlib.suppress(OSError):  # no load average on this platform
        found["load"] = [round(x, 2) for x in os.getloadavg()]
    return found
