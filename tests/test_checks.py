"""Every check ID, and proof that ``manage.py check`` runs them."""

from __future__ import annotations

import re
import sys
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from slowwatch.checks import check_middleware, check_settings
from slowwatch.conf import DEFAULTS, Settings
from slowwatch.validation import validate

FIRST = "slowwatch.middleware.SlowWatchMiddleware"


def ids(value: object) -> list[str]:
    return [p.id for p in validate(value)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({}, []),
        ({"THRESHOLD": 2.5, "THRESHOLDS": {"app:export": 120, "^/api/": Decimal("0.25")}}, []),
        ({"IGNORE": ["health", "^/static/", re.compile("^/media/")]}, []),
        (["THRESHOLD", 2], ["slowwatch.E001"]),
        ({"TRESHOLD": 2}, ["slowwatch.E002"]),
        ({"ENABLED": "yes"}, ["slowwatch.E003"]),
        ({"HIDE_SERVER_FRAMES": 1}, ["slowwatch.E003"]),
        ({"THRESHOLD": 0}, ["slowwatch.E004"]),
        ({"THRESHOLD": -1}, ["slowwatch.E004"]),
        ({"THRESHOLD": float("nan")}, ["slowwatch.E004"]),
        ({"THRESHOLD": float("inf")}, ["slowwatch.E004"]),
        ({"THRESHOLD": "2.5"}, ["slowwatch.E004"]),
        ({"THRESHOLD": True}, ["slowwatch.E004"]),
        ({"THRESHOLD": 10**400}, ["slowwatch.E004"]),
        ({"THRESHOLD": 1e-300}, ["slowwatch.E004"]),
        ({"THRESHOLD": 0.05}, ["slowwatch.W002"]),
        ({"THRESHOLDS": {"x": 0.001}}, ["slowwatch.E005"]),
        ({"THRESHOLDS": {"^/api/": 0.02}}, ["slowwatch.W002"]),
        ({"SAMPLE_INTERVAL": 1e-9}, ["slowwatch.E011"]),
        ({"THRESHOLDS": ["x"]}, ["slowwatch.E005"]),
        ({"THRESHOLDS": {"x": 0}}, ["slowwatch.E005"]),
        ({"THRESHOLDS": {3: 1}}, ["slowwatch.E005"]),
        ({"IGNORE": "health"}, ["slowwatch.E006"]),
        ({"IGNORE": [None]}, ["slowwatch.E006"]),
        ({"IGNORE": ["^/(unclosed"]}, ["slowwatch.E007"]),
        ({"THRESHOLDS": {"/[": 1}}, ["slowwatch.E007"]),
        ({"REPORTERS": "slowwatch.reporters.LoggingReporter"}, ["slowwatch.E008"]),
        ({"REPORTERS": ["no.such.Reporter"]}, ["slowwatch.E009"]),
        ({"QUEUE_SIZE": 0}, ["slowwatch.E010"]),
        ({"QUEUE_SIZE": 2.5}, ["slowwatch.E010"]),
        ({"SAMPLE_INTERVAL": 0}, ["slowwatch.E011"]),
        ({"SAMPLE_INTERVAL": 60}, ["slowwatch.E011"]),
        ({"SAMPLE_INTERVAL": "fast"}, ["slowwatch.E011"]),
        ({"MAX_SAMPLES": -1}, ["slowwatch.E012"]),
        ({"SAMPLE_INTERVAL": 0.01, "MAX_SAMPLES": 100}, []),
        ({"ESCALATIONS": [2, 4.5]}, []),
        ({"ESCALATIONS": [1]}, ["slowwatch.E013"]),
        ({"ESCALATIONS": 2}, ["slowwatch.E013"]),
        ({"RUNTIME_CONTROL": "yes"}, ["slowwatch.E003"]),
        ({"DATABASE_ALIAS": "default"}, []),
        ({"DATABASE_ALIAS": "nope"}, ["slowwatch.E014"]),
        ({"DATABASE_ALIAS": None}, ["slowwatch.E014"]),
        ({"RETENTION": {"MAX_AGE_DAYS": 7}}, []),
        ({"RETENTION": {"MAX_AGE_DAYS": None, "MAX_ROWS": None}}, []),
        ({"RETENTION": {"MAX_AGE_DAYS": 0}}, ["slowwatch.E015"]),
        ({"RETENTION": {"MAX_ROWS": 1.5}}, ["slowwatch.E015"]),
        ({"RETENTION": {"DAYS": 3}}, ["slowwatch.E015"]),
        ({"RETENTION": 30}, ["slowwatch.E015"]),
        ({"EMAIL": {"TO": ["ops@example.com"], "WINDOW": 60, "PER_HOUR": 5}}, []),
        ({"EMAIL": "ops@example.com"}, ["slowwatch.E016"]),
        ({"EMAIL": {"TO": "ops@example.com"}}, ["slowwatch.E016"]),
        ({"EMAIL": {"WINDOW": 0}}, ["slowwatch.E016"]),
        ({"EMAIL": {"KINDS": ["slow", "nope"]}}, ["slowwatch.E016"]),
        ({"EMAIL": {"CC": []}}, ["slowwatch.E016"]),
        ({"SENTRY": {"PER_HOUR": 0}}, ["slowwatch.E017"]),
        ({"SENTRY": {"KINDS": ["slow", "killed"]}}, []),
        ({"ADMIN_URL_BASE": "https://ops.example.com"}, []),
        ({"ADMIN_URL_BASE": "ops.example.com"}, ["slowwatch.E018"]),
        ({"CACHE_ALIAS": None}, []),
        ({"CACHE_ALIAS": "nope"}, ["slowwatch.E019"]),
    ],
)
def test_settings_checks(value, expected):
    assert ids(value) == expected


def test_every_default_passes():
    assert validate(DEFAULTS) == []


def test_check_function_reports_errors_with_hints(settings):
    settings.SLOWWATCH = {"THRESHOLD": 0}
    [error] = check_settings(None)
    assert error.id == "slowwatch.E004" and error.is_serious()
    assert "finite number of seconds" in error.msg and error.hint


@pytest.mark.parametrize(
    ("middleware", "warned"),
    [
        ([FIRST, "django.middleware.common.CommonMiddleware"], False),
        (["django.middleware.common.CommonMiddleware", FIRST], True),
        (["django.middleware.common.CommonMiddleware"], True),
        ([], True),
    ],
)
def test_w001_middleware_missing_or_not_first(settings, middleware, warned):
    settings.MIDDLEWARE = middleware
    messages = check_middleware(None)
    assert [m.id for m in messages] == (["slowwatch.W001"] if warned else [])


def test_manage_py_check_runs_the_checks():
    with (
        override_settings(SLOWWATCH={"THRESHOLD": -5}),
        pytest.raises(SystemCheckError, match="slowwatch.E004"),
    ):
        call_command("check")
    from django.conf import settings

    others = [m for m in settings.MIDDLEWARE if "slowwatch" not in m]
    with override_settings(MIDDLEWARE=others):
        call_command("check")  # warnings only: does not raise


def test_invalid_settings_fail_when_the_middleware_is_built():
    from django.test import Client

    with (
        override_settings(SLOWWATCH={"THRESHOLD": "soon"}),
        pytest.raises(ImproperlyConfigured, match="slowwatch.E004"),
    ):
        Client().get("/fast/")


def test_settings_object_follows_override_settings():
    conf = Settings()
    with override_settings(SLOWWATCH={"THRESHOLD": Decimal("0.25")}):
        assert conf.threshold == 0.25
    from slowwatch.conf import settings as shared

    with override_settings(SLOWWATCH={"THRESHOLD": 7}):
        assert shared.threshold == 7.0
    assert shared.threshold == 0.3


def test_a_low_threshold_only_warns(settings):
    settings.SLOWWATCH = {"THRESHOLD": 0.05}
    [warning] = check_settings(None)
    assert warning.id == "slowwatch.W002" and not warning.is_serious()
    assert Settings().threshold == 0.05  # the worker accepts it


@pytest.mark.parametrize(
    "source",
    ["raise RuntimeError('no config here')\n", "def broken(:\n", "import no_such_module_x\n"],
)
def test_a_reporter_module_that_fails_to_import_is_e009_not_a_crash(
    settings, tmp_path, monkeypatch, source
):
    (tmp_path / "bad_reporter_module.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bad_reporter_module", raising=False)
    settings.SLOWWATCH = {"REPORTERS": ["bad_reporter_module.Reporter"]}
    [error] = check_settings(None)
    assert error.id == "slowwatch.E009" and "bad_reporter_module" in error.msg
    with pytest.raises(SystemCheckError, match="slowwatch.E009"):
        call_command("check")
