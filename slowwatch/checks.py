"""System checks. Every ID is listed in ``docs/checks.rst``.

The settings checks share :func:`slowwatch.validation.validate` with the settings object,
which raises ``ImproperlyConfigured`` on the same problems in a deployed
worker, where checks do not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, Warning

from slowwatch import dogslow
from slowwatch.conf import middleware_setting, raw_setting
from slowwatch.validation import Problem, validate

MIDDLEWARE_PATH = "slowwatch.middleware.SlowWatchMiddleware"
#: dogslow's middleware, and its Sentry fork's.
DOGSLOW_MIDDLEWARE = ("dogslow.WatchdogMiddleware", "dogslow_sentry.WatchdogMiddleware")


def _messages(problems: list[Problem]) -> list[CheckMessage]:
    return [
        (Error if problem.is_error else Warning)(
            problem.msg, hint=problem.hint or None, id=problem.id
        )
        for problem in problems
    ]


def check_settings(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    return _messages(validate(raw_setting()))


def check_middleware(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    middleware = middleware_setting()
    if middleware[:1] == [MIDDLEWARE_PATH]:
        return []
    where = "is not in MIDDLEWARE" if MIDDLEWARE_PATH not in middleware else "is not first"
    return [
        Warning(
            f"{MIDDLEWARE_PATH} {where}.",
            hint=(
                "Put it first in MIDDLEWARE, so that the time spent in every other "
                "middleware is watched too."
            ),
            id="slowwatch.W001",
        )
    ]


def check_migrations(
    app_configs: Sequence[AppConfig] | None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W007: slowwatch's migrations are not all applied on its database.

    A database check: ``manage.py check --database default`` and ``migrate``
    run it; a plain ``check`` never opens a connection.
    """
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    from slowwatch.conf import settings

    try:
        alias = settings.database_alias
        if not databases or alias not in databases:
            return []
        executor = MigrationExecutor(connections[alias])
        targets = [node for node in executor.loader.graph.leaf_nodes() if node[0] == "slowwatch"]
        plan = executor.migration_plan(targets)
    except Exception:  # noqa: BLE001 - invalid settings or no database: other checks say so
        return []
    missing = [m.name for m, backwards in plan if m.app_label == "slowwatch" and not backwards]
    if not missing:
        return []
    return [
        Warning(
            f"slowwatch's migrations are not applied on database {alias!r}: {', '.join(missing)}.",
            hint=(
                f"Run 'manage.py migrate slowwatch --database {alias}'. Until then the "
                "DatabaseReporter drops every report (counted as 'dropped:not_migrated') and "
                "the settings page cannot save."
            ),
            id="slowwatch.W007",
        )
    ]


def check_dogslow(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """W003–W006: the ``DOGSLOW_*`` settings found, and dogslow's middleware."""
    problems = list(dogslow.translation().problems)
    return _messages(problems + middleware_problems(middleware_setting()))


def middleware_problems(middleware: list[str]) -> list[Problem]:
    """W006 for dogslow's middleware left in ``MIDDLEWARE``."""
    return [
        Problem(
            "slowwatch.W006",
            f"{path} is still in MIDDLEWARE: dogslow and slowwatch would both watch "
            "every request, and both report it.",
            f"Remove {path} from MIDDLEWARE and uninstall it; slowwatch honours the "
            "DOGSLOW_* settings until they are moved (see docs/dogslow.rst).",
        )
        for path in middleware
        if path in DOGSLOW_MIDDLEWARE
    ]
