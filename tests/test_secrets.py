"""End to end: secrets a slow view holds in its locals reach no report.

The view (``testproject.views.holds_secrets``) keeps them under harmless
names (``body``, ``headers``, ``payload``, ``dsn``), so masking by name cannot
help: only what the values look like can. Every canary is distinct, so a
failure names the rule that let one through.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client

from slowwatch import runtime
from slowwatch.core.redact import MASK
from slowwatch.render import text
from slowwatch.report import Report
from testproject.views import DSN_CANARY, JSON_CANARY

BODY_CANARY = "c4n4ry-body-91f0"
COOKIE_CANARY = "c4n4ry-cookie-3a77"
API_KEY_CANARY = "c4n4ry-apikey-e605"
AUTH_CANARY = "c4n4ry-auth-0b9c"
CANARIES = (BODY_CANARY, COOKIE_CANARY, API_KEY_CANARY, AUTH_CANARY, JSON_CANARY, DSN_CANARY)


def leaked(written: str) -> list[str]:
    return [canary for canary in CANARIES if canary in written]


@pytest.fixture(params=["urlencoded", "multipart"])
def reports(
    request: pytest.FixtureRequest,
    settings: Any,
    collected: Any,
    caplog: pytest.LogCaptureFixture,
) -> list[Report]:
    """The reports of one slow POST to the view, a form sent either way browsers send one."""
    caplog.set_level(logging.INFO, logger="slowwatch.report")
    settings.SLOWWATCH = {**settings.SLOWWATCH, "CAPTURE_LOCALS": True, "THRESHOLD": 0.3}
    form = {"username": "ops", "password": BODY_CANARY}
    data: Any = form
    extra: dict[str, Any] = {}
    if request.param == "urlencoded":
        data = urlencode(form)
        extra["content_type"] = "application/x-www-form-urlencoded"
    response = Client().post(
        "/holds-secrets/?s=0.8",
        data,
        **extra,
        HTTP_COOKIE=f"theme=dark; sessionid={COOKIE_CANARY}",
        HTTP_X_API_KEY=API_KEY_CANARY,
        HTTP_AUTHORIZATION=f"Bearer {AUTH_CANARY}",
    )
    assert response.status_code == 200
    assert runtime.flush(5)
    found: list[Report] = list(collected.reports)  # type: ignore[arg-type]
    assert {report.kind for report in found} >= {"slow", "finished"}
    return found


def test_no_canary_reaches_the_log_the_json_or_the_locals(
    reports: list[Report], caplog: pytest.LogCaptureFixture
) -> None:
    # The request was made (and logged) while the fixture was set up.
    logged = "\n".join(record.getMessage() for record in caplog.get_records("setup"))
    assert "Slow request: POST /holds-secrets/" in logged
    assert leaked(logged) == []
    for report in reports:
        assert leaked(text(report)) == []
        assert leaked(json.dumps(report.to_dict())) == []
        for frame in report.frames:
            assert leaked(repr(frame.locals)) == []


def test_the_locals_are_there_with_their_secrets_masked(reports: list[Report]) -> None:
    """Not vacuous: the values were captured, and only their secrets are gone."""
    [slow] = [report for report in reports if report.kind == "slow"]
    view = next(frame for frame in slow.frames if frame.function == "holds_secrets")
    shown = dict(view.locals or ())
    assert shown["body"].startswith("b'") and "ops" in shown["body"]
    assert (
        f"password={MASK}" in shown["body"]
        or f'name="password"\\r\\n\\r\\n{MASK}' in (shown["body"])
    )
    assert f"('Cookie', {MASK})" in shown["headers"]
    assert f"('X-Api-Key', {MASK})" in shown["headers"]
    assert f"('Authorization', {MASK})" in shown["headers"]
    assert '"user": "bob"' in shown["payload"] and f'"password": "{MASK}"' in shown["payload"]
    assert shown["dsn"] == f"'postgres://bob:{MASK}@db.example/app'"
    # The log shows the same masked values.
    assert f"dsn = 'postgres://bob:{MASK}@db.example/app'" in text(slow)
