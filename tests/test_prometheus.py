"""PrometheusReporter: in process, through django-prometheus, and under gunicorn's workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from helpers import Hanging, Server, reach_both_workers, slow
from slowwatch import runtime
from slowwatch.reporters.prometheus import SYNC_EVERY

SLEEP = {"route": "sleep/", "method": "GET"}


def value(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture
def counted(settings: Any) -> Iterator[None]:
    settings.SLOWWATCH = {
        **settings.SLOWWATCH,
        "REPORTERS": ["helpers.Collected", "slowwatch.reporters.PrometheusReporter"],
    }
    yield
    runtime.flush(10)


@pytest.mark.django_db
def test_slow_requests_are_counted_by_route_method_and_end(counted: None) -> None:
    before = {
        "detected": value("slowwatch_slow_requests_detected_total", SLEEP),
        "finished": value("slowwatch_slow_requests_total", {**SLEEP, "state": "finished"}),
        "durations": value("slowwatch_slow_request_duration_seconds_count", SLEEP),
        "lateness": value("slowwatch_detection_lateness_seconds_count"),
    }
    client = Client()
    # Held until they were reported (reported=1): only 0.05-0.1 s over their
    # threshold, they could end unreported when the monitor runs late.
    client.get("/sleep/?s=0.4&reported=1")
    client.get("/sleep/?s=0.35&other=1&reported=1")
    client.get("/fast/")
    runtime.flush(10)
    assert value("slowwatch_slow_requests_detected_total", SLEEP) == before["detected"] + 2
    finished = value("slowwatch_slow_requests_total", {**SLEEP, "state": "finished"})
    assert finished == before["finished"] + 2
    count = value("slowwatch_slow_request_duration_seconds_count", SLEEP)
    assert count == before["durations"] + 2
    assert value("slowwatch_detection_lateness_seconds_count") == before["lateness"] + 2
    assert value("slowwatch_requests_slow") == 0  # none is running now
    # django-prometheus exports the same registry.
    page = client.get("/django-prometheus/metrics").content.decode()
    assert 'slowwatch_slow_requests_detected_total{method="GET",route="sleep/"}' in page


def scrape(srv: Server) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    status, body = srv.get("/metrics/")
    assert status == 200
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[key] = sample.value
    return found


@pytest.mark.server
def test_two_gunicorn_workers_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = {
        "SLOWWATCH_TEST_REPORTERS": (
            "slowwatch.reporters.LoggingReporter,slowwatch.reporters.PrometheusReporter"
        ),
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "SLOWWATCH_TEST_PG": "0",
    }
    args = ["-b", "127.0.0.1:0", "-k", "gthread", "-w", "2", "--threads", "8"]
    srv = Server(tmp_path, [*args, "-c", "testproject/gunicorn_conf.py"], env=env)
    try:
        sent = reach_both_workers(srv)
        srv.reports(sent, slow("finished"))
        metrics = scrape(srv)
        labels = (("method", "GET"), ("route", "sleep/"))
        assert metrics["slowwatch_slow_requests_detected_total"][labels] == sent
        finished = (("method", "GET"), ("route", "sleep/"), ("state", "finished"))
        assert metrics["slowwatch_slow_requests_total"][finished] == sent
        assert metrics["slowwatch_slow_request_duration_seconds_count"][labels] == sent
        assert sum(metrics["slowwatch_requests_slow"].values()) == 0
        assert sum(metrics["slowwatch_detection_lateness_seconds_count"].values()) == sent

        # slowwatch's own counts: each worker writes them as reports arrive and
        # every SYNC_EVERY seconds, so the last deliveries show up too.
        def delivered(outcome: str) -> float:
            labels = (("outcome", outcome), ("sink", "LoggingReporter"))
            return scrape(srv).get("slowwatch_sink_reports_total", {}).get(labels, 0)

        deadline = time.monotonic() + SYNC_EVERY + 10
        while delivered("delivered") < 2 * sent and time.monotonic() < deadline:
            time.sleep(0.2)
        assert delivered("delivered") == delivered("submitted") == 2 * sent
    finally:
        srv.stop()


@pytest.mark.django_db
def test_slow_now_and_slowwatch_own_errors(settings: Any) -> None:
    settings.SLOWWATCH = {
        **settings.SLOWWATCH,
        "REPORTERS": ["helpers.Broken", "slowwatch.reporters.PrometheusReporter"],
    }
    before = value("slowwatch_internal_errors_total", {"where": "reporter Broken"})
    done = threading.Event()
    worker = threading.Thread(target=lambda: (Client().get("/sleep/?s=1.2"), done.set()))
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while value("slowwatch_requests_slow") < 1 and time.monotonic() < deadline:
            done.wait(0.02)
        assert value("slowwatch_requests_slow") == 1  # while it runs
    finally:
        worker.join(10)
    runtime.flush(10)
    assert value("slowwatch_requests_slow") == 0
    after = value("slowwatch_internal_errors_total", {"where": "reporter Broken"})
    assert after >= before + 1


@pytest.mark.django_db
def test_own_counts_are_read_at_scrape_time_while_a_reporter_hangs(settings: Any) -> None:
    Hanging.release.clear()
    Hanging.entered.clear()
    settings.SLOWWATCH = {
        **settings.SLOWWATCH,
        "REPORTERS": ["helpers.Hanging", "slowwatch.reporters.PrometheusReporter"],
        "QUEUE_SIZE": 4,
    }
    client = Client()
    try:
        # 8 reports: the hung sink holds one, queues 4, drops 3. Each request is
        # held until it was reported (reported=1): only 0.05 s over its
        # threshold, it could end unreported when the monitor runs late.
        for _ in range(4):
            assert client.get("/sleep/?s=0.35&reported=1").status_code == 200
        assert Hanging.entered.wait(5)
        hung = {"sink": "Hanging"}

        def offered() -> tuple[float, float]:
            return (
                value("slowwatch_sink_reports_total", {**hung, "outcome": "submitted"}),
                value("slowwatch_sink_reports_dropped_total", {**hung, "reason": "queue_full"}),
            )

        # The last `finished` is built on slowwatch's reporter thread: wait for it.
        deadline = time.monotonic() + 5
        while sum(offered()) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert offered() == (5, 3)
        assert value("slowwatch_sink_reports_total", {**hung, "outcome": "dropped"}) == 3
        assert value("slowwatch_sink_reports_total", {**hung, "outcome": "delivered"}) == 0
        # django-prometheus exports them too, read as the page is asked for.
        page = Client().get("/django-prometheus/metrics").content.decode()
        assert 'slowwatch_sink_reports_total{outcome="submitted",sink="Hanging"} 5.0' in page
    finally:
        Hanging.release.set()
    assert runtime.flush(10)
    counts = runtime.counters()
    for sink in ("Hanging", "PrometheusReporter"):
        for outcome in ("submitted", "delivered"):
            labels = {"sink": sink, "outcome": outcome}
            assert (
                value("slowwatch_sink_reports_total", labels) == counts[f"{sink} queue {outcome}"]
            )
    assert value("slowwatch_sink_reports_total", {**hung, "outcome": "delivered"}) == 5
