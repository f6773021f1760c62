"""A sink that hangs, raises or logs slowly costs only itself: never a request,
never the other sinks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from helpers import Collected, Hanging
from slowwatch import runtime
from slowwatch.core.errors import errors


@pytest.fixture
def hanging() -> Iterator[type[Hanging]]:
    Hanging.release.clear()
    Hanging.entered.clear()
    yield Hanging
    Hanging.release.set()
    assert runtime.flush(10)


def kinds(timeout: float = 5) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(Collected.reports) < 2:
        time.sleep(0.01)
    return [r.kind for r in Collected.reports]  # type: ignore[attr-defined]


def test_a_hanging_reporter_holds_up_neither_requests_nor_the_others(
    settings: Any, hanging: type[Hanging]
) -> None:
    Collected.reports = []
    settings.SLOWWATCH = {
        **settings.SLOWWATCH,
        "REPORTERS": ["helpers.Hanging", "helpers.Collected"],
        "QUEUE_SIZE": 4,
    }
    client = Client()
    # The same request, never reported (its threshold is 5 s): what it costs on
    # this machine now, with no reporter involved.
    started = time.monotonic()
    assert client.get("/patient/?s=0.4").status_code == 200
    control = time.monotonic() - started
    # Every request below is held until it was reported (reported=1): only
    # 0.05-0.1 s over its threshold, it could end unreported when the monitor
    # runs late on a busy machine, and the counts below need every report.
    started = time.monotonic()
    assert client.get("/sleep/?s=0.4&reported=1").status_code == 200
    # One that waited for the hanging sink would wait for its 30 s: half a
    # second over the control is a margin for a busy machine, far below that.
    assert time.monotonic() - started < control + 0.5
    assert hanging.entered.wait(5)
    assert kinds() == ["slow", "finished"]
    # More slow requests than the hanging sink's queue holds: it drops and
    # counts, the others get every report.
    for _ in range(3):
        assert client.get("/sleep/?s=0.35&reported=1").status_code == 200
    deadline = time.monotonic() + 5
    while len(Collected.reports) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(Collected.reports) == 8
    counts = runtime.counters()
    assert (
        counts["Hanging queue submitted"] + counts.get("Hanging queue dropped:queue_full", 0) == 8
    )
    assert counts.get("Hanging queue dropped:queue_full", 0) >= 3
    assert counts["Collected queue delivered"] == 8
    hanging.release.set()
    assert runtime.flush(10)
    counts = runtime.counters()
    assert counts["Hanging queue delivered"] + counts["Hanging queue dropped:queue_full"] == 8


class Raising(logging.Handler):
    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        raise RuntimeError("this handler raises")


class Sleeping(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(2)


def test_a_raising_log_handler_fails_no_request_and_no_other_sink(settings: Any) -> None:
    Collected.reports = []
    settings.SLOWWATCH = {
        **settings.SLOWWATCH,
        "REPORTERS": ["slowwatch.reporters.LoggingReporter", "helpers.Collected"],
    }
    report_logger = logging.getLogger("slowwatch.report")
    handler = Raising()
    report_logger.addHandler(handler)
    try:
        for _ in range(3):
            # Held until it was reported (reported=1): only 0.05 s over its
            # threshold, it could end unreported when the monitor runs late.
            assert Client().get("/sleep/?s=0.35&reported=1").status_code == 200
        assert runtime.flush(10)
    finally:
        report_logger.removeHandler(handler)
    assert [r.kind for r in Collected.reports] == ["slow", "finished"] * 3  # type: ignore[attr-defined]
    counts = runtime.counters()
    assert counts["LoggingReporter queue failed"] == 6
    assert counts.get("LoggingReporter queue delivered", 0) == 0


def test_a_slow_handler_on_the_internal_logger_stalls_no_request(settings: Any) -> None:
    Collected.reports = []
    settings.SLOWWATCH = {
        **settings.SLOWWATCH,
        "REPORTERS": ["helpers.Broken", "helpers.Collected"],
    }
    internal = logging.getLogger("slowwatch.internal")
    handler = Sleeping()
    internal.addHandler(handler)
    errors.interval = 0.0  # every failure is due for logging
    try:
        # The same request, never reported (its threshold is 5 s): what it
        # costs on this machine now, with no reporter and no failure involved.
        started = time.monotonic()
        assert Client().get("/patient/?s=0.35").status_code == 200
        control = time.monotonic() - started
        durations = []
        for _ in range(3):
            started = time.monotonic()
            # Held until it was reported (reported=1): only 0.05 s over its
            # threshold, it could end unreported when the monitor runs late.
            assert Client().get("/sleep/?s=0.35&reported=1").status_code == 200
            durations.append(time.monotonic() - started)
        # One that waited for the handler would wait its 2 s: half a second
        # over the control is a margin for a busy machine, far below that.
        assert max(durations) < control + 0.5, (durations, control)
        assert runtime.flush(10)
        assert len(Collected.reports) == 6
        assert threading.active_count() < 50
    finally:
        errors.interval = 60.0
        internal.removeHandler(handler)
        errors.flush(10)
