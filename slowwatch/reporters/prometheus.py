"""PrometheusReporter: slow requests as Prometheus metrics (extra ``slowwatch[prometheus]``).

Metrics live in prometheus-client's default registry, so whatever already
exports it (django-prometheus, or :func:`slowwatch.views.metrics`) exports them
too, and in its multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) the workers of
a gunicorn add up. Labels are the route pattern (else the view) and the
method, never the path: a path is unbounded, a route is not.

slowwatch's own troubles are counted from this worker's counters
(:func:`slowwatch.runtime.counters`) each time a report arrives: reports
dropped by reason, and internal errors by where they happened.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from slowwatch import runtime
from slowwatch.report import UNRESOLVED, Report
from slowwatch.reporters.base import Reporter

__all__ = ["PrometheusReporter"]


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DURATION_BUCKETS = (1, 2.5, 5, 10, 25, 60, 120, 300, 600, 1800)
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _metrics() -> dict[str, Any]:
    """Created once per process (a registry refuses a name twice)."""
    return {
        "detected": Counter(
            "slowwatch_slow_requests_detected",
            "Requests that ran past their threshold.",
            ["route", "method"],
        ),
        "ended": Counter(
            "slowwatch_slow_requests",
            "Slow requests by how they ended: finished, killed or lost.",
            ["route", "method", "state"],
        ),
        "duration": Histogram(
            "slowwatch_slow_request_duration_seconds",
            "Duration of the slow requests that ended (finished or killed).",
            ["route", "method"],
            buckets=DURATION_BUCKETS,
        ),
        "now": Gauge(
            "slowwatch_requests_slow",
            "Requests running past their threshold now.",
            multiprocess_mode="livesum",
        ),
        "lateness": Histogram(
            "slowwatch_detection_lateness_seconds",
            "How long after its deadline a slow request was noticed.",
            buckets=LATENESS_BUCKETS,
        ),
        "dropped": Counter(
            "slowwatch_reports_dropped", "Reports slowwatch dropped, by reason.", ["reason"]
        ),
        "failures": Counter(
            "slowwatch_internal_errors",
            "Errors inside slowwatch (reporters that raised, ...), by where.",
            ["where"],
        ),
    }


_METRICS: dict[str, Any] | None = None


def metrics() -> dict[str, Any]:
    global _METRICS
    if _METRICS is None:
        _METRICS = _metrics()
    return _METRICS


class PrometheusReporter(Reporter):
    """Counts every transition; see docs/alerts.rst for the metrics and the scrape set-up."""

    def __init__(self) -> None:
        self.metrics = metrics()
        #: Ids counted in the "slow now" gauge, so that each leaves it once.
        self._running: set[str] = set()
        self._synced: dict[str, int] = {}

    def handle(self, report: Report) -> None:
        m = self.metrics
        labels = {
            "route": report.route or report.view or UNRESOLVED,
            "method": report.method if report.method in METHODS else "other",
        }
        if report.kind == "slow":
            m["detected"].labels(**labels).inc()
            m["lateness"].observe(report.late_by)
            if report.id not in self._running:
                self._running.add(report.id)
                m["now"].inc()
        elif report.kind in ("finished", "killed", "lost"):
            m["ended"].labels(state=report.kind, **labels).inc()
            if report.kind != "lost":
                m["duration"].labels(**labels).observe(report.elapsed)
            if report.id in self._running:
                self._running.discard(report.id)
                m["now"].dec()
        self._sync()

    def _sync(self) -> None:
        """Carry this worker's drop and error counters over as deltas."""
        found: dict[str, int] = {}
        for key, value in runtime.counters().items():
            if key.startswith("queue dropped:"):
                found[f"dropped:{key.removeprefix('queue dropped:')}"] = value
            elif key.startswith("internal error: "):
                found[f"error:{key.removeprefix('internal error: ')}"] = value
        for key, value in found.items():
            delta = value - self._synced.get(key, 0)
            if delta > 0:
                kind, name = key.split(":", 1)
                if kind == "dropped":
                    self.metrics["dropped"].labels(reason=name).inc(delta)
                else:
                    self.metrics["failures"].labels(where=name).inc(delta)
                self._synced[key] = value
