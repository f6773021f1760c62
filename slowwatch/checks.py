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
