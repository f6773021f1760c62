"""The watchdog: one monitor thread per process that notices requests running late.

How a watch travels:

* The request thread files a *watch*, a plain list ``[started, threshold,
  subject, claim(, thread_id)]``, under a key in :attr:`Watchdog.active` (its
  thread ident, or its asyncio task) and deletes it when done. No lock, no
  wake-up, no object beyond that list: a fast request's watch is freed on the spot.
* Every ``tick`` (never longer than half the smallest threshold in use, so each
  watch is seen before its deadline) the monitor thread copies ``active`` and
  pushes the watches it has not seen yet onto a deadline heap that it alone
  owns. It sleeps until the earliest deadline, then snapshots the stacks of the
  watches that are due. Finished watches leave the heap lazily (lazy cancel)
  and the heap is compacted when it outgrows ``active``.
* Whether a due watch is still *the same request* is decided by identity:
  ``active[key] is watch``. A thread that moved on to another request has
  another list there, so a snapshot is never reported for the wrong request.

Reporting a snapshot and finishing a request race each other; the watch's
claim slot and :meth:`settle` resolve that race (see :meth:`_report`).

This module imports nothing from Django: the edge hands it an opaque
``subject`` per watch and a ``describe`` callable to read it.
"""

from __future__ import annotations

import heapq
import itertools
import os
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import replace
from threading import get_ident
from types import CodeType, FrameType
from typing import Any

from slowwatch.budget import CpuBudget
from slowwatch.capture import Locals, Stack, sample_key, walk_coroutine, walk_frames
from slowwatch.internal import InternalLog
from slowwatch.profile import Profile, key_of
from slowwatch.report import Snapshot
from slowwatch.saferepr import BUDGET as LOCALS_BUDGET
from slowwatch.saferepr import capture_locals as render_locals
from slowwatch.saferepr import is_app_file
from slowwatch.sqlstats import in_flight, sql_text
from slowwatch.threadstate import ThreadProbe, classify, is_lock_wait
from slowwatch.watch import CLAIM, SQL, STARTED, SUBJECT, THRESHOLD, Claim, Watch, thread_of

#: Longest a round of sampling may take, so that new deadlines are not kept waiting.
SAMPLE_SLICE = 0.005
#: Longest sleep of an idle monitor.
MAX_TICK = 1.0
#: Without a heartbeat for this long, arming checks the monitor is alive (after
#: a fork without fork hooks, as under uWSGI, the thread is simply gone).
STALE_AFTER = 10.0
#: Seconds between two calls of :attr:`Watchdog.housekeeping`.
HOUSEKEEPING_PERIOD = 10.0


def native_id(thread: threading.Thread | None) -> int | None:
    """The kernel's id of ``thread``. The main thread's is the pid: after a fork
    (a gunicorn worker) Python can still hold the parent's value."""
    if thread is None:
        return None
    if thread is threading.main_thread():
        return os.getpid()
    return thread.native_id


class Watchdog:
    """Arms deadlines for requests and snapshots the ones that pass them.

    :param on_slow: called on the monitor thread with each accepted
        :class:`~slowwatch.report.Snapshot`. It must not block (hand it to a queue).
    :param describe: reads what a report needs from a watch's subject, on the
        monitor thread; must run no user code. ``None`` means "gone".
    :param on_claim: told the report id of a subject that was just reported
        (the edge puts it on the request, for correlation).
    :param clock: a monotonic clock; tests inject a fake one and call :meth:`poll`.
    """

    def __init__(
        self,
        *,
        on_slow: Callable[[Snapshot], object],
        describe: Callable[[Any], Any],
        on_claim: Callable[[Any, str], object] = lambda subject, report_id: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        errors: InternalLog | None = None,
        sample_interval: float = 0.05,
        max_samples: int = 12_000,
        cpu_budget: float = 0.01,
        escalations: tuple[float, ...] = (),
    ) -> None:
        self.configure(
            sample_interval=sample_interval, max_samples=max_samples, escalations=escalations
        )
        #: Share of one core the monitor may spend sampling before it slows down.
        self.cpu_budget = cpu_budget
        self._on_slow = on_slow
        self._describe = describe
        self._on_claim = on_claim
        self._clock = clock
        self._wall_clock = wall_clock
        self._errors = errors or InternalLog()
        #: Code objects of the frames where a request's own stack begins
        #: (slowwatch's middleware); what lies above them is server plumbing.
        self.boundary: set[CodeType] = set()
        #: key -> watch of every request in flight. Request threads add and
        #: delete entries (single dict operations, atomic); the monitor only reads.
        self.active: dict[object, Watch] = {}
        self.tick = MAX_TICK
        #: Called on the monitor thread every ``housekeeping_period`` seconds,
        #: first on its first poll. It must return at once (hand work elsewhere).
        self.housekeeping: Callable[[], object] | None = None
        self.housekeeping_period = HOUSEKEEPING_PERIOD
        self._reset()
        ref = weakref.WeakMethod(self._reset)

        def after_fork() -> None:
            method = ref()
            if method is not None:
                method()

        # A child must not inherit our lock held or our (dead) thread; uWSGI
        # without fork hooks is caught by the heartbeat check instead.
        os.register_at_fork(after_in_child=after_fork)

    def configure(
        self,
        *,
        sample_interval: float,
        max_samples: int,
        escalations: tuple[float, ...],
        capture_locals: bool = False,
    ) -> None:
        """Sampling settings; they apply to requests that turn slow from now on."""
        #: Render the locals of the project's frames in the ``slow`` snapshot.
        self.capture_locals = capture_locals
        #: Seconds between samples of a slow request (while the CPU budget allows).
        self.sample_interval = sample_interval
        self.max_samples = max_samples
        #: Multiples of the threshold at which a ``still_slow`` report goes out.
        self.escalations = tuple(sorted(escalations))
        budget = getattr(self, "_budget", None)
        if budget is not None:
            budget.base = budget.interval = sample_interval

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        # Cleared in place: the middleware holds a reference to this dict.
        self.active.clear()
        self._heap: list[tuple[float, int, object, Watch]] = []
        self._seen: dict[object, Watch] = {}
        self._seq = itertools.count()
        for _, claim in getattr(self, "_sampled", {}).values():
            if claim.probe is not None:
                claim.probe.close()  # inherited over a fork: the parent's threads
        #: key -> (watch, claim) of reported requests still running (monitor only).
        self._sampled: dict[object, tuple[Watch, Claim]] = {}
        self._next_sample = float("inf")
        self._next_housekeeping = -float("inf")
        self._budget = CpuBudget(self.cpu_budget, self.sample_interval, self._clock())
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: Monotonic time after which arming checks that the monitor is alive:
        #: its last poll plus STALE_AFTER. Kept as a sum so that the request
        #: path compares two floats and computes nothing.
        self.stale_at = -float("inf")

    # -- request side ---------------------------------------------------
    # The middleware's request path (middleware._serving) inlines arm and
    # disarm: a method call would cost as much as all the rest of its work.

    def arm(self, subject: object, threshold: float, task: object = None) -> Watch | None:
        """File a watch for the calling thread (or ``task``). No I/O, lock or logging.

        Returns None when this thread or task is already watched (a nested
        handler): the outer watch covers it.
        """
        now = self._clock()
        ident = get_ident()
        key: object
        watch: Watch
        if task is None:
            key, watch = ident, [now, threshold, subject, None, None]
        else:
            key, watch = task, [now, threshold, subject, None, None, ident]
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
        with self._lock:
            claim.closed = True
            if claim.profile is not None and claim.final is None:
                if claim.probe is not None and claim.probe.clock is not None:
                    claim.profile.cpu_time = claim.probe.cpu_total
                claim.final = claim.profile.frozen()
            return claim if claim.reported and not claim.killed else None

    def current(self) -> object | None:
        """The key of the calling thread's watch, if it has one."""
        ident = get_ident()
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
        tick = min(MAX_TICK, threshold / 2)
        if tick < self.tick:
            self.tick = tick
            self._wake.set()

    # -- lifecycle ------------------------------------------------------

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and self._pid == os.getpid()

    def ensure_running(self) -> None:
        """Start the monitor thread if this process has none (first use, after fork)."""
        if self._pid != os.getpid():
            self._reset()
        with self._lock:
            if self.running:
                self.stale_at = self._clock() + STALE_AFTER
                return
            thread = threading.Thread(target=self._run, name="slowwatch-monitor", daemon=True)
            self._stopping = False
            self.stale_at = self._clock() + STALE_AFTER
            try:
                thread.start()
            except RuntimeError as exc:  # interpreter shutting down
                self._errors.error("starting the monitor thread", exc)
                return
            self._thread = thread

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the monitor thread (tests, shutdown); forget every watch."""
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None
        self.active.clear()
        self._heap.clear()
        self._seen.clear()
        for _, claim in self._sampled.values():
            if claim.probe is not None:
                claim.probe.close()
        self._sampled.clear()
        self.stale_at = -float("inf")

    # -- monitor thread -------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            with self._errors.guard("monitor loop"):
                timeout = self.poll(self._clock())
                self._wake.wait(timeout)
                self._wake.clear()

    def poll(self, now: float) -> float:
        """File new watches, capture the due ones; return seconds until the next poll."""
        self.stale_at = now + STALE_AFTER
        cpu = time.thread_time()
        if now >= self._next_housekeeping and self.housekeeping is not None:
            self._next_housekeeping = now + self.housekeeping_period
            with self._errors.guard("housekeeping"):
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
            self._capture(due)
        if self._sampled and now >= self._next_sample:
            self._sample(now)
            # The whole poll counts against the budget, not the sampling alone.
            if self._budget.spend(now, time.thread_time() - cpu):
                for _, claim in self._sampled.values():
                    if claim.profile is not None:
                        claim.profile.throttled = True
            self._next_sample = now + self._budget.interval if self._sampled else float("inf")
        if len(heap) > len(current):
            # Some entries belong to finished requests: drop them now rather than
            # at their deadline, so no request object is kept alive past a tick.
            heap[:] = [e for e in heap if active.get(e[2]) is e[3]]
            heapq.heapify(heap)
        wake = min(heap[0][0] if heap else float("inf"), self._next_sample)
        return max(0.0, min(wake - self._clock(), self.tick))

    def _capture(self, due: list[tuple[object, Watch]]) -> None:
        # One frames dict for the whole batch: at 200 due watches this is what
        # keeps the last one on time.
        frames = sys._current_frames()
        taken = self._clock()
        wall = self._wall_clock()
        try:
            threads = {t.ident: t for t in threading.enumerate()}
            for key, watch in due:
                with self._errors.guard("capturing a stack"):
                    thread_id = thread_of(key, watch)
                    stack = self._stack(key, frames.get(thread_id), self.capture_locals)
                    self._report(key, watch, stack, taken, wall, threads.get(thread_id))
        finally:
            # Frames keep whole call chains (and their locals) alive.
            del frames

    def _stack(self, key: object, top: FrameType | None, with_locals: bool = False) -> Stack:
        local_values = None
        if with_locals:
            deadline = self._clock() + LOCALS_BUDGET

            def local_values(frame: FrameType) -> Locals | None:
                if not is_app_file(frame.f_code.co_filename):
                    return None
                return render_locals(frame, deadline, self._clock)

        stack = walk_frames(top, self.boundary, local_values)
        if not isinstance(key, int) and not stack.hidden:
            # An asyncio task that is not running right now: its frames are
            # not on the loop thread's stack, but on its await chain.
            get_coro = getattr(type(key), "get_coro", None)
            if get_coro is not None:
                return walk_coroutine(get_coro(key), self.boundary)
        return stack

    def _report(
        self,
        key: object,
        watch: Watch,
        stack: Stack,
        taken: float,
        wall: float,
        thread: threading.Thread | None,
    ) -> None:
        """Hand a snapshot on, unless its request finished while we looked.

        A Dekker-style handshake with the request thread, which deletes
        ``active[key]`` and then looks at the watch's claim slot: here we fill
        the claim slot and then look at ``active[key]``. At least one side sees
        the other, so either we drop the snapshot or the request thread sees
        the claim and, through :meth:`settle` and our lock, learns the outcome.
        """
        started, threshold, subject = watch[STARTED], watch[THRESHOLD], watch[SUBJECT]
        info = self._describe(subject)
        report_id = uuid.uuid4().hex
        with self._lock:
            claim = watch[CLAIM] = Claim(started, threshold)
            if self.active.get(key) is not watch or info is None:
                # Finished while we looked: the stack may be another request's.
                return
            claim.reported = True
            claim.report_id = report_id
            claim.info = info
            self._on_claim(subject, report_id)
            # From now on the request is sampled until it ends.
            claim.profile = Profile(self.sample_interval, self.max_samples)
            claim.profile.add(key_of(stack.frames))
            claim.native_id, claim.sampled_at = native_id(thread), taken
            # What the thread is doing right now, for alerts that go out at once.
            claim.probe = ThreadProbe(thread_of(key, watch), claim.native_id)
            syscall = claim.probe.syscall()
            state = classify(stack.frames[-3:], syscall, None, 0.0)
            if syscall == "futex" and state != "db" and not is_lock_wait(stack.frames):
                # Waiting for the GIL (the monitor holds it right now) or a C-level
                # lock: one look cannot tell, and the samples will.
                state = ""
            self._sampled[key] = (watch, claim)
            self._next_sample = min(self._next_sample, taken + self._budget.interval)
            snapshot = self._snapshot("slow", claim, key, watch, stack, taken, wall, thread)
            self._on_slow(replace(snapshot, state=state))

    def _snapshot(
        self,
        kind: str,
        claim: Claim,
        key: object,
        watch: Watch,
        stack: Stack,
        taken: float,
        wall: float,
        thread: threading.Thread | None,
    ) -> Snapshot:
        started, threshold = watch[STARTED], watch[THRESHOLD]
        return Snapshot(
            kind=kind,
            report_id=claim.report_id,
            request=claim.info,
            pid=self._pid,
            thread_id=thread_of(key, watch),
            thread_name=thread.name if thread is not None else "",
            started_at=wall - (taken - started),
            threshold=threshold,
            elapsed=taken - started,
            late_by=max(0.0, taken - (started + threshold)) if kind == "slow" else 0.0,
            stack=stack,
            sql=self._sql(watch, taken),
        )

    def snapshot_in_flight(
        self, kind: str = "killed", interrupted: FrameType | None = None
    ) -> int:
        """Report every request in flight now (the process is being terminated).

        Runs on whatever thread calls it (a server's abort hook); returns how
        many snapshots were handed on. ``interrupted`` is the frame a signal
        handler interrupted: for the calling thread's own request, the stack
        starts there rather than in the handler.
        """
        frames = sys._current_frames()
        if interrupted is not None:
            frames[get_ident()] = interrupted
        taken, wall = self._clock(), self._wall_clock()
        threads = {t.ident: t for t in threading.enumerate()}
        handed = 0
        try:
            for key, watch in list(self.active.items()):
                with self._errors.guard("reporting a request in flight"):
                    thread_id = thread_of(key, watch)
                    claim = watch[CLAIM]
                    if claim is None or not claim.reported:
                        info = self._describe(watch[SUBJECT])
                        if info is None:
                            continue
                        claim = Claim(watch[STARTED], watch[THRESHOLD], report_id=uuid.uuid4().hex)
                        claim.info = info
                    elif kind == "killed":
                        claim.killed = True
                    stack = self._stack(key, frames.get(thread_id))
                    thread = threads.get(thread_id)
                    self._on_slow(
                        self._snapshot(kind, claim, key, watch, stack, taken, wall, thread)
                    )
                    handed += 1
        finally:
            del frames
        return handed

    def _sample(self, now: float) -> None:
        """One sample of each reported request still running, into its profile.

        A round lasts at most :data:`SAMPLE_SLICE` seconds: new deadlines come
        first. Requests left out go to the front of the next round (each one
        sampled goes to the back), so under a flood every request is still
        sampled, only less often.
        """
        frames = sys._current_frames()
        taken: list[tuple[Claim, Any, str, Any]] = []
        give_up = time.perf_counter() + SAMPLE_SLICE
        try:
            for key, (watch, claim) in list(self._sampled.items()):
                if time.perf_counter() > give_up:
                    break
                self._sampled[key] = self._sampled.pop(key)  # to the back of the line
                if self.active.get(key) is not watch:
                    del self._sampled[key]  # it ended; its claim is closed
                    if claim.probe is not None:
                        claim.probe.close()
                    continue
                top = frames.get(thread_of(key, watch))
                sample, inner, found = sample_key(top, self.boundary)
                if not found and not isinstance(key, int):
                    # A suspended asyncio task: its frames are on its await chain.
                    stack = self._stack(key, top)
                    sample, inner = key_of(stack.frames), stack.frames[-3:]
                state = ""
                if claim.probe is None:
                    claim.probe = ThreadProbe(thread_of(key, watch), claim.native_id)
                else:
                    state = claim.probe.sample(inner, now - claim.sampled_at)
                claim.sampled_at = now
                self._escalate(key, watch, claim, top, now)
                stats = watch[SQL]
                current = stats.current if stats is not None else None
                taken.append((claim, sample, state, current))
        finally:
            del frames
        with self._lock:
            for claim, sample, state, current in taken:
                if claim.closed or claim.profile is None:
                    continue
                claim.profile.add(sample, state)
                if current is not None:
                    # Raw text here; normalized once, when the request finishes.
                    raw, alias, started = current
                    sql = sql_text(raw)
                    seen = claim.inflight.get(sql)
                    if seen is None or seen[1] < now - started:
                        claim.inflight[sql] = (alias, now - started)

    def _sql(self, watch: Watch, now: float) -> dict[str, Any]:
        """Queries so far and the one in flight, read from the request thread's stats."""
        stats = watch[SQL]
        if stats is None:
            return {}
        return {"count": stats.count, "time": stats.time, "in_flight": in_flight(stats, now)}

    def _escalate(
        self, key: object, watch: Watch, claim: Claim, top: FrameType | None, now: float
    ) -> None:
        """A ``still_slow`` report at each escalation point the request passes."""
        step = claim.escalated
        if step >= len(self.escalations):
            return
        if now - watch[STARTED] < watch[THRESHOLD] * self.escalations[step]:
            return
        claim.escalated = step + 1
        stack = self._stack(key, top)
        thread = None  # the name was given in the first report
        self._on_slow(
            self._snapshot("still_slow", claim, key, watch, stack, now, self._wall_clock(), thread)
        )
