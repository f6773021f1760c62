from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest

from helpers import Collected
from slowwatch import runtime

#: slowwatch's own threads: the monitor, the reporter, one per reporter
#: ("slowwatch-sink-..."), the control and the internal log's.
SLOWWATCH_THREADS = "slowwatch-"
#: asgiref keeps the executor behind sync_to_async alive on purpose.
KEPT_BY_DESIGN = ("ThreadPoolExecutor-",)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """No armed watch, stray thread or queued report outlives a test."""
    before = {t.ident for t in threading.enumerate()}
    yield
    assert runtime.flush(5), "reports still queued after the test"
    watchdog = runtime.running_watchdog()
    if watchdog is not None:
        assert watchdog.active == {}, "a watch is still armed after the test"
    stray = [
        t
        for t in threading.enumerate()
        if t.ident not in before
        and not t.name.startswith(SLOWWATCH_THREADS)
        and not t.name.startswith(KEPT_BY_DESIGN)
        and t.is_alive()
    ]
    for t in stray:
        t.join(2)
    stray = [t for t in stray if t.is_alive()]
    assert not stray, f"threads leaked by the test: {stray}"


@pytest.fixture
def collected(settings: pytest.FixtureRequest) -> Iterator[type[Collected]]:
    """Route reports to :class:`Collected` (plus logging) for one test."""
    Collected.reports = []
    Collected.arrived.clear()
    current = dict(getattr(settings, "SLOWWATCH", {}))
    current["REPORTERS"] = ["helpers.Collected", "slowwatch.reporters.LoggingReporter"]
    settings.SLOWWATCH = current  # type: ignore[attr-defined]
    yield Collected
    runtime.flush(5)


@pytest.fixture
def report_records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="slowwatch.report")
    return caplog


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)  # the kernel completes handshakes; nobody reads
        yield listener.getsockname()[1]
