"""The watchdog core, driven by a fake clock (no monitor thread) where it can be."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from slowwatch.core.locate import LOOP_MODE, where
from slowwatch.core.records import RequestInfo, Snapshot
from slowwatch.core.watchdog import Watchdog


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def describe(subject: Any) -> RequestInfo | None:
    return RequestInfo(method="GET", path=str(subject))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def snapshots() -> list[Snapshot]:
    return []


@pytest.fixture
def watchdog(clock: FakeClock, snapshots: list[Snapshot]) -> Iterator[Watchdog]:
    wd = Watchdog(on_slow=snapshots.append, read_subject=describe, clock=clock)
    # A heartbeat in the far future keeps `arm` from starting the real thread:
    # these tests call poll() themselves.
    wd.stale_at = float("inf")
    yield wd
    wd.stop()


def blocked_view(
    watchdog: Watchdog, path: str, armed: threading.Event, release: threading.Event
) -> None:
    watchdog.arm(path, 5.0)
    armed.set()
    release.wait(10)  # the line a report must point at
    watchdog.disarm(threading.get_ident())


@pytest.fixture
def serving(watchdog: Watchdog) -> Iterator[Any]:
    """Start a thread that arms a 5 s watch and blocks until released."""
    threads: list[tuple[threading.Thread, threading.Event]] = []

    def start(path: str = "/slow") -> threading.Thread:
        armed, release = threading.Event(), threading.Event()
        thread = threading.Thread(target=blocked_view, args=(watchdog, path, armed, release))
        thread.start()
        assert armed.wait(5)
        threads.append((thread, release))
        return thread

    yield start
    for thread, release in threads:
        release.set()
        thread.join(5)


def test_fires_at_the_deadline_and_not_before(watchdog, clock, snapshots, serving):
    serving()
    clock.now += 4.999
    watchdog.poll(clock.now)
    assert snapshots == []
    clock.now += 0.002
    watchdog.poll(clock.now)
    assert len(snapshots) == 1
    snap = snapshots[0]
    assert snap.request.path == "/slow"
    assert snap.threshold == 5.0
    assert snap.late_by == pytest.approx(0.001)
    assert snap.pid == os.getpid()
    view = next(f for f in snap.stack.frames if f.function == "blocked_view")
    assert view.filename == __file__
    lines, first = inspect.getsourcelines(blocked_view)
    assert "release.wait(10)" in lines[view.lineno - first]
    # Innermost last: the thread is inside Event.wait, called from the view.
    names = [f.function.rsplit(".", 1)[-1] for f in snap.stack.frames]
    assert names.index("blocked_view") < names.index("wait")


def test_fires_once(watchdog, clock, snapshots, serving):
    serving()
    for _ in range(5):
        clock.now += 3
        watchdog.poll(clock.now)
    assert len(snapshots) == 1


def test_disarm_before_the_deadline_means_no_report(watchdog, clock, snapshots):
    watchdog.arm("/quick", 5.0)
    watchdog.poll(clock.now)
    clock.now += 1
    assert watchdog.disarm(threading.get_ident()) is None
    clock.now += 10
    watchdog.poll(clock.now)
    assert snapshots == []
    assert watchdog.active == {}


def test_poll_sleeps_until_the_next_deadline(watchdog, clock):
    watchdog.require(5.0)
    watchdog.arm("/a", 0.3, task="task-a")
    assert watchdog.poll(clock.now) == pytest.approx(0.3)
    watchdog.disarm("task-a")


def test_ten_thousand_watches(watchdog, clock, snapshots):
    keys = [f"task-{i}" for i in range(10_000)]
    for i, key in enumerate(keys):
        watchdog.arm(f"/r/{i}", 1.0 + (i % 10) / 10, task=key)
    watchdog.poll(clock.now)
    # Half of them end in time; the others must fire, each exactly once.
    for key in keys[::2]:
        watchdog.disarm(key)
    clock.now += 5
    watchdog.poll(clock.now)
    # Tasks that are plain strings have no frames; they are still reported.
    assert sorted(s.request.path for s in snapshots) == sorted(
        f"/r/{i}" for i in range(1, 10_000, 2)
    )
    for key in keys[1::2]:
        claim = watchdog.disarm(key)
        assert claim is not None and claim.reported
    assert watchdog.active == {}
    watchdog.poll(clock.now)
    assert len(watchdog._heap) <= 64


def test_lazy_cancel_keeps_the_heap_small(watchdog, clock):
    for i in range(5_000):
        watchdog.arm(f"/r/{i}", 25.0, task=i)
        if i % 50 == 0:
            watchdog.poll(clock.now)
        watchdog.disarm(i)
    watchdog.poll(clock.now)
    assert len(watchdog._heap) <= 64


def test_a_reused_thread_never_reports_the_previous_request(clock, snapshots):
    """The thread finishes request A and starts B between A's snapshot and its report."""
    key = "worker-1"
    swapped: list[str] = []

    def racing_describe(subject: Any) -> RequestInfo:
        if subject == "/a" and not swapped:
            # What a reused thread does while the monitor looks at A's stack.
            wd.disarm(key)
            wd.arm("/b", 5.0, task=key)
            swapped.append("/b")
        return RequestInfo("GET", str(subject))

    wd = Watchdog(on_slow=snapshots.append, read_subject=racing_describe, clock=clock)
    wd.stale_at = float("inf")
    wd.arm("/a", 5.0, task=key)
    wd.poll(clock.now)
    clock.now += 5.5
    wd.poll(clock.now)
    assert snapshots == [], "A's snapshot was taken while B may already have run"
    clock.now += 5.0
    wd.poll(clock.now)
    assert [s.request.path for s in snapshots] == ["/b"]
    wd.disarm(key)
    wd.stop()


def test_retune_moves_the_deadline(watchdog, clock, snapshots):
    watchdog.arm("/r", 5.0, task="t")
    watchdog.poll(clock.now)
    watchdog.retune("t", 0.5)
    clock.now += 0.6
    watchdog.poll(clock.now)
    assert [s.threshold for s in snapshots] == [0.5]
    clock.now += 10
    watchdog.poll(clock.now)
    assert len(snapshots) == 1
    watchdog.disarm("t")


def test_nested_arm_on_the_same_thread_is_covered_by_the_outer_watch(watchdog):
    assert watchdog.arm("/outer", 5.0) is not None
    assert watchdog.arm("/inner", 5.0) is None
    watchdog.disarm(threading.get_ident())


def recording() -> tuple[Watchdog, list[Snapshot], threading.Event]:
    """A watchdog with its real thread and clock, keeping what it reports."""
    fired = threading.Event()
    got: list[Snapshot] = []

    def on_slow(snapshot: Snapshot) -> None:
        got.append(snapshot)
        fired.set()

    return Watchdog(on_slow=on_slow, read_subject=describe), got, fired


def test_real_thread_detects_on_time():
    """With the real monitor thread and clock: fired within 50 ms of the deadline."""
    wd, got, fired = recording()
    try:
        wd.require(0.2)
        wd.arm("/real", 0.2)
        assert fired.wait(5)
        assert got[0].late_by < 0.05
        wd.disarm(threading.get_ident())
    finally:
        wd.stop()


def _fork_and_check(wd: Watchdog, got: list[Snapshot], fired: threading.Event) -> int:
    with warnings.catch_warnings():
        # 3.12+ warns about forking a process that has threads; that is the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            got.clear()
            fired.clear()
            wd.lock.acquire(timeout=1) and wd.lock.release()  # fresh, not inherited held
            wd.arm("/child", 0.1)
            if fired.wait(5) and got and got[0].pid == os.getpid() and wd.running:
                code = 0
            wd.disarm(threading.get_ident())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_forked_child_gets_its_own_monitor():
    wd, got, fired = recording()
    try:
        wd.require(0.1)
        wd.arm("/parent", 0.1)
        assert fired.wait(5)
        wd.disarm(threading.get_ident())
        # Fork while another thread holds the watchdog's lock.
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with wd.lock:
                holding.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        assert holding.wait(5)
        try:
            assert _fork_and_check(wd, got, fired) == 0
        finally:
            release.set()
            holder.join(5)
    finally:
        wd.stop()


def test_a_finished_request_is_not_kept_alive_past_the_next_tick(watchdog, clock):
    import gc
    import weakref

    class Request:
        pass

    request = Request()
    alive = weakref.ref(request)
    watchdog.arm(request, 25.0, task="t")
    watchdog.poll(clock.now)  # the monitor files it in its heap
    watchdog.disarm("t")
    del request
    clock.now += watchdog.tick
    watchdog.poll(clock.now)
    gc.collect()
    assert alive() is None


def test_a_reported_request_is_sampled_until_it_ends(watchdog, clock, snapshots, serving):
    thread = serving()
    clock.now += 5.01
    watchdog.poll(clock.now)
    assert len(snapshots) == 1
    key = thread.ident
    claim = watchdog.active[key][3]
    for _ in range(40):
        clock.now += watchdog.sample_interval
        watchdog.poll(clock.now)
    # Every sample of a thread parked on one line is the same stack: one entry.
    assert claim.profile.samples == 41
    assert len(claim.profile.counts) == 1
    settled = watchdog.settle(claim)
    assert settled is claim and claim.final is not None
    clock.now += watchdog.sample_interval
    watchdog.poll(clock.now)
    assert claim.final.samples == 41, "no sample is added once the claim is closed"
    [(leaf, share)] = claim.final.hottest(1)
    assert leaf[1].rsplit(".", 1)[-1] == "wait" and share == 1.0


def test_sampling_slows_down_past_its_cpu_budget(clock, snapshots, serving):
    wd = Watchdog(on_slow=snapshots.append, read_subject=describe, clock=clock, cpu_budget=1e-9)
    wd.stale_at = float("inf")
    ready, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=blocked_view, args=(wd, "/x", ready, release))
    thread.start()
    try:
        assert ready.wait(5)
        clock.now += 5.01
        wd.poll(clock.now)
        for _ in range(30):
            clock.now += 0.05
            wd.poll(clock.now)
        claim = wd.active[thread.ident][3]
        assert claim.profile.throttled
        assert wd.sampler.budget.interval > wd.sample_interval
    finally:
        release.set()
        thread.join(5)
        wd.stop()


def test_no_file_descriptor_outlives_a_reported_request(watchdog, clock, snapshots, serving):
    import os

    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    thread = serving()
    clock.now += 5.01
    watchdog.poll(clock.now)
    claim = watchdog.active[thread.ident][3]
    watchdog.settle(claim)
    watchdog.active.pop(thread.ident)
    clock.now += 1
    watchdog.poll(clock.now)  # notices the request ended, closes its probe
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) <= before
    assert snapshots and watchdog.sampler.sampled == {}


def test_a_child_forked_without_hooks_loses_no_watch_of_its_first_requests():
    """uWSGI forks in C, so no at-fork hook runs: the new pid is noticed when
    the first requests arm. Several threads that file their watch and find
    the pid changed at once: one starts afresh, and every watch is reported."""
    wd, got, _ = recording()
    try:
        wd.require(0.2)
        # What such a child looks like: another pid, no monitor, no heartbeat.
        wd.pid, wd.stale_at = -1, -float("inf")
        start = threading.Barrier(8)

        def request(n: int) -> None:
            start.wait()
            wd.arm(f"/first/{n}", 0.2)
            time.sleep(0.6)
            wd.disarm(threading.get_ident())

        threads = [threading.Thread(target=request, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(s.request.path for s in got) == sorted(f"/first/{n}" for n in range(8))
        assert wd.pid == os.getpid() and wd.running
    finally:
        wd.stop()


def functions(frame: Any) -> list[str]:
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names


def test_a_running_task_is_never_given_the_stack_of_the_task_before_it(watchdog: Watchdog):
    """The monitor reads every thread's frames once per round, then looks at
    each watch: by then another task may be running on the loop. The stack it
    takes for a running task is that task's, whatever ``frames`` held."""
    first_runs, first_may_go, second_runs, second_may_go = (threading.Event() for _ in range(4))
    armed: list[Any] = []

    async def first() -> None:
        first_runs.set()
        first_may_go.wait(10)  # blocks the loop: its stack is this task's

    async def second() -> None:
        task = asyncio.current_task()
        armed.append((task, watchdog.arm("/second", 5.0, task)))
        second_runs.set()
        second_may_go.wait(10)

    async def both() -> None:
        await asyncio.gather(first(), second())

    loop = threading.Thread(target=asyncio.run, args=(both(),))
    loop.start()
    try:
        assert first_runs.wait(10)
        frames = sys._current_frames()  # while ``first`` runs
        first_may_go.set()
        assert second_runs.wait(10)
        task, watch = armed[0]
        at = where(watchdog, task, watch, frames)
        assert at.mode == LOOP_MODE
        names = functions(at.frame)
        assert "second" in names and "first" not in names, names
    finally:
        first_may_go.set()
        second_may_go.set()
        loop.join(10)


async def _descend(n: int, spin: int) -> None:
    if n > 0:
        return await _descend(n - 1, spin)
    for _ in range(3):
        for _ in range(spin):  # holds the loop: the task is seen running
            pass
        await asyncio.sleep(0.001)


async def _deep(n: int, spin: int) -> None:
    await _descend(n, spin)


def test_tasks_looked_at_as_they_run_and_return_are_only_given_their_own_stacks(
    watchdog: Watchdog,
) -> None:
    """Fifty tasks at a time, each ``n`` coroutines deep, run, sleep and return
    while another thread looks at them as the monitor does, on a real loop. A
    look can catch a task on its way down or back up its chain: a shallower
    stack, its own at that instant. Never a deeper one (another task's), and
    asleep at the bottom always exactly its own depth."""
    from slowwatch.core.locate import WAITING_MODE
    from slowwatch.core.snapshots import take_stack

    depth_of: dict[Any, int] = {}
    watches: dict[Any, Any] = {}
    wrong: list[tuple[str, int, int]] = []
    looks = {"asleep": 0, "other": 0}
    done = threading.Event()

    def look() -> None:
        while not done.is_set():
            frames = sys._current_frames()
            for task, watch in list(watches.items()):
                at = where(watchdog, task, watch, frames)
                waiting = at.mode == WAITING_MODE
                stack = take_stack(watchdog, task, at.frame, waiting=waiting, source=at.source)
                names = [frame.function for frame in stack.frames]
                if "_deep" not in names:
                    continue
                found, own = names.count("_descend"), depth_of[task] + 1
                asleep = names[-1] == "sleep"
                looks["asleep" if asleep else "other"] += 1
                if found > own or (asleep and found != own):
                    wrong.append((at.mode, own, found))
            del frames

    async def one(n: int, spin: int) -> None:
        task = asyncio.current_task()
        depth_of[task] = n
        watches[task] = watchdog.arm(f"/{n}", 5.0, task)
        try:
            await _deep(n, spin)
        finally:
            watchdog.disarm(task)
            del watches[task]

    async def rounds() -> None:
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            await asyncio.gather(*(one(n % 25 + 1, (n % 3) * 500) for n in range(50)))

    looker = threading.Thread(target=look)
    looker.start()
    try:
        asyncio.run(rounds())
    finally:
        done.set()
        looker.join(10)
    assert looks["asleep"] > 100, looks
    assert not wrong, (len(wrong), wrong[:5], looks)


def test_a_running_greenlet_is_never_given_the_stack_of_the_greenlet_before_it(
    watchdog: Watchdog,
):
    """The same under gevent: each request is a greenlet of one OS thread."""
    greenlet = pytest.importorskip("greenlet")
    first_runs, first_may_go, second_runs, second_may_go = (threading.Event() for _ in range(4))
    armed: list[Any] = []
    glets: dict[str, Any] = {}

    def first() -> None:
        first_runs.set()
        first_may_go.wait(10)  # blocks the thread: its stack is this greenlet's
        glets["second"].switch()

    def second() -> None:
        glet = greenlet.getcurrent()
        armed.append([time.monotonic(), 5.0, "/second", None, None, threading.get_ident(), glet])
        second_runs.set()
        second_may_go.wait(10)

    def serve() -> None:
        glets["first"], glets["second"] = greenlet.greenlet(first), greenlet.greenlet(second)
        glets["first"].switch()  # back here when ``second`` ends
        glets["first"].switch()  # and ``first`` ends too

    loop = threading.Thread(target=serve)
    loop.start()
    try:
        assert first_runs.wait(10)
        frames = sys._current_frames()  # while ``first`` runs
        first_may_go.set()
        assert second_runs.wait(10)
        at = where(watchdog, id(armed[0][-1]), armed[0], frames)
        assert at.mode == LOOP_MODE
        names = functions(at.frame)
        assert "second" in names and "first" not in names, names
    finally:
        first_may_go.set()
        second_may_go.set()
        loop.join(10)
