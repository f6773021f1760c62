"""The endpoint summary: slow requests per route and method, aggregated by the database.

One ``GROUP BY`` gives counts, maximum, shares and last-seen, and on
PostgreSQL ``percentile_cont`` the percentiles in the same query. Elsewhere
(SQLite) the database streams each endpoint's durations in order and one pass
picks the nearest-rank p50 and p95 (see :func:`_nearest_ranks`). Both read
only the ``slowwatch_endpoints`` index, which covers them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import Aggregate, Count, F, FloatField, Max, Q, QuerySet, Sum
from django.db.models.functions import Trunc
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from slowwatch.models import SlowRequest
from slowwatch.report import UNRESOLVED

#: (query value, label, length) of the windows the page offers.
WINDOWS = (
    ("1h", "Last hour", timedelta(hours=1)),
    ("24h", "Last 24 hours", timedelta(days=1)),
    ("7d", "Last 7 days", timedelta(days=7)),
    ("30d", "Last 30 days", timedelta(days=30)),
)
DEFAULT_WINDOW = "24h"
#: How each window is cut into the bars of its chart: the unit, and its length.
BARS = {
    "1h": ("minute", timedelta(minutes=1)),
    "24h": ("hour", timedelta(hours=1)),
    "7d": ("hour", timedelta(hours=1)),
    "30d": ("day", timedelta(days=1)),
}
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
        return self.route or UNRESOLVED


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
    percentiles: dict[str, Any] = {}
    if postgres:
        percentiles = {
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
            **percentiles,
        )
        .order_by("-count", "route", "method")[:MAX_ENDPOINTS]
    )
    if not postgres:
        ranks = _nearest_ranks(recent, {(g["route"], g["method"]): g["count"] for g in groups})
        for g in groups:
            g["p50"], g["p95"] = ranks.get((g["route"], g["method"]), (None, None))
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


def _nearest_ranks(
    recent: QuerySet[SlowRequest], counts: dict[tuple[str, str], int]
) -> dict[tuple[str, str], tuple[float, float]]:
    """p50 and p95 by nearest rank, from the durations streamed in order.

    The database sorts (route, method, duration) out of the covering index;
    one pass here picks the rows at the ranks. Memory stays bounded: rows
    arrive in chunks and only two numbers per endpoint are kept.
    """
    ordered = recent.order_by("route", "method", "duration").values_list(
        "route", "method", "duration"
    )
    found: dict[tuple[str, str], tuple[float, float]] = {}
    key: tuple[str, str] | None = None
    rank = n = 0
    p50 = 0.0
    for route, method, duration in ordered.iterator(chunk_size=5000):
        if (route, method) != key:
            key, rank, n = (route, method), 0, counts.get((route, method), 0)
        rank += 1
        if not n:
            continue  # an endpoint not shown
        if rank == (n + 1) // 2:
            p50 = duration
        if rank == (n * 95 + 99) // 100:
            found[key] = (p50, duration)
    return found


def since(length: timedelta) -> datetime:
    return timezone.now() - length


def _floor(moment: datetime, unit: str) -> datetime:
    """``moment`` in the current time zone, cut down to its ``unit`` as ``Trunc`` does."""
    local = timezone.localtime(moment) if timezone.is_aware(moment) else moment
    if unit == "minute":
        return local.replace(second=0, microsecond=0)
    if unit == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def timelines(
    rows: QuerySet[SlowRequest], start: datetime, key: str
) -> tuple[str, dict[tuple[str, str], list[int]]]:
    """Slow requests per endpoint and per bar of the window (oldest first), and the unit."""
    unit, step = BARS.get(key, BARS[DEFAULT_WINDOW])
    bars: list[datetime] = []
    moment, now = _floor(start, unit), timezone.now()
    while moment <= now:
        bars.append(moment)
        moment += step
    index = {moment: i for i, moment in enumerate(bars)}
    counted = (
        rows.filter(started_at__gte=start)
        .order_by()
        .annotate(bar=Trunc("started_at", unit))
        .values("route", "method", "bar")
        .annotate(n=Count("id"))
        .values_list("route", "method", "bar", "n")
    )
    found: dict[tuple[str, str], list[int]] = {}
    for route, method, bar, n in counted:
        i = index.get(bar)
        if i is not None:
            found.setdefault((route, method), [0] * len(bars))[i] += n
    return unit, found


def chart(counts: list[int] | None, unit: str, bars: int, height: int = 24) -> SafeString:
    """A bar per ``unit``: a small SVG drawn here, from numbers only."""
    counts = counts or [0] * bars
    top = max(counts) or 1
    rects = "".join(
        f'<rect x="{i}" y="{height - height * n / top:.2f}" width="0.8" '
        f'height="{height * n / top:.2f}"/>'
        for i, n in enumerate(counts)
        if n
    )
    title = f"{sum(counts)} slow requests, at most {max(counts)} in one {unit}"
    return mark_safe(  # noqa: S308 - only numbers and fixed words go in
        f'<svg class="sw-chart" viewBox="0 0 {len(counts)} {height}" '
        f'preserveAspectRatio="none" width="120" height="{height}" role="img" '
        f'aria-label="{title}"><title>{title}</title>{rects}</svg>'
    )


def page_context(
    rows: QuerySet[SlowRequest], window_value: str | None, requests_url: Callable[[str, str], str]
) -> dict[str, Any]:
    """What the summary page shows; ``requests_url(route, method)`` links each endpoint."""
    key, length = window(window_value)
    start = since(length)
    found = endpoints(rows, start)
    unit, lines = timelines(rows, start, key)
    bars = max((len(line) for line in lines.values()), default=1)
    return {
        "endpoints": [
            (
                row,
                requests_url(row.route, row.method),
                chart(lines.get((row.route, row.method)), unit, bars),
            )
            for row in found
        ],
        "windows": [(k, label, k == key) for k, label, _ in WINDOWS],
        "window": key,
        "limit": MAX_ENDPOINTS,
        "unit": unit,
        "postgres": connections[rows.db].vendor == "postgresql",
    }
