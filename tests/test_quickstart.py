"""A new project that follows the quickstart literally, with no LOGGING of its own,
sees both parts of a report on its console, with timestamps."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT = textwrap.dedent(
    """
    import time

    import django
    from django.conf import settings
    from django.http import HttpResponse
    from django.urls import path


    def slow(request):
        time.sleep(0.6)
        return HttpResponse("ok")


    urlpatterns = [path("slow/", slow)]
    settings.configure(
        SECRET_KEY="x",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "slowwatch"],
        MIDDLEWARE=["slowwatch.middleware.SlowWatchMiddleware"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}},
        SLOWWATCH={"THRESHOLD": 0.3, "REPORTERS": ["slowwatch.reporters.LoggingReporter"]},
    )
    django.setup()

    from django.core.management import call_command
    from django.test import Client

    from slowwatch import runtime

    call_command("migrate", verbosity=0)
    assert Client().get("/slow/").status_code == 200
    assert runtime.flush(10)
    """
)

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


def test_both_parts_of_a_report_reach_the_console_without_any_logging_config(
    tmp_path: Path,
) -> None:
    script = tmp_path / "project.py"
    script.write_text(PROJECT)
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert any(
        re.match(rf"{STAMP} WARNING slowwatch.report: Slow request: GET /slow/", x) for x in lines
    )
    finished = rf"{STAMP} INFO slowwatch.report: Slow request finished: GET /slow/ .* -> 200"
    assert any(re.match(finished, x) for x in lines), run.stderr
    assert "slowwatch.internal" not in run.stderr  # migrated: nothing went wrong


def test_a_project_with_its_own_logging_gets_no_second_copy(tmp_path: Path) -> None:
    script = tmp_path / "project.py"
    configured = PROJECT.replace(
        "django.setup()",
        "import logging\nlogging.basicConfig(format='MINE %(message)s', level=logging.INFO)\n"
        "django.setup()",
    )
    script.write_text(configured)
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert "MINE Slow request: GET /slow/" in run.stderr
    assert "MINE Slow request finished: GET /slow/" in run.stderr
    assert not re.search(rf"{STAMP} \w+ slowwatch.report", run.stderr)


CHECKS = textwrap.dedent(
    """
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="x",
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "slowwatch"],
        MIDDLEWARE=["slowwatch.middleware.SlowWatchMiddleware"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}},
    )
    django.setup()

    from django.core.management import call_command

    print("== check")
    call_command("check")
    print("== check --database default")
    call_command("check", databases=["default"])
    print("== migrate")
    call_command("migrate", verbosity=0)
    print("== check --database default, migrated")
    call_command("check", databases=["default"])
    """
)


def test_unapplied_migrations_are_w007_in_a_database_check(tmp_path: Path) -> None:
    script = tmp_path / "project.py"
    script.write_text(CHECKS)
    run = subprocess.run(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # in order: the warnings go to stderr
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert run.returncode == 0, run.stdout
    parts = dict(re.findall(r"== (.+)\n((?:(?!== ).*\n)*)", run.stdout))
    # A plain check opens no connection; the database check names what is missing.
    assert "W007" not in parts["check"]
    assert re.search(
        r"slowwatch\.W007\) slowwatch's migrations are not applied on database 'default': "
        r"0001_initial",
        parts["check --database default"],
    ), run.stdout
    assert "manage.py migrate slowwatch --database default" in parts["check --database default"]
    assert "W007" not in parts["check --database default, migrated"]
