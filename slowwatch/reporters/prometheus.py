"""PrometheusReporter: slow requests as Prometheus metrics (extra ``slowwatch[prometheus]``).

Metrics live in prometheus-client's default registry, so whatever already
exports it (django-prometheus, or :func:`slowwatch.views.metrics`) exports them
too, and in its multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) the workers of
a gunicorn add up. Labels are the route pattern (else the view) and the
method, never the path: a path is unbounded, a route is not.

slowwatch's own counts come from this worker's counters
(:func:`slowwatch.runtime.counters`): reports dropped by reason, each
reporter's reports by outcome (submitted, delivered, failed, dropped by
reason), and internal errors by where they happened. In one process they are
read at scrape time by a collector, so they are exact even while every
reporter is stuck. In multiprocess mode, where prometheus-client only adds up
what each worker wrote to its files, each worker writes them as a report
arrives and every ``SYNC_EVERY`` seconds in between.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from slowwatch import runtime
from slowwatch.report import UNRESOLVED, Report
from slowwatch.reporters.base import Reporter

__all__ = ["PrometheusReporter"]


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DURATION_BUCKETS = (1, 2.5, 5, 10, 25, 60, 120, 300, 600, 1800)
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Multiprocess mode: seconds between two writes of the counts while no report arrives.
SYNC_EVERY = 5.0

#: slowwatch's own counters: metric name, help, label names.
OWN = {
    "dropped": ("slowwatch_reports_dropped", "Reports slowwatch dropped, by reason.", ["reason"]),
    "failures": (
        "slowwatch_internal_errors",
        "Errors inside slowwatch (reporters that raised, ...), by where.",
        ["where"],
    ),
    "sink": (
        "slowwatch_sink_reports",
        "Reports each reporter was given, by outcome: submitted, delivered, failed, dropped.",
        ["sink", "outcome"],
    ),
    "sink_dropped": (
        "slowwatch_sink_reports_dropped",
        "Reports dropped before reaching a reporter, by reporter and reason.",
        ["sink", "reason"],
    ),
}


def own_counts(counters: dict[str, int]) -> dict[tuple[str, tuple[str, ...]], int]:
    """This worker's counters as ``(metric key, label values) -> value``."""
    found: dict[tuple[str, tuple[str, ...]], int] = {}

    def add(key: str, labels: tuple[str, ...], value: int) -> None:
        found[key, labels] = found.get((key, labels), 0) + value

    for name, value in counters.items():
        if name.startswith("internal error: "):
            add("failures", (name.removeprefix("internal error: "),), value)
            continue
        owner, _, what = name.partition("queue ")
        if not what or what == "restarted":
            continue
        reason = what.removeprefix("dropped:")
        if not owner:  # the queue every report goes through first
            if reason != what:
                add("dropped", (reason,), value)
            continue
        sink = owner.strip()
        if reason != what:
            add("sink_dropped", (sink, reason), value)
            add("sink", (sink, "dropped"), value)
        else:
            add("sink", (sink, what), value)
    return found


class OwnCounts(Collector):
    """slowwatch's own counters, read at scrape time (one process)."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        families = {
            key: CounterMetricFamily(name, text, labels=labels)
            for key, (name, text, labels) in OWN.items()
        }
        for (key, labels), value in sorted(own_counts(runtime.counters()).items()):
            families[key].add_metric(list(labels), value)
        yield from families.values()

    def describe(self) -> Iterator[CounterMetricFamily]:
        # Registering must not read the counters; the names are what matters.
        for name, text, labels in OWN.values():
            yield CounterMetricFamily(name, text, labels=labels)


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
    }


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


_METRICS: dict[str, Any] | None = None
_lock = threading.Lock()


def metrics() -> dict[str, Any]:
    """The metrics, and slowwatch's own counts (written, or read at scrape time)."""
    global _METRICS
    with _lock:
        if _METRICS is None:
            made = _metrics()
            if multiprocess():
                made.update(
                    {key: Counter(name, text, labels) for key, (name, text, labels) in OWN.items()}
                )
            else:
                REGISTRY.register(OwnCounts())
            _METRICS = made
    return _METRICS


class PrometheusReporter(Reporter):
    """Counts every transition; see docs/alerts.rst for the metrics and the scrape set-up."""

    def __init__(self) -> None:
        self.metrics = metrics()
        #: Ids counted in the "slow now" gauge, so that each leaves it once.
        self._running: set[str] = set()
        self._synced: dict[tuple[str, tuple[str, ...]], int] = {}
        #: Multiprocess mode: the reporter's thread writes the counts this often.
        self.idle_every = SYNC_EVERY if multiprocess() else None

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

    def idle(self) -> None:
        self._sync()

    def _sync(self) -> None:
        """Multiprocess mode: write this worker's counts as deltas."""
        if "sink" not in self.metrics:  # read at scrape time instead
            return
        for key, value in own_counts(runtime.counters()).items():
            delta = value - self._synced.get(key, 0)
            if delta > 0:
                name, labels = key
                self.metrics[name].labels(*labels).inc(delta)
                self._synced[key] = value
