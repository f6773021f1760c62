"""A watch, and the monitor's claim on it.

A watch is deliberately a plain list: building one is the only allocation on
a request's fast path, and a list is the cheapest object CPython builds.
These names say what its items are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slowwatch.core.profile import FrozenProfile, Profile
from slowwatch.core.threadstate import ThreadProbe

#: A watch: ``[started, threshold, subject, claim, sql]`` for a thread, keyed by
#: its ident (``sql``: the request's SqlStats once it ran a query);
#: ``[started, threshold, subject, claim, sql, thread_id]`` for an asyncio task,
#: keyed by the task, with a 7th item, ``holder``, the request's asgiref
#: thread-sensitive context (whose executor thread runs its sync code);
#: ``[started, threshold, subject, claim, sql, thread_id, greenlet]`` for a
#: greenlet under gevent, keyed by gevent's ident for it (``thread_id`` is
#: then the OS thread's).
#: An ASGI request sending an async stream has an 8th item, ``source``: the
#: stream's async generator, whose frames are where the request waits.
#: ``claim`` is None until the monitor takes the watch up.
Watch = list[Any]
STARTED, THRESHOLD, SUBJECT, CLAIM, SQL, THREAD, HOLDER, SOURCE = range(8)


@dataclass
class Claim:
    """The monitor's hold on a watch it is reporting, in the watch's claim slot.

    Once reported, the monitor keeps sampling the request into ``profile``
    until the request thread closes the claim
    (:meth:`~slowwatch.core.watchdog.Watchdog.settle`), which
    freezes the profile into ``final`` for the ``finished`` report.
    """

    started: float
    threshold: float
    reported: bool = False
    report_id: str = ""
    info: Any = None
    profile: Profile | None = None
    probe: ThreadProbe | None = None
    #: The kernel's id of the serving thread, for its probe.
    native_id: int | None = None
    #: How many escalation points (``still_slow`` reports) were passed.
    escalated: int = 0
    #: raw SQL -> (alias, longest time a sample saw it in flight); monitor only.
    inflight: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: Monotonic time of the last sample (monitor only).
    sampled_at: float = 0.0
    closed: bool = False
    final: FrozenProfile | None = None
    #: Reported ``killed``: the process is going away, the request has no
    #: ``finished`` to send (what unwinds it is the termination itself).
    killed: bool = False


def thread_of(key: object, watch: Watch) -> int:
    return int(watch[THREAD]) if len(watch) > THREAD else int(key)  # type: ignore[call-overload]
