from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class SlowWatchConfig(AppConfig):
    name = "slowwatch"
    verbose_name = "slowwatch"

    def ready(self) -> None:
        # Only checks here: no thread starts before the first watched request.
        from slowwatch.checks import check_middleware, check_settings

        checks.register(check_settings)
        checks.register(check_middleware)
