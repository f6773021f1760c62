"""dogslow's DOGSLOW_* settings: honoured where SLOWWATCH is silent, each with its warning."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.checks.registry import registry
from django.core.management import call_command
from django.test import Client

from slowwatch import runtime
from slowwatch.checks import check_dogslow
from slowwatch.conf import DEFAULTS
from slowwatch.conf import settings as conf
from slowwatch.dogslow import FILE_REPORTER, LOGGING_REPORTER, NAMES, translate
from slowwatch.report import Report
from slowwatch.reporters.dogslow import DogslowFileReporter, DogslowLoggingReporter
from slowwatch.reporters.files import FileReporter

pytestmark = pytest.mark.django_db(transaction=False, databases=[])

EMAIL = "slowwatch.reporters.EmailReporter"
SENTRY = "slowwatch.reporters.SentryReporter"


@pytest.fixture
def bare(settings):
    """The test project's SLOWWATCH without THRESHOLD, so DOGSLOW_TIMER may apply."""
    settings.SLOWWATCH = {k: v for k, v in settings.SLOWWATCH.items() if k != "THRESHOLD"}
    return settings


def messages(name: str | None = None) -> list[tuple[str, str]]:
    """(id, message) of each dogslow check message, only ``name``'s when given."""
    found = [(m.id, m.msg) for m in check_dogslow(None)]
    return [(i, msg) for i, msg in found if name is None or msg.startswith(f"{name} ")]


def ids(name: str) -> list[str]:
    return [i for i, _ in messages(name)]


def make_report(kind: str = "slow", started_at: float | None = None) -> Report:
    return Report(
        kind=kind,  # type: ignore[arg-type]
        id=uuid.uuid4().hex,
        method="GET",
        url="/sleep/?s=1",
        view="testproject.views.sleep",
        route="sleep/",
        host="testserver",
        hostname="web-1",
        pid=os.getpid(),
        thread_id=1,
        thread_name="MainThread",
        started_at=time.time() if started_at is None else started_at,
        threshold=0.3,
        elapsed=0.31,
    )


def test_without_dogslow_settings_nothing_changes(settings):
    assert messages() == []
    assert conf.threshold == 0.3 and conf.reporters == settings.SLOWWATCH["REPORTERS"]
    assert translate({}, {}).values == {}


# DOGSLOW


@pytest.mark.parametrize("value", [False, 0])
def test_dogslow_false_disables(settings, value):
    settings.DOGSLOW = value
    assert conf.enabled is False
    [(problem, msg)] = messages("DOGSLOW")
    assert problem == "slowwatch.W003" and "SLOWWATCH['ENABLED'] = False" in msg


def test_dogslow_false_removes_the_middleware(settings, collected):
    settings.DOGSLOW = False
    Client().get("/sleep/?s=0.4")
    assert runtime.flush(5) and collected.reports == []


def test_dogslow_not_a_flag_is_w005(settings):
    settings.DOGSLOW = "no"
    assert conf.enabled is True
    assert ids("DOGSLOW") == ["slowwatch.W005"]


# DOGSLOW_TIMER


@pytest.mark.parametrize(
    ("value", "seconds"), [(7, 7.0), (0.3, 0.3), ("2.5", 2.5), (" 4 ", 4.0), (Decimal("1.5"), 1.5)]
)
def test_dogslow_timer_is_the_threshold(bare, value, seconds):
    bare.DOGSLOW_TIMER = value
    assert conf.threshold == seconds
    [(problem, msg)] = messages("DOGSLOW_TIMER")
    assert problem == "slowwatch.W003" and "SLOWWATCH['THRESHOLD']" in msg


@pytest.mark.parametrize("value", ["soon", 0, -1, True, None, float("nan"), 0.001, "inf"])
def test_an_unusable_dogslow_timer_is_w005_and_the_default_applies(bare, value):
    bare.DOGSLOW_TIMER = value
    assert conf.threshold == DEFAULTS["THRESHOLD"]
    assert ids("DOGSLOW_TIMER") == ["slowwatch.W005"]


def test_a_low_dogslow_timer_warns_w002_like_a_low_threshold(bare):
    bare.DOGSLOW_TIMER = 0.05
    assert conf.threshold == 0.05
    assert sorted(ids("DOGSLOW_TIMER:") + ids("DOGSLOW_TIMER")) == [
        "slowwatch.W002",
        "slowwatch.W003",
    ]


def test_slowwatch_threshold_wins_over_dogslow_timer(settings):
    settings.DOGSLOW_TIMER = 5
    assert conf.threshold == 0.3  # the test project's SLOWWATCH["THRESHOLD"]
    [(problem, msg)] = messages("DOGSLOW_TIMER")
    assert problem == "slowwatch.W004" and "'THRESHOLD'" in msg


def test_changing_a_dogslow_setting_clears_the_cached_values(bare):
    assert conf.threshold == DEFAULTS["THRESHOLD"]
    bare.DOGSLOW_TIMER = 3
    assert conf.threshold == 3.0
    bare.DOGSLOW_TIMER = 4
    assert conf.threshold == 4.0


# DOGSLOW_IGNORE_URLS


@pytest.mark.parametrize(
    ("value", "names"),
    [(["health", "app:ping"], ["health", "app:ping"]), ("health", ["health"]), ((), [])],
)
def test_dogslow_ignore_urls_is_ignore(settings, value, names):
    settings.DOGSLOW_IGNORE_URLS = value
    assert conf.values["IGNORE"] == names
    assert ids("DOGSLOW_IGNORE_URLS") == ["slowwatch.W003"]


@pytest.mark.parametrize("value", [[3], [""], ["^/static/"], 5])
def test_unusable_dogslow_ignore_urls_is_w005(settings, value):
    settings.DOGSLOW_IGNORE_URLS = value
    assert conf.values["IGNORE"] == []
    assert ids("DOGSLOW_IGNORE_URLS") == ["slowwatch.W005"]


def test_slowwatch_ignore_wins_over_dogslow_ignore_urls(settings):
    settings.SLOWWATCH = {**settings.SLOWWATCH, "IGNORE": ["^/health/"]}
    settings.DOGSLOW_IGNORE_URLS = ["sleep"]
    assert conf.values["IGNORE"] == ["^/health/"]
    assert ids("DOGSLOW_IGNORE_URLS") == ["slowwatch.W004"]


def test_dogslow_ignore_urls_stops_watching_that_url(settings, collected):
    settings.DOGSLOW_IGNORE_URLS = ["sleep"]
    Client().get("/sleep/?s=0.5")
    assert runtime.flush(5) and collected.reports == []


# DOGSLOW_STACK_VARS


def test_dogslow_stack_vars_is_capture_locals(settings):
    settings.DOGSLOW_STACK_VARS = True
    assert conf.capture_locals is True
    [(problem, msg)] = messages("DOGSLOW_STACK_VARS")
    assert problem == "slowwatch.W003" and "CAPTURE_LOCALS" in msg


def test_slowwatch_capture_locals_wins_over_dogslow_stack_vars(settings):
    settings.SLOWWATCH = {**settings.SLOWWATCH, "CAPTURE_LOCALS": False}
    settings.DOGSLOW_STACK_VARS = True
    assert conf.capture_locals is False
    assert ids("DOGSLOW_STACK_VARS") == ["slowwatch.W004"]


# DOGSLOW_EMAIL_TO, DOGSLOW_EMAIL_FROM


@pytest.mark.parametrize("to", ["dev@example.com", ["dev@example.com"], ("dev@example.com",)])
def test_dogslow_email_to_and_from_mail_with_the_email_reporter(settings, to):
    settings.DOGSLOW_EMAIL_TO = to
    settings.DOGSLOW_EMAIL_FROM = "dogslow@example.com"
    assert conf.email["TO"] == ["dev@example.com"]
    assert conf.email["FROM"] == "dogslow@example.com"
    assert conf.reporters == [*settings.SLOWWATCH["REPORTERS"], EMAIL]
    assert ids("DOGSLOW_EMAIL_TO") == ids("DOGSLOW_EMAIL_FROM") == ["slowwatch.W003"]
    reporter = runtime.reporters()[-1]
    assert (reporter.to, reporter.sender) == (["dev@example.com"], "dogslow@example.com")


@pytest.mark.parametrize("name", ["DOGSLOW_EMAIL_TO", "DOGSLOW_EMAIL_FROM"])
def test_one_dogslow_email_setting_alone_sends_nothing_as_in_dogslow(settings, name):
    setattr(settings, name, "dev@example.com")
    assert EMAIL not in conf.reporters and conf.values["EMAIL"] == {}
    [(problem, msg)] = messages(name)
    assert problem == "slowwatch.W003" and "does nothing" in msg


def test_slowwatch_email_to_wins_over_dogslow_email_to(settings):
    settings.SLOWWATCH = {**settings.SLOWWATCH, "EMAIL": {"TO": ["ops@example.com"]}}
    settings.DOGSLOW_EMAIL_TO = "dev@example.com"
    settings.DOGSLOW_EMAIL_FROM = "dogslow@example.com"
    assert conf.email["TO"] == ["ops@example.com"]
    assert conf.email["FROM"] == "dogslow@example.com"
    assert EMAIL in conf.reporters
    assert ids("DOGSLOW_EMAIL_TO") == ["slowwatch.W004"]


def test_unusable_dogslow_email_to_is_w005(settings):
    settings.DOGSLOW_EMAIL_TO = [1, 2]
    settings.DOGSLOW_EMAIL_FROM = "dogslow@example.com"
    assert EMAIL not in conf.reporters
    assert ids("DOGSLOW_EMAIL_TO") == ["slowwatch.W005"]


# DOGSLOW_LOGGER, DOGSLOW_LOG_LEVEL


@pytest.mark.parametrize(
    ("level", "expected"),
    [(None, logging.WARNING), ("ERROR", logging.ERROR), ("info", logging.INFO), (40, 40)],
)
def test_dogslow_logger_gets_each_slow_request_at_its_level(settings, caplog, level, expected):
    settings.DOGSLOW_LOGGER = "legacy.dogslow"
    if level is not None:
        settings.DOGSLOW_LOG_LEVEL = level
    assert conf.reporters == [*settings.SLOWWATCH["REPORTERS"], LOGGING_REPORTER]
    assert ids("DOGSLOW_LOGGER") == ["slowwatch.W003"]
    caplog.set_level(logging.DEBUG, logger="legacy.dogslow")
    reporter = DogslowLoggingReporter()
    reporter.handle(make_report())
    reporter.handle(make_report("finished"))  # dogslow logged once per slow request
    [record] = [r for r in caplog.records if r.name == "legacy.dogslow"]
    assert record.levelno == expected
    assert record.getMessage().startswith("Slow request: GET /sleep/?s=1")
    assert record.slowwatch["kind"] == "slow"  # type: ignore[attr-defined]


def test_dogslow_log_level_without_a_logger_does_nothing(settings):
    settings.DOGSLOW_LOG_LEVEL = "ERROR"
    assert LOGGING_REPORTER not in conf.reporters
    [(problem, msg)] = messages("DOGSLOW_LOG_LEVEL")
    assert problem == "slowwatch.W003" and "does nothing" in msg


@pytest.mark.parametrize("level", ["LOUD", 0, True, 2.5, "-5", "9" * 5000, "\u00b2"])
def test_an_unusable_dogslow_log_level_is_w005_and_logs_at_warning(settings, level):
    settings.DOGSLOW_LOGGER = "legacy.dogslow"
    settings.DOGSLOW_LOG_LEVEL = level
    assert ids("DOGSLOW_LOG_LEVEL") == ["slowwatch.W005"]
    assert DogslowLoggingReporter().level == logging.WARNING


def test_an_unusable_dogslow_logger_is_w005(settings):
    settings.DOGSLOW_LOGGER = 42
    assert LOGGING_REPORTER not in conf.reporters
    assert ids("DOGSLOW_LOGGER") == ["slowwatch.W005"]


# DOGSLOW_LOG_TO_SENTRY


def test_dogslow_log_to_sentry_adds_the_sentry_reporter(settings):
    settings.DOGSLOW_LOG_TO_SENTRY = True
    assert conf.reporters == [*settings.SLOWWATCH["REPORTERS"], SENTRY]
    assert ids("DOGSLOW_LOG_TO_SENTRY") == ["slowwatch.W003"]


def test_dogslow_log_to_sentry_false_does_nothing(settings):
    settings.DOGSLOW_LOG_TO_SENTRY = False
    assert SENTRY not in conf.reporters
    [(_, msg)] = messages("DOGSLOW_LOG_TO_SENTRY")
    assert "does nothing" in msg


def test_a_reporter_already_listed_is_not_added_twice(settings):
    settings.SLOWWATCH = {**settings.SLOWWATCH, "REPORTERS": [SENTRY]}
    settings.DOGSLOW_LOG_TO_SENTRY = True
    assert conf.reporters == [SENTRY]


def test_added_reporters_extend_the_default_list_when_slowwatch_has_none(settings):
    settings.SLOWWATCH = {"THRESHOLD": 1}
    settings.DOGSLOW_LOG_TO_SENTRY = True
    assert conf.reporters == [*DEFAULTS["REPORTERS"], SENTRY]


# DOGSLOW_LOG_TO_FILE, DOGSLOW_OUTPUT


def test_dogslow_log_to_file_writes_into_dogslow_output(settings, tmp_path):
    settings.DOGSLOW_LOG_TO_FILE = True
    settings.DOGSLOW_OUTPUT = str(tmp_path)
    assert conf.reporters == [*settings.SLOWWATCH["REPORTERS"], FILE_REPORTER]
    assert ids("DOGSLOW_LOG_TO_FILE") == ids("DOGSLOW_OUTPUT") == ["slowwatch.W003"]
    reporter = DogslowFileReporter()
    assert reporter.directory == tmp_path
    reporter.handle(make_report())
    [written] = tmp_path.iterdir()
    assert written.read_text().startswith("Slow request: GET /sleep/?s=1")


def test_dogslow_log_to_file_defaults_to_the_temporary_directory(settings):
    settings.DOGSLOW_LOG_TO_FILE = True
    assert DogslowFileReporter().directory == Path(tempfile.gettempdir())


def test_dogslow_output_alone_writes_nothing(settings, tmp_path):
    # dogslow wrote files unless told not to; slowwatch only when asked.
    settings.DOGSLOW_OUTPUT = str(tmp_path)
    assert FILE_REPORTER not in conf.reporters
    [(problem, msg)] = messages("DOGSLOW_OUTPUT")
    assert problem == "slowwatch.W003" and "DOGSLOW_LOG_TO_FILE = True" in msg


def test_dogslow_log_to_file_false_does_nothing(settings):
    settings.DOGSLOW_LOG_TO_FILE = False
    assert FILE_REPORTER not in conf.reporters
    assert ids("DOGSLOW_LOG_TO_FILE") == ["slowwatch.W003"]


def test_an_unusable_dogslow_output_writes_nothing(settings):
    settings.DOGSLOW_LOG_TO_FILE = True
    settings.DOGSLOW_OUTPUT = 3
    assert FILE_REPORTER not in conf.reporters
    assert ids("DOGSLOW_OUTPUT") == ["slowwatch.W005"]


def test_file_reporter_keeps_at_most_max_files_and_only_prunes_its_own(tmp_path):
    foreign = tmp_path / "slow_request_abc123.log"  # dogslow's own, from mkstemp
    foreign.write_text("old")
    reporter = FileReporter(directory=tmp_path, max_files=3)
    reports = [make_report(started_at=1_700_000_000 + i) for i in range(5)]
    for report in reports:
        reporter.handle(report)
    kept = sorted(p.name for p in tmp_path.iterdir() if p != foreign)
    assert kept == sorted(reporter.filename(r) for r in reports[2:])
    assert foreign.exists()
    assert reporter.counts == {"written": 5, "pruned": 2}
    assert oct((tmp_path / kept[0]).stat().st_mode & 0o777) == "0o600"


def test_file_reporter_writes_only_slow_reports(tmp_path):
    reporter = FileReporter(directory=tmp_path)
    reporter.handle(make_report("finished"))
    assert list(tmp_path.iterdir()) == []


def test_file_reporter_never_raises(tmp_path):
    reporter = FileReporter(directory=tmp_path / "missing")
    reporter.handle(make_report())
    assert reporter.counts == {"failed": 1}


def test_file_reporter_refuses_a_bad_max_files():
    with pytest.raises(ValueError, match="max_files"):
        FileReporter(max_files=0)


# The check


def test_every_dogslow_setting_found_gets_one_warning(settings, tmp_path):
    values = {
        "DOGSLOW": True,
        "DOGSLOW_TIMER": 30,
        "DOGSLOW_IGNORE_URLS": ["health"],
        "DOGSLOW_STACK_VARS": False,
        "DOGSLOW_EMAIL_TO": "dev@example.com",
        "DOGSLOW_EMAIL_FROM": "dogslow@example.com",
        "DOGSLOW_LOGGER": "legacy",
        "DOGSLOW_LOG_LEVEL": "INFO",
        "DOGSLOW_LOG_TO_SENTRY": True,
        "DOGSLOW_LOG_TO_FILE": True,
        "DOGSLOW_OUTPUT": str(tmp_path),
    }
    assert set(values) == set(NAMES)
    for name, value in values.items():
        setattr(settings, name, value)
    found = messages()
    assert sorted(msg.split(" ", 1)[0] for _, msg in found) == sorted(NAMES)
    assert all(problem in ("slowwatch.W003", "slowwatch.W004") for problem, _ in found)


def test_none_is_dogslows_default_and_does_nothing(settings):
    settings.DOGSLOW_LOGGER = None
    assert LOGGING_REPORTER not in conf.reporters
    [(problem, msg)] = messages("DOGSLOW_LOGGER")
    assert problem == "slowwatch.W003" and "default" in msg


@pytest.mark.parametrize(
    "path", ["dogslow.WatchdogMiddleware", "dogslow_sentry.WatchdogMiddleware"]
)
def test_w006_dogslow_middleware_next_to_slowwatch(settings, path):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, path]
    [message] = check_dogslow(None)
    assert message.id == "slowwatch.W006" and path in message.msg


def test_manage_py_check_runs_the_dogslow_check(settings):
    assert check_dogslow in registry.get_checks()
    settings.DOGSLOW_TIMER = "soon"
    call_command("check")  # warnings only: does not raise


# End to end


def test_a_slow_request_under_dogslow_timer_is_reported_everywhere_dogslow_said(
    bare, collected, caplog, tmp_path
):
    bare.DOGSLOW_TIMER = 0.3
    bare.DOGSLOW_LOGGER = "legacy.dogslow"
    bare.DOGSLOW_LOG_TO_FILE = True
    bare.DOGSLOW_OUTPUT = str(tmp_path)
    caplog.set_level(logging.WARNING, logger="legacy.dogslow")
    response = Client().get("/sleep/?s=0.7")
    assert response.status_code == 200
    assert runtime.flush(5)
    [slow] = [r for r in collected.reports if r.kind == "slow"]
    assert slow.threshold == 0.3 and slow.id == response.json()["id"]
    [record] = [r for r in caplog.records if r.name == "legacy.dogslow"]
    assert record.levelno == logging.WARNING and "time.sleep(seconds)" in record.getMessage()
    [written] = tmp_path.iterdir()
    assert slow.id in written.name and "time.sleep(seconds)" in written.read_text()
