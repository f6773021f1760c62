"""EmailReporter against a real SMTP server on loopback, through Django's SMTP backend."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from django.core.cache import caches
from django.core.mail import get_connection
from django.test import Client

from helpers import Collected
from mailsink import MailSink, Silent
from slowwatch import runtime
from slowwatch.core.frames import Stack
from slowwatch.core.records import RequestInfo, Snapshot
from slowwatch.report import build_report
from slowwatch.reporters import EmailReporter

pytestmark = pytest.mark.django_db


@pytest.fixture
def sink() -> Iterator[MailSink]:
    with MailSink() as running:
        yield running


@pytest.fixture
def mail(settings: Any, sink: MailSink) -> Iterator[MailSink]:
    """Slow requests are mailed to ``sink`` (and collected)."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_PORT = sink.port
    caches["default"].clear()  # the rate limits live there
    Collected.reports = []
    settings.SLOWWATCH = {
        **settings.SLOWWATCH,
        "REPORTERS": ["helpers.Collected", "slowwatch.reporters.EmailReporter"],
        "EMAIL": {"TO": ["ops@example.com"]},
        "ADMIN_URL_BASE": "https://ops.example.com",
    }
    yield sink
    runtime.flush(10)


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def delivered(sink: MailSink, n: int = 1) -> list[EmailMessage]:
    runtime.flush(10)
    deadline = time.monotonic() + 5
    while len(sink.messages) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(sink.messages)


def test_a_slow_request_is_mailed_with_why_in_the_first_lines(mail: MailSink) -> None:
    Client().get("/n-plus-one/?s=0.5")
    [message] = delivered(mail)
    subject = r"\[Django\] Slow request: GET /n-plus-one/ \(0\.\d s, sleeping\)"
    assert re.fullmatch(subject, message["Subject"])
    assert message["To"] == "ops@example.com" and message["From"] == "root@localhost"
    text, html = parts(message)
    lines = text.splitlines()
    assert lines[0].startswith(
        "Slow request: GET /n-plus-one/?s=0.5 (testproject.views.n_plus_one)"
    )
    assert lines[1] == "Where the time goes: sleeping."
    report_id = Collected.reports[0].id
    link = f"https://ops.example.com/admin/slowwatch/slowrequest/request/{report_id}/"
    assert lines[2] == f"In the admin: {link}"
    assert "time.sleep(_seconds(request, 0.5))" in text  # the stack with source lines
    assert f'<a href="{link}">' in html and "time.sleep(_seconds(request, 0.5))" in html
    assert len(delivered(mail)) == 1  # not the finished transition


def report(route: str, kind: str = "slow", path: str | None = None) -> Any:
    return build_report(
        Snapshot(
            kind=kind,
            report_id="f" * 32,
            request=RequestInfo("GET", path or f"/{route}", route=route, host="evil.example"),
            pid=1,
            thread_id=2,
            thread_name="t",
            started_at=time.time() - 2,
            threshold=1.0,
            elapsed=2.0,
            late_by=0.0,
            stack=Stack(frames=(), hidden=0, truncated=0),
            state="db",
        )
    )


def test_one_mail_per_endpoint_per_window_then_a_digest(mail: MailSink, settings: Any) -> None:
    settings.SLOWWATCH = {**settings.SLOWWATCH, "EMAIL": {"TO": ["ops@x.org"], "WINDOW": 1}}
    reporter = EmailReporter()
    for _ in range(5):
        reporter.handle(report("orders/"))
    reporter.handle(report("cart/"))
    assert [m["Subject"] for m in delivered(mail, 2)] == [
        "[Django] Slow request: GET /orders/ (2.0 s, in the database)",
        "[Django] Slow request: GET /cart/ (2.0 s, in the database)",
    ]
    time.sleep(1.1)
    reporter.handle(report("orders/"))
    third = delivered(mail, 3)[2]
    assert third["Subject"].endswith("(2.0 s, in the database) (+4 more)")
    assert "And 4 more slow requests on GET /orders/ since 20" in parts(third)[0]
    assert reporter.counts == {"sent": 3, "rate_limited": 4}


def test_a_global_cap_per_hour(mail: MailSink, settings: Any) -> None:
    settings.SLOWWATCH = {**settings.SLOWWATCH, "EMAIL": {"TO": ["o@x.org"], "PER_HOUR": 3}}
    reporter = EmailReporter()
    for n in range(10):
        reporter.handle(report(f"r{n}/"))
    assert len(delivered(mail, 3)) == 3
    assert reporter.counts == {"sent": 3, "rate_limited": 7}


def test_a_mail_server_that_refuses_is_left_alone_for_a_while(
    mail: MailSink, settings: Any
) -> None:
    mail.refuse = True
    reporter = EmailReporter()
    for n in range(5):
        with pytest.raises(Exception, match="Refused by the test"):
            reporter.handle(report(f"a{n}/"))
        if n == 2:
            break
    for n in range(5):
        reporter.handle(report(f"b{n}/"))  # the breaker is open: not even tried
    assert reporter.counts == {"failed": 3, "circuit_open": 5}
    assert mail.messages == []


def test_a_mail_server_that_never_answers_costs_the_timeout_not_the_request(
    settings: Any,
) -> None:
    with Silent() as silent:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_PORT = silent.port
        settings.SLOWWATCH = {
            **settings.SLOWWATCH,
            "REPORTERS": ["helpers.Collected", "slowwatch.reporters.EmailReporter"],
            "EMAIL": {"TO": ["ops@example.com"], "TIMEOUT": 0.5},
        }
        Collected.reports = []
        started = time.monotonic()
        response = Client().get("/sleep/?s=0.4")
        assert response.status_code == 200 and time.monotonic() - started < 0.6
        assert runtime.flush(5)
        # The other reporter got both transitions; the mail timed out after 0.5 s.
        assert [r.kind for r in Collected.reports] == ["slow", "finished"]
        email = next(r for r in runtime.reporters() if isinstance(r, EmailReporter))
        assert email.counts == {"failed": 1}


def test_a_cache_that_is_down_falls_back_to_a_local_limit(mail: MailSink, settings: Any) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "down": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",  # nothing listens there
        },
    }
    settings.SLOWWATCH = {**settings.SLOWWATCH, "CACHE_ALIAS": "down"}
    reporter = EmailReporter()
    for _ in range(3):
        reporter.handle(report("orders/"))
    assert len(delivered(mail)) == 1
    assert reporter.counts == {"sent": 1, "rate_limited": 2}


def test_a_cache_that_hangs_costs_one_timeout_then_is_left_alone(
    mail: MailSink, settings: Any, black_hole: int
) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "hung": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{black_hole}/0",  # accepts, never answers
            "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
        },
    }
    settings.SLOWWATCH = {**settings.SLOWWATCH, "CACHE_ALIAS": "hung"}
    reporter = EmailReporter()
    started = time.monotonic()
    for _ in range(5):
        reporter.handle(report("invoices/"))  # a key no other test used
    took = time.monotonic() - started
    assert took < 3, took  # one timeout, not one per report
    assert reporter.limit.breaker.open
    assert len(delivered(mail)) == 1
    assert reporter.counts == {"sent": 1, "rate_limited": 4}


def test_malicious_request_data_gives_one_escaped_line(mail: MailSink) -> None:
    client = Client()
    client.get(
        "/anything/%0d%0aBcc:%20victim@example.com/<script>alert(1)</script>/" + "x" * 8000,
        {"s": "0.35", "q": b"\xff\xfe".decode("latin-1")},
        HTTP_USER_AGENT="<script>alert(2)</script>",
    )
    [message] = delivered(mail)
    subject = message["Subject"]
    assert "\n" not in subject and "\r" not in subject and len(subject) <= 200
    assert message["Bcc"] is None
    assert mail.recipients == [["ops@example.com"]]
    text, html = parts(message)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


CANARY = "c4n4ry-s3cr3t"


def test_secrets_never_reach_a_mail(mail: MailSink, settings: Any) -> None:
    settings.SLOWWATCH = {**settings.SLOWWATCH, "CAPTURE_LOCALS": True}
    Client().post(
        f"/sign-in/?s=0.5&access_token={CANARY}-q",
        {"password": f"{CANARY}-post", "username": "ops"},
        HTTP_AUTHORIZATION=f"Bearer {CANARY}-auth",
        HTTP_X_API_KEY=f"{CANARY}-header",
        HTTP_COOKIE=f"sessionid={CANARY}-cookie",
    )
    [message] = delivered(mail)
    text, html = parts(message)
    assert "password = " in text and "api_key = " in text  # the locals are there...
    for body in (text, html, message.as_string()):
        assert CANARY not in body  # ...their values are not


def test_any_backend_gets_the_timeout(settings: Any) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert get_connection(timeout=3).fail_silently is False  # extra kwargs are accepted
