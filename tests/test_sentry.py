"""SentryReporter with the real sentry-sdk, sending over HTTP to a receiver on loopback.

Requests go through Django's real WSGIHandler (which sentry-sdk's Django
integration wraps: a scope and, with tracing, a transaction per request), on
the test's thread; views that touch no database, so no test database is needed.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
import sentry_sdk
from django.core.cache.backends.locmem import LocMemCache
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from sentry_sdk.integrations.logging import LoggingIntegration

from helpers import Collected
from sentry_receiver import Receiver
from slowwatch import runtime
from slowwatch.core.frames import Frame, Stack
from slowwatch.core.records import RequestInfo, Snapshot
from slowwatch.report import Report, build_report
from slowwatch.reporters.sentry import SentryReporter

SENTRY = "slowwatch.reporters.SentryReporter"
SLEEPING_LINE = "    time.sleep(seconds)  # the sleeping line"
CANARY = "c4n4ry-s3cr3t"

Start = Callable[..., Receiver]


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(autouse=True)
def keep_connections() -> Iterator[None]:
    """As Django's test client does: requests do not close the database connections.

    Else ``close_old_connections`` would touch a connection that an earlier
    test opened on this thread (and these tests may not use the database).
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def start_sentry(receiver: Receiver) -> Iterator[Start]:
    """``start_sentry(**options)``: ``sentry_sdk.init`` pointed at the receiver.

    Default integrations, as in a Django project (Django, logging, threading...);
    the HTTP transport. Shut down at teardown, hanging receiver released first so
    the SDK's worker thread can end, and the client unset for the tests that follow.
    """

    def start(**options: Any) -> Receiver:
        sentry_sdk.init(dsn=receiver.dsn, **options)
        return receiver

    yield start
    receiver.release()
    sentry_sdk.get_client().close(timeout=2)
    sentry_sdk.get_global_scope().set_client(None)


@pytest.fixture
def reporting(settings: Any) -> Iterator[Callable[..., None]]:
    """Reports go to :class:`Collected` and a SentryReporter (``configure(**SENTRY)``)."""
    Collected.reports = []
    # The per-process limit lives in a local-memory cache that outlives reporters.
    LocMemCache("slowwatch-sentry", {}).clear()

    def configure(reporters: tuple[str, ...] = (), **sentry: Any) -> None:
        settings.SLOWWATCH = {
            **settings.SLOWWATCH,
            "REPORTERS": ["helpers.Collected", *reporters, SENTRY],
            "SENTRY": sentry,
        }

    configure()
    yield configure
    runtime.flush(10)


@pytest.fixture
def sentry(start_sentry: Start, reporting: Callable[..., None]) -> Receiver:
    return start_sentry()


def call(
    path: str,
    *,
    method: str = "GET",
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request through a new WSGIHandler (built now, with the current settings)."""
    path, _, query = path.partition("?")
    body = "&".join(f"{k}={v}" for k, v in (form or {}).items()).encode()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "wsgi.input": io.BytesIO(body),
    }
    for name, value in (headers or {}).items():
        environ[f"HTTP_{name.upper().replace('-', '_')}"] = value
    setup_testing_defaults(environ)
    status: list[str] = []

    def start_response(line: str, _headers: Any, _exc_info: Any = None) -> Any:
        status.append(line)
        return lambda data: None

    result = WSGIHandler()(environ, start_response)
    try:
        content = b"".join(result)
    finally:
        result.close()
    return int(status[0].split()[0]), content


def delivered(receiver: Receiver, events: int = 1, timeout: float = 5) -> list[dict[str, Any]]:
    """Wait for slowwatch to hand its reports over, then for ``events`` to arrive."""
    assert runtime.flush(10)
    receiver.wait_for(lambda r: len(r.events()) >= events, timeout)
    return receiver.events()


def sentry_reporter() -> SentryReporter:
    return next(r for r in runtime.reporters() if isinstance(r, SentryReporter))


def report(route: str = "orders/", kind: str = "slow", **request: Any) -> Report:
    frame = Frame(__file__, 1, "<module>", __name__)
    return build_report(
        Snapshot(
            kind=kind,
            report_id="f" * 32,
            request=RequestInfo("GET", f"/{route}", route=route, host="shop.example", **request),
            pid=1,
            thread_id=2,
            thread_name="t",
            started_at=time.time() - 2,
            threshold=1.0,
            elapsed=2.0,
            late_by=0.01,
            stack=Stack(frames=(frame,), hidden=0, truncated=0),
            sql={
                "count": 3,
                "time": 1.5,
                "in_flight": {"sql": "SELECT pg_sleep(%s)", "alias": "default", "elapsed": 1.2},
            },
            state="db",
        )
    )


# -- the event -----------------------------------------------------------------


def test_a_slow_request_is_one_warning_event_with_the_requests_own_stack(
    sentry: Receiver,
) -> None:
    status, _ = call("/sleep/?s=0.5")
    assert status == 200
    [event] = delivered(sentry)
    slow = Collected.reports[0]
    assert event["level"] == "warning" and event["logger"] == "slowwatch"
    assert re.fullmatch(r"Slow request: GET /sleep/ \(0\.\d s, sleeping\)", event["message"])
    assert event["fingerprint"] == ["slowwatch", "GET", "/sleep/"]
    assert event["transaction"] == "/sleep/"
    assert event["tags"] == {
        "route": "/sleep/",
        "state": "slow",
        "verdict": "sleeping",
        "slowwatch.id": slow.id,
    }
    timing = event["contexts"]["slowwatch"]
    assert timing["threshold"] == 0.3 and 0.3 <= timing["elapsed"] < 0.5
    assert timing["late_by"] >= 0 and re.match(r"^\d{4}-\d\d-\d\dT", timing["started_at"])
    assert event["contexts"]["process"]["rss"] > 0
    assert event["request"] == {"method": "GET", "url": "/sleep/", "query_string": "s=0.5"}
    assert "user" not in event  # send_default_pii is off

    [thread] = event["threads"]["values"]
    assert thread["id"] == slow.thread_id and thread["current"] and not thread["crashed"]
    frames = thread["stacktrace"]["frames"]
    innermost = frames[-1]
    assert innermost["function"] == "sleep" and innermost["module"] == "testproject.views"
    assert innermost["context_line"] == SLEEPING_LINE and innermost["in_app"] is True
    assert innermost["filename"] == "testproject/views.py"
    assert innermost["pre_context"][-1] == "    seconds = _seconds(request)"
    assert innermost["post_context"][0].lstrip().startswith("return JsonResponse(")
    django = [f for f in frames if (f["module"] or "").startswith("django.")]
    assert django and all(f["in_app"] is False for f in django)
    assert not any(f["module"] == "sentry_sdk.utils" for f in frames)  # not the reporter's

    # Only the slow transition (default KINDS): the finished one makes no event.
    assert len(delivered(sentry)) == 1
    assert sentry_reporter().counts == {"sent": 1}


def test_the_event_is_in_the_requests_trace(start_sentry: Start, reporting: Any) -> None:
    # The monitor thread of sentry-sdk sleeps 10 s between health checks: off here.
    receiver = start_sentry(traces_sample_rate=1.0, enable_backpressure_handling=False)
    call("/sleep/?s=0.4")
    [event] = delivered(receiver)
    assert receiver.wait_for(lambda r: len(r.transactions()) == 1)
    [transaction] = receiver.transactions()
    assert transaction["transaction"] == "/sleep/"
    trace_id = event["contexts"]["trace"]["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert trace_id == transaction["contexts"]["trace"]["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{16}", event["contexts"]["trace"]["span_id"])


def test_a_finished_event_carries_the_profile_as_a_speedscope_attachment(
    sentry: Receiver, reporting: Callable[..., None]
) -> None:
    reporting(KINDS=["finished"])
    call("/sleep/?s=0.5")
    [event] = delivered(sentry)
    assert event["level"] == "info"
    # Mostly sleeping; under load a sample may catch the thread waking up.
    assert re.match(
        r"Slow request finished: GET /sleep/ \(0\.\d s, \d+% sleeping", event["message"]
    )
    assert event["contexts"]["slowwatch"]["status_code"] == 200
    [attachment] = [
        i
        for e in sentry.envelopes
        if e.headers.get("event_id") == event["event_id"]
        for i in e.items
        if i.type == "attachment"
    ]
    report_id = Collected.reports[-1].id
    assert attachment.headers["filename"] == f"slowwatch-{report_id}.speedscope.json"
    assert attachment.headers["content_type"] == "application/json"
    profile = attachment.json()
    assert profile["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    [sampled] = profile["profiles"]
    assert sampled["type"] == "sampled" and sampled["name"] == "GET /sleep/"
    assert sampled["samples"] and 0.1 < sampled["endValue"] < 0.5
    names = {frame["name"] for frame in profile["shared"]["frames"]}
    assert "sleep" in names


def test_a_slow_event_has_no_attachment_as_there_is_no_profile_yet(sentry: Receiver) -> None:
    call("/sleep/?s=0.4")
    delivered(sentry)
    assert sentry.attachments() == []


def test_sql_and_the_verdict_go_in_the_event(start_sentry: Start, reporting: Any) -> None:
    receiver = start_sentry()
    SentryReporter().handle(report("orders/<int:pk>/"))
    [event] = delivered(receiver)
    assert event["message"] == "Slow request: GET /orders/<int:pk>/ (2.0 s, in the database)"
    assert event["tags"]["verdict"] == "in the database"
    assert event["contexts"]["sql"] == {
        "count": 3,
        "time": 1.5,
        "in_flight": {"sql": "SELECT pg_sleep(%s)", "alias": "default", "elapsed": 1.2},
    }
    # No trace of a request to join: a trace of its own, not the reporter thread's.
    assert re.fullmatch(r"[0-9a-f]{32}", event["contexts"]["trace"]["trace_id"])


def test_killed_is_limited_apart_from_slow(start_sentry: Start, reporting: Any) -> None:
    reporting(KINDS=["slow", "killed"])
    receiver = start_sentry()
    reporter = SentryReporter()
    for kind in ("slow", "slow", "killed"):
        reporter.handle(report("orders/", kind=kind))
    slow, killed = delivered(receiver, 2)
    assert killed["message"] == "Killed: GET /orders/ (2.0 s, in the database)"
    assert killed["level"] == "warning" and killed["tags"]["state"] == "killed"
    assert killed["fingerprint"] == slow["fingerprint"]  # one issue in Sentry
    assert reporter.counts == {"sent": 2, "rate_limited": 1}
    assert receiver.attachments() == []  # a snapshot has no profile


@pytest.mark.parametrize("user_info", [False, True])
def test_the_user_id_only_when_the_sdk_may_send_user_data(
    start_sentry: Start, reporting: Any, user_info: bool
) -> None:
    # data_collection replaces send_default_pii (deprecated) in this sentry-sdk.
    receiver = start_sentry(data_collection={"user_info": user_info})
    SentryReporter().handle(report(user_id="42"))
    [event] = delivered(receiver)
    assert event.get("user") == ({"id": "42"} if user_info else None)


@pytest.mark.parametrize(
    "options",
    [
        {"include_local_variables": False, "include_source_context": False},
        {
            "data_collection": {
                "stack_frame_variables": False,
                "frame_context_lines": 0,
                "url_query_params": {"mode": "off"},
            }
        },
    ],
    ids=["legacy-options", "data-collection"],
)
def test_no_variables_or_source_when_the_sdk_says_so(
    start_sentry: Start, reporting: Any, settings: Any, options: dict[str, Any]
) -> None:
    settings.SLOWWATCH = {**settings.SLOWWATCH, "CAPTURE_LOCALS": True}
    receiver = start_sentry(**options)
    call("/sleep/?s=0.4&page=2")
    [event] = delivered(receiver)
    frame = event["threads"]["values"][0]["stacktrace"]["frames"][-1]
    assert frame["function"] == "sleep" and frame["lineno"] > 0
    assert not {"vars", "context_line", "pre_context", "post_context"} & set(frame)
    # The SDK sends query strings unless data_collection says otherwise.
    query = event["request"].get("query_string")
    assert query == (None if "data_collection" in options else "s=0.4&page=2")


# -- what the SDK decides ------------------------------------------------------


def test_before_send_sees_the_report_and_may_drop_the_event(
    start_sentry: Start, reporting: Any
) -> None:
    seen: list[Any] = []

    def before_send(event: Any, hint: dict[str, Any]) -> Any:
        seen.append(hint.get("slowwatch_report"))
        return None

    receiver = start_sentry(before_send=before_send)
    reporter = SentryReporter()
    slow = report()
    reporter.handle(slow)
    sentry_sdk.flush(2)
    assert seen == [slow]
    assert receiver.events() == []
    assert reporter.counts == {"dropped": 1}


def test_sample_rate_zero_sends_nothing(start_sentry: Start, reporting: Any) -> None:
    receiver = start_sentry(sample_rate=0.0)
    call("/sleep/?s=0.4")
    assert runtime.flush(10)
    sentry_sdk.flush(2)
    assert receiver.events() == []
    assert sentry_reporter().counts == {"dropped": 1}
    assert [r.kind for r in Collected.reports] == ["slow", "finished"]


def test_without_sentry_sdk_initialised_nothing_is_done(reporting: Any) -> None:
    assert not sentry_sdk.get_client().is_active()
    call("/sleep/?s=0.4")
    assert runtime.flush(10)
    assert sentry_reporter().counts == {"no_client": 1}
    assert [r.kind for r in Collected.reports] == ["slow", "finished"]


def test_the_logging_reporters_warning_is_not_a_second_event(
    start_sentry: Start, reporting: Callable[..., None]
) -> None:
    # The logging integration at its most eager: every WARNING record is an event.
    receiver = start_sentry(integrations=[LoggingIntegration(event_level=logging.WARNING)])
    reporting(reporters=("slowwatch.reporters.LoggingReporter",))
    call("/sleep/?s=0.4")
    [event] = delivered(receiver)
    sentry_sdk.flush(2)
    assert [e["logger"] for e in receiver.events()] == ["slowwatch"]
    assert not event.get("breadcrumbs", {}).get("values")


# -- staying quiet -------------------------------------------------------------


def test_one_event_per_route_per_window_then_the_count_of_held_back_ones(
    sentry: Receiver, reporting: Callable[..., None], settings: Any
) -> None:
    reporting(WINDOW=1)
    settings.SLOWWATCH = {**settings.SLOWWATCH, "THRESHOLD": 0.1}
    # A burst: ten slow requests at once on one route. Each is held until it was
    # reported (reported=1): only 0.05 s over its threshold, it could end
    # unreported when the monitor runs late on a busy machine.
    burst = [threading.Thread(target=call, args=("/sleep/?s=0.15&reported=1",)) for _ in range(10)]
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join(30)  # the hold gives up after 10 s
    [event] = delivered(sentry)
    assert sentry_reporter().counts == {"sent": 1, "rate_limited": 9}
    assert "suppressed" not in event["extra"]  # (sys.argv is there: ArgvIntegration)
    time.sleep(1.1)
    call("/sleep/?s=0.15&reported=1")
    extra = delivered(sentry, 2)[1]["extra"]
    assert extra["suppressed"] == 9 and re.match(r"^\d{4}-", extra["suppressed_since"])
    call("/other-sleep/?s=0.15&reported=1")  # another route: not held back
    assert len(delivered(sentry, 3)) == 3
    assert sentry_reporter().counts == {"sent": 3, "rate_limited": 9}


def test_a_cap_per_hour_in_all(start_sentry: Start, reporting: Callable[..., None]) -> None:
    reporting(PER_HOUR=3)
    receiver = start_sentry()
    reporter = SentryReporter()
    for n in range(10):
        reporter.handle(report(f"r{n}/"))
    assert len(delivered(receiver, 3)) == 3
    assert reporter.counts == {"sent": 3, "rate_limited": 7}


# -- a Sentry that is down -----------------------------------------------------


@pytest.mark.parametrize("mode", ["error", "rate_limited", "hang"])
def test_a_sentry_that_fails_costs_the_requests_nothing(
    start_sentry: Start, reporting: Any, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    receiver = start_sentry()
    receiver.mode = mode
    errors_before = dict(runtime.errors.counts)
    for path in ("/sleep/?s=0.4&reported=1", "/other-sleep/?s=0.4&reported=1"):
        # The control: the same request, never reported (its threshold is 5 s),
        # so Sentry has no part in it; what such a request costs on this
        # machine right now.
        started = time.monotonic()
        assert call("/patient/?s=0.4")[0] == 200
        control = time.monotonic() - started
        # Held until it was reported (reported=1): only 0.1 s over its
        # threshold, it could end unreported when the monitor runs late.
        started = time.monotonic()
        status, _ = call(path)
        # A request that waited for Sentry would wait for the SDK: 2 s for a
        # flush (its shutdown_timeout), 30 s for a send to the hanging one.
        # Half a second over the control is a margin for a busy machine.
        took = time.monotonic() - started
        assert status == 200 and took < control + 0.5, (took, control)
    started = time.monotonic()
    assert runtime.flush(2)
    assert time.monotonic() - started < 0.5  # the reporter thread is not held up either
    assert [r.kind for r in Collected.reports] == ["slow", "finished"] * 2
    assert sentry_reporter().counts == {"sent": 2}
    # The SDK tried (a 429 makes it hold the next event back itself).
    assert receiver.wait_for(lambda r: len(r.events()) >= 1)
    assert len(receiver.events()) == (1 if mode in ("rate_limited", "hang") else 2)
    assert not [r for r in caplog.records if r.name == "slowwatch.internal"]
    assert runtime.errors.counts == errors_before


# -- secrets -------------------------------------------------------------------


def test_secrets_never_reach_sentry(sentry: Receiver, reporting: Any, settings: Any) -> None:
    reporting(KINDS=["slow", "finished"])
    settings.SLOWWATCH = {**settings.SLOWWATCH, "CAPTURE_LOCALS": True}
    call(
        f"/sign-in/?s=0.5&access_token={CANARY}-q",
        method="POST",
        form={"password": f"{CANARY}-post", "username": "ops"},
        headers={
            "Authorization": f"Bearer {CANARY}-auth",
            "X-Api-Key": f"{CANARY}-header",
            "Cookie": f"sessionid={CANARY}-cookie",
        },
    )
    slow, _finished = delivered(sentry, 2)
    sentry_sdk.flush(2)
    frame = slow["threads"]["values"][0]["stacktrace"]["frames"][-1]
    assert frame["function"] == "sign_in" and {"password", "api_key"} <= set(frame["vars"])
    assert slow["request"]["query_string"] == "s=0.5&access_token=********"
    assert sentry.raw and not [body for body in sentry.raw if CANARY.encode() in body]
    assert not [h for h in sentry.request_headers if CANARY in json.dumps(h)]
