"""The settings page shows every worker's figures, through the shared cache."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache.backends.redis import RedisCache
from django.test import Client

from helpers import Server, reach_both_workers, slow
from slowwatch import fleet
from slowwatch.alerting import CircuitBreaker

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(autouse=True)
def closed_breaker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with the cache trusted (the breaker is per process)."""
    monkeypatch.setattr(fleet, "_breaker", CircuitBreaker(failures=1, base=60.0))


@pytest.mark.server
@pytest.mark.django_db
def test_two_workers_figures_reach_the_settings_page(tmp_path: Path, settings: Any) -> None:
    prefix = uuid.uuid4().hex  # this test's keys only
    env = {
        "SLOWWATCH_TEST_REDIS": REDIS,
        "SLOWWATCH_TEST_CACHE_PREFIX": prefix,
        "SLOWWATCH_TEST_CONTROL": "1",
        "SLOWWATCH_TEST_PG": "0",
        "SLOWWATCH_TEST_REPORTERS": "slowwatch.reporters.LoggingReporter",
    }
    args = ["-b", "127.0.0.1:0", "-k", "gthread", "-w", "2", "--threads", "8"]
    srv = Server(tmp_path, args, env=env)
    try:
        sent = reach_both_workers(srv)
        srv.reports(sent, slow("finished"))
        cache = RedisCache(REDIS, {"KEY_PREFIX": prefix})
        # Each worker writes when its control thread starts, then every period.
        deadline = time.monotonic() + fleet.TTL
        workers: list[fleet.Worker] = []
        while time.monotonic() < deadline:
            workers = fleet._read(cache)
            if sum(w.reports for w in workers) == sent:
                break
            time.sleep(0.5)
        pids = {int(w.name.rsplit(":", 1)[1]) for w in workers}
        assert len(pids) == 2
        assert sum(w.reports for w in workers) == 2 * sent, [w.counters for w in workers]
        assert all(w.dropped == w.failed == 0 for w in workers)

        # The page of any worker (here: this test's process, on the same cache).
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": REDIS,
                "KEY_PREFIX": prefix,
            }
        }
        admin = Client()
        admin.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
        page = admin.get("/admin/slowwatch/slowrequest/settings/").content.decode()
        for pid in pids:
            assert f":{pid}</code>" in page
        assert "Every worker" in page and "writes its counters to the shared cache" in page
    finally:
        srv.stop()


@pytest.mark.django_db
def test_without_a_shared_cache_the_page_says_so(admin_client: Client) -> None:
    assert fleet.shared() is None  # the test project's local-memory cache
    page = admin_client.get("/admin/slowwatch/slowrequest/settings/").content.decode()
    assert "Only this worker's figures are shown: with a shared cache" in page
    assert "All reports, before the reporters" in page or "Nothing reported" in page


@pytest.mark.django_db
def test_a_cache_that_never_answers_costs_the_page_a_second(
    admin_client: Client, settings: Any, black_hole: int
) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{black_hole}/0",
        }
    }
    url = "/admin/slowwatch/slowrequest/settings/"
    started = time.monotonic()
    page = admin_client.get(url).content.decode()
    assert time.monotonic() - started < fleet.READ_TIMEOUT + 1
    assert "The shared cache does not answer" in page
    started = time.monotonic()
    admin_client.get(url)  # the breaker: not waited on again
    assert time.monotonic() - started < 0.5
