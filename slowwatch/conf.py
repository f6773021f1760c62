"""The one settings object: ``settings.SLOWWATCH`` merged over :data:`DEFAULTS`.

Values are validated (:mod:`slowwatch.validation`) the first time they are
read, so that a deployed worker, where system checks never run, refuses a bad
setting with the same IDs as ``manage.py check``. Settings flow one way: from
here to :mod:`slowwatch.runtime`, which configures the core.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

__all__ = ["DEFAULTS", "EXEMPT", "MIN_THRESHOLD", "Rules", "Settings", "settings"]


DEFAULTS: dict[str, Any] = {
    "ENABLED": True,
    "THRESHOLD": 25.0,
    "THRESHOLDS": {},
    "IGNORE": [],
    "REPORTERS": [
        "slowwatch.reporters.LoggingReporter",
        "slowwatch.reporters.DatabaseReporter",
    ],
    "QUEUE_SIZE": 100,
    "HIDE_SERVER_FRAMES": True,
    "SAMPLE_INTERVAL": 0.05,
    "MAX_SAMPLES": 12_000,
    "ESCALATIONS": [],
    "CAPTURE_LOCALS": False,
    "DATABASE_ALIAS": "default",
    "RETENTION": {"MAX_AGE_DAYS": 30, "MAX_ROWS": 50_000},
    "RUNTIME_CONTROL": True,
    "EMAIL": {},
    "SENTRY": {},
    "ADMIN_URL_BASE": None,
    "CACHE_ALIAS": "default",
}

#: ``EMAIL`` keys and defaults (None: from Django's settings, see docs).
EMAIL_DEFAULTS: dict[str, Any] = {
    "TO": None,  # ADMINS' addresses
    "FROM": None,  # SERVER_EMAIL
    "SUBJECT_PREFIX": None,  # EMAIL_SUBJECT_PREFIX
    "KINDS": ["slow", "killed"],
    "WINDOW": 600,
    "PER_HOUR": 20,
    "TIMEOUT": 10,
}
#: ``SENTRY`` keys and defaults.
SENTRY_DEFAULTS: dict[str, Any] = {
    "KINDS": ["slow"],
    "WINDOW": 600,
    "PER_HOUR": 60,
}
ALERT_KINDS = ("slow", "still_slow", "killed", "finished", "lost")

#: Keys of ``RETENTION``; a missing key keeps its default, None means no limit.
RETENTION_KEYS = ("MAX_AGE_DAYS", "MAX_ROWS")

#: Marks a request that is not watched at all.
EXEMPT = "exempt"


@dataclass(frozen=True)
class Rules:
    """URL rules: path regexes are matched in ``__call__``, URL names once resolved."""

    paths: tuple[tuple[re.Pattern[str], float | str], ...] = ()
    names: Mapping[str, float | str] | None = None

    def thresholds(self) -> list[float]:
        values = [v for _, v in self.paths] + list((self.names or {}).values())
        return [v for v in values if isinstance(v, float)]

    def for_path(self, path: str) -> float | str | None:
        for pattern, value in self.paths:
            if pattern.match(path):
                return value
        return None


def is_path_pattern(key: object) -> bool:
    """Path regexes start with ``^`` or ``/``; anything else is a URL name."""
    return isinstance(key, re.Pattern) or (isinstance(key, str) and key[:1] in ("^", "/"))


#: The smallest threshold: the monitor looks twice per threshold, and a
#: request this short is not worth a report.
MIN_THRESHOLD = 0.01
#: Below this a threshold is allowed, but reports nearly every request.
LOW_THRESHOLD = 0.1


def positive_seconds(value: object) -> float | None:
    """``value`` as seconds, or None when it is not a positive, finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float: 10**400
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def threshold_seconds(value: object) -> float | None:
    """``value`` as a threshold, or None when it is not a number of at least
    :data:`MIN_THRESHOLD` seconds."""
    seconds = positive_seconds(value)
    return seconds if seconds is not None and seconds >= MIN_THRESHOLD else None


def _compile(key: str | re.Pattern[str]) -> re.Pattern[str]:
    return key if isinstance(key, re.Pattern) else re.compile(key)


def raw_setting() -> object:
    """``settings.SLOWWATCH`` as written, for validation."""
    return getattr(django_settings, "SLOWWATCH", {})


def middleware_setting() -> list[str]:
    """Django's ``MIDDLEWARE``, for the placement check."""
    return list(getattr(django_settings, "MIDDLEWARE", None) or [])


class Settings:
    """Typed, validated access to ``SLOWWATCH``; cached until a setting changes."""

    def __init__(self) -> None:
        self._values: dict[str, Any] | None = None

    def clear(self) -> None:
        self._values = None

    @property
    def values(self) -> dict[str, Any]:
        if self._values is None:
            # Imported here: validation reads this module's defaults.
            from slowwatch.validation import validate

            raw = raw_setting()
            problems = [p for p in validate(raw) if p.is_error]
            if problems:
                lines = "\n".join(f"  {p.id}: {p.msg}" for p in problems)
                raise ImproperlyConfigured(f"Invalid SLOWWATCH setting:\n{lines}")
            # validate() has checked it is a mapping (E001).
            project = cast(Mapping[str, Any], raw)
            # dogslow's settings fill in what SLOWWATCH leaves out. The
            # translation never replaces a key SLOWWATCH sets (it extends
            # REPORTERS and EMAIL), and takes only values that keep the whole
            # valid: an unusable one is skipped with its own warning.
            from slowwatch.dogslow import found_settings, translate

            overlay = translate(project, found_settings()).values
            self._values = {**DEFAULTS, **project, **overlay}
        return self._values

    @property
    def enabled(self) -> bool:
        return bool(self.values["ENABLED"])

    @property
    def threshold(self) -> float:
        return float(self.values["THRESHOLD"])

    @property
    def rules(self) -> Rules:
        values = self.values
        paths: list[tuple[re.Pattern[str], float | str]] = []
        names: dict[str, float | str] = {}
        entries: list[tuple[Any, float | str]] = [(k, EXEMPT) for k in values["IGNORE"]]
        entries += [(k, float(v)) for k, v in values["THRESHOLDS"].items()]
        for key, value in entries:
            if is_path_pattern(key):
                paths.append((_compile(key), value))
            else:
                names[key] = value
        return Rules(tuple(paths), names or None)

    @property
    def reporters(self) -> list[str]:
        return list(self.values["REPORTERS"])

    @property
    def queue_size(self) -> int:
        return int(self.values["QUEUE_SIZE"])

    @property
    def sample_interval(self) -> float:
        return float(self.values["SAMPLE_INTERVAL"])

    @property
    def max_samples(self) -> int:
        return int(self.values["MAX_SAMPLES"])

    @property
    def escalations(self) -> tuple[float, ...]:
        return tuple(float(x) for x in self.values["ESCALATIONS"])

    @property
    def capture_locals(self) -> bool:
        return bool(self.values["CAPTURE_LOCALS"])

    @property
    def hide_server_frames(self) -> bool:
        return bool(self.values["HIDE_SERVER_FRAMES"])

    @property
    def database_alias(self) -> str:
        return str(self.values["DATABASE_ALIAS"])

    @property
    def retention(self) -> tuple[float | None, int | None]:
        """(max age in days, max rows); None where there is no limit."""
        found = {**DEFAULTS["RETENTION"], **self.values["RETENTION"]}
        days, rows = found["MAX_AGE_DAYS"], found["MAX_ROWS"]
        return (None if days is None else float(days), None if rows is None else int(rows))

    @property
    def runtime_control(self) -> bool:
        return bool(self.values["RUNTIME_CONTROL"])

    @property
    def email(self) -> dict[str, Any]:
        return {**EMAIL_DEFAULTS, **self.values["EMAIL"]}

    @property
    def sentry(self) -> dict[str, Any]:
        return {**SENTRY_DEFAULTS, **self.values["SENTRY"]}

    @property
    def admin_url_base(self) -> str | None:
        base = self.values["ADMIN_URL_BASE"]
        return str(base).rstrip("/") if base else None

    @property
    def cache_alias(self) -> str | None:
        alias = self.values["CACHE_ALIAS"]
        return str(alias) if alias else None


settings = Settings()


@receiver(setting_changed)
def _clear(*, setting: str, **kwargs: object) -> None:
    if setting == "SLOWWATCH":
        settings.clear()
