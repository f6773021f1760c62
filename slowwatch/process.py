"""Figures about the whole process, from psutil, when a request turns slow."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import psutil

_handle: psutil.Process | None = None


def _process() -> psutil.Process:
    global _handle
    # A handle made before a fork would describe the parent: make one per pid.
    if _handle is None or _handle.pid != os.getpid():
        _handle = psutil.Process()
        _handle.cpu_percent(None)  # starts the measuring window
    return _handle


def figures() -> dict[str, Any]:
    """RSS, open files, threads, context switches, CPU % and load, or {} on failure.

    ``cpu_percent`` is the process's CPU use since the previous call in this
    process (psutil's own bookkeeping), in % of one core.
    """
    try:
        process = _process()
        with process.oneshot():
            found: dict[str, Any] = {
                "rss": process.memory_info().rss,
                "threads": process.num_threads(),
                "cpu_percent": process.cpu_percent(None),
            }
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


def describe(found: dict[str, Any]) -> str:
    """One line: ``RSS 52.1 MB, 12 threads, 33 open files, CPU 85%, load 0.52``."""
    if not found:
        return ""
    parts = [f"RSS {found['rss'] / 1e6:.1f} MB", f"{found['threads']} threads"]
    if "open_fds" in found:
        parts.append(f"{found['open_fds']} open files")
    parts.append(f"CPU {found['cpu_percent']:.0f}%")
    if "load" in found:
        parts.append(f"load {found['load'][0]}")
    return ", ".join(parts)
