"""The one vocabulary of what a thread is doing, and the verdict built from it.

Each sample of a slow request gets one of these states
(:func:`slowwatch.core.threadstate.classify`); a report's verdict gives their
shares, and every sink (log text, mail, Sentry, the admin) names them with
:data:`LABELS`.
"""

from __future__ import annotations

CPU, DB, IO, SLEEP, LOCK, GIL, OTHER = "cpu", "db", "io", "sleep", "lock", "gil", "other"
#: Ready to run but not running: the host's CPUs are all busy. Not a wait on
#: I/O, and ops act on it differently (a saturated host, not a slow service).
RUNNABLE = "runnable"
#: A greenlet (or coroutine) running without yielding: while it runs, no other
#: request of its worker does.
LOOP = "loop"
#: An asyncio task awaiting the thread that runs its sync code (asgiref's
#: ``sync_to_async``, ``asyncio.to_thread``) while that thread is not running
#: it: handing the work over, handing the result back, or queued behind others.
THREAD = "thread"

#: How a verdict names each state.
LABELS = {
    CPU: "on CPU",
    DB: "in the database",
    IO: "waiting on other I/O",
    SLEEP: "sleeping",
    LOCK: "waiting on a lock",
    GIL: "waiting for the GIL",
    RUNNABLE: "waiting for a CPU",
    LOOP: "blocking its event loop",
    THREAD: "waiting for its sync thread",
    OTHER: "waiting",
}


def label(state: str) -> str:
    """The words for ``state`` (an unknown one is shown as it is)."""
    return LABELS.get(state, state)


def verdict(states: dict[str, float]) -> str:
    """``"80 % in the database, 20 % on CPU"``, largest share first."""
    total = sum(states.values())
    if not total:
        return ""
    parts = sorted(states.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{share / total:.0%} {label(name)}" for name, share in parts)
