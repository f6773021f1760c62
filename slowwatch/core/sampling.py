"""Sampling a request once it is slow, within a CPU budget.

After its ``slow`` report a request is sampled every ``SAMPLE_INTERVAL`` until
it ends: each sample adds its stack and the thread's state to the claim's
profile, notes the query in flight, and sends a ``still_slow`` report at each
escalation point. :class:`CpuBudget` keeps all of it under a share of one core.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from slowwatch.core.frames import sample_key
from slowwatch.core.locate import (
    LOOP_MODE,
    THREAD_MODE,
    WAITING_MODE,
    Where,
    native_id_of,
    where,
)
from slowwatch.core.profile import key_of
from slowwatch.core.snapshots import snapshot, take_stack
from slowwatch.core.sqlstats import sql_text
from slowwatch.core.threadstate import ThreadProbe, classify_suspended
from slowwatch.core.watch import SQL, STARTED, THRESHOLD, Claim, Watch

if TYPE_CHECKING:
    from types import FrameType

    from slowwatch.core.watchdog import Watchdog

#: Never sample a request less often than this.
MAX_INTERVAL = 1.0
#: Longest a round of sampling may take, so that new deadlines are not kept waiting.
SAMPLE_SLICE = 0.005


class CpuBudget:
    """Adapts the sampling interval to keep the monitor under ``share`` of a core.

    The monitor reports the CPU time each round of sampling took; once a
    second the total is compared with the budget: over it, the interval
    doubles; well under it, the interval halves back towards ``base``.
    """

    def __init__(self, share: float, base: float, now: float) -> None:
        self.share = share
        self.base = base
        self.interval = base
        self._start = now
        self._used = 0.0

    def spend(self, now: float, seconds: float) -> bool:
        """Account for ``seconds`` of CPU; True when sampling had to slow down."""
        self._used += seconds
        elapsed = now - self._start
        if elapsed < 1.0:
            return False
        share = self._used / elapsed
        self._start, self._used = now, 0.0
        if share > self.share and self.interval < MAX_INTERVAL:
            self.interval = min(MAX_INTERVAL, self.interval * 2)
            return True
        if share < self.share / 4 and self.interval > self.base:
            self.interval = max(self.base, self.interval / 2)
        return False


class Sampler:
    """The reported requests still running, and their samples. Monitor thread only."""

    def __init__(self, wd: Watchdog, cpu_budget: float) -> None:
        self._wd = wd
        #: key -> (watch, claim) of reported requests still running.
        self.sampled: dict[object, tuple[Watch, Claim]] = {}
        #: Monotonic time of the next round (infinite while nothing is sampled).
        self.next_at = float("inf")
        self.budget = CpuBudget(cpu_budget, wd.sample_interval, wd.clock())

    def follow(self, key: object, watch: Watch, claim: Claim, taken: float) -> None:
        """Sample this request from now on (its ``slow`` report went out at ``taken``)."""
        self.sampled[key] = (watch, claim)
        self.next_at = min(self.next_at, taken + self.budget.interval)

    def close(self) -> None:
        """Forget every request (stop, or a fork: the parent's threads)."""
        for _, claim in self.sampled.values():
            if claim.probe is not None:
                claim.probe.close()
        self.sampled.clear()
        self.next_at = float("inf")

    def round(self, now: float, cpu_at_start: float) -> None:
        """One round of samples; the whole poll since ``cpu_at_start`` counts
        against the budget, not the sampling alone."""
        self._sample(now)
        if self.budget.spend(now, time.thread_time() - cpu_at_start):
            for _, claim in self.sampled.values():
                if claim.profile is not None:
                    claim.profile.throttled = True
        self.next_at = now + self.budget.interval if self.sampled else float("inf")

    def _sample(self, now: float) -> None:
        """One sample of each reported request still running, into its profile.

        A round lasts at most :data:`SAMPLE_SLICE` seconds: new deadlines come
        first. Requests left out go to the front of the next round (each one
        sampled goes to the back), so under a flood every request is still
        sampled, only less often.
        """
        wd = self._wd
        frames = sys._current_frames()
        taken: list[tuple[Claim, Any, str, Any]] = []
        give_up = time.perf_counter() + SAMPLE_SLICE
        try:
            for key, (watch, claim) in list(self.sampled.items()):
                if time.perf_counter() > give_up:
                    break
                self.sampled[key] = self.sampled.pop(key)  # to the back of the line
                if wd.active.get(key) is not watch:
                    del self.sampled[key]  # it ended; its claim is closed
                    if claim.probe is not None:
                        claim.probe.close()
                    continue
                at = where(wd, key, watch, frames)
                top = at.frame
                if at.mode == THREAD_MODE:
                    sample, inner, _ = sample_key(top, wd.boundary)
                else:
                    # A task or greenlet: on its loop, or suspended (its await
                    # chain, its gr_frame); its frames tell its state.
                    waiting = at.mode == WAITING_MODE
                    stack = take_stack(wd, key, top, waiting=waiting, source=at.source)
                    sample, inner = key_of(stack.frames), stack.frames[-3:]
                state = ""
                if at.mode != THREAD_MODE:
                    state = classify_suspended(stack.frames, at.mode == LOOP_MODE)
                elif claim.probe is None or claim.probe.thread_id != at.thread:
                    # The first look at this thread (an ASGI request's sync
                    # work moves to its executor thread and back).
                    if claim.probe is not None:
                        claim.probe.close()
                    claim.probe = ThreadProbe(at.thread, native_id_of(at.thread))
                else:
                    state = claim.probe.sample(inner, now - claim.sampled_at)
                claim.sampled_at = now
                self._escalate(key, watch, claim, top, now, at)
                stats = watch[SQL]
                current = stats.current if stats is not None else None
                taken.append((claim, sample, state, current))
        finally:
            del frames
        with wd.lock:
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

    def _escalate(
        self,
        key: object,
        watch: Watch,
        claim: Claim,
        top: FrameType | None,
        now: float,
        at: Where | None = None,
    ) -> None:
        """A ``still_slow`` report at each escalation point the request passes."""
        wd = self._wd
        step = claim.escalated
        if step >= len(wd.escalations):
            return
        if now - watch[STARTED] < watch[THRESHOLD] * wd.escalations[step]:
            return
        claim.escalated = step + 1
        waiting = None if at is None else at.mode == WAITING_MODE
        stack = take_stack(wd, key, top, waiting=waiting, source=None if at is None else at.source)
        mode, ident = (THREAD_MODE, None) if at is None else (at.mode, at.thread)
        # No thread: its name was given in the first report.
        wd.on_slow(
            snapshot(
                wd, "still_slow", claim, key, watch, stack, now, wd.wall_clock(), None, mode, ident
            )
        )
