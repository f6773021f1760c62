"""Snapshots: the stacks the monitor takes of due, still-slow and killed requests.

Every function here runs on the thread that takes the snapshot (the monitor,
or a server's abort hook) and turns live frames into plain records at once:
a :class:`~slowwatch.core.records.Snapshot` holds strings and numbers, never
a frame. Whether a due watch is still *the same request* is settled by the
handshake in :func:`report_due`.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING, Any

from slowwatch.core import native
from slowwatch.core.frames import Locals, Stack, is_project_file, walk_coroutine, walk_frames
from slowwatch.core.locate import (
    LOOP_MODE,
    THREAD_MODE,
    WAITING_MODE,
    native_id,
    serving,
    where,
)
from slowwatch.core.profile import FrozenProfile, Profile, key_of
from slowwatch.core.records import Snapshot
from slowwatch.core.redact import also_secret
from slowwatch.core.saferepr import BUDGET as LOCALS_BUDGET
from slowwatch.core.saferepr import capture_locals as render_locals
from slowwatch.core.sqlstats import in_flight
from slowwatch.core.threadstate import (
    ThreadProbe,
    classify,
    classify_suspended,
    is_lock_wait,
    kernel_id,
)
from slowwatch.core.watch import (
    CLAIM,
    SQL,
    STARTED,
    SUBJECT,
    THRESHOLD,
    Claim,
    Watch,
    thread_of,
)

if TYPE_CHECKING:
    from slowwatch.core.watchdog import Watchdog


def sensitive_post_parameters(subject: object) -> list[str] | str:
    """What Django's ``sensitive_post_parameters`` set on the request: names,
    ``"__ALL__"``, or nothing. Read from the instance's own attributes only:
    nothing of the request is evaluated on this thread."""
    try:
        found = vars(subject).get("sensitive_post_parameters")
    except TypeError:  # no __dict__
        return []
    if found == "__ALL__":
        return "__ALL__"
    if isinstance(found, (list, tuple)):
        return [name for name in found if type(name) is str]
    return []


def take_stack(
    wd: Watchdog,
    key: object,
    top: FrameType | None,
    with_locals: bool = False,
    subject: object = None,
    waiting: bool | None = None,
    source: object = None,
) -> Stack:
    """The request's stack: from ``top`` (its thread's frame), or, for an
    asyncio task that is not running, from its await chain. ``subject``: the
    request, whose sensitive POST parameters are masked in the locals."""
    local_values = None
    if with_locals:
        deadline = time.thread_time() + LOCALS_BUDGET
        hidden = sensitive_post_parameters(subject)

        def local_values(frame: FrameType) -> Locals | None:
            if not is_project_file(frame.f_code.co_filename):
                return None
            if hidden == "__ALL__":
                return (("*", "<all locals hidden: sensitive_post_parameters>"),)
            with also_secret(hidden):
                return render_locals(frame, deadline, time.thread_time)

    stack = walk_frames(top, wd.boundary, local_values)
    if waiting is None:  # not known: the boundary on the loop's stack tells
        waiting = not stack.hidden
    if not isinstance(key, int) and waiting:
        # An asyncio task that is not running right now: its frames are
        # not on the loop thread's stack, but on its await chain.
        if source is not None:
            return walk_coroutine(source, wd.boundary)
        get_coro = getattr(type(key), "get_coro", None)
        if get_coro is not None:
            return walk_coroutine(get_coro(key), wd.boundary)
    return stack


def sql_so_far(watch: Watch, now: float) -> dict[str, Any]:
    """Queries so far and the one in flight, read from the request thread's stats."""
    stats = watch[SQL]
    if stats is None:
        return {}
    return {"count": stats.count, "time": stats.time, "in_flight": in_flight(stats, now)}


def snapshot(
    wd: Watchdog,
    kind: str,
    claim: Claim,
    key: object,
    watch: Watch,
    stack: Stack,
    taken: float,
    wall: float,
    thread: threading.Thread | None,
    mode: str = THREAD_MODE,
    ident: int | None = None,
) -> Snapshot:
    """``thread``: the thread read (None when its name is not wanted); else
    ``ident``, the thread's ident, else the watch's."""
    started, threshold = watch[STARTED], watch[THRESHOLD]
    if thread is not None:
        ident = thread.ident or 0
    elif ident is None:
        ident = thread_of(key, watch)
    return Snapshot(
        kind=kind,
        report_id=claim.report_id,
        request=claim.info,
        pid=wd.pid,
        thread_id=ident,
        thread_name=thread.name if thread is not None else "",
        started_at=wall - (taken - started),
        threshold=threshold,
        elapsed=taken - started,
        late_by=max(0.0, taken - (started + threshold)) if kind == "slow" else 0.0,
        stack=stack,
        sql=sql_so_far(watch, taken),
        serving=serving(key, mode),
    )


def capture_due(wd: Watchdog, due: list[tuple[object, Watch]]) -> None:
    """Snapshot every due watch and hand on those still running."""
    # One frames dict for the whole batch: with hundreds of watches due at
    # once, this is what keeps the last one on time.
    frames = sys._current_frames()
    taken = wd.clock()
    wall = wd.wall_clock()
    try:
        threads = {t.ident: t for t in threading.enumerate()}
        for key, watch in due:
            with wd.errors.guard("capturing a stack"):
                at = where(wd, key, watch, frames)
                waiting = at.mode == WAITING_MODE
                subject = watch[SUBJECT]
                stack = take_stack(
                    wd, key, at.frame, wd.capture_locals, subject, waiting, at.source
                )
                thread = threads.get(at.thread)
                report_due(wd, key, watch, stack, taken, wall, thread, at.mode, at.thread)
    finally:
        # Frames keep whole call chains (and their locals) alive.
        del frames


def report_due(
    wd: Watchdog,
    key: object,
    watch: Watch,
    stack: Stack,
    taken: float,
    wall: float,
    thread: threading.Thread | None,
    mode: str = THREAD_MODE,
    ident: int | None = None,
) -> None:
    """Hand a snapshot on, unless its request finished while we looked.

    ``mode`` and ``thread`` say what tells the request's state (see
    :func:`~slowwatch.core.locate.where`): the CPU clock and system call of ``thread``, or, for a
    task or greenlet on its event loop or suspended, its frames.

    A Dekker-style handshake with the request thread, which deletes
    ``active[key]`` and then looks at the watch's claim slot: here we fill
    the claim slot and then look at ``active[key]``. At least one side sees
    the other, so either we drop the snapshot or the request thread sees
    the claim and, through :meth:`Watchdog.settle` and the lock, learns the
    outcome.
    """
    subject = watch[SUBJECT]
    info = wd.read_subject(subject)
    report_id = uuid.uuid4().hex
    # What the thread is doing right now, for alerts that go out at once. Its
    # procfs entries are opened here, before the lock: under it, only bookkeeping.
    probed = thread_of(key, watch) if ident is None else ident
    thread_native_id = native_id(thread) if thread is not None else kernel_id(probed)
    probe: ThreadProbe | None = None
    if mode != THREAD_MODE:
        state = classify_suspended(stack.frames, mode == LOOP_MODE)
    else:
        probe = ThreadProbe(probed, thread_native_id)
        syscall = probe.syscall()
        state = classify(stack.frames[-3:], syscall, None, 0.0)
        if syscall == "futex" and state != "db" and not is_lock_wait(stack.frames):
            # Waiting for the GIL (the monitor holds it right now) or a C-level
            # lock: one look cannot tell, and the samples will.
            state = ""
    with wd.lock:
        claim = watch[CLAIM] = Claim(watch[STARTED], watch[THRESHOLD])
        live = wd.active.get(key) is watch and info is not None
        if live:
            claim.reported = True
            claim.report_id = report_id
            claim.info = info
            wd.on_claim(subject, report_id)
            # From now on the request is sampled until it ends.
            claim.profile = Profile(wd.sample_interval, wd.max_samples)
            claim.profile.add(key_of(stack.frames))
            claim.native_id, claim.sampled_at = thread_native_id, taken
            claim.probe = probe
            wd.sampler.follow(key, watch, claim, taken)
            found = snapshot(wd, "slow", claim, key, watch, stack, taken, wall, thread, mode)
            wd.on_slow(replace(found, state=state))
    if not live and probe is not None:
        # Finished while we looked: the stack may be another request's.
        probe.close()


def profile_so_far(wd: Watchdog, claim: Claim) -> FrozenProfile | None:
    """A copy of a running request's profile, taken from a signal handler.

    The lock keeps the monitor from adding a sample meanwhile; the handler may
    have interrupted the very thread that holds it, so it waits a moment only
    and then copies without it (a sample more or less).
    """
    profile = claim.profile
    if profile is None:
        return None
    locked = wd.lock.acquire(True, 0.1)
    try:
        if claim.probe is not None and claim.probe.clock is not None:
            profile.cpu_time = claim.probe.cpu_total
        return profile.frozen()
    except RuntimeError:  # a dict changed size while we copied it unlocked
        return None
    finally:
        if locked:
            wd.lock.release()


def capture_in_flight(wd: Watchdog, kind: str, interrupted: FrameType | None) -> int:
    """Snapshot every request in flight now as ``kind``; how many were handed on.

    Runs on whatever thread calls it (a server's abort hook). ``interrupted``
    is the frame a signal handler interrupted: for the calling thread's own
    request, the stack starts there rather than in the handler.
    """
    frames = sys._current_frames()
    if interrupted is not None:
        frames[native.real_ident()] = interrupted
    taken, wall = wd.clock(), wd.wall_clock()
    threads = {t.ident: t for t in threading.enumerate()}
    handed = 0
    try:
        for key, watch in list(wd.active.items()):
            with wd.errors.guard("reporting a request in flight"):
                claim = watch[CLAIM]
                if claim is None or not claim.reported:
                    info = wd.read_subject(watch[SUBJECT])
                    if info is None:
                        continue
                    claim = Claim(watch[STARTED], watch[THRESHOLD], report_id=uuid.uuid4().hex)
                    claim.info = info
                elif kind == "killed":
                    claim.killed = True
                at = where(wd, key, watch, frames)
                waiting = at.mode == WAITING_MODE
                stack = take_stack(wd, key, at.frame, waiting=waiting, source=at.source)
                thread = threads.get(at.thread)
                found = snapshot(wd, kind, claim, key, watch, stack, taken, wall, thread, at.mode)
                if kind == "killed" and claim.profile is not None:
                    # The profile of the request that had to be killed is the
                    # one that matters most: it goes with the record.
                    found = replace(found, profile=profile_so_far(wd, claim))
                wd.on_slow(found)
                handed += 1
    finally:
        del frames
    return handed
