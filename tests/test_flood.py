"""Alerts under a flood, across two gunicorn workers: the limits hold fleet-wide with Redis."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import Server, slow
from mailsink import MailSink
from sentry_receiver import Receiver

pytestmark = pytest.mark.server

REDIS = "redis://127.0.0.1:6379/0"
ROUTES = ["/sleep/", "/other-sleep/", "/class/", "/anything/flood/"]


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


def settle(sink: MailSink, seconds: float = 2.0) -> int:
    time.sleep(seconds)  # mails are sent by the workers' reporter threads
    return len(sink.messages)


@pytest.mark.parametrize("redis", [True, False], ids=["redis", "local-memory"])
def test_two_workers_share_the_email_limit_only_through_a_shared_cache(
    tmp_path: Path, redis: bool
) -> None:
    with MailSink() as sink:
        srv = start(tmp_path, sink, redis)
        try:
            pids: set[int] = set()
            for _ in range(5):
                pids |= {json.loads(b)["pid"] for b in flood(srv, ["/sleep/?s=0.3"] * 16)}
                if len(pids) == 2:
                    break
            assert len(pids) == 2
            reported = {r["slowwatch"]["process"]["pid"] for r in srv.reports(16, slow("slow"))}
            assert reported == pids
            # One mail for the fleet with Redis; one per worker with local memory.
            assert settle(sink) == (1 if redis else 2)
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
            mails = settle(sink, 3)
            events = len(sentry.events())
            logged = srv.all_reports()
            slow_reports = [r for r in logged if slow("slow")(r)]
            lost = [r for r in logged if slow("lost")(r)]
            print(
                f"\n1000 slow requests on {len(ROUTES)} endpoints in {took:.1f} s: "
                f"{len(slow_reports)} slow reports, {len(lost)} lost notices, {mails} mails, "
                f"{events} Sentry events"
            )
            assert mails == len(ROUTES)  # one per endpoint, for the whole fleet
            # Sentry's limits are per process: one per endpoint in each worker at most.
            assert len(ROUTES) <= events <= 2 * len(ROUTES)
            # Most transitions of a flood are dropped, and counted (the notices of
            # drops are themselves bounded); what matters is that alerts go out.
            assert len(slow_reports) >= len(ROUTES)
            subjects = sorted(m["Subject"] for m in sink.messages)
            assert all(s.startswith("[Django] Slow request: GET /") for s in subjects)
        finally:
            srv.stop()
