"""The :class:`Report` every reporter receives, and how it is built.

The core emits raw records (:mod:`slowwatch.core.records`). On the reporter
thread :func:`build_report` turns each into a :class:`Report`: query strings
redacted, source lines read, the process's figures attached. Every reporter
gets the same redacted report; :mod:`slowwatch.render` writes it as text, and
:meth:`Report.to_dict` is its stable JSON form. No report holds a frame or a
live object.
"""

from __future__ import annotations

import linecache
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Literal

from slowwatch.core.frames import Stack
from slowwatch.core.process import figures as process_figures
from slowwatch.core.profile import FrozenProfile
from slowwatch.core.records import Finished, Lost, Snapshot
from slowwatch.core.redact import redact_url
from slowwatch.core.sqlstats import finished_summary
from slowwatch.core.states import label, verdict
from slowwatch.render import one_line

__all__ = ["SCHEMA_VERSION", "UNRESOLVED", "Report", "SourceFrame", "build_report"]

#: Version of the JSON document produced by :meth:`Report.to_dict`.
SCHEMA_VERSION = 2
#: What every request that resolved no URL is grouped under, by every reporter
#: (:meth:`Report.where`, Prometheus's ``route`` label).
UNRESOLVED = "(unresolved)"


@dataclass(frozen=True, slots=True)
class SourceFrame:
    """One frame of a report's stack, with its source line read."""

    filename: str
    lineno: int
    function: str
    module: str
    line: str
    #: ``(name, rendered value)`` when locals were captured for this frame.
    locals: tuple[tuple[str, str], ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "filename": self.filename,
            "lineno": self.lineno,
            "function": self.function,
            "module": self.module,
            "line": self.line,
        }
        if self.locals is not None:
            doc["locals"] = dict(self.locals)
        return doc


@dataclass(frozen=True, slots=True)
class Report:
    """A transition of one slow request, as reporters receive it."""

    kind: Literal["slow", "still_slow", "killed", "finished", "lost"]
    id: str
    method: str
    url: str
    view: str
    route: str
    host: str
    hostname: str
    pid: int
    thread_id: int
    thread_name: str
    started_at: float
    threshold: float
    #: Seconds the request had run when this was taken (``slow``) or in all (``finished``).
    elapsed: float
    #: How long after the deadline the snapshot was taken (``slow`` only).
    late_by: float = 0.0
    frames: tuple[SourceFrame, ...] = ()
    hidden_frames: int = 0
    truncated_frames: int = 0
    status_code: int | None = None
    exception: str = ""
    #: The samples taken from the threshold to the end (``finished`` only).
    profile: FrozenProfile | None = None
    #: psutil's figures for the whole process when the report was built.
    process: dict[str, Any] = field(default_factory=dict)
    #: Queries: count and time; in flight (``slow``); slowest and repeated (``finished``).
    sql: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    user_id: str = ""
    #: What the thread was doing at the snapshot (see :mod:`slowwatch.core.states`).
    state: str = ""
    #: The request's trace context, e.g. Sentry's ``trace_id`` and ``span_id``.
    trace: dict[str, str] = field(default_factory=dict)
    #: What ran the request at the snapshot: ``thread``, ``task`` (asyncio) or
    #: ``greenlet``, on the OS thread ``thread_id``; empty for ``finished``.
    serving: str = ""

    def where(self) -> str:
        """What alerts group by: the route pattern, else the view, else :data:`UNRESOLVED`.

        A request that never resolved a URL (a middleware before routing was
        slow, or the path matched nothing) has neither: grouping those by their
        path would let anyone who asks for many distinct paths use up the alert
        budget, and an attacker can make them all distinct. A resolved request
        always has a view, so a route whose pattern is ``""`` (the site's root)
        is grouped by its view, never with the unresolved ones.
        """
        if self.route:
            return "/" + self.route.lstrip("/")
        return self.view or UNRESOLVED

    def verdict(self) -> str:
        """Where the time went: shares from the profile, else the state at the snapshot."""
        if self.profile is not None and self.profile.states:
            return verdict(dict(self.profile.states))
        return label(self.state) if self.state else ""

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form (see ``docs/report.rst``)."""
        return {
            "schema": SCHEMA_VERSION,
            "kind": self.kind,
            "id": self.id,
            "request": {
                "method": self.method,
                "url": self.url,
                "view": self.view,
                "route": self.route,
                "host": self.host,
                **({"user_id": self.user_id} if self.user_id else {}),
            },
            "process": {
                "hostname": self.hostname,
                "pid": self.pid,
                "thread_id": self.thread_id,
                "thread_name": self.thread_name,
                **({"serving": self.serving} if self.serving else {}),
                **({"figures": self.process} if self.process else {}),
            },
            "timing": {
                "started_at": self.started_at,
                "threshold": self.threshold,
                "elapsed": self.elapsed,
                "late_by": self.late_by,
            },
            "stack": {
                "frames": [f.to_dict() for f in self.frames],
                "hidden": self.hidden_frames,
                "truncated": self.truncated_frames,
            },
            "outcome": {"status_code": self.status_code, "exception": self.exception},
            **({"verdict": self.verdict()} if self.verdict() else {}),
            **({"profile": self.profile.to_dict()} if self.profile is not None else {}),
            **({"sql": self.sql} if self.sql else {}),
            **({"extra": self.extra} if self.extra else {}),
        }


def _source(stack: Stack) -> tuple[SourceFrame, ...]:
    values = stack.locals or (None,) * len(stack.frames)
    return tuple(
        SourceFrame(
            f.filename,
            f.lineno,
            f.function,
            f.module,
            linecache.getline(f.filename, f.lineno).strip(),
            local_values,
        )
        for f, local_values in zip(stack.frames, values, strict=False)
    )


#: This host's name, as every report gives it.
HOSTNAME = _HOSTNAME = socket.gethostname()


def build_report(event: Snapshot | Finished | Lost) -> Report:
    """Redact and format a raw record. Runs on the reporter thread."""
    req = event.request
    common: dict[str, Any] = {
        "id": event.report_id,
        "method": one_line(req.method),
        "url": redact_url(req.path, req.query),
        "view": req.view,
        "route": req.route,
        "host": one_line(req.host),
        "user_id": req.user_id,
        "trace": dict(req.trace),
        "hostname": _HOSTNAME,
        "pid": event.pid or os.getpid(),
    }
    if isinstance(event, Lost):
        return Report(
            kind="lost",
            thread_id=0,
            thread_name="",
            started_at=event.started_at,
            threshold=event.threshold,
            elapsed=event.duration,
            extra={"dropped": event.dropped, "reason": event.reason},
            **common,
        )
    common["thread_id"] = event.thread_id
    common["started_at"] = event.started_at
    common["threshold"] = event.threshold
    if isinstance(event, Snapshot):
        return Report(
            kind=event.kind,  # type: ignore[arg-type]
            thread_name=event.thread_name,
            elapsed=event.elapsed,
            late_by=event.late_by,
            frames=_source(event.stack),
            hidden_frames=event.stack.hidden,
            truncated_frames=event.stack.truncated,
            process=process_figures(),
            sql=event.sql,
            state=event.state,
            profile=event.profile,
            serving=event.serving,
            **common,
        )
    return Report(
        kind="finished",
        thread_name="",
        elapsed=event.duration,
        status_code=event.status_code,
        exception=event.exception,
        profile=event.profile,
        sql=finished_summary(event.sql_stats, event.inflight),
        **common,
    )
