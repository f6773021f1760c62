"""The raw records the core emits: plain, immutable, and holding no live object.

* :class:`Snapshot`, made by the monitor thread when a deadline passes (and
  at each escalation, and when the process is being terminated);
* :class:`Finished`, made by the request thread when a reported request ends;
* :class:`Lost`, the notice that stands in for a report the queue dropped.

On the reporter thread :func:`slowwatch.report.build_report` turns each into
the :class:`~slowwatch.report.Report` that reporters receive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slowwatch.core.frames import Stack
from slowwatch.core.profile import FrozenProfile
from slowwatch.core.sqlstats import SqlStats


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Request metadata, read on the monitor thread from plain attributes only."""

    method: str
    path: str
    query: str = ""
    view: str = ""
    route: str = ""
    host: str = ""
    #: The user's pk, when the request had loaded its user before it was read.
    user_id: str = ""
    #: The request's trace (``trace_id``, ``span_id``...), when a tracer gave one.
    trace: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A stack taken by the monitor: ``slow``, ``still_slow`` or ``killed``."""

    kind: str
    report_id: str
    request: RequestInfo
    pid: int
    thread_id: int
    thread_name: str
    started_at: float
    threshold: float
    elapsed: float
    late_by: float
    stack: Stack
    sql: dict[str, Any] = field(default_factory=dict)
    #: What the thread was doing when the snapshot was taken (``slow`` only).
    state: str = ""
    #: ``killed`` only: the samples taken since the threshold, up to the end.
    profile: FrozenProfile | None = None
    #: What was running the request at the snapshot: its ``thread`` (or,
    #: under ASGI, the executor thread running its sync code), an asyncio
    #: ``task`` or a ``greenlet``; ``thread_id`` is the OS thread under it.
    serving: str = "thread"


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of a reported request, with its frozen profile."""

    report_id: str
    request: RequestInfo
    pid: int
    thread_id: int
    started_at: float
    threshold: float
    duration: float
    status_code: int | None = None
    exception: str = ""
    profile: FrozenProfile | None = None
    #: The request thread's query stats and what samples saw in flight; the
    #: request has ended, so nobody writes them any more.
    sql_stats: SqlStats | None = None
    inflight: dict[str, tuple[str, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Lost:
    """A report that was dropped: said as soon as possible.

    ``reason``: ``queue_full``, or ``monitor_late`` for a request that ran
    past its threshold and ended before the monitor took its stack (the
    monitor was held up); the request's own thread then knows its timing.
    """

    report_id: str
    request: RequestInfo
    pid: int
    dropped: str
    reason: str
    started_at: float = 0.0
    threshold: float = 0.0
    duration: float = 0.0


#: Everything that travels the report queue.
Record = Snapshot | Finished | Lost
