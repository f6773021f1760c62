from __future__ import annotations

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


class SlowWatchConfig(AppConfig):
    name = "slowwatch"
    verbose_name = "slowwatch"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Only checks here: no thread starts before the first watched request.
        from slowwatch.checks import (
            check_dogslow,
            check_middleware,
            check_migrations,
            check_settings,
        )

        checks.register(check_settings)
        checks.register(check_middleware)
        checks.register(check_dogslow)
        checks.register(check_migrations, checks.Tags.database)

        from slowwatch.conf import settings

        try:
            enabled = settings.enabled
        except ImproperlyConfigured:
            return  # the checks and the middleware say why
        if enabled:
            # Django has applied LOGGING by now: if nothing would show
            # slowwatch's records, they go to standard error.
            from slowwatch.reporters.log import show_when_unconfigured

            show_when_unconfigured()
            from slowwatch import uwsgi

            uwsgi.setup()
            # Installs a wrapper on each database connection as it opens; a
            # signal receiver, no thread.
            from slowwatch.sql import connect

            connect()
            # Keeps the class of an exception a view raised (Django answers 500).
            from django.core.signals import got_request_exception

            from slowwatch.requestinfo import note_exception

            got_request_exception.connect(note_exception, dispatch_uid="slowwatch")
