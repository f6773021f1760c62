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

from slowwatch.conf import middleware_setting, raw_setting
from slowwatch.validation import validate

MIDDLEWARE_PATH = "slowwatch.middleware.SlowWatchMiddleware"


def check_settings(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    return [
        (Error if problem.is_error else Warning)(
            problem.msg, hint=problem.hint or None, id=problem.id
        )
        for problem in validate(raw_setting())
    ]


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
