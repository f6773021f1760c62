"""Alerts under a flood, across two gunicorn workers: the limits hold fleet-wide with Redis."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import Server, slow
from mailsink import MailSink
from sentry_receiver import Receiver
from slowwatch.report import UNRESOLVED

pytestmark = pytest.mark.server

REDIS = "redis://127.0.0.1:6379/0"
ROUTES = ["/sleep/", "/other-sleep/", "/class/", "/anything/flood/"]
#: What the limits count by (method and route) for each of ROUTES.
ENDPOINTS = ["GET /sleep/", "GET /other-sleep/", "GET /class/", "GET /^anything/"]
#: A request that turned slow before its URL was resolved: an endpoint of its
#: own. Under load a worker's first requests are (it imports the URLconf then).
UNRESOLVED_ENDPOINT = f"GET {UNRESOLVED}"
#: "[Django] Slow request: GET /sleep/ (0.1 s, sleeping) (+3 more)"
SUBJECT = re.compile(r"^\[Django\] Slow request: (GET .+?) \(\d")


def start(
    tmp_path: Path, sink: MailSink, redis: bool, threads: int = 16, sentry: str = ""
) -> Server:
    reporters = "slowwatch.reporters.LoggingReporter,slowwatch.reporters.EmailReporter"
    env = {
        "SLOWWATCH_TEST_REPORTERS": reporters,
        "SLOWWATCH_TEST_SMTP_PORT": str(sink.port),
        "SLOWWATCH_TEST_PG": "0",
    }
    if sentry:
        env["SLOWWATCH_TEST_REPORTERS"] += ",slowwatch.reporters.SentryReporter"
        env["SLOWWATCH_TEST_SENTRY_DSN"] = sentry
    if redis:
        env["SLOWWATCH_TEST_REDIS"] = REDIS
        env["SLOWWATCH_TEST_CACHE_PREFIX"] = uuid.uuid4().hex  # this test's keys only
    args = ["-b", "127.0.0.1:0", "-k", "gthread", "-w", "2", "--threads", str(threads)]
    return Server(tmp_path, args, threshold=0.1, env=env)


def flood(srv: Server, paths: list[str], clients: int = 32) -> list[bytes]:
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(srv.get, paths))
    assert all(status == 200 for status, _ in answers)
    return [body for _, body in answers]


def endpoints(sink: MailSink) -> Counter[str]:
    """The mails, counted by the endpoint their subject names."""
    found: Counter[str] = Counter()
    for message in list(sink.messages):
        match = SUBJECT.match(message["Subject"])
        assert match, message["Subject"]
        found[match.group(1)] += 1
    return found


def settle(srv: Server, sink: MailSink, ready: Callable[[Counter[str]], bool]) -> Counter[str]:
    """The mails by endpoint, once every mail the workers will send is in.

    Mails are sent by the workers' reporter threads: wait for the ones
    expected, then stop the server, whose workers deliver (or drop) what is
    still queued as they exit, so that a mail the limits should have held back
    cannot arrive after the count, however busy the machine.
    """
    deadline = time.monotonic() + 30
    while not ready(endpoints(sink)) and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.stop()
    return endpoints(sink)


@pytest.mark.parametrize("redis", [True, False], ids=["redis", "local-memory"])
def test_two_workers_share_the_email_limit_only_through_a_shared_cache(
    tmp_path: Path, redis: bool
) -> None:
    with MailSink() as sink:
        srv = start(tmp_path, sink, redis)
        try:
            # Until each worker reported a request of /sleep/: a worker's first
            # requests may turn slow before their URL is resolved, and count
            # as another endpoint. Each request is held until it was reported
            # (reported=1), so that the reports to wait for are known.
            pids: set[int] = set()
            resolved: set[int] = set()
            sent = 0
            for _ in range(5):
                answers = flood(srv, ["/sleep/?s=0.3&reported=1"] * 16)
                pids |= {json.loads(b)["pid"] for b in answers}
                sent += len(answers)
                resolved = {
                    r["slowwatch"]["process"]["pid"]
                    for r in srv.reports(sent, slow("slow"))
                    if r["slowwatch"]["request"]["route"] == "sleep/"
                }
                if len(pids) == 2 and resolved == pids:
                    break
            assert len(pids) == 2
            assert resolved == pids
            # One mail per endpoint for the fleet with Redis; one per worker
            # with local memory.
            each = 1 if redis else 2
            mails = settle(srv, sink, lambda found: found["GET /sleep/"] >= each)
            assert mails["GET /sleep/"] == each
            assert set(mails) <= {"GET /sleep/", UNRESOLVED_ENDPOINT}, mails
            assert mails[UNRESOLVED_ENDPOINT] <= each
        finally:
            srv.stop()


def test_a_thousand_slow_requests_in_a_minute(tmp_path: Path) -> None:
    with MailSink() as sink, Receiver() as sentry:
        srv = start(tmp_path, sink, redis=True, threads=32, sentry=sentry.dsn)
        try:
            paths = [f"{ROUTES[i % len(ROUTES)]}?s=0.12" for i in range(1000)]
            started = time.monotonic()
            flood(srv, paths, clients=64)
            took = time.monotonic() - started
            assert took < 60
            mails = settle(srv, sink, lambda found: all(found[e] for e in ENDPOINTS))
            events = Counter(" ".join(e["fingerprint"][1:]) for e in sentry.events())
            logged = srv.all_reports()
            slow_reports = [r for r in logged if slow("slow")(r)]
            lost = [r for r in logged if slow("lost")(r)]
            print(
                f"\n1000 slow requests on {len(ROUTES)} endpoints in {took:.1f} s: "
                f"{len(slow_reports)} slow reports, {len(lost)} lost notices, "
                f"{sum(mails.values())} mails, {sum(events.values())} Sentry events"
            )
            # One mail per endpoint, for the whole fleet. A request that turned
            # slow before its URL was resolved (a worker's first, under load)
            # is of an endpoint of its own, with a limit of its own.
            assert [mails[e] for e in ENDPOINTS] == [1] * len(ROUTES), mails
            assert set(mails) <= {*ENDPOINTS, UNRESOLVED_ENDPOINT}, mails
            assert mails[UNRESOLVED_ENDPOINT] <= 1
            # Sentry's limits are per process: one per endpoint in each worker at most.
            assert len(ROUTES) <= sum(events[e] for e in ENDPOINTS), events
            assert all(events[e] <= 2 for e in ENDPOINTS), events
            assert set(events) <= {*ENDPOINTS, UNRESOLVED_ENDPOINT}, events
            assert events[UNRESOLVED_ENDPOINT] <= 2
            # Most transitions of a flood are dropped, and counted (the notices of
            # drops are themselves bounded); what matters is that alerts go out.
            assert len(slow_reports) >= len(ROUTES)
            subjects = sorted(m["Subject"] for m in sink.messages)
            assert all(s.startswith("[Django] Slow request: GET ") for s in subjects), subjects
        finally:
            srv.stop()
