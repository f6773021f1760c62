"""The endpoint summary: slow requests per route and method, aggregated by the database.

Counts, maximum, shares and last-seen come from one ``GROUP BY``. Percentiles
use PostgreSQL's ``percentile_cont`` in the same query; elsewhere (SQLite,
MariaDB) one window-function query ranks durations within each endpoint and
keeps the nearest-rank p50 and p95 rows of the endpoints shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import Aggregate, Count, F, FloatField, Max, Q, QuerySet, Sum
from django.utils import timezone

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
    postgres = connections[recent.db].vendor == "postgresql"
    extra: dict[str, Any] = {}
    if postgres:
        extra = {
            "p50": PercentileCont("duration", 0.5),
            "p95": PercentileCont("duration", 0.95),
        }
    groups = list(
        recent.values("route", "method")
        .annotate(
            count=Count("id"),
            longest=Max("duration"),
            last_seen=Max("started_at"),
            cpu=_share("cpu_share"),
            db=_share("db_share"),
            wait=_share("wait_share"),
            **extra,
        )
        .order_by("-count", "route", "method")[:MAX_ENDPOINTS]
    )
    ranks = {} if postgres else _nearest_ranks(recent, since)
    return [
        Endpoint(
            route=g["route"],
            method=g["method"],
            count=g["count"],
            p50=g.get("p50", ranks.get((g["route"], g["method"], "p50"))),
            p95=g.get("p95", ranks.get((g["route"], g["method"], "p95"))),
            max=g["longest"],
            cpu=g["cpu"],
            db=g["db"],
            wait=g["wait"],
            last_seen=g["last_seen"],
        )
        for g in groups
    ]


def _nearest_ranks(
    rows: QuerySet[SlowRequest], since: datetime
) -> dict[tuple[str, str, str], float]:
    """p50 and p95 per endpoint by nearest rank, ranked by the database."""
    table = SlowRequest._meta.db_table
    connection = connections[rows.db]
    quote = connection.ops.quote_name
    since_param = connection.ops.adapt_datetimefield_value(since)
    sql = f"""
        SELECT route, method, rn, n, duration FROM (
            SELECT {quote("route")} AS route, {quote("method")} AS method,
                   {quote("duration")} AS duration,
                   ROW_NUMBER() OVER (PARTITION BY {quote("route")}, {quote("method")}
                                      ORDER BY {quote("duration")}) AS rn,
                   COUNT(*) OVER (PARTITION BY {quote("route")}, {quote("method")}) AS n
            FROM {quote(table)} WHERE {quote("started_at")} >= %s
        ) ranked
        WHERE rn = (n + 1) / 2 OR rn = (n * 95 + 99) / 100
    """
    found: dict[tuple[str, str, str], float] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [since_param])
        for route, method, rn, n, duration in cursor.fetchall():
            if rn == (n + 1) // 2:
                found[(route, method, "p50")] = duration
            if rn == (n * 95 + 99) // 100:
                found[(route, method, "p95")] = duration
    return found


def since(length: timedelta) -> datetime:
    return timezone.now() - length
