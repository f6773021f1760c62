"""The middleware in process: Django's test clients, the real monitor thread."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpResponse
from django.test import AsyncClient, Client, RequestFactory

from helpers import HERE, Bare, OuterMiddleware
from slowwatch import runtime
from slowwatch.middleware import SlowWatchMiddleware, _past_converter
from slowwatch.render import text
from slowwatch.report import Report

pytestmark = pytest.mark.django_db(transaction=False, databases=[])


def reports(collected, kind: str | None = None) -> list[Report]:
    runtime.flush(5)
    return [r for r in collected.reports if kind is None or r.kind == kind]


def test_a_slow_view_is_reported_with_its_line_then_its_outcome(collected, report_records):
    response = Client().get("/sleep/?s=0.7&access_token=secret-canary")
    assert response.status_code == 200
    [slow] = reports(collected, "slow")
    [done] = reports(collected, "finished")
    assert slow.id == done.id == response.json()["id"]  # request.slowwatch_id
    assert slow.url == "/sleep/?s=0.7&access_token=********"
    assert slow.view == "testproject.views.sleep" and slow.route == "sleep/"
    assert slow.threshold == 0.3 and 0.3 <= slow.elapsed < 0.45
    top = slow.frames[-1]
    assert (top.function, top.line) == ("sleep", "time.sleep(seconds)  # the sleeping line")
    assert slow.hidden_frames > 0
    assert done.status_code == 200 and done.elapsed >= 0.7
    warning, info = [r for r in report_records.records if r.name == "slowwatch.report"]
    assert warning.levelname == "WARNING" and info.levelname == "INFO"
    assert warning.getMessage().startswith("Slow request: GET /sleep/?s=0.7&access_token=********")
    assert "time.sleep(seconds)" in warning.getMessage()
    assert warning.slowwatch["kind"] == "slow"  # type: ignore[attr-defined]
    assert "secret-canary" not in warning.getMessage() + info.getMessage()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads procfs")
def test_the_slow_report_says_what_the_thread_is_doing(collected):
    client = Client()
    client.get("/sleep/?s=0.5")
    client.get("/cpu/?s=0.5")
    sleeping, spinning = reports(collected, "slow")
    assert (sleeping.state, sleeping.verdict()) == ("sleep", "sleeping")
    # A spinning thread may be caught waiting for the GIL the monitor holds:
    # then the snapshot says nothing rather than something wrong.
    assert (spinning.state, spinning.verdict()) in (("cpu", "on CPU"), ("", ""))
    assert "\nThe thread is sleeping.\n" in text(sleeping)
    assert sleeping.to_dict()["verdict"] == "sleeping"


def test_a_fast_view_is_never_reported(collected):
    client = Client()
    for _ in range(20):
        assert client.get("/fast/").status_code == 200
    assert client.get("/sleep/?s=0").json()["id"] is None  # no id, no cost
    assert reports(collected) == []


def test_a_view_that_raises_finishes_with_500(collected):
    client = Client(raise_request_exception=False)
    assert client.get("/boom/?s=0.5").status_code == 500
    [done] = reports(collected, "finished")
    assert done.status_code == 500
    assert done.exception == "ValueError"  # though Django answered the 500 itself


@pytest.mark.parametrize(
    ("path", "status"), [("/boom/?s=0", 500), ("/no-such-page/", 404), ("/fast/", 200)]
)
def test_layers_above_get_a_response_never_an_exception(settings, path, status):
    # slowwatch calls past the exception-to-response wrapper Django puts under
    # it (the one Django puts around it answers instead): what any middleware
    # above sees must not change.
    settings.MIDDLEWARE = ["helpers.OuterMiddleware", *settings.MIDDLEWARE]
    OuterMiddleware.seen = []
    assert Client(raise_request_exception=False).get(path).status_code == status
    assert OuterMiddleware.seen == [status]


def test_only_djangos_own_wrapper_is_skipped():
    def view(request):
        return None

    assert _past_converter(view) is view
    assert _past_converter(convert_exception_to_response(view)) is view
    wrapped = functools.wraps(view)(lambda request: view(request))
    assert _past_converter(wrapped) is wrapped


def get(interface: str, path: str) -> int:
    """The status of a GET through Django's test client for ``interface``."""
    if interface == "wsgi":
        return Client().get(path).status_code
    import asyncio

    async def go() -> int:
        return (await AsyncClient().get(path)).status_code

    return asyncio.run(go())


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_a_slow_request_the_monitor_was_too_held_up_to_see_is_counted_and_said(
    collected, interface
):
    """The monitor can be held up (a process starved of CPU, a thread that holds
    the GIL): a request may pass its threshold and end before it looks. The
    request's own thread notices as it ends, and says so."""
    wd = runtime.watchdog()
    assert get(interface, "/fast/") == 200  # the monitor runs
    held, released = threading.Event(), threading.Event()

    def hold_up() -> None:
        held.set()
        time.sleep(1.5)
        released.set()

    before = runtime.counters().get("queue dropped:monitor_late", 0)
    saved = wd.housekeeping
    wd.housekeeping, wd._next_housekeeping = hold_up, 0.0
    try:
        wd.wake()
        assert held.wait(5)
        assert get(interface, "/sleep/?s=0.5") == 200
        assert get(interface, "/exempt/?s=0.5") == 200  # exempt: nothing to say
        assert released.wait(5)
    finally:
        wd.housekeeping = saved
    [lost] = reports(collected, "lost")
    assert lost.extra == {"dropped": "slow", "reason": "monitor_late"}
    assert (lost.url, lost.threshold) == ("/sleep/?s=0.5", 0.3) and lost.elapsed >= 0.5
    assert text(lost).startswith(
        "Slow request not seen: GET /sleep/?s=0.5 (testproject.views.sleep) ran 0.5"
    )
    assert "threshold 0.3 s) and ended before slowwatch's monitor, held up" in text(lost)
    assert reports(collected, "slow") == []
    assert runtime.counters()["queue dropped:monitor_late"] == before + 1


@pytest.mark.parametrize(
    ("path", "slow"),
    [
        ("/exempt/?s=0.5", False),
        ("/exempt-class/?s=0.5", False),
        ("/exempt-dispatch/?s=0.5", False),
        ("/patient/?s=0.5", False),
        ("/impatient/?s=0.25", True),
        ("/class/?s=0.5", True),
    ],
)
# Under ASGI the sync views run on the executor thread: the rules find the
# request's watch through the context the request's task set.
@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_decorators(collected, interface, path, slow):
    assert get(interface, path) == 200
    got = reports(collected, "slow")
    assert bool(got) == slow
    if path.startswith("/impatient/"):
        assert got[0].threshold == 0.1


@pytest.mark.parametrize(
    ("rules", "path", "threshold"),
    [
        ({"IGNORE": ["sleep"]}, "/sleep/?s=0.5", None),
        ({"IGNORE": ["^/sleep/"]}, "/sleep/?s=0.5", None),
        ({"IGNORE": ["/other"]}, "/other-sleep/?s=0.5", None),
        ({"IGNORE": ["sleep"]}, "/other-sleep/?s=0.5", 0.3),
        ({"THRESHOLDS": {"sleep": 0.1}}, "/sleep/?s=0.3", 0.1),
        ({"THRESHOLDS": {"^/other-": 0.15}}, "/other-sleep/?s=0.3", 0.15),
        ({"THRESHOLDS": {"sleep": 5}}, "/sleep/?s=0.5", None),
        # A decorator wins over the settings.
        ({"THRESHOLDS": {"impatient": 5}}, "/impatient/?s=0.25", 0.1),
    ],
)
@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_url_rules(settings, collected, interface, rules, path, threshold):
    settings.SLOWWATCH = {**settings.SLOWWATCH, **rules}
    assert get(interface, path) == 200
    got = reports(collected, "slow")
    assert [r.threshold for r in got] == ([] if threshold is None else [threshold])
    for report in got:  # whichever callable serves, the stack starts below it
        assert report.hidden_frames > 0
        assert not any(f.filename.endswith("slowwatch/middleware.py") for f in report.frames)


@pytest.mark.parametrize(
    ("rules", "served_by", "url_names"),
    [
        ({}, "function", False),
        ({"THRESHOLDS": {"sleep": 0.1}}, "SlowWatchMiddleware", True),
        ({"IGNORE": ["^/static/"]}, "SlowWatchMiddleware", False),
        ({"REPORTERS": ["slowwatch.reporters.SentryReporter"]}, "SlowWatchMiddleware", False),
    ],
)
def test_django_gets_the_cheapest_callable_the_configuration_allows(
    settings, rules, served_by, url_names
):
    settings.SLOWWATCH = {**settings.SLOWWATCH, **rules}
    middleware = SlowWatchMiddleware(lambda request: HttpResponse("ok"))
    assert type(middleware).__name__ == served_by
    # Django calls process_view only where URL-name rules need it.
    assert hasattr(middleware, "process_view") == url_names
    assert middleware(RequestFactory().get("/x/")).content == b"ok"


@pytest.mark.parametrize(
    ("rules", "served_by"),
    [({}, "function"), ({"IGNORE": ["^/static/"]}, "SlowWatchMiddleware")],
)
def test_under_asgi_django_gets_a_coroutine_function_where_it_can(settings, rules, served_by):
    import asyncio

    from asgiref.sync import iscoroutinefunction

    async def view(request):  # type: ignore[no-untyped-def]
        return HttpResponse("ok")

    settings.SLOWWATCH = {**settings.SLOWWATCH, **rules}
    middleware = SlowWatchMiddleware(view)
    assert type(middleware).__name__ == served_by
    assert iscoroutinefunction(middleware)
    assert asyncio.run(middleware(RequestFactory().get("/x/"))).content == b"ok"


def test_asgi_async_view_is_reported_on_its_await_line(collected):
    async def go() -> int:
        response = await AsyncClient().get("/async-sleep/?s=0.6")
        return response.status_code

    import asyncio

    assert asyncio.run(go()) == 200
    [slow] = reports(collected, "slow")
    assert slow.frames[-1].function.endswith("sleep")
    assert any(f.line.startswith("await asyncio.sleep") for f in slow.frames)
    [done] = reports(collected, "finished")
    assert done.status_code == 200


def test_asgi_sync_view_and_exemption_still_work(collected):
    import asyncio

    async def go() -> list[int]:
        client = AsyncClient()
        return [
            (await client.get("/fast/")).status_code,
            (await client.get("/async-exempt/?s=0.5")).status_code,
            (await client.get("/exempt/?s=0.5")).status_code,
        ]

    assert asyncio.run(go()) == [200, 200, 200]
    assert reports(collected, "slow") == []


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
        env={"DJANGO_SETTINGS_MODULE": "testproject.settings", "PYTHONPATH": str(HERE)},
    )


def test_no_thread_starts_at_import_ready_or_init():
    run = run_python(
        """
        import threading
        import django
        django.setup()
        from django.test import Client
        client = Client()
        client.handler.load_middleware()
        assert threading.active_count() == 1, threading.enumerate()
        client.get("/fast/")
        names = sorted(t.name for t in threading.enumerate())
        assert names == ["MainThread", "slowwatch-monitor"], names
        print("ok")
        """
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


def test_disabled_means_middleware_not_used_and_no_thread():
    run = run_python(
        """
        import threading
        import django
        from django.conf import settings
        django.setup()
        from django.test import Client, override_settings
        with override_settings(SLOWWATCH={"ENABLED": False}):
            client = Client()
            for _ in range(3):
                assert client.get("/sleep/?s=0.4").status_code == 200
            chain = client.handler._middleware_chain
        assert threading.active_count() == 1, threading.enumerate()
        print("ok")
        """
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


def test_the_package_under_test_is_the_installed_one():
    import os

    import slowwatch

    if os.environ.get("SLOWWATCH_TEST_INSTALLED"):
        assert "site-packages" in slowwatch.__file__, slowwatch.__file__


def test_a_failing_reporter_stops_neither_the_others_nor_the_request(settings, collected, caplog):
    caplog.set_level("ERROR", logger="slowwatch.internal")
    settings.SLOWWATCH = {
        **settings.SLOWWATCH,
        "REPORTERS": ["helpers.Broken", "helpers.Collected"],
    }
    client = Client()
    for _ in range(2):
        assert client.get("/sleep/?s=0.45").status_code == 200
    assert [r.kind for r in reports(collected)] == ["slow", "finished"] * 2
    errors = [r for r in caplog.records if r.name == "slowwatch.internal"]
    # Four failures, one line: at most once a minute per place and error type.
    assert len(errors) == 1
    assert "reporter Broken" in errors[0].getMessage()
    assert runtime.errors.counts["reporter Broken"] >= 4


def test_a_reporter_without_the_base_class_is_used_without_complaint(settings, caplog):
    caplog.set_level("ERROR", logger="slowwatch.internal")
    settings.SLOWWATCH = {**settings.SLOWWATCH, "REPORTERS": ["helpers.Bare"]}
    Bare.reports = []
    assert Client().get("/sleep/?s=0.45").status_code == 200
    runtime.flush(5)  # the queue runs empty: reporters go idle
    assert [r.kind for r in Bare.reports] == ["slow", "finished"]  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.name == "slowwatch.internal"]


def test_the_profile_shows_both_phases_of_a_request(collected):
    assert Client().get("/phases/?a=0.8&b=0.8").status_code == 200
    [done] = reports(collected, "finished")
    assert done.profile is not None and done.profile.samples > 10
    lines = {line for (_, _, line), _ in done.profile.hottest(5)}
    done_text = text(done)
    assert "# phase one" in done_text and "# phase two" in done_text
    assert len(lines) >= 2
    doc = done.to_dict()
    assert doc["profile"]["samples"] == done.profile.samples


def test_escalation_points_send_still_slow_reports(settings, collected):
    settings.SLOWWATCH = {**settings.SLOWWATCH, "ESCALATIONS": [2, 2.5]}
    assert Client().get("/sleep/?s=0.95").status_code == 200
    got = reports(collected)
    assert [r.kind for r in got] == ["slow", "still_slow", "still_slow", "finished"]
    assert len({r.id for r in got}) == 1
    assert got[1].elapsed >= 0.6 and got[2].elapsed >= 0.75
    assert text(got[1]).startswith("Still slow: GET /sleep/?s=0.95")
    assert got[1].frames[-1].function == "sleep"


def test_a_request_slow_before_its_url_resolved_ends_with_its_view_and_route(collected):
    # testproject.middleware.SlowBeforeRouting sleeps before Django resolves the URL.
    assert Client().get("/sleep/?s=0&before=0.5").status_code == 200
    [slow] = reports(collected, "slow")
    [done] = reports(collected, "finished")
    assert (slow.view, slow.route) == ("", "")  # nothing resolved yet at the threshold
    assert (done.view, done.route) == ("testproject.views.sleep", "sleep/")
    assert done.where() == "/sleep/"


def test_the_root_pattern_is_a_route_of_its_own():
    from django.urls import ResolverMatch

    from slowwatch.requestinfo import read_request

    request = RequestFactory().get("/")
    request.resolver_match = ResolverMatch(lambda r: None, (), {}, route="")
    info = read_request(request)
    assert info is not None and info.route == "/"


def _asgi_get(handler, path: str, loop) -> int:
    """One GET through ``handler`` on ``loop``; the status code."""
    import asyncio

    sent: list[dict[str, object]] = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, object]:
        if not messages:  # the client stays: Django stops listening when done
            await asyncio.Event().wait()
        return messages.pop()

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path.partition("?")[0],
        "raw_path": path.partition("?")[0].encode(),
        "query_string": path.partition("?")[2].encode(),
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    loop.run_until_complete(handler(scope, receive, send))
    return int(sent[0]["status"])  # type: ignore[call-overload]


def _garbage_of_20_requests(settings, middleware: list[str], interface: str, path: str) -> int:
    """What 20 requests through a new handler leave to the garbage collector."""
    import asyncio
    import gc
    from wsgiref.util import setup_testing_defaults

    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler

    settings.MIDDLEWARE = middleware
    if interface == "asgi":
        handler = ASGIHandler()
        loop = asyncio.new_event_loop()

        def get() -> int:
            return _asgi_get(handler, path, loop)
    else:
        wsgi = WSGIHandler()

        def get() -> int:
            environ: dict[str, object] = {}
            setup_testing_defaults(environ)
            environ["PATH_INFO"], _, environ["QUERY_STRING"] = path.partition("?")
            statuses: list[str] = []
            response = wsgi(environ, lambda status, headers: statuses.append(status))
            b"".join(response)
            response.close()
            return int(statuses[0].split()[0])

    # Earlier tests' requests may still be held by the monitor (its last look
    # at what was running): let it go, so that none of them is freed, on the
    # monitor's thread, while this counts. The first request starts it again.
    runtime.watchdog().stop()
    try:
        assert get() == 200  # warm: whatever is made once is made now
        gc.collect()
        gc.disable()
        assert gc.collect() == 0
        statuses = [get() for _ in range(20)]
        garbage = gc.collect()
    finally:
        gc.enable()
        if interface == "asgi":
            loop.close()
    assert statuses == [200] * 20
    return garbage


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
@pytest.mark.parametrize("path", ["/fast/", "/async-sleep/?s=0"])
def test_a_request_leaves_no_reference_cycle(settings, interface, path):
    # A cycle per request would leave each request's objects for the garbage
    # collector, whose pauses the host pays for. Alone in MIDDLEWARE: the
    # project's other middleware make cycles of their own.
    bare = _garbage_of_20_requests(settings, [], interface, path)
    if bare:
        # Python 3.10 with asgiref: exceptions raised and caught per request,
        # each a cycle through its frames. slowwatch's objects, reachable from
        # the request, are collected with them: no cycle of its own shows.
        pytest.skip(f"Django alone leaves {bare} objects to the collector here")
    watched = _garbage_of_20_requests(
        settings, ["slowwatch.middleware.SlowWatchMiddleware"], interface, path
    )
    assert watched < 20, f"20 requests left {watched} objects to the garbage collector"
