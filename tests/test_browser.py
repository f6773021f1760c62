"""The admin pages in a real browser: Playwright drives Debian's chromium (headless).

The rows are made the way production makes them: real slow requests to the
live server, stored by the DatabaseReporter on slowwatch's reporter thread.
Without ``/usr/bin/chromium`` the module is skipped, except under ``CI`` where
that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: CI must run the browser tests", pytrace=False)
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)

from django.contrib.auth.models import Permission, User  # noqa: E402
from django.db import connection  # noqa: E402
from playwright.sync_api import Browser, Page, Playwright, sync_playwright  # noqa: E402

from slowwatch import runtime  # noqa: E402
from slowwatch.core.profile import FrozenProfile  # noqa: E402
from slowwatch.models import SlowRequest  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LIST = "/admin/slowwatch/slowrequest/"
PASSWORD = "correct horse battery staple"
#: On a busy machine the monitor thread may get the GIL late, and a request that ends
#: before it looks is (rightly) not reported (docs/limits.rst). The ``sleep`` view's
#: ``reported=1`` keeps the request running until the monitor has reported it (at
#: most 10 s), so each seed of that view is stored however late the monitor is.
REPORTED = "reported=1"
SLEEP = f"/sleep/?s=0.6&{REPORTED}"
LONGER = f"/sleep/?s=0.7&{REPORTED}"
#: The other views cannot be held: a seed of theirs that the monitor reported too
#: late, or not at all, is requested again (see :func:`seeded`).
PHASES = "/phases/?a=0.5&b=0.5"
N_PLUS_ONE = "/n-plus-one/?s=0.6"
#: A query string that would run script if the admin did not escape it.
SCRIPT = "<script>window.__pwned=1</script>"
SCRIPT_PATH = f"/sleep/?s=0.6&{REPORTED}&q={SCRIPT}"
#: One that would break out of an attribute.
ATTRIBUTE = "\"'><img/src=x/onerror=window.__pwned=2>"
ATTRIBUTE_PATH = f"/other-sleep/?s=0.6&{REPORTED}&q={ATTRIBUTE}"
#: (method, path) of the requests that seed the table, all at once. None spins on the
#: CPU, which would make every other thread wait for the GIL.
SEEDS = [
    ("GET", SLEEP),
    ("GET", LONGER),
    ("GET", f"/sleep/?s=0.8&{REPORTED}"),
    ("HEAD", SLEEP),
    ("GET", PHASES),
    ("GET", N_PLUS_ONE),
    ("GET", SCRIPT_PATH),
    ("GET", ATTRIBUTE_PATH),
]
#: Each time a seed that cannot be held is requested, at most.
ATTEMPTS = 5
HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Module scope: the driver and its threads exist before each test's leak check starts."""
    with pytest.MonkeyPatch.context() as patch:
        # The sync API marks its asyncio loop as running in this thread between calls,
        # and Django refuses database work (this module's fixtures) beside a running loop.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        driver = sync_playwright().start()
        try:
            yield driver
        finally:
            driver.stop()


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def page(browser: Browser, live_server: Any) -> Iterator[Page]:
    """A fresh context (no cookies) on the live server; fails on any uncaught script error."""
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(10_000)
    errors: list[str] = []
    tab = context.new_page()
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        # Closing the context closes its keep-alive connections: the server's threads end.
        context.close()
    assert errors == [], f"script errors in the page: {errors}"


@pytest.fixture
def users(settings: Any) -> dict[str, User]:
    settings.PASSWORD_HASHERS = HASHERS  # a fast hasher: logging in stays cheap
    boss = User.objects.create_superuser("boss", "boss@example.com", PASSWORD)
    clerk = User.objects.create_user("clerk", password=PASSWORD, is_staff=True)
    viewer = User.objects.create_user("viewer", password=PASSWORD, is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_slowrequest"))
    return {"boss": boss, "clerk": clerk, "viewer": viewer}


def _repeated_twelve_times(row: SlowRequest) -> bool:
    """All twelve of the N+1 queries were recorded: only a request already reported
    slow records its statements, so the monitor must have looked before they ran."""
    return [q["count"] for q in row.sql.get("repeated", [])] == [12]


def _phase_two_sampled(row: SlowRequest) -> bool:
    """The second phase was sampled: a request is sampled only once reported slow."""
    stacks = FrozenProfile.from_dict(row.profile).stacks
    return any(function == "phase_two" for key, _ in stacks for _, function, _ in key)


#: For each seed that cannot be held: whether its row shows what the tests read of
#: it, which it does only if the monitor reported the request in time.
SHOWN: dict[str, Callable[[SlowRequest], bool]] = {
    PHASES: _phase_two_sampled,
    N_PLUS_ONE: _repeated_twelve_times,
}


def _shows(row: SlowRequest | None, path: str) -> bool:
    return row is not None and row.state == "finished" and SHOWN[path](row)


def _fetch(base: str, method: str, path: str) -> int:
    # Raw < > " ' in the query string: the server passes them on as they are.
    request = urllib.request.Request(base + path, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
        return int(response.status)


@pytest.fixture
def seeded(live_server: Any, settings: Any) -> dict[str, SlowRequest]:
    """The SEEDS requested at once through the live server, stored by the DatabaseReporter.

    A seed that cannot be held until reported, and whose row does not show what
    the tests read of it (the monitor looked too late, or not at all), has its
    row deleted and is requested again, up to ATTEMPTS times.

    The reporter is switched off again before the test browses, so the admin's
    own requests (slow or not) never add rows.
    """
    plain = dict(settings.SLOWWATCH)
    reporters = [*plain["REPORTERS"], "slowwatch.reporters.DatabaseReporter"]
    settings.SLOWWATCH = {**plain, "REPORTERS": reporters}
    sending = SEEDS
    for _ in range(ATTEMPTS):
        with ThreadPoolExecutor(len(sending)) as pool:
            statuses = list(pool.map(lambda seed: _fetch(live_server.url, *seed), sending))
        assert statuses == [200] * len(sending)
        assert runtime.flush(10)
        rows = {(row.method, row.path): row for row in SlowRequest.objects.all()}
        # Only the seeds that cannot be held are sent again: a held one that is
        # missing is a fault of slowwatch's, not of a busy machine.
        sending = [
            seed for seed in SEEDS if seed[1] in SHOWN and not _shows(rows.get(seed), seed[1])
        ]
        if not sending:
            break
        SlowRequest.objects.filter(pk__in=[rows[s].pk for s in sending if s in rows]).delete()
    settings.SLOWWATCH = plain
    assert sending == [], f"not reported in time in {ATTEMPTS} attempts: {sending}"
    rows = {(row.method, row.path): row for row in SlowRequest.objects.all()}
    assert sorted(rows) == sorted(SEEDS)
    assert {row.state for row in rows.values()} == {"finished"}
    return {
        path if method == "GET" else f"{method} {path}": row
        for (method, path), row in rows.items()
    }


# -- helpers -------------------------------------------------------------------


def log_in(page: Page, username: str) -> None:
    """Through the real login form."""
    page.goto("/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()
    assert page.url.endswith("/admin/"), page.url


def result_paths(page: Page) -> list[str]:
    """The path column of the change list, as shown."""
    return page.locator("#result_list tbody td.field-short_path").all_inner_texts()


def _interpolated(values: list[float], fraction: float) -> float:
    at = fraction * (len(values) - 1)
    low = int(at)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (at - low)


# -- who gets in -----------------------------------------------------------------


def test_anonymous_visitor_is_sent_to_the_login_page(page: Page) -> None:
    response = page.goto(LIST)
    assert response is not None and response.ok
    assert re.search(r"/admin/login/\?next=/admin/slowwatch/slowrequest/$", page.url), page.url
    assert page.locator("#id_username").is_visible()


def test_staff_without_the_view_permission_gets_403(
    page: Page, users: dict[str, User], live_server: Any
) -> None:
    log_in(page, "clerk")
    assert page.get_by_role("link", name="Slow requests").count() == 0
    for url in (LIST, f"{LIST}summary/", f"{LIST}settings/"):
        response = page.goto(url)
        assert response is not None and response.status == 403, url


def test_viewer_reads_but_cannot_delete_nor_change_settings(
    page: Page, users: dict[str, User], seeded: dict[str, SlowRequest]
) -> None:
    log_in(page, "viewer")
    page.goto(LIST)
    assert len(result_paths(page)) == len(SEEDS)
    # No delete permission: no action to offer.
    assert page.locator("select[name=action]").count() == 0
    page.goto(f"{LIST}{seeded[LONGER].pk}/change/")
    assert page.locator(".sw-path").inner_text() == LONGER
    assert page.locator(".sw-actions .deletelink").count() == 0
    page.goto(f"{LIST}settings/")
    assert page.get_by_text("Only a superuser can change this.").is_visible()
    assert page.locator("form.sw-control").count() == 0


# -- the pages ---------------------------------------------------------------------


def test_list_filters_and_search(
    page: Page, users: dict[str, User], seeded: dict[str, SlowRequest]
) -> None:
    log_in(page, "boss")
    page.get_by_role("link", name="Slow requests").first.click()
    page.wait_for_url(f"**{LIST}")
    assert sorted(result_paths(page)) == sorted(path for _, path in SEEDS)

    sidebar = page.locator("#changelist-filter")
    sidebar.get_by_role("link", name="HEAD", exact=True).click()
    page.wait_for_url(re.compile(r"[?&]method=HEAD"))
    assert result_paths(page) == [SLEEP]
    assert page.locator("#result_list td.field-method").all_inner_texts() == ["HEAD"]

    sidebar.get_by_role("link", name=re.compile("Clear all filters")).click()
    page.wait_for_url(re.compile(r"/slowrequest/\??$"))
    assert len(result_paths(page)) == len(SEEDS)
    sidebar.get_by_role("link", name="testproject.views.n_plus_one", exact=True).click()
    page.wait_for_url(re.compile(r"[?&]view=testproject.views.n_plus_one"))
    assert result_paths(page) == ["/n-plus-one/?s=0.6"]

    page.goto(LIST)
    page.fill("#searchbar", "phases")
    page.press("#searchbar", "Enter")
    page.wait_for_url(re.compile(r"[?&]q=phases"))
    assert result_paths(page) == ["/phases/?a=0.5&b=0.5"]

    # Sorted by duration, shortest first, once its column header is clicked.
    page.goto(LIST)
    page.locator("#result_list th.column-seconds a").first.click()
    page.wait_for_url(re.compile(r"[?&]o="))
    durations = [
        float(text.removesuffix(" s"))
        for text in page.locator("#result_list td.field-seconds").all_inner_texts()
    ]
    assert len(durations) == len(SEEDS)
    assert durations == sorted(durations)


def test_detail_shows_the_flame_graph_and_downloads_speedscope(
    page: Page, users: dict[str, User], seeded: dict[str, SlowRequest]
) -> None:
    log_in(page, "boss")
    page.goto(LIST)
    page.locator("#result_list td.field-short_path a", has_text="/phases/").click()
    page.wait_for_url(re.compile(rf"{LIST}{seeded['/phases/?a=0.5&b=0.5'].pk}/change/$"))
    assert page.locator(".sw-path").inner_text() == "/phases/?a=0.5&b=0.5"
    assert page.locator(".sw-state").inner_text() == "finished"
    assert page.locator(".sw-badges").get_by_text("HTTP 200").is_visible()

    flame = page.locator("svg.sw-flame")
    assert flame.is_visible()
    boxes = flame.locator("svg.sw-box")
    assert boxes.count() >= 3
    depths = {boxes.nth(i).get_attribute("y") for i in range(boxes.count())}
    assert len(depths) >= 3, depths  # nested calls stack up

    box = boxes.filter(has_text="phase_two").first
    stroke = "r => getComputedStyle(r).strokeWidth"
    before = box.locator("rect").evaluate(stroke)
    box.hover()
    assert box.locator("rect").evaluate(stroke) != before  # the hovered box is outlined
    # Its tooltip: the function, where it is, and its share of the samples.
    title = box.locator("title").text_content() or ""
    assert title.startswith("phase_two — "), title
    assert "views.py:" in title and re.search(r"\d+(\.\d+)? ?%", title), title
    label = box.locator("text").text_content() or ""
    assert label.startswith("phase_two (views.py:"), label

    hottest = page.locator("#flame .sw-table tbody tr")
    assert hottest.count() >= 1
    assert re.fullmatch(r"\d+%", hottest.first.locator("td").first.inner_text())

    with page.expect_download() as waiting:
        page.get_by_role("link", name="Download speedscope JSON").click()
    download = waiting.value
    assert download.suggested_filename.endswith(".speedscope.json")
    saved = download.path()
    assert saved is not None
    doc = json.loads(Path(saved).read_text())
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    assert doc["profiles"] and doc["profiles"][0]["samples"]
    names = {frame["name"] for frame in doc["shared"]["frames"]}
    assert "phase_two" in names, names
    assert doc["profiles"][0]["name"] == "GET /phases/?a=0.5&b=0.5"


def test_n_plus_one_detail_shows_the_repeated_query(
    page: Page, users: dict[str, User], seeded: dict[str, SlowRequest]
) -> None:
    log_in(page, "boss")
    page.goto(f"{LIST}{seeded['/n-plus-one/?s=0.6'].pk}/change/")
    repeated = page.locator("#sql tr.sw-repeated")
    assert repeated.count() == 1
    assert repeated.locator("td").nth(1).inner_text() == "12"


def test_script_in_a_path_is_shown_as_text_and_never_runs(
    page: Page, users: dict[str, User], seeded: dict[str, SlowRequest]
) -> None:
    log_in(page, "boss")
    page.goto(LIST)
    for text in (SCRIPT_PATH, ATTRIBUTE_PATH):
        assert page.get_by_text(text, exact=True).is_visible()
    assert page.evaluate("typeof window.__pwned") == "undefined"

    for path in (SCRIPT_PATH, ATTRIBUTE_PATH):
        page.goto(f"{LIST}{seeded[path].pk}/change/")
        assert page.locator(".sw-path").inner_text() == path
        assert path in page.title()
        crumb = path if len(path) <= 60 else path[:59] + "…"
        assert page.locator(".breadcrumbs").inner_text().endswith(f"GET {crumb}")
        assert page.locator("script", has_text="__pwned").count() == 0
        assert page.locator("img[src=x]").count() == 0
        assert page.evaluate("typeof window.__pwned") == "undefined"

    # The search box takes the same text back, and it is still only text.
    page.goto(LIST)
    page.fill("#searchbar", SCRIPT)
    page.press("#searchbar", "Enter")
    page.wait_for_url(re.compile(r"[?&]q="))
    assert result_paths(page) == [SCRIPT_PATH]
    assert page.locator("#searchbar").input_value() == SCRIPT
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_endpoint_summary_lists_percentiles(
    page: Page, users: dict[str, User], seeded: dict[str, SlowRequest]
) -> None:
    log_in(page, "boss")
    page.goto(LIST)
    page.locator(".object-tools").get_by_role("link", name="Slow endpoints").click()
    page.wait_for_url(f"**{LIST}summary/")
    assert page.locator("h1").inner_text() == "Slow endpoints"
    headers = [
        (h or "").strip() for h in page.locator(".sw-endpoints thead th").all_text_contents()
    ]
    assert headers[:7] == ["Endpoint", "Method", "Slow requests", "Per hour", "p50", "p95", "Max"]

    rows: dict[tuple[str, str], list[str]] = {}
    for row in page.locator(".sw-endpoints tbody tr").all():
        cells = row.locator("td").all_inner_texts()
        rows[(cells[0], cells[1])] = cells
    assert set(rows) == {
        ("sleep/", "GET"),
        ("sleep/", "HEAD"),
        ("other-sleep/", "GET"),
        ("phases/", "GET"),
        ("n-plus-one/", "GET"),
    }
    sleep = rows[("sleep/", "GET")]
    assert sleep[2] == "4"
    # The chart draws the four in this hour's bar (or the last two, across an hour's turn).
    chart = page.locator(".sw-endpoints tbody tr", has=page.locator("td", has_text="GET")).filter(
        has_text="sleep/"
    )
    assert 1 <= chart.first.locator("svg.sw-chart rect").count() <= 2
    p50, p95, longest = (float(cell.removesuffix(" s")) for cell in sleep[4:7])
    assert 0.3 <= p50 <= p95 <= longest
    durations = sorted(
        row.duration for row in SlowRequest.objects.filter(route="sleep/", method="GET")
    )
    if connection.vendor == "postgresql":  # percentile_cont: interpolated
        expected = (_interpolated(durations, 0.5), _interpolated(durations, 0.95), durations[3])
    else:  # nearest rank over the four GET /sleep/ durations
        expected = (durations[1], durations[3], durations[3])
    assert all(abs(a - b) <= 0.006 for a, b in zip((p50, p95, longest), expected, strict=True)), (
        expected
    )

    # Its "requests" link lists exactly that endpoint's requests.
    page.locator(".sw-endpoints tbody tr", has=page.locator("td", has_text="HEAD")).get_by_role(
        "link", name="requests"
    ).click()
    page.wait_for_url(re.compile(r"[?&]route=sleep%2F"))
    assert result_paths(page) == [SLEEP]
    assert page.locator("#result_list td.field-method").all_inner_texts() == ["HEAD"]
