"""The endpoint summary: slow requests per route and method, aggregated by the database.

On PostgreSQL one ``GROUP BY`` gives counts, maximum, shares and last-seen,
and ``percentile_cont`` the percentiles. Elsewhere (SQLite) one query of
window functions ranks the durations within each endpoint and keeps the
nearest-rank p50 and p95 rows, which carry the endpoint's other figures. Both
read only the ``slowwatch_endpoint`` index, which covers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.models import Aggregate, Count, F, FloatField, Max, Q, QuerySet, Sum
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from slowwatch.models import SlowRequest

#: (query value, label, length) of the windows the page offers.
WINDOWS = (
    ("1h", "Last hour", timedelta(hours=1)),
    ("24h", "Last 24 hours", timedelta(days=1)),
    ("7d", "Last 7 days", timedelta(days=7)),
    ("30d", "Last 30 days", timedelta(days=30)),
)
DEFAULT_WINDOW = "24h"
#: Endpoints shown at most, the most frequent first.
MAX_ENDPOINTS = 200


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(p) WITHIN GROUP (ORDER BY expr)``."""

    function = "percentile_cont"
    name = "PercentileCont"
    output_field = FloatField()
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        super().__init__(expression, fraction=float(fraction), **extra)


@dataclass(frozen=True)
class Endpoint:
    route: str
    method: str
    count: int
    p50: float | None
    p95: float | None
    max: float
    cpu: float | None
    db: float | None
    wait: float | None
    last_seen: datetime

    @property
    def label(self) -> str:
        return self.route or "(unresolved)"


def window(value: str | None) -> tuple[str, timedelta]:
    for key, _, length in WINDOWS:
        if key == value:
            return key, length
    return DEFAULT_WINDOW, {k: v for k, _, v in WINDOWS}[DEFAULT_WINDOW]


def _share(field: str) -> Any:
    # The share of time, weighted by duration, over the rows that have one.
    return Sum(F(field) * F("duration")) / Sum("duration", filter=Q(**{f"{field}__isnull": False}))


def endpoints(rows: QuerySet[SlowRequest], since: datetime) -> list[Endpoint]:
    """The summary of ``rows`` started since ``since``, most frequent endpoint first."""
    recent = rows.filter(started_at__gte=since).order_by()
    if connections[recent.db].vendor != "postgresql":
        return _ranked(recent.db, since)
    groups = (
        recent.values("route", "method")
        .annotate(
            count=Count("id"),
            longest=Max("duration"),
            last_seen=Max("started_at"),
            cpu=_share("cpu_share"),
            db=_share("db_share"),
            wait=_share("wait_share"),
            p50=PercentileCont("duration", 0.5),
            p95=PercentileCont("duration", 0.95),
        )
        .order_by("-count", "route", "method")[:MAX_ENDPOINTS]
    )
    return [
        Endpoint(
            g["route"],
            g["method"],
            g["count"],
            g["p50"],
            g["p95"],
            g["longest"],
            g["cpu"],
            g["db"],
            g["wait"],
            g["last_seen"],
        )
        for g in groups
    ]


def _ranked(using: str, since: datetime) -> list[Endpoint]:
    """Everything in one pass of window functions over the covering index.

    Each endpoint's durations are ranked; the rows at the nearest ranks of
    p50 and p95 come back, carrying the endpoint's count, maximum, last start
    and shares. Integer arithmetic only, so that no database's division or
    rounding rules matter.
    """
    connection = connections[using]
    q = connection.ops.quote_name
    part = f"PARTITION BY {q('route')}, {q('method')}"

    def share(column: str) -> str:
        weighted = f"SUM({q(column)} * {q('duration')}) OVER ({part})"
        known = f"SUM(CASE WHEN {q(column)} IS NOT NULL THEN {q('duration')} END) OVER ({part})"
        return f"{weighted} / {known}"

    sql = f"""
        SELECT route, method, rn, n, duration, longest, last_seen, cpu, db, wait FROM (
            SELECT {q("route")} AS route, {q("method")} AS method, {q("duration")} AS duration,
                   ROW_NUMBER() OVER ({part} ORDER BY {q("duration")}) AS rn,
                   COUNT(*) OVER ({part}) AS n,
                   MAX({q("duration")}) OVER ({part}) AS longest,
                   MAX({q("started_at")}) OVER ({part}) AS last_seen,
                   {share("cpu_share")} AS cpu, {share("db_share")} AS db,
                   {share("wait_share")} AS wait
            FROM {q(SlowRequest._meta.db_table)} WHERE {q("started_at")} >= %s
        ) ranked
        WHERE rn * 2 BETWEEN n AND n + 1 OR (rn * 100 >= n * 95 AND rn * 100 < n * 95 + 100)
    """
    found: dict[tuple[str, str], dict[str, Any]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [connection.ops.adapt_datetimefield_value(since)])
        for route, method, rn, n, duration, longest, last, cpu, db, wait in cursor.fetchall():
            entry = found.setdefault(
                (route, method),
                {"n": n, "max": longest, "last": _datetime(last), "shares": (cpu, db, wait)},
            )
            if rn * 2 in (n, n + 1):
                entry["p50"] = duration
            if n * 95 <= rn * 100 < n * 95 + 100:
                entry["p95"] = duration
    ordered = sorted(found.items(), key=lambda item: (-item[1]["n"], item[0]))
    shown = []
    for (route, method), e in ordered[:MAX_ENDPOINTS]:
        cpu, db, wait = e["shares"]
        shown.append(
            Endpoint(
                route,
                method,
                e["n"],
                e.get("p50"),
                e.get("p95"),
                e["max"],
                cpu,
                db,
                wait,
                e["last"],
            )
        )
    return shown


def _datetime(value: object) -> datetime:
    """A datetime from a raw row (SQLite returns text)."""
    if isinstance(value, str):
        parsed = parse_datetime(value)
        assert parsed is not None
        value = parsed
    assert isinstance(value, datetime)
    if settings.USE_TZ and timezone.is_naive(value):
        value = timezone.make_aware(value, dt_timezone.utc)
    return value


def since(length: timedelta) -> datetime:
    return timezone.now() - length
