"""What a request did in the database: counts always, statements once it is slow.

Before the threshold a request pays for two clock reads and two additions per
query, and the reference to the statement running now (so that the monitor
can tell which query is in flight). Once the request is reported slow, every
statement is also folded, by its normalized text, into a small table: how
often, how long in all, the slowest run. Parameters are never stored, and
literals in the SQL text are replaced by ``?``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

#: Statements kept per request, and the length a statement is cut to.
MAX_STATEMENTS = 200
MAX_SQL = 1000
#: A statement run this often in one request looks like an N+1 query.
REPEATED = 5

_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?\b")
_IN_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_PLACEHOLDER = re.compile(r"%s|%\(\w+\)s|\$\d+|:\w+")
_SPACE = re.compile(r"\s+")


def normalize(sql: str) -> str:
    """The statement's shape: literals and placeholders become ``?``, IN lists ``(...)``."""
    text = _STRING.sub("?", sql[: MAX_SQL * 4])
    text = _PLACEHOLDER.sub("?", text)
    text = _NUMBER.sub("?", text)
    text = _IN_LIST.sub("(...)", text)
    # A literal % is written %% in SQL that comes with parameters.
    text = _SPACE.sub(" ", text.replace("%%", "%")).strip()
    return text[:MAX_SQL]


def sql_text(sql: object) -> str:
    """The statement as text. Composed SQL objects (psycopg.sql) are not
    rendered, as that could run their code: they are named by type, found by
    ``type()`` (``isinstance`` may read a ``__class__`` property)."""
    return sql if type(sql) is str else f"<{type(sql).__name__}>"


@dataclass
class Statement:
    sql: str
    count: int = 0
    time: float = 0.0
    slowest: float = 0.0


@dataclass
class SqlStats:
    """One request's database use. Written by the request thread only."""

    count: int = 0
    time: float = 0.0
    #: ``(sql, alias, started)`` of the query running now, else None; ``sql``
    #: as given to Django (see :func:`sql_text`). The monitor reads it (one
    #: reference: atomic).
    current: tuple[object, str, float] | None = None
    statements: dict[str, Statement] = field(default_factory=dict)
    dropped: int = 0

    def record(self, sql: str, seconds: float) -> None:
        """Fold a finished statement into the table (slow requests only)."""
        shape = normalize(sql)
        entry = self.statements.get(shape)
        if entry is None:
            if len(self.statements) >= MAX_STATEMENTS:
                self.dropped += 1
                return
            entry = self.statements[shape] = Statement(shape)
        entry.count += 1
        entry.time += seconds
        entry.slowest = max(entry.slowest, seconds)

    def summary(self, n: int = 5) -> dict[str, Any]:
        entries = list(self.statements.values())
        as_dict = [
            {"sql": e.sql, "count": e.count, "time": e.time, "slowest": e.slowest} for e in entries
        ]
        by_slowest = sorted(range(len(entries)), key=lambda i: -entries[i].slowest)
        by_count = sorted(range(len(entries)), key=lambda i: -entries[i].count)
        return {
            "count": self.count,
            "time": self.time,
            "slowest": [as_dict[i] for i in by_slowest[:n]],
            "repeated": [as_dict[i] for i in by_count[:n] if entries[i].count >= REPEATED],
            "statements_dropped": self.dropped,
        }


def in_flight(stats: SqlStats | None, now: float) -> dict[str, Any] | None:
    """The query running now, read from another thread: ``{"sql", "alias", "elapsed"}``."""
    current = stats.current if stats is not None else None
    if current is None:
        return None
    sql, alias, started = current
    return {"sql": normalize(sql_text(sql)), "alias": alias, "elapsed": max(0.0, now - started)}


def finished_summary(
    stats: SqlStats | None, inflight: dict[str, tuple[str, float]]
) -> dict[str, Any]:
    """The ``sql`` of a finished report: the request's stats and what samples saw in flight.

    Runs on the reporter thread: the request has ended, nobody writes these any more.
    """
    if stats is None:
        return {}
    seen: dict[str, dict[str, Any]] = {}
    for raw, (alias, elapsed) in inflight.items():
        shape = normalize(raw)
        if shape not in seen or seen[shape]["elapsed"] < elapsed:
            seen[shape] = {"sql": shape, "alias": alias, "elapsed": elapsed}
    longest = sorted(seen.values(), key=lambda q: -q["elapsed"])
    return {**stats.summary(), "in_flight_seen": longest[:5]}
