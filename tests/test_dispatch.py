from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from slowwatch.core.dispatch import Dispatcher
from slowwatch.core.errors import InternalLog, errors


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_full_queue_drops_counts_and_says_so(caplog):
    caplog.set_level(logging.WARNING, logger="slowwatch.internal")
    started, release = threading.Event(), threading.Event()
    delivered: list[int] = []

    def deliver(item: int) -> None:
        started.set()
        release.wait(10)
        delivered.append(item)

    d: Dispatcher[int] = Dispatcher(deliver, maxsize=3)
    try:
        assert d.submit(0)
        assert started.wait(5)  # item 0 is being delivered; the queue is empty
        t0 = time.perf_counter()
        results = [d.submit(i) for i in range(1, 7)]
        assert time.perf_counter() - t0 < 0.05, "submit must never block"
        assert results == [True, True, True, False, False, False]
        assert d.counts["dropped:queue_full"] == 3
        assert errors.flush(5)
        drops = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(drops) == 1, "drops are logged once a minute, not once each"
        release.set()
        assert d.flush(5)
        assert delivered == [0, 1, 2, 3]
        assert d.counts["delivered"] == 4
    finally:
        release.set()
        d.stop()


def test_a_failing_deliver_is_logged_once_a_minute_and_does_not_stop_the_thread(caplog):
    caplog.set_level(logging.ERROR, logger="slowwatch.internal")
    clock = FakeClock()
    seen: list[int] = []

    def deliver(item: int) -> None:
        seen.append(item)
        raise ValueError(f"bad {item}")

    log = InternalLog(clock=clock)
    d: Dispatcher[int] = Dispatcher(deliver, errors=log)
    try:
        for i in range(3):
            d.submit(i)
        assert d.flush(5)
        clock.now += 61
        d.submit(3)
        assert d.flush(5)
    finally:
        d.stop()
    assert seen == [0, 1, 2, 3]
    assert d.counts["failed"] == 4 and d.counts["delivered"] == 0
    assert log.flush(5)
    logged = [r for r in caplog.records if r.name == "slowwatch.internal"]
    assert len(logged) == 2
    assert "2 more like it" in logged[1].getMessage()
    assert "ValueError: bad 0" in logged[0].getMessage()  # with its traceback


def test_exit_waits_at_most_two_seconds_for_pending_reports():
    script = textwrap.dedent(
        """
        import logging, sys, time
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
        from slowwatch.core.dispatch import Dispatcher
        d = Dispatcher(lambda item: time.sleep(0.5))
        for i in range(20):
            d.submit(i)
        print("submitted", flush=True)
        """
    )
    t0 = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    took = time.monotonic() - t0
    assert run.returncode == 0, run.stderr
    assert "submitted" in run.stdout
    assert took < 4.5, took  # interpreter start + the 2 s cap
    assert "(shutdown)" in run.stderr


def test_flush_of_an_unused_dispatcher_is_immediate():
    d: Dispatcher[int] = Dispatcher(lambda item: None)
    assert d.flush(0.1)


def test_a_dropped_item_is_followed_by_a_notice():
    started, release = threading.Event(), threading.Event()
    delivered: list[str] = []

    def deliver(item: str) -> None:
        started.set()
        release.wait(10)
        delivered.append(item)

    d: Dispatcher[str] = Dispatcher(deliver, maxsize=1, on_drop=lambda item: f"lost {item}")
    try:
        d.submit("a")
        assert started.wait(5)
        assert d.submit("b")
        assert not d.submit("c")
        release.set()
        assert d.flush(5)
        # The notice goes first, as soon as the reporter thread is free.
        assert delivered == ["a", "lost c", "b"]
    finally:
        release.set()
        d.stop()


def test_reporters_release_what_they_hold_when_the_queue_runs_empty():
    gate = threading.Event()
    events: list[str] = []

    def deliver(item: str) -> None:
        gate.wait(5)
        events.append(item)

    queue: Dispatcher[str] = Dispatcher(deliver, on_idle=lambda: events.append("idle"))
    for item in ("a", "b", "c"):
        queue.submit(item)
    gate.set()
    assert queue.flush(5)  # flush also waits for the idle call
    assert events == ["a", "b", "c", "idle"]  # once, after the burst
    queue.stop()


# The thread's death is the point: pytest would report it as a warning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_thread_that_died_is_started_again_and_counted():
    log = InternalLog()
    delivered: list[int] = []

    def deliver(item: int) -> None:
        if item == 0:
            raise SystemExit  # gets past every guard: the thread ends
        delivered.append(item)

    d: Dispatcher[int] = Dispatcher(deliver, errors=log, exit_timeout=None)
    try:
        d.submit(0)
        deadline = time.monotonic() + 5
        while d.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not d.running
        assert d.submit(1)
        assert d.flush(5)
        assert delivered == [1]
        assert d.counts["restarted"] == 1
        assert log.counts["slowwatch-reporter: thread died"] == 1
    finally:
        d.stop()


def test_stop_without_waiting_still_ends_the_thread_and_runs_its_exit() -> None:
    """The process's stop gives an idle sink no time (``stop(0)``): its thread
    ends anyway, and releases what it holds on the way out."""
    for _ in range(20):
        exited = threading.Event()
        queue: Dispatcher[int] = Dispatcher(
            lambda item: None, name="slowwatch-test", exit_timeout=None, on_exit=exited.set
        )
        assert queue.submit(1) and queue.flush(5)
        thread = queue._thread
        queue.stop(0.0)
        assert exited.wait(5)
        assert thread is not None
        thread.join(5)
        assert not thread.is_alive()


def test_a_child_forked_without_hooks_loses_no_item_queued_at_once() -> None:
    """uWSGI forks in C: the new pid is noticed on the first submit. Threads
    that submit at once start afresh once, and every item is delivered."""
    delivered: list[int] = []
    d: Dispatcher[int] = Dispatcher(delivered.append, exit_timeout=None)
    try:
        d._pid = -1  # what such a child looks like
        start = threading.Barrier(8)

        def submit(n: int) -> None:
            start.wait()
            assert d.submit(n)

        threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert d.flush(5)
        assert sorted(delivered) == list(range(8))
        assert d.counts["submitted"] == d.counts["delivered"] == 8
    finally:
        d.stop(1)
