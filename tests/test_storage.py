"""DatabaseReporter, retention and the prune command, on the suite's database.

Run on SQLite by default and on PostgreSQL with SLOWWATCH_TEST_DATABASE=postgresql
(scripts/test does both).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connections
from django.test import Client
from django.utils import timezone

from helpers import Collected, DownDatabaseReporter
from slowwatch import runtime
from slowwatch.core.frames import Stack
from slowwatch.core.profile import FrozenProfile
from slowwatch.core.records import Finished, Lost, RequestInfo, Snapshot
from slowwatch.models import SlowRequest
from slowwatch.report import HOSTNAME, build_report
from slowwatch.reporters import DatabaseReporter
from slowwatch.reporters.database import fields_of
from slowwatch.retention import close_orphans, prune

#: The reporter writes from its own thread: tests see its rows only outside a transaction.
db = pytest.mark.django_db(transaction=True)

STORE = ["helpers.Collected", "slowwatch.reporters.DatabaseReporter"]


@pytest.fixture
def stored(settings: Any) -> Iterator[type[Collected]]:
    """Reports go to the database (and to :class:`Collected`) for one test."""
    Collected.reports = []
    Collected.arrived.clear()
    settings.SLOWWATCH = {**settings.SLOWWATCH, "REPORTERS": STORE}
    yield Collected
    runtime.flush(10)


def wait_for_rows(n: int = 1, timeout: float = 10) -> list[SlowRequest]:
    runtime.flush(timeout)
    rows = list(SlowRequest.objects.order_by("started_at"))
    assert len(rows) >= n, f"expected {n} rows, found {len(rows)}"
    return rows


def snapshot(report_id: str, kind: str = "slow", path: str = "/x/") -> Snapshot:
    return Snapshot(
        kind=kind,
        report_id=report_id,
        request=RequestInfo("GET", path, view="app.views.x", route="x/"),
        pid=1,
        thread_id=2,
        thread_name="t",
        started_at=time.time() - 1,
        threshold=0.5,
        elapsed=1.0,
        late_by=0.01,
        stack=Stack(frames=(), hidden=0, truncated=0),
    )


@db
def test_a_slow_request_is_inserted_then_updated_when_it_ends(client: Client, stored: Any) -> None:
    response = client.get("/n-plus-one/?s=0.5")
    assert response.status_code == 200
    [row] = wait_for_rows()
    assert row.state == "finished"
    assert (row.method, row.path, row.route) == ("GET", "/n-plus-one/?s=0.5", "n-plus-one/")
    assert row.view == "testproject.views.n_plus_one"
    assert row.status_code == 200 and row.exception == ""
    assert row.duration >= 0.5 and row.threshold == pytest.approx(0.3)
    assert row.started_at < row.detected_at < row.finished_at
    assert [e["kind"] for e in row.timeline] == ["slow", "finished"]
    # The first stack, with source lines around the project's frames.
    app = [f for f in row.stack["frames"] if f["kind"] == "app"]
    assert app[-1]["function"] == "n_plus_one"
    context = "\n".join(line for _, line in app[-1]["context"])
    assert "time.sleep(_seconds(request, 0.5))" in context
    assert all("context" not in f for f in row.stack["frames"] if f["kind"] != "app")
    # The profile, the verdict and the SQL.
    assert row.profile["samples"] > 0 and row.profile["stacks"]
    assert row.cpu_share is not None and row.db_share is not None and row.wait_share is not None
    assert row.cpu_share + row.db_share + row.wait_share == pytest.approx(1.0)
    assert "sleeping" in row.verdict
    assert row.sql_count == 12
    assert row.sql["repeated"][0]["count"] == 12
    assert row.process["threads"] >= 1
    assert row.hostname and row.pid and row.thread


@db
def test_a_row_reported_before_its_url_resolved_gets_its_view_when_it_ends(
    client: Client, stored: Any
) -> None:
    client.get("/sleep/?s=0&before=0.5")  # slow in a middleware, before routing
    [row] = wait_for_rows()
    assert (row.view, row.route, row.endpoint) == ("testproject.views.sleep", "sleep/", "sleep/")


@db
def test_secrets_in_the_query_string_are_not_stored(client: Client, stored: Any) -> None:
    client.get("/sleep/?s=0.4&token=s3cr3t-canary&page=2")
    [row] = wait_for_rows()
    assert "s3cr3t-canary" not in row.path and "page=2" in row.path
    assert "s3cr3t-canary" not in str(SlowRequest.objects.values().get())


@db
def test_the_user_is_stored_only_when_the_request_loaded_it(client: Client, stored: Any) -> None:
    user = User.objects.create_user("ops")
    client.force_login(user)
    client.get("/sleep/?s=0.4")  # never touches request.user
    client.get("/whoami/?s=0.4")  # does, before it is slow
    untouched, touched = wait_for_rows(2)
    assert untouched.user_id == ""
    assert touched.user_id == str(user.pk)


@db
def test_transitions_upsert_one_row() -> None:
    reporter = DatabaseReporter()
    reporter.handle(build_report(snapshot("a" * 32)))
    reporter.handle(build_report(snapshot("a" * 32, kind="still_slow")))
    reporter.handle(build_report(snapshot("a" * 32, kind="killed")))
    row = SlowRequest.objects.get()
    assert row.state == "killed" and row.finished_at is not None
    assert [e["kind"] for e in row.timeline] == ["slow", "still_slow", "killed"]
    # A lost notice for a request whose slow report never arrived: a row of its own.
    info = RequestInfo("POST", "/y/", route="y/")
    reporter.handle(build_report(Lost("b" * 32, info, 1, "slow", "queue_full")))
    lost = SlowRequest.objects.get(request_id="b" * 32)
    assert (lost.state, lost.method, lost.route) == ("lost", "POST", "y/")
    # One for a running request marks it lost; a finished one keeps its state.
    reporter.handle(build_report(snapshot("c" * 32)))
    reporter.handle(build_report(Lost("c" * 32, info, 1, "finished", "queue_full")))
    assert SlowRequest.objects.get(request_id="c" * 32).state == "lost"
    # A request the monitor, held up, never saw: its own thread told its timing.
    unseen = Lost("d" * 32, info, 1, "slow", "monitor_late", 1_700_000_000.0, 0.3, 0.52)
    reporter.handle(build_report(unseen))
    row = SlowRequest.objects.get(request_id="d" * 32)
    assert (row.state, row.threshold, row.duration) == ("lost", 0.3, 0.52)
    assert row.started_at.timestamp() == 1_700_000_000.0
    assert row.extra["lost"] == {"dropped": "slow", "reason": "monitor_late"}
    assert reporter.counts["saved"] == 7


def finished(report_id: str, info: RequestInfo, started_at: float) -> Finished:
    return Finished(
        report_id=report_id,
        request=info,
        pid=1,
        thread_id=2,
        started_at=started_at,
        threshold=0.5,
        duration=2.5,
        status_code=201,
        profile=FrozenProfile(
            interval=0.05,
            samples=3,
            stacks=((((__file__, "view", 10), (__file__, "query", 20)), 3),),
            states=(("db", 2), ("cpu", 1)),
            cpu_time=0.1,
        ),
    )


@db
def test_the_row_holds_what_each_transition_said() -> None:
    # The slow report knows neither the route nor the user yet; the finished one does.
    reporter = DatabaseReporter()
    slow = build_report(snapshot("a" * 32, path="/x/?page=2"))
    slow = replace(slow, route="", view="", sql={"count": 3, "time": 0.2})
    info = RequestInfo("GET", "/x/", query="page=2", view="app.views.x", route="x/", user_id="7")
    done = build_report(finished("a" * 32, info, slow.started_at))
    reporter.handle(slow)
    reporter.handle(done)
    row = SlowRequest.objects.values().get()
    expected = {**fields_of(slow), **fields_of(done)}
    assert {name: row[name] for name in expected} == expected
    assert (row["route"], row["view"], row["user_id"]) == ("x/", "app.views.x", "7")
    # The finished report does not know the thread: the slow one's is kept.
    assert row["thread"] == "thread t (2)"
    assert row["stack"] == fields_of(slow)["stack"] and row["profile"]["stacks"]
    assert row["state"] == "finished" and row["status_code"] == 201
    assert row["extra"] == {} and row["process"] == slow.process
    assert [e["kind"] for e in row["timeline"]] == ["slow", "finished"]


@db
def test_a_row_purged_while_its_request_runs_comes_back_with_the_rest_of_its_story() -> None:
    reporter = DatabaseReporter()
    slow = build_report(snapshot("a" * 32))
    reporter.handle(slow)
    SlowRequest.objects.all().delete()
    reporter.handle(build_report(finished("a" * 32, RequestInfo("GET", "/x/"), slow.started_at)))
    row = SlowRequest.objects.get()
    assert (row.state, row.status_code, row.path) == ("finished", 201, "/x/")
    assert [e["kind"] for e in row.timeline] == ["finished"]
    assert reporter.counts == {"saved": 2}


@pytest.fixture
def extra_alias(django_db_blocker: Any) -> Iterator[Any]:
    """A database alias of the test's own, outside the test database machinery."""
    added: list[str] = []
    django_db_blocker.unblock()

    def add(alias: str, **options: Any) -> str:
        found = connections.configure_settings({"default": {}, alias: options})
        connections.settings[alias] = found[alias]
        added.append(alias)
        return alias

    yield add
    for alias in added:
        connections[alias].close()
        del connections[alias]
        del connections.settings[alias]
    django_db_blocker.restore()


def test_a_database_that_is_down_costs_a_few_retries_then_the_report_is_dropped(
    client: Client, stored: Any, extra_alias: Any, settings: Any
) -> None:
    down = extra_alias(
        "down",
        ENGINE="django.db.backends.postgresql",
        HOST="127.0.0.1",
        PORT="9",  # nothing listens there
        NAME="x",
        USER="x",
        OPTIONS={"connect_timeout": 1},
    )
    assert down == DownDatabaseReporter.alias
    stored.reports = []
    settings.SLOWWATCH = {
        **settings.SLOWWATCH,
        "REPORTERS": ["helpers.Collected", "helpers.DownDatabaseReporter"],
    }
    [database] = [r for r in runtime.reporters() if isinstance(r, DownDatabaseReporter)]
    started = time.monotonic()
    response = client.get("/sleep/?s=0.4")
    took = time.monotonic() - started
    assert response.status_code == 200 and took < 1.0  # the request did not wait
    runtime.flush(10)
    assert [r.kind for r in Collected.reports] == ["slow", "finished"]  # others unaffected
    assert database.counts == {"dropped": 2}


def test_a_database_that_never_answers_holds_up_no_other_reporter(
    client: Client, stored: Any, extra_alias: Any, settings: Any, black_hole: int
) -> None:
    extra_alias(
        DownDatabaseReporter.alias,
        ENGINE="django.db.backends.postgresql",
        HOST="127.0.0.1",
        PORT=str(black_hole),  # accepts the connection, never answers
        NAME="x",
        USER="x",
        OPTIONS={"connect_timeout": 1},
    )
    stored.reports = []
    settings.SLOWWATCH = {
        **settings.SLOWWATCH,
        "REPORTERS": ["helpers.DownDatabaseReporter", "helpers.Collected"],
    }
    [database] = [r for r in runtime.reporters() if isinstance(r, DownDatabaseReporter)]
    # The same request, never reported (its threshold is 5 s): what it costs on
    # this machine now, with no reporter involved.
    started = time.monotonic()
    assert client.get("/patient/?s=0.35").status_code == 200
    control = time.monotonic() - started
    for _ in range(3):
        started = time.monotonic()
        # Held until it was reported (reported=1): only 0.05 s over its
        # threshold, it could end unreported when the monitor runs late.
        assert client.get("/sleep/?s=0.35&reported=1").status_code == 200
        # The request did not wait: one that waited for the database would wait
        # a connection attempt at least (2 s, the least libpq and psycopg wait),
        # far over the control plus half a second's margin for a busy machine.
        assert time.monotonic() - started < control + 0.5
    deadline = time.monotonic() + 10
    while len(Collected.reports) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.kind for r in Collected.reports] == ["slow", "finished"] * 3
    # Every report reached the others while the database reporter was still on
    # its first one (three connection attempts of 2 s at least before it is
    # dropped): no other reporter waited for it, however busy the machine.
    assert database.counts == {}


def test_a_locked_sqlite_database_is_retried_then_dropped(
    tmp_path: Path, extra_alias: Any
) -> None:
    path = tmp_path / "locked.sqlite3"
    locked = extra_alias(
        "locked", ENGINE="django.db.backends.sqlite3", NAME=str(path), OPTIONS={"timeout": 0.05}
    )
    with connections[locked].schema_editor() as editor:
        editor.create_model(SlowRequest)
    connections[locked].close()
    reporter = DatabaseReporter()
    reporter.alias = locked
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    reporter.handle(build_report(snapshot("d" * 32)))
    assert time.monotonic() - started < 2
    assert reporter.counts == {"dropped": 1}
    holder.rollback()
    holder.close()
    reporter.handle(build_report(snapshot("e" * 32)))
    assert reporter.counts == {"dropped": 1, "saved": 1}
    assert SlowRequest.objects.using(locked).filter(request_id="e" * 32).exists()


def test_a_database_not_migrated_is_said_once_and_never_retried(
    tmp_path: Path, extra_alias: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="slowwatch.internal")
    empty = extra_alias("empty", ENGINE="django.db.backends.sqlite3", NAME=str(tmp_path / "e.db"))
    reporter = DatabaseReporter()
    reporter.alias = empty
    started = time.monotonic()
    for n in range(3):
        reporter.handle(build_report(snapshot(f"{n}" * 32)))
    assert time.monotonic() - started < 0.25  # no retry waits
    assert reporter.counts == {"dropped:not_migrated": 3}
    assert runtime.errors.flush(5)
    said = [r.getMessage() for r in caplog.records if "migrate" in r.getMessage()]
    assert len(said) == 1 and "manage.py migrate" in said[0]


@pytest.mark.parametrize(("max_age", "kept"), [(0, False), (60, True), (None, True)])
def test_going_idle_closes_the_connection_as_django_closes_a_requests(
    tmp_path: Path, extra_alias: Any, max_age: int | None, kept: bool
) -> None:
    alias = extra_alias(
        f"idle{max_age}",
        ENGINE="django.db.backends.sqlite3",
        NAME=str(tmp_path / "idle.sqlite3"),
        CONN_MAX_AGE=max_age,
    )
    with connections[alias].schema_editor() as editor:
        editor.create_model(SlowRequest)
    reporter = DatabaseReporter()
    reporter.alias = alias
    reporter.handle(build_report(snapshot("f" * 32)))
    reporter.idle()
    assert (connections[alias].connection is not None) == kept
    assert reporter.counts == {"saved": 1}


def make_rows(ages_in_days: list[float]) -> None:
    now = timezone.now()
    SlowRequest.objects.bulk_create(
        SlowRequest(
            request_id=f"{i:032x}",
            state="finished",
            method="GET",
            path=f"/r/{i}/",
            route="r/<int:n>/",
            started_at=now - timedelta(days=age),
            threshold=1.0,
            duration=2.0,
        )
        for i, age in enumerate(ages_in_days)
    )


@db
def test_prune_by_age_and_by_count() -> None:
    make_rows([0, 0.5, 1, 2, 10, 40, 50])
    assert prune(30, None, dry_run=True).total == 2
    assert SlowRequest.objects.count() == 7
    found = prune(30, 3)
    assert (found.too_old, found.too_many) == (2, 2)
    kept = sorted(SlowRequest.objects.values_list("path", flat=True))
    assert kept == ["/r/0/", "/r/1/", "/r/2/"]  # the newest three


@db
def test_the_prune_command(tmp_path: Path) -> None:
    make_rows([0, 1, 2, 3, 45])
    out = StringIO()
    call_command("slowwatch_prune", "--dry-run", stdout=out)
    assert "Would delete 1 slow request(s): 1 older than 30 days" in out.getvalue()
    assert SlowRequest.objects.count() == 5
    call_command("slowwatch_prune", "--older-than", "1.5", "--keep", "1", stdout=out)
    assert "Deleted 4 slow request(s): 3 older than 1.5 days, 1 beyond the newest 1" in (
        out.getvalue()
    )
    assert list(SlowRequest.objects.values_list("path", flat=True)) == ["/r/0/"]


@db
def test_retention_is_applied_by_the_reporter(settings: Any) -> None:
    settings.SLOWWATCH = {**settings.SLOWWATCH, "RETENTION": {"MAX_ROWS": 3}}
    make_rows([1, 2, 3, 4, 5])
    reporter = DatabaseReporter()
    reporter.handle(build_report(snapshot("f" * 32)))
    assert SlowRequest.objects.count() == 3
    assert SlowRequest.objects.filter(request_id="f" * 32).exists()


@db
def test_rows_left_running_by_a_dead_process_of_this_host_are_closed_lost() -> None:
    """A worker killed without a word (SIGKILL) leaves its rows ``slow``: the
    reporter of a surviving or new worker closes them, keeping what was known."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    reporter = DatabaseReporter()
    mine = replace(snapshot("a" * 32), pid=os.getpid())
    gone = replace(snapshot("b" * 32), pid=dead.pid)
    # A request that began before this process did: its pid was reused.
    reused = replace(snapshot("c" * 32), pid=os.getpid(), started_at=time.time() - 86400)
    for record in (mine, gone, reused):
        reporter.handle(build_report(record))
    elsewhere = SlowRequest.objects.get(request_id="a" * 32)
    elsewhere.pk, elsewhere.request_id, elsewhere.hostname = None, "d" * 32, "another-host"
    elsewhere.pid = dead.pid
    elsewhere.save()
    assert close_orphans(HOSTNAME) == 2
    # Our own process keeps its row; a pid that began after the request began
    # is not the process that served it; another host's pids mean nothing here.
    states = dict(SlowRequest.objects.values_list("request_id", "state"))
    assert states == {"a" * 32: "slow", "b" * 32: "lost", "c" * 32: "lost", "d" * 32: "slow"}
    row = SlowRequest.objects.get(request_id="b" * 32)
    assert row.stack == SlowRequest.objects.get(request_id="a" * 32).stack
    assert [e["kind"] for e in row.timeline] == ["slow", "lost"]
    assert row.extra["lost"] == {"reason": "process_gone", "detail": f"process {dead.pid} is gone"}
