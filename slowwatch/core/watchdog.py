"""The watchdog: one monitor thread per process that notices requests running late.

How a watch travels:

* The request thread files a *watch*, a plain list ``[started, threshold,
  subject, claim, sql(, thread_id)]`` (:mod:`slowwatch.core.watch`), under a
  key in :attr:`Watchdog.active` (its thread ident, or its asyncio task) and
  deletes it when done. No lock, no wake-up, no object beyond that list: a
  fast request's watch is freed on the spot.
* Every ``tick`` (never longer than half the smallest threshold in use, so each
  watch is seen before its deadline) the monitor thread copies ``active`` and
  pushes the watches it has not seen yet onto a deadline heap that it alone
  owns. It sleeps until the earliest deadline, then snapshots the stacks of the
  watches that are due (:mod:`slowwatch.core.snapshots`). Finished watches
  leave the heap lazily (lazy cancel) and the heap is compacted when it
  outgrows ``active``.
* Whether a due watch is still *the same request* is decided by identity:
  ``active[key] is watch``. A thread that moved on to another request has
  another list there, so a snapshot is never reported for the wrong request.
* A request reported slow is sampled until it ends
  (:mod:`slowwatch.core.sampling`).

Reporting a snapshot and finishing a request race each other; the watch's
claim slot and :meth:`Watchdog.settle` resolve that race (see
:func:`slowwatch.core.snapshots.report_due`).

This module imports nothing from Django: the edge hands it an opaque
``subject`` per watch and a ``read_subject`` callable to read it.
"""

from __future__ import annotations

import heapq
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import CodeType, FrameType
from typing import Any

from slowwatch.core import native, snapshots
from slowwatch.core.errors import InternalLog
from slowwatch.core.errors import errors as process_errors
from slowwatch.core.forks import Adoption, reset_in_child
from slowwatch.core.records import Snapshot
from slowwatch.core.sampling import Sampler
from slowwatch.core.watch import CLAIM, STARTED, SUBJECT, THRESHOLD, Claim, Watch, thread_of

#: Longest sleep of an idle monitor.
MAX_TICK = 1.0
#: Without a heartbeat for this long, arming checks the monitor is alive (after
#: a fork without fork hooks, as under uWSGI, the thread is simply gone).
STALE_AFTER = 10.0
#: Seconds between two calls of :attr:`Watchdog.housekeeping`.
HOUSEKEEPING_PERIOD = 10.0


def tick_for(thresholds: Iterable[float]) -> float:
    """How often the monitor must look so that it sees each watch before its deadline."""
    return min([MAX_TICK, *(t / 2 for t in thresholds)])


class Watchdog:
    """Arms deadlines for requests and snapshots the ones that pass them.

    :param on_slow: called with each :class:`~slowwatch.core.records.Snapshot`
        taken, on the monitor thread. It must not block (hand it to a queue).
    :param read_subject: reads what a report needs from a watch's subject, on
        the monitor thread; must run no user code. ``None`` means "gone".
    :param on_claim: told the report id of a subject that was just reported
        (the edge puts it on the request, for correlation).
    :param clock: a monotonic clock; tests inject a fake one and call :meth:`poll`.

    The other keyword arguments are those of :meth:`configure`.
    """

    def __init__(
        self,
        *,
        on_slow: Callable[[Snapshot], object],
        read_subject: Callable[[Any], Any],
        on_claim: Callable[[Any, str], object] = lambda subject, report_id: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        errors: InternalLog | None = None,
        cpu_budget: float = 0.01,
        sample_interval: float = 0.05,
        max_samples: int = 12_000,
        escalations: tuple[float, ...] = (),
    ) -> None:
        self.on_slow = on_slow
        self.read_subject = read_subject
        self.on_claim = on_claim
        self.clock = clock
        self.wall_clock = wall_clock
        self.errors = errors or process_errors
        #: Share of one core the monitor may spend sampling before it slows down.
        self.cpu_budget = cpu_budget
        #: key -> watch of every request in flight. Request threads add and
        #: delete entries (single dict operations, atomic); the monitor only reads.
        self.active: dict[object, Watch] = {}
        #: Code objects of the frames where a request's own stack begins
        #: (slowwatch's middleware); what lies above them is server plumbing.
        self.boundary: frozenset[CodeType] = frozenset()
        #: The edge's answer to "which thread runs this task's sync code now"
        #: (asgiref's executor of the task's thread-sensitive context, under
        #: ASGI), given the watch's holder; None where there is no such thing.
        self.sync_thread: Callable[[Any], int | None] | None = None
        self.tick = MAX_TICK
        self.configure(
            sample_interval=sample_interval, max_samples=max_samples, escalations=escalations
        )
        #: Called on the monitor thread every ``housekeeping_period`` seconds,
        #: first on its first poll. It must return at once (hand work elsewhere).
        self.housekeeping: Callable[[], object] | None = None
        self.housekeeping_period = HOUSEKEEPING_PERIOD
        self._adoption = Adoption()
        self._reset()
        # A child must not inherit our lock held or our (dead) thread; uWSGI
        # without fork hooks is caught by the heartbeat check instead.
        reset_in_child(self._reset)

    def configure(
        self,
        *,
        sample_interval: float,
        max_samples: int,
        escalations: tuple[float, ...],
        capture_locals: bool = False,
        boundary: Iterable[CodeType] = (),
        thresholds: Iterable[float] = (),
        starts: Iterable[CodeType] | None = None,
    ) -> None:
        """Settings; they apply to requests that turn slow from now on.

        ``thresholds`` are every threshold in use: the monitor's tick follows
        the smallest, up or down.
        """
        #: Render the locals of the project's frames in the ``slow`` snapshot.
        self.capture_locals = capture_locals
        #: Seconds between samples of a slow request (while the CPU budget allows).
        self.sample_interval = sample_interval
        self.max_samples = max_samples
        #: Multiples of the threshold at which a ``still_slow`` report goes out.
        self.escalations = tuple(sorted(escalations))
        self.boundary = frozenset(boundary)
        #: Code objects of the frames where a request's own code starts running
        #: (whether or not what is above them is hidden): found on a thread's
        #: stack, they say the request is the one running there.
        self.starts = self.boundary if starts is None else frozenset(starts)
        sampler: Sampler | None = getattr(self, "sampler", None)
        if sampler is not None:
            sampler.budget.base = sampler.budget.interval = sample_interval
        self.set_tick(tick_for(thresholds))

    def _reset(self, keep_watches: bool = False) -> None:
        """Fresh state for this process. ``keep_watches``: for a fork noticed
        late (no hooks ran), the watches this process's threads filed since
        the fork stay; only those of threads that are not here are dropped."""
        #: Held by the monitor while it decides about a watch and while it adds
        #: samples; :meth:`settle` takes it to learn the outcome.
        self.lock = native.allocate_lock()
        self._wake = native.Event()
        # Cleared in place: the middleware holds a reference to this dict.
        if keep_watches:
            filed = list(self.active.items())
            here = sys._current_frames().keys()
            for key, watch in filed:
                if thread_of(key, watch) not in here:
                    self.active.pop(key, None)
        else:
            self.active.clear()
        self._heap: list[tuple[float, int, object, Watch]] = []
        self._seen: dict[object, Watch] = {}
        self._seq = itertools.count()
        old: Sampler | None = getattr(self, "sampler", None)
        if old is not None:
            old.close()  # inherited over a fork: the parent's threads
        self.sampler = Sampler(self, self.cpu_budget)
        self._next_housekeeping = -float("inf")
        self._thread: threading.Thread | native.NativeThread | None = None
        self._stopping = False
        #: Monotonic time after which arming checks that the monitor is alive:
        #: its last poll plus STALE_AFTER. Kept as a sum so that the request
        #: path compares two floats and computes nothing.
        self.stale_at = -float("inf")
        # Last: other threads of a child forked without hooks wait for this.
        self.pid = os.getpid()

    # -- request side ---------------------------------------------------
    # The middleware's sync request path inlines arm and disarm (a method
    # call there is a large share of its cost); these are the same steps for
    # asynchronous requests and for tests.

    def arm(
        self, subject: object, threshold: float, task: object = None, holder: object = None
    ) -> Watch | None:
        """File a watch for the calling thread (or ``task``). No I/O, lock or logging.

        ``holder``, for a task: what :attr:`sync_thread` takes to find the
        thread running the task's sync code. Returns None when this thread or
        task is already watched (a nested handler): the outer watch covers it.
        """
        now = self.clock()
        ident = threading.get_ident()
        key: object
        watch: Watch
        if task is None:
            key, watch = ident, [now, threshold, subject, None, None]
        else:
            key, watch = task, [now, threshold, subject, None, None, ident, holder]
        if self.active.setdefault(key, watch) is not watch:
            return None
        if now > self.stale_at:
            self.ensure_running()
        return watch

    def disarm(self, key: object, watch: Watch | None = None) -> Claim | None:
        """End the watch under ``key``; its Claim when a slow report went out.

        ``watch`` is the one the caller armed: if a per-view rule already took
        it out of :attr:`active`, its claim slot still tells what happened.
        """
        filed = self.active.pop(key, watch)
        if filed is None or filed[CLAIM] is None:
            return None
        return self.settle(filed[CLAIM])

    def exempt(self, key: object) -> None:
        """Stop watching ``key`` (a per-view rule); the request goes on."""
        self.active.pop(key, None)

    def settle(self, claim: Claim) -> Claim | None:
        """For a watch just taken out of :attr:`active`: its claim, if it was reported.

        Waits (on the lock) for the monitor to finish deciding, so that the
        ``slow`` report is queued before the caller sends ``finished``, and
        freezes the profile: the monitor adds no sample to a closed claim.
        """
        with self.lock:
            claim.closed = True
            if claim.profile is not None and claim.final is None:
                if claim.probe is not None and claim.probe.clock is not None:
                    claim.profile.cpu_time = claim.probe.cpu_total
                claim.final = claim.profile.frozen()
            return claim if claim.reported and not claim.killed else None

    def current(self) -> object | None:
        """The key of the calling thread's watch, if it has one."""
        ident = threading.get_ident()
        return ident if ident in self.active else None

    def retune(self, key: object, threshold: float) -> None:
        """Give a watch another threshold (a per-view rule, seen after arming)."""
        watch = self.active.get(key)
        if watch is None or watch[CLAIM] is not None:
            return
        # A new list: the monitor files it at its new deadline and skips the
        # old heap entry, which no longer matches `active[key]`.
        self.active[key] = [watch[STARTED], threshold, *watch[SUBJECT:]]
        self.require(threshold)

    def require(self, threshold: float) -> None:
        """Make sure the monitor looks often enough for ``threshold``."""
        tick = tick_for((threshold,))
        if tick < self.tick:
            self.set_tick(tick)

    def set_tick(self, tick: float) -> None:
        """Look every ``tick`` seconds at most; a shorter tick applies at once."""
        shorter = tick < self.tick
        self.tick = tick
        if shorter:
            self.wake()

    def wake(self) -> None:
        """Have the monitor poll now rather than at its next deadline."""
        wake: native.Event | None = getattr(self, "_wake", None)
        if wake is not None:
            wake.set()

    # -- lifecycle ------------------------------------------------------

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and self.pid == os.getpid()

    def ensure_running(self) -> None:
        """Start the monitor thread if this process has none (first use, after fork)."""
        if self.pid != os.getpid():
            pid = os.getpid()
            self._adoption.run(lambda: self._reset(keep_watches=True), lambda: self.pid == pid)
        with self.lock:
            if self.running:
                self.stale_at = self.clock() + STALE_AFTER
                return
            if self._thread is not None:
                # Whatever killed it got past every guard: count it, start anew.
                self.errors.note("the monitor thread died", "slowwatch: the monitor thread died")
            self._stopping = False
            self.stale_at = self.clock() + STALE_AFTER
            try:
                # A real OS thread even under gevent: it must run while a
                # greenlet that never yields holds the worker's thread.
                thread = native.start(self._run, "slowwatch-monitor")
            except RuntimeError as exc:  # interpreter shutting down
                self.errors.error("starting the monitor thread", exc)
                return
            self._thread = thread

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the monitor thread (tests, shutdown); forget every watch."""
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and not native.is_current(thread):
            thread.join(timeout)
        self._thread = None
        self.active.clear()
        self._heap.clear()
        self._seen.clear()
        self.sampler.close()
        self.stale_at = -float("inf")

    # -- monitor thread -------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            with self.errors.guard("monitor loop"):
                timeout = self.poll(self.clock())
                self._wake.wait(timeout)
                self._wake.clear()

    def poll(self, now: float) -> float:
        """File new watches, capture the due ones; return seconds until the next poll."""
        self.stale_at = now + STALE_AFTER
        cpu = time.thread_time()
        if now >= self._next_housekeeping and self.housekeeping is not None:
            self._next_housekeeping = now + self.housekeeping_period
            with self.errors.guard("housekeeping"):
                self.housekeeping()
        heap, active = self._heap, self.active
        # dict.copy() is one step while request threads keep changing `active`.
        current = active.copy()
        seen = self._seen
        for key, watch in current.items():
            if seen.get(key) is not watch:
                deadline = watch[STARTED] + watch[THRESHOLD]
                heapq.heappush(heap, (deadline, next(self._seq), key, watch))
        self._seen = current
        due: list[tuple[object, Watch]] = []
        while heap:
            deadline, _, key, watch = heap[0]
            live = active.get(key) is watch and watch[CLAIM] is None
            if live and deadline > now:
                break
            heapq.heappop(heap)
            if live:
                due.append((key, watch))
        if due:
            snapshots.capture_due(self, due)
        sampler = self.sampler
        if sampler.sampled and now >= sampler.next_at:
            sampler.round(now, cpu)
        if len(heap) > len(current):
            # Some entries belong to finished requests: drop them now rather than
            # at their deadline, so no request object is kept alive past a tick.
            heap[:] = [e for e in heap if active.get(e[2]) is e[3]]
            heapq.heapify(heap)
        wake = min(heap[0][0] if heap else float("inf"), sampler.next_at)
        return max(0.0, min(wake - self.clock(), self.tick))

    def snapshot_in_flight(
        self, kind: str = "killed", interrupted: FrameType | None = None
    ) -> int:
        """Report every request in flight now (the process is being terminated).

        See :func:`slowwatch.core.snapshots.capture_in_flight`.
        """
        return snapshots.capture_in_flight(self, kind, interrupted)
