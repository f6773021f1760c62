"""Where a request's stack is at one look, under each serving model.

A request served by a thread is on that thread's stack. Under gevent it is a
greenlet: on its OS thread's stack while it runs, in its own frames while it
is suspended. Under ASGI it is an asyncio task: on its loop thread's stack
while it runs, on an executor thread while that runs its sync code, and on
its await chain while it waits. :func:`where` tells which, and which OS
thread's clock and system call say what the request is doing.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Collection
from types import CodeType, FrameType
from typing import TYPE_CHECKING, NamedTuple

from slowwatch.core import native
from slowwatch.core.threadstate import kernel_id
from slowwatch.core.watch import HOLDER, SOURCE, THREAD, Watch, thread_of

if TYPE_CHECKING:
    from slowwatch.core.watchdog import Watchdog


def native_id(thread: threading.Thread | None) -> int | None:
    """The kernel's id of ``thread``. The main thread's is the pid: after a fork
    (a gunicorn worker) Python can still hold the parent's value."""
    if thread is None:
        return None
    if thread is threading.main_thread():
        return os.getpid()
    return thread.native_id


def native_id_of(ident: int) -> int | None:
    """The kernel's id of the Python thread ``ident`` (None if it is not one)."""
    for thread in threading.enumerate():
        if thread.ident == ident:
            return native_id(thread)
    return kernel_id(ident)  # a thread Python did not start


#: How a request is held right now (see :func:`where`): ``thread`` (its own
#: thread, or its sync work on an executor thread), ``loop`` (running on its
#: event loop: nothing else of that loop runs) or ``waiting`` (a suspended
#: task or greenlet: its frames tell what it waits for).
THREAD_MODE, LOOP_MODE, WAITING_MODE = "thread", "loop", "waiting"


class Where(NamedTuple):
    """Where a request's stack is at one look."""

    frame: FrameType | None
    mode: str
    #: The OS thread whose CPU clock and system call tell the state (thread mode).
    thread: int
    #: A waiting task's await chain starts here rather than at its coroutine
    #: (the async generator of a stream it is sending).
    source: object = None


def reaches(frame: FrameType | None, codes: Collection[CodeType]) -> bool:
    """Whether the stack from ``frame`` outwards holds a frame of ``codes``."""
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def holds(frame: FrameType | None, target: FrameType | None) -> bool:
    """Whether the stack from ``frame`` outwards holds the frame ``target``."""
    while frame is not None:
        if frame is target:
            return True
        frame = frame.f_back
    return False


def where(wd: Watchdog, key: object, watch: Watch, frames: dict[int, FrameType]) -> Where:
    """Where the request's stack starts now, and what tells its state.

    ``frames`` is ``sys._current_frames()``. A thread's request is on its
    thread. A suspended greenlet keeps its frames in ``gr_frame``; the running
    one is on its OS thread's stack. An asyncio task is on its loop thread's
    stack while it runs, on the executor thread of its thread-sensitive
    context while that runs its sync code, and otherwise on its await chain.
    """
    ident = thread_of(key, watch)
    if len(watch) <= THREAD:
        return Where(frames.get(ident), THREAD_MODE, ident)
    # A task or greenlet found running now may not have been running when
    # ``frames`` was read: the loop's stack there can be another one's. Look
    # again, unless the loop is the calling thread (a kill hook, whose
    # ``frames`` holds the frame its signal interrupted): that cannot switch.
    again = ident != native.real_ident()
    if isinstance(key, int):  # a greenlet, under gevent
        glet = watch[HOLDER]
        frame = glet.gr_frame
        if frame is not None or glet.dead:
            # Suspended: its own frames. Ended (a stream never closed): none.
            return Where(frame, WAITING_MODE, ident)
        frame = sys._current_frames().get(ident) if again else frames.get(ident)
        if glet.gr_frame is None:  # still the one running
            return Where(frame, LOOP_MODE, ident)
        return Where(glet.gr_frame, WAITING_MODE, ident)
    holder = watch[HOLDER] if len(watch) > HOLDER else None
    if holder is not None and wd.sync_thread is not None:
        sync = wd.sync_thread(holder)
        if sync is not None:
            frame = frames.get(sync)
            if reaches(frame, wd.starts):  # running the request's sync code
                return Where(frame, THREAD_MODE, sync)
    frame = frames.get(ident)
    coro = key.get_coro() if hasattr(key, "get_coro") else None
    if getattr(coro, "cr_running", False):  # the task is the one running on its loop
        # The loop's stack is this task's only if it holds its coroutine.
        own = getattr(coro, "cr_frame", None)
        if not isinstance(own, FrameType):  # not a native coroutine: cannot tell
            return Where(frame, LOOP_MODE, ident)
        if again and not holds(frame, own):
            frame = sys._current_frames().get(ident)
        if holds(frame, own):
            return Where(frame, LOOP_MODE, ident)
    return Where(frame, WAITING_MODE, ident, watch[SOURCE] if len(watch) > SOURCE else None)


def serving(key: object, mode: str) -> str:
    """What runs the request at this look (see :attr:`Snapshot.serving`)."""
    if mode == THREAD_MODE:
        return "thread"
    return "greenlet" if isinstance(key, int) else "task"
