"""The admin pages, through Django's test client, on the suite's database."""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from helpers import Collected
from slowwatch import control, runtime
from slowwatch.models import Control, SlowRequest

pytestmark = pytest.mark.django_db(transaction=True)

LIST = "/admin/slowwatch/slowrequest/"
SCRIPT = "<script>window.__pwned=1</script>"


@pytest.fixture
def seeded(client: Client, settings: Any) -> Iterator[list[SlowRequest]]:
    """Three slow requests stored through the real path, then reports collected.

    The DatabaseReporter is switched off again before the test browses: an
    admin page that runs past the suite's 0.3 s threshold on a loaded machine
    would otherwise add a row of its own.
    """
    Collected.reports = []
    plain = dict(settings.SLOWWATCH)
    settings.SLOWWATCH = {
        **plain,
        "REPORTERS": ["helpers.Collected", "slowwatch.reporters.DatabaseReporter"],
    }
    client.get("/n-plus-one/?s=0.6")
    # Long enough past the threshold for several samples, on a busy machine too.
    client.get("/cpu/?s=0.8")
    client.get(f"/anything/{SCRIPT}/", {"s": "0.6"})
    assert runtime.flush(10)
    settings.SLOWWATCH = {**plain, "REPORTERS": ["helpers.Collected"]}
    rows = list(SlowRequest.objects.order_by("started_at"))
    assert len(rows) == 3
    yield rows
    runtime.flush(10)


@pytest.fixture
def admin(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def staff(client: Client, *codenames: str) -> Client:
    user = User.objects.create_user("staff", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return client


def test_the_list_shows_filters_searches_and_sorts(admin: Client, seeded: list[Any]) -> None:
    page = admin.get(LIST).content.decode()
    for header in ("Started", "Method", "Path", "Duration", "State", "Mostly", "View"):
        assert f">{header}</a>" in page, header
    assert "/n-plus-one/?s=0.6" in page and 'title="testproject.views.cpu">views.cpu<' in page
    # The spinning one: on a busy machine it may wait for a CPU or the GIL
    # more than it runs, and says so; never sleeping or waiting on I/O.
    cpu_bound = ("% on CPU</td>", "% waiting for a CPU</td>", "% waiting for the GIL</td>")
    # The result's own row (the view filter names views.cpu too).
    results = page.split("<tbody>", 1)[1]
    row = next(r for r in results.split("<tr") if "views.cpu<" in r)
    assert any(verdict in row for verdict in cpu_bound), row
    assert "% sleeping</td>" in page  # the others, whatever else they did
    assert "By state" in page and "By method" in page and "By view" in page
    cpu = admin.get(LIST, {"view": "testproject.views.cpu"}).content.decode()
    assert "/cpu/?s=0.8" in cpu and "/n-plus-one/" not in cpu
    found = admin.get(LIST, {"q": seeded[0].request_id}).content.decode()
    assert "/n-plus-one/" in found and "/cpu/" not in found
    shown = admin.get(LIST, {"o": "-4"}).context["cl"].result_list  # by duration, longest first
    assert [r.duration for r in shown] == sorted((r.duration for r in seeded), reverse=True)
    assert admin.get(LIST, {"state__exact": "finished"}).status_code == 200


def test_the_detail_page(admin: Client, seeded: list[SlowRequest]) -> None:
    row = seeded[0]
    page = admin.get(f"{LIST}{row.pk}/change/").content.decode()
    assert 'class="sw-flame"' in page and "<title>n_plus_one" in page
    assert "time.sleep(_seconds(request, 0.5))" in page  # source context
    assert "Repeated (N+1?)" in page and "SELECT ?" in page
    assert "Hottest lines" in page and "Timeline" in page and "Memory (RSS)" in page
    assert f"{row.pk}/speedscope/" in page and f"{row.pk}/collapsed/" in page
    assert "Delete" in page
    # Django's middleware chain is one folded line, in the stack and in the flame graph.
    # (With sentry-sdk's Django integration, its wrappers are in the run too.)
    folded = r"\d+ frames of (?:[\w.]+, )*django(?:, [\w.]+)*"
    assert re.search(rf'class="sw-frame sw-folded"><summary>{folded}</summary>', page)
    assert re.search(rf'<text x="4" y="12.5">{folded}</text>', page)
    assert "?frames=all#stack" in page
    every = admin.get(f"{LIST}{row.pk}/change/", {"frames": "all"}).content.decode()
    assert "sw-folded" not in every and " frames of django<" not in every
    assert "django/core/handlers/" in every and "Fold the framework" in every


def test_downloads(admin: Client, seeded: list[SlowRequest]) -> None:
    row = seeded[1]
    response = admin.get(f"{LIST}{row.pk}/speedscope/")
    assert response["Content-Disposition"].startswith('attachment; filename="slowwatch-cpu')
    doc = json.loads(response.content)
    assert doc["profiles"][0]["type"] == "sampled" and doc["shared"]["frames"]
    collapsed = admin.get(f"{LIST}{row.pk}/collapsed/").content.decode()
    assert "cpu (testproject/views.py:" in collapsed
    assert admin.get(f"{LIST}999999/speedscope/").status_code == 404


def test_request_data_is_escaped_everywhere(admin: Client, seeded: list[SlowRequest]) -> None:
    row = seeded[2]
    assert SCRIPT in row.path
    pages = [LIST, f"{LIST}{row.pk}/change/", f"{LIST}summary/?window=1h", f"{LIST}settings/"]
    for url in pages:
        page = admin.get(url).content.decode()
        assert "<script>window" not in page, url
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in admin.get(LIST).content.decode()


def test_who_may_see_what(client: Client, seeded: list[SlowRequest]) -> None:
    pk = seeded[0].pk
    urls = [LIST, f"{LIST}{pk}/change/", f"{LIST}summary/", f"{LIST}settings/"]
    urls.append(f"{LIST}{pk}/speedscope/")
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    staff(client)
    for url in urls:
        assert client.get(url).status_code == 403, url
    User.objects.filter(username="staff").delete()
    staff(client, "view_slowrequest")
    for url in urls:
        assert client.get(url).status_code == 200, url
    detail = client.get(urls[1]).content.decode()
    assert "deletelink" not in detail
    assert "purge_endpoints" not in client.get(LIST).content.decode()
    assert client.get(f"{LIST}add/").status_code == 403


def test_purge_needs_the_delete_permission_and_a_csrf_token(
    seeded: list[SlowRequest], client: Client
) -> None:
    viewer = staff(client, "view_slowrequest", "delete_slowrequest")
    guarded = Client(enforce_csrf_checks=True)
    guarded.cookies = viewer.cookies
    form = {"action": "purge_endpoints", "_selected_action": [seeded[0].pk]}
    assert guarded.post(LIST, form).status_code == 403  # no CSRF token
    assert "purge_endpoints" in client.get(LIST).content.decode()
    response = client.post(LIST, form, follow=True)
    assert "Deleted 1 slow request(s) of 1 endpoint(s)." in response.content.decode()
    assert SlowRequest.objects.count() == 2


def make(route: str, durations: list[float], age: timedelta = timedelta(0)) -> None:
    start = timezone.now() - age
    SlowRequest.objects.bulk_create(
        SlowRequest(
            request_id=f"{route}-{i}-{age.days}".ljust(32, "x")[:32],
            state="finished",
            method="GET",
            path=f"/{route}/",
            route=route,
            started_at=start - timedelta(seconds=i),
            threshold=1.0,
            duration=d,
            cpu_share=0.25,
            db_share=0.5,
            wait_share=0.25,
        )
        for i, d in enumerate(durations)
    )


def test_the_endpoint_summary(admin: Client) -> None:
    durations = [float(d) for d in range(1, 21)]  # 1..20 s
    make("reports/", durations)
    make("export/", [3.0, 5.0])
    make("reports/", [500.0], age=timedelta(days=3))  # outside the last 24 hours
    response = admin.get(f"{LIST}summary/")
    rows = {e.route: e for e, _, _ in response.context["endpoints"]}
    page = response.content.decode()
    reports = rows["reports/"]
    assert reports.count == 20 and reports.max == 20.0
    if connection.vendor == "postgresql":
        expected = statistics.quantiles(durations, n=100, method="inclusive")
        assert reports.p50 == pytest.approx(statistics.median(durations))
        assert reports.p95 == pytest.approx(expected[94])
    else:  # nearest rank
        assert (reports.p50, reports.p95) == (10.0, 19.0)
    assert reports.cpu == pytest.approx(0.25) and reports.db == pytest.approx(0.5)
    assert [e.route for e, _, _ in response.context["endpoints"]] == ["reports/", "export/"]
    # A bar per hour of the window: the 20 requests of the last 20 s in the
    # last bar (or the last two, across the turn of an hour).
    charts = {e.route: chart for e, _, chart in response.context["endpoints"]}
    assert 1 <= charts["reports/"].count("<rect") <= 2
    assert 'aria-label="20 slow requests, at most ' in charts["reports/"]
    assert re.search(r'viewBox="0 0 2[45] 24"', charts["reports/"])
    assert 'x="2' in charts["reports/"] and 'height="24.00"' in charts["reports/"]
    assert page.count('<svg class="sw-chart"') == 2
    assert "?route=reports%2F&amp;method=GET" in page
    week = admin.get(f"{LIST}summary/", {"window": "7d"}).context["endpoints"]
    assert next(e for e, _, _ in week if e.route == "reports/").max == 500.0
    listed = admin.get(LIST, {"route": "export/", "method": "GET"}).content.decode()
    assert listed.count("/export/") >= 2 and "/reports/" not in listed


def test_the_settings_page_pauses_and_retimes_every_worker(
    admin: Client, client: Client, settings: Any
) -> None:
    Collected.reports = []
    settings.SLOWWATCH = {**settings.SLOWWATCH, "REPORTERS": ["helpers.Collected"]}
    url = f"{LIST}settings/"
    page = admin.get(url).content.decode()
    assert "THRESHOLD" in page and "Effective configuration" in page
    assert admin.post(url, {"paused": "on", "threshold": ""}).status_code == 302
    assert Control.objects.get().paused and control.current().paused
    client.get("/sleep/?s=0.4")
    runtime.flush(5)
    assert Collected.reports == []  # paused: not watched
    watchdog = runtime.running_watchdog()
    assert watchdog is not None
    tick = watchdog.tick
    admin.post(url, {"threshold": "0.1"})
    assert watchdog.tick < tick  # the monitor looks more often for the lower threshold
    state = control.current()
    assert (state.paused, state.threshold, state.changed_by) == (False, 0.1, "root")
    client.get("/sleep/?s=0.2")  # below the settings' 0.3 s, above the override
    runtime.flush(5)
    assert [r.kind for r in Collected.reports] == ["slow", "finished"]
    assert Collected.reports[0].threshold == pytest.approx(0.1)
    assert admin.post(url, {"threshold": "-1"}).context["form"].errors["threshold"]
    admin.post(url, {"threshold": ""})
    assert control.current().threshold is None
    assert watchdog.tick == tick  # and never keeps the faster tick once it is gone


def test_the_settings_page_reads_nothing_from_slowwatchs_database(admin: Client) -> None:
    """The page shows what this worker applies: it renders while the database
    that holds the control row cannot be read."""
    url = f"{LIST}settings/"
    admin.get(url)  # the session and the user are loaded once
    with CaptureQueriesContext(connections["default"]) as queries:
        page = admin.get(url)
    assert page.status_code == 200
    assert not [q for q in queries.captured_queries if "slowwatch" in q["sql"]]


def test_only_a_superuser_changes_the_settings(client: Client) -> None:
    staff(client, "view_slowrequest")
    url = f"{LIST}settings/"
    assert "Only a superuser can change this." in client.get(url).content.decode()
    assert client.post(url, {"paused": "on"}).status_code == 403
    assert not Control.objects.exists()


@pytest.fixture(autouse=True)
def resume() -> Iterator[None]:
    yield
    control.apply(control.ControlState())
    time.sleep(0)
