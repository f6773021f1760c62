"""What a slow request looks like once captured: plain, immutable records.

Two raw records leave the hot side:

* :class:`Snapshot`, made by the monitor thread when a deadline passes;
* :class:`Finished`, made by the request thread when a reported request ends.

On the reporter thread :func:`build_report` turns either into a :class:`Report`:
query strings redacted, source lines read, ready to render. Every reporter gets
the same redacted report. No record here holds a frame or a live object.
"""

from __future__ import annotations

import linecache
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Literal

from slowwatch.capture import Stack
from slowwatch.process import describe as describe_process
from slowwatch.process import figures as process_figures
from slowwatch.profile import FrozenProfile
from slowwatch.redact import redact_url
from slowwatch.sqlstats import SqlStats, finished_summary
from slowwatch.threadstate import LABELS, verdict

#: Version of the JSON document produced by :meth:`Report.to_dict`.
SCHEMA_VERSION = 1

#: Longest path shown in a one-line summary; the JSON keeps the full one.
SUMMARY_PATH_MAX = 300


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


@dataclass(frozen=True, slots=True)
class Finished:
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
    """A report that was dropped (the queue was full): said as soon as possible."""

    report_id: str
    request: RequestInfo
    pid: int
    dropped: str
    reason: str


@dataclass(frozen=True, slots=True)
class SourceFrame:
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
    #: What the thread was doing at the snapshot (see :mod:`slowwatch.threadstate`).
    state: str = ""
    #: The request's trace context, e.g. Sentry's ``trace_id`` and ``span_id``.
    trace: dict[str, str] = field(default_factory=dict)

    def where(self) -> str:
        """What alerts group by: the route pattern, else the view, else the path."""
        if self.route:
            return "/" + self.route.lstrip("/")
        return self.view or self.url.split("?", 1)[0]

    def verdict(self) -> str:
        """Where the time went: shares from the profile, else the state at the snapshot."""
        if self.profile is not None and self.profile.states:
            return verdict(dict(self.profile.states))
        return LABELS.get(self.state, self.state) if self.state else ""

    def summary(self) -> str:
        url = _one_line(self.url)
        if len(url) > SUMMARY_PATH_MAX:
            url = url[: SUMMARY_PATH_MAX - 1] + "…"
        view = f" ({self.view})" if self.view else ""
        if self.kind == "lost":
            return (
                f"Report lost: the '{self.extra.get('dropped')}' report of {self.method} {url}"
                f"{view} was dropped ({self.extra.get('reason')})"
            )
        if self.kind == "still_slow":
            return (
                f"Still slow: {self.method} {url}{view} running for {self.elapsed:.2f} s "
                f"(threshold {self.threshold:g} s)"
            )
        if self.kind == "killed":
            return (
                f"Killed: {self.method} {url}{view} was still running after "
                f"{self.elapsed:.2f} s when its worker was terminated "
                f"(threshold {self.threshold:g} s)"
            )
        if self.kind == "finished":
            outcome = self.exception or (str(self.status_code) if self.status_code else "?")
            return (
                f"Slow request finished: {self.method} {url}{view} -> {outcome} "
                f"in {self.elapsed:.2f} s (threshold {self.threshold:g} s)"
            )
        thread = f"{self.thread_name} ({self.thread_id})" if self.thread_name else self.thread_id
        return (
            f"Slow request: {self.method} {url}{view} running for {self.elapsed:.2f} s, "
            f"threshold {self.threshold:g} s, pid {self.pid}, thread {thread}, "
            f"taken {self.late_by * 1000:.0f} ms after the deadline"
        )

    def traceback(self) -> str:
        """The stack, Python style: oldest call first, the stuck line last."""
        notes = []
        if self.hidden_frames:
            notes.append(f"{self.hidden_frames} server frames above slowwatch hidden")
        if self.truncated_frames:
            notes.append(f"{self.truncated_frames} frames cut")
        head = "Stack of the request (most recent call last"
        head += f"; {', '.join(notes)}):" if notes else "):"
        lines = [head]
        if not self.frames:
            lines.append("  (no stack: the thread had no Python frame to show)")
        for frame in self.frames:
            lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.function}')
            if frame.line:
                lines.append(f"    {frame.line}")
            for name, value in frame.locals or ():
                lines.append(f"      {name} = {_one_line(value)}")
        return "\n".join(lines)

    def hottest(self, n: int = 5) -> str:
        """Where the slow part of the request spent its time, from the profile."""
        profile = self.profile
        if profile is None or not profile.samples:
            return ""
        every = f"every {profile.interval * 1000:g} ms"
        notes = [f"{profile.samples} samples {every}"]
        if profile.cpu_time is not None:
            notes.append(f"{profile.cpu_time:.2f} s of CPU")
        if profile.decimated:
            notes.append("thinned out past the sample limit")
        if profile.throttled:
            notes.append("sampled less often to stay within the CPU budget")
        lines = []
        if profile.states:
            lines.append(f"Since the threshold: {verdict(dict(profile.states))}.")
        lines.append(f"Hottest lines since the threshold ({'; '.join(notes)}):")
        for (filename, function, lineno), share in profile.hottest(n):
            lines.append(f'  {share:4.0%}  File "{filename}", line {lineno}, in {function}')
            source = linecache.getline(filename, lineno).strip()
            if source:
                lines.append(f"          {source}")
        return "\n".join(lines)

    def text(self) -> str:
        if self.kind == "lost":
            return self.summary()
        if self.kind != "finished":
            figures = describe_process(self.process)
            process = f"\nProcess: {figures}" if figures else ""
            doing = f"\nThe thread is {self.verdict()}." if self.state else ""
            return f"{self.summary()}{doing}{self.sql_text()}{process}\n{self.traceback()}"
        hottest = self.hottest()
        text = self.summary() + self.sql_text()
        return f"{text}\n{hottest}" if hottest else text

    def sql_text(self) -> str:
        """Lines about the database, each starting with a newline ("" when none)."""
        sql = self.sql
        if not sql or not sql.get("count") and not sql.get("in_flight"):
            return ""
        done = "so far" if self.kind != "finished" else "in all"
        lines = [f"SQL {done}: {sql['count']} queries, {sql['time']:.2f} s"]
        current = sql.get("in_flight")
        if current:
            lines.append(
                f"In flight: {_cut(current['sql'])} ({current['alias']}) "
                f"for {current['elapsed']:.1f} s"
            )
        for query in sql.get("in_flight_seen", [])[:3]:
            lines.append(f"Seen in flight for {query['elapsed']:.1f} s: {_cut(query['sql'])}")
        for query in sql.get("slowest", [])[:3]:
            lines.append(f"Slowest {query['slowest']:.2f} s: {_cut(query['sql'])}")
        for query in sql.get("repeated", [])[:3]:
            lines.append(f"Repeated x{query['count']} (N+1?): {_cut(query['sql'])}")
        return "".join(f"\n{line}" for line in lines)

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


#: Characters that must not reach a header or a title (CR, LF and other controls).
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


def headline(text: str, limit: int) -> str:
    """``text`` as one line of at most ``limit`` characters: for subjects and titles."""
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut(sql: str, limit: int = 160) -> str:
    sql = _one_line(sql)
    return sql if len(sql) <= limit else sql[: limit - 1] + "…"


def _one_line(text: str) -> str:
    # Paths are attacker-controlled: CR/LF must not start a new log line.
    return text.replace("\r", "\\r").replace("\n", "\\n")


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


_HOSTNAME = socket.gethostname()


def build_report(event: Snapshot | Finished | Lost) -> Report:
    """Redact and format a raw record. Runs on the reporter thread."""
    req = event.request
    common: dict[str, Any] = {
        "id": event.report_id,
        "method": _one_line(req.method),
        "url": redact_url(req.path, req.query),
        "view": req.view,
        "route": req.route,
        "host": _one_line(req.host),
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
            started_at=0.0,
            threshold=0.0,
            elapsed=0.0,
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
