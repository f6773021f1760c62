"""Telling CPU from waiting: the classifier, and real threads doing each."""

from __future__ import annotations

import threading
import time

import pytest
from django.test import Client

from slowwatch import runtime
from slowwatch.core.frames import Frame
from slowwatch.core.states import (
    CPU,
    DB,
    GIL,
    IO,
    LOCK,
    LOOP,
    OTHER,
    RUNNABLE,
    SLEEP,
    THREAD,
    verdict,
)
from slowwatch.core.threadstate import (
    SLEEP_CALLS,
    SYSCALLS,
    ThreadProbe,
    classify,
    classify_suspended,
)

VIEW = Frame("/app/views.py", 10, "view", "app.views")
DB_FRAME = Frame("/site/django/db/backends/utils.py", 105, "_execute", "django.db.backends.utils")
LOCK_FRAME = Frame("/usr/lib/python3/threading.py", 320, "Condition.wait", "threading")


@pytest.mark.parametrize(
    ("frames", "syscall", "cpu", "others", "expected"),
    [
        ([VIEW, DB_FRAME], "recvfrom", 0.0, 0.0, DB),
        ([VIEW, DB_FRAME], "running", 0.05, 0.0, DB),  # SQLite works on this very thread
        ([VIEW], "running", 0.05, 0.0, CPU),
        ([VIEW], "futex", 0.045, 0.0, CPU),  # spinning, caught waiting for the sampler's GIL
        ([VIEW], "running", None, None, CPU),  # no CPU clock: the instant decides
        ([VIEW], "nanosleep", 0.0, 0.0, SLEEP),
        ([VIEW], "clock_nanosleep", 0.0, 0.0, SLEEP),
        ([VIEW, LOCK_FRAME], "futex", 0.0, 1.0, LOCK),
        ([VIEW], "futex", 0.0, 0.0, LOCK),  # `with lock:` is C code: no frame of its own
        ([VIEW], "futex", 0.0, 0.9, GIL),  # ...unless other threads keep a core busy
        ([VIEW], "recvfrom", 0.0, 0.0, IO),
        ([VIEW], "epoll_wait", 0.0, 0.0, IO),
        ([VIEW], None, 0.049, None, CPU),  # no procfs: the CPU clock decides
        ([VIEW], None, 0.0, None, OTHER),
        ([VIEW, LOCK_FRAME], None, 0.0, None, LOCK),
        ([VIEW], "running", 0.01, 0.0, RUNNABLE),  # ready to run, but given little CPU
    ],
)
def test_classify(frames, syscall, cpu, others, expected):
    assert classify(frames, syscall, cpu, 0.05, others) == expected


@pytest.mark.parametrize(
    ("syscall", "cpu", "queued", "expected"),
    [
        ("running", 0.015, 0.035, RUNNABLE),  # a spinner on a saturated host
        ("futex", 0.01, 0.03, RUNNABLE),  # caught at the GIL, but mostly in the run queue
        ("nanosleep", 0.0, 0.001, SLEEP),  # woke up once, slept the rest
        ("running", 0.04, 0.01, CPU),
        ("recvfrom", 0.005, 0.005, IO),
    ],
)
def test_the_run_queue_tells_waiting_for_a_cpu(syscall, cpu, queued, expected):
    assert classify([VIEW], syscall, cpu, 0.05, 0.0, queued) == expected


ASYNC_VIEW = Frame("/app/views.py", 20, "async_view", "app.views")
TASK_SLEEP = Frame("/usr/lib/python3/asyncio/tasks.py", 640, "sleep", "asyncio.tasks")
HANDOFF = Frame("/site/asgiref/sync.py", 526, "SyncToAsync.__call__", "asgiref.sync")
TO_THREAD = Frame("/usr/lib/python3/asyncio/threads.py", 25, "to_thread", "asyncio.threads")
ASYNC_LOCK = Frame("/usr/lib/python3/asyncio/locks.py", 112, "Lock.acquire", "asyncio.locks")
ASYNC_DB = Frame("/site/psycopg/cursor_async.py", 97, "execute", "psycopg.cursor_async")


@pytest.mark.parametrize(
    ("frames", "running", "expected"),
    [
        ([ASYNC_VIEW], True, LOOP),  # running without awaiting: it holds the loop
        ([ASYNC_VIEW, TASK_SLEEP], False, SLEEP),
        ([ASYNC_VIEW, ASYNC_LOCK], False, LOCK),
        ([ASYNC_VIEW, ASYNC_DB], False, DB),
        # Awaiting its sync code while no thread runs it: not I/O.
        ([ASYNC_VIEW, HANDOFF], False, THREAD),
        ([ASYNC_VIEW, TO_THREAD], False, THREAD),
        ([ASYNC_VIEW], False, IO),  # awaiting a future of its own: a socket, most often
    ],
)
def test_classify_suspended(frames, running, expected):
    assert classify_suspended(frames, running) == expected


def test_verdict_orders_shares():
    assert verdict({"cpu": 2, "db": 8}) == "80% in the database, 20% on CPU"
    assert verdict({}) == ""


@pytest.mark.skipif(not SYSCALLS, reason="procfs syscall numbers known for x86_64 and aarch64")
def test_probe_of_a_real_sleeping_and_a_real_spinning_thread():
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    sleeper = threading.Thread(target=stop.wait, args=(10,))
    spinner = threading.Thread(target=spin)
    sleeper.start()
    spinner.start()
    try:
        time.sleep(0.05)
        asleep = ThreadProbe(sleeper.ident or 0, sleeper.native_id)
        busy = ThreadProbe(spinner.ident or 0, spinner.native_id)
        assert asleep.syscall() == "futex"  # Event.wait is a lock wait
        time.sleep(0.2)
        assert asleep.sample([LOCK_FRAME], 0.2) == LOCK
        busy_states = {busy.sample([VIEW], 0.2) for _ in range(5)}
        assert busy_states & {CPU, GIL, RUNNABLE}, busy_states
        assert busy.cpu_total > asleep.cpu_total
    finally:
        stop.set()
        sleeper.join(5)
        spinner.join(5)


#: A spinning thread is on a CPU, or (when the machine is busy) waiting for one.
CPU_BOUND = {CPU, RUNNABLE}


def finished(collected):
    runtime.flush(5)
    return [r for r in collected.reports if r.kind == "finished"]


@pytest.mark.parametrize(
    ("path", "state"),
    [
        ("/sleep/?s=1", SLEEP),
        ("/cpu/?s=1", CPU),  # or RUNNABLE on a busy machine: see CPU_BOUND
        ("/locked/?s=1", LOCK),
        ("/slow-sql/?rows=3000000", DB),
    ],
)
@pytest.mark.django_db
def test_each_kind_of_slow_gets_its_verdict(collected, path, state):
    assert Client().get(path).status_code == 200
    [done] = finished(collected)
    assert done.profile is not None
    states = dict(done.profile.states)
    top = max(states, key=states.__getitem__)
    assert top in CPU_BOUND if state == CPU else top == state, states
    assert done.profile.cpu_time is not None


@pytest.mark.skipif(not SYSCALLS, reason="procfs syscall numbers known for x86_64 and aarch64")
def test_time_sleep_reads_as_sleeping_on_every_python():
    # 3.11+ sleeps in clock_nanosleep, 3.10 in select(0, NULL, NULL, NULL, timeout).
    sleeper = threading.Thread(target=time.sleep, args=(0.5,))
    sleeper.start()
    try:
        time.sleep(0.1)
        probe = ThreadProbe(sleeper.ident or 0, sleeper.native_id)
        assert probe.syscall() in SLEEP_CALLS
        probe.close()
    finally:
        sleeper.join(5)
