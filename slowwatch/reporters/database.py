"""DatabaseReporter: one :class:`~slowwatch.models.SlowRequest` row per slow request.

__all__ = ["DatabaseReporter"]


The row is created at ``slow`` and updated at each later transition (upsert by
request id). It runs on the reporter thread only, so its queries are never part
of a request's transaction. When the reporter's queue runs empty its connection
is treated as Django treats a request's at the request's end: closed unless
the alias's ``CONN_MAX_AGE`` keeps it (the default, 0, closes it). A database
that is down or locked gets a few quick retries within the limits of
:mod:`slowwatch.connections`, then the report is dropped and counted; a table
that does not exist (migrations not applied) is not retried at all. It runs
behind a queue of its own: requests and the other reporters never wait on it.
"""

from __future__ import annotations

import linecache
import time
from collections import Counter, OrderedDict
from datetime import datetime, timezone
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, IntegrityError, OperationalError, connections

from slowwatch import render
from slowwatch.conf import settings
from slowwatch.connections import bounded, not_migrated
from slowwatch.core.errors import errors
from slowwatch.core.frames import frame_kind
from slowwatch.core.states import verdict
from slowwatch.report import HOSTNAME, Report
from slowwatch.reporters.base import Reporter
from slowwatch.reporters.db_writes import RowWriter
from slowwatch.retention import close_orphans, prune

#: Seconds to wait before each retry of a failed write (then the report is dropped).
RETRY_DELAYS = (0.05, 0.25)
#: Lines of source kept around each frame of the project.
CONTEXT_LINES = 3
#: Retention runs at most this often per process (seconds).
PRUNE_EVERY = 3600.0
#: Rows of running requests remembered between their transitions.
REMEMBERED = 1000
#: Longest text kept in a column of its own (the JSON keeps what the report has).
MAX_TEXT = 4000


def _when(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


def _frames(report: Report) -> list[dict[str, Any]]:
    """The stack, with source lines around each frame of the project."""
    frames = []
    for frame in report.frames:
        doc = frame.to_dict()
        doc["kind"] = kind = frame_kind(frame.filename)
        if kind == "app":
            first = max(1, frame.lineno - CONTEXT_LINES)
            doc["context"] = [
                [n, linecache.getline(frame.filename, n).rstrip("\n")]
                for n in range(first, frame.lineno + CONTEXT_LINES + 1)
            ]
            while doc["context"] and not doc["context"][-1][1]:
                doc["context"].pop()
        frames.append(doc)
    return frames


def _shares(states: dict[str, Any]) -> dict[str, float | None]:
    total = sum(states.values())
    if not total:
        return {"cpu_share": None, "db_share": None, "wait_share": None}
    cpu, db = states.get("cpu", 0) / total, states.get("db", 0) / total
    return {"cpu_share": cpu, "db_share": db, "wait_share": max(0.0, 1 - cpu - db)}


def fields_of(report: Report) -> dict[str, Any]:
    """The columns this transition sets."""
    sql = report.sql or {}
    current = sql.get("in_flight") or {}
    found: dict[str, Any] = {
        "method": report.method[:16],
        "path": report.url,
        "route": report.route[:255],
        "view": report.view[:255],
        "host": report.host[:255],
        "hostname": report.hostname[:255],
        "pid": report.pid,
    }
    if report.user_id:
        found["user_id"] = report.user_id[:64]
    if report.kind == "lost":
        return found
    found.update(
        started_at=_when(report.started_at),
        threshold=report.threshold,
        duration=report.elapsed,
    )
    if report.kind in ("slow", "killed"):  # the others do not name the thread
        found["thread"] = render.served_by(report)[:255]
    if sql:
        found.update(sql_count=sql.get("count"), sql_time=sql.get("time"), sql=sql)
    if current:
        found["sql_in_flight"] = str(current.get("sql", ""))[:MAX_TEXT]
    if report.process:
        found["process"] = report.process
    if report.kind == "slow":
        found["verdict"] = report.verdict()[:255]
        found["detected_at"] = _when(report.started_at + report.threshold + report.late_by)
        found["stack"] = {
            "frames": _frames(report),
            "hidden": report.hidden_frames,
            "truncated": report.truncated_frames,
        }
    if report.kind in ("finished", "killed"):
        found["finished_at"] = _when(report.started_at + report.elapsed)
    if report.kind == "finished":
        found.update(status_code=report.status_code, exception=report.exception[:255])
        seen = sql.get("in_flight_seen") or []
        if seen and not current:
            found["sql_in_flight"] = str(seen[0].get("sql", ""))[:MAX_TEXT]
    if report.kind in ("finished", "killed"):
        # A killed request's profile goes up to the kill.
        profile = report.profile
        if profile is not None:
            states: dict[str, float] = dict(profile.states)
            found.update(
                profile=profile.to_dict(),
                states=states,
                cpu_time=profile.cpu_time,
                verdict=verdict(states)[:255],
                **_shares(states),
            )
    return found


def _scalars(values: dict[str, Any]) -> dict[str, Any]:
    """The columns of ``values`` worth remembering: not the (large) JSON ones."""
    return {
        name: value
        for name, value in values.items()
        if value is None or isinstance(value, (str, int, float, datetime))
    }


#: Seconds between two looks for rows whose process is gone.
ORPHANS_EVERY = 60.0

#: The state a row takes at each transition (``still_slow`` keeps ``slow``).
STATES = {"slow": "slow", "still_slow": "slow", "killed": "killed", "finished": "finished"}


class DatabaseReporter(Reporter):
    """Keeps every slow request in :class:`~slowwatch.models.SlowRequest` for the admin.

    Writes on ``SLOWWATCH["DATABASE_ALIAS"]``; prunes by ``SLOWWATCH["RETENTION"]``
    at most once an hour. Once a minute, and on its first report, it closes
    the rows of this host whose process is gone (``lost``: see
    :func:`~slowwatch.retention.close_orphans`). ``counts`` has ``saved``,
    ``dropped`` and ``closed_orphans`` figures.
    """

    #: Seconds between two looks for rows left running by a dead process.
    idle_every = ORPHANS_EVERY

    def __init__(self) -> None:
        if not apps.is_installed("slowwatch"):
            raise ImproperlyConfigured(
                "DatabaseReporter needs 'slowwatch' in INSTALLED_APPS (and its migrations)."
            )
        from slowwatch.models import SlowRequest

        self.model = SlowRequest
        self.alias = settings.database_alias
        self.counts: Counter[str] = Counter()
        self._next_prune = 0.0
        self._next_orphans = 0.0
        #: request id -> what the next transition of its row needs (state,
        #: timeline, extra), so that it is one UPDATE without a SELECT first;
        #: and the scalar columns it holds, so that the UPDATE sets only the
        #: columns that change.
        self._rows: OrderedDict[str, dict[str, Any]] = OrderedDict()
        #: Built for the first connection; rebuilt if the alias is pointed elsewhere.
        self._writer: RowWriter | None = None

    def handle(self, report: Report) -> None:
        try:
            for delay in (*RETRY_DELAYS, None):
                try:
                    self.save(report)
                    break
                except OperationalError as exc:
                    # Down, locked or gone away: a fresh connection may do.
                    connections[self.alias].close()
                    if delay is None or not_migrated(exc):
                        raise
                    time.sleep(delay)
            self.counts["saved"] += 1
        except DatabaseError as exc:
            connections[self.alias].close()
            if not_migrated(exc):
                self.counts["dropped:not_migrated"] += 1
                errors.note(
                    "DatabaseReporter: not migrated",
                    "slowwatch: the table of slow requests is missing on database %r: "
                    "run 'manage.py migrate'. Reports are not stored until then.",
                    self.alias,
                )
                return
            self.counts["dropped"] += 1
            errors.error("DatabaseReporter: a report was dropped", exc)
            return
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY
            with errors.guard("DatabaseReporter: applying RETENTION"):
                prune(*settings.retention, using=self.alias)
        self.orphans()

    def orphans(self) -> None:
        """Close the rows left running by a dead process of this host (once a minute)."""
        if time.monotonic() < self._next_orphans:
            return
        self._next_orphans = time.monotonic() + ORPHANS_EVERY
        with errors.guard("DatabaseReporter: closing rows of dead processes"):
            bounded(self.alias)
            closed = close_orphans(HOSTNAME, using=self.alias)
            if closed:
                self.counts["closed_orphans"] += closed

    def idle(self) -> None:
        self.orphans()
        # Kept open through a burst of reports; then Django's own rule for a
        # request's connection: closed now with the default CONN_MAX_AGE of 0,
        # kept for the next report while the alias's CONN_MAX_AGE allows.
        connections[self.alias].close_if_unusable_or_obsolete()

    def close(self) -> None:
        # The connection is this thread's own: nobody else would close it.
        connection = connections[self.alias]
        raw = connection.connection
        connection.close()
        if raw is not None and connection.connection is raw:
            # Django leaves an in-memory SQLite database open (its tests' is).
            raw.close()
            connection.connection = None

    def _sql(self) -> RowWriter:
        connection = bounded(self.alias)
        writer = self._writer
        if writer is None or writer.connection is not connection:
            writer = self._writer = RowWriter(self.model, connection)
        return writer

    def save(self, report: Report) -> None:
        """One statement per transition: an INSERT at ``slow``, then UPDATEs.

        Each is a transaction of its own (autocommit): no savepoint, no BEGIN.
        """
        found = fields_of(report)
        sql = self._sql()
        # When it happened: the deadline's snapshot, the end, or (lost) now.
        at = report.started_at + report.elapsed if report.started_at else time.time()
        entry = {"kind": report.kind, "at": at, "elapsed": report.elapsed}
        if report.kind == "slow":
            # The first word about a request (the only writer of its row is
            # this thread): insert straight away.
            try:
                self._create(sql, report.id, "slow", entry, found)
                return
            except IntegrityError:
                pass  # told twice: update instead
        row = self._rows.pop(report.id, None) or (
            self.model._default_manager.db_manager(self.alias)
            .filter(request_id=report.id)
            .order_by()
            .values("state", "timeline", "extra")
            .first()
        )
        if row is None:
            state = STATES.get(report.kind, "lost")
            if report.kind == "lost":
                # The slow report itself never arrived: keep what is known.
                found.update(
                    started_at=_when(report.started_at or time.time()),
                    threshold=report.threshold,
                    duration=report.elapsed,
                    extra={"lost": report.extra},
                )
            self._create(sql, report.id, state, entry, found)
            return
        if report.kind == "lost":
            found = {"extra": {**(row["extra"] or {}), "lost": report.extra}}
            if row["state"] == "slow":
                found["state"] = "lost"
        else:
            found["state"] = STATES.get(report.kind, row["state"])
        timeline = [*(row["timeline"] or []), entry]
        # What the row already holds need not be written again: SQLite rewrites
        # the index entries of every column an UPDATE sets, changed or not.
        known = row.get("columns", {})
        changed = {
            name: value
            for name, value in found.items()
            if name not in known or known[name] != value
        }
        if not sql.update(report.id, {**changed, "timeline": timeline}):
            # Deleted meanwhile (a purge): the rest of its story is a row of its own.
            if report.kind != "lost":
                sql.insert({**found, "request_id": report.id, "timeline": [entry]})
            return
        state = found.get("state", row["state"])
        if state == "slow":  # more to come
            extra = found.get("extra", row["extra"])
            self._remember(report.id, state, timeline, extra, {**known, **_scalars(found)})

    def _create(
        self, sql: RowWriter, request_id: str, state: str, entry: Any, found: dict[str, Any]
    ) -> None:
        """INSERT the request's row, and remember it for its next transition."""
        values = {**found, "request_id": request_id, "state": state, "timeline": [entry]}
        sql.insert(values)
        self._remember(request_id, state, [entry], found.get("extra") or {}, _scalars(values))

    def _remember(
        self,
        request_id: str,
        state: str,
        timeline: list[Any],
        extra: Any,
        columns: dict[str, Any],
    ) -> None:
        rows = self._rows
        rows[request_id] = {
            "state": state,
            "timeline": timeline,
            "extra": extra,
            "columns": columns,
        }
        while len(rows) > REMEMBERED:
            rows.popitem(last=False)
