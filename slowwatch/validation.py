"""Validation of ``SLOWWATCH``: every problem with its check ID (E001–E019).

One function, :func:`validate`, judges the setting for both the system checks
(:mod:`slowwatch.checks`) and :class:`~slowwatch.conf.Settings`, which raises
``ImproperlyConfigured`` on the same problems in a deployed worker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.utils.module_loading import import_string

from slowwatch.conf import (
    ALERT_KINDS,
    DEFAULTS,
    EMAIL_DEFAULTS,
    LOW_THRESHOLD,
    MIN_THRESHOLD,
    RETENTION_KEYS,
    SENTRY_DEFAULTS,
    is_path_pattern,
    positive_seconds,
    threshold_seconds,
)

__all__ = ["Problem", "validate"]


@dataclass(frozen=True)
class Problem:
    id: str
    msg: str
    hint: str = ""

    @property
    def is_error(self) -> bool:
        """``slowwatch.E…`` refuses the setting; ``slowwatch.W…`` only warns."""
        return ".E" in self.id


def _check_pattern(key: object, where: str) -> list[Problem]:
    if isinstance(key, str) and is_path_pattern(key):
        try:
            re.compile(key)
        except re.error as exc:
            return [
                Problem(
                    "slowwatch.E007",
                    f"SLOWWATCH[{where!r}] has an invalid path regex {key!r}: {exc}.",
                    "Path regexes start with '^' or '/' and are matched from the "
                    "start of request.path_info.",
                )
            ]
    return []


def _check_threshold(value: object, name: str, error_id: str) -> list[Problem]:
    """E004/E005 for a threshold that is not a number of seconds (or absurdly
    small); W002 for one so small that nearly every request is reported."""
    seconds = threshold_seconds(value)
    if seconds is None:
        return [
            Problem(
                f"slowwatch.{error_id}",
                f"{name} must be a finite number of seconds, at least {MIN_THRESHOLD:g}, "
                f"not {value!r}.",
                "Use an int, float or Decimal such as 25 or 2.5. To stop watching a URL, "
                "list it in SLOWWATCH['IGNORE'].",
            )
        ]
    if seconds < LOW_THRESHOLD:
        return [
            Problem(
                "slowwatch.W002",
                f"{name} is {seconds:g} s: nearly every request will be reported.",
                f"Thresholds below {LOW_THRESHOLD:g} s suit a test, not production.",
            )
        ]
    return []


def validate(raw: object) -> list[Problem]:
    """Every problem with a ``SLOWWATCH`` value; empty when it is usable."""
    if not isinstance(raw, Mapping):
        return [
            Problem(
                "slowwatch.E001",
                f"SLOWWATCH must be a dict, not {type(raw).__name__}.",
                'For example: SLOWWATCH = {"THRESHOLD": 10}.',
            )
        ]
    problems: list[Problem] = []
    unknown = sorted(str(k) for k in raw if k not in DEFAULTS)
    if unknown:
        problems.append(
            Problem(
                "slowwatch.E002",
                f"SLOWWATCH has unknown key(s): {', '.join(unknown)}.",
                f"Known keys: {', '.join(DEFAULTS)}.",
            )
        )
    for key in ("ENABLED", "HIDE_SERVER_FRAMES", "CAPTURE_LOCALS", "RUNTIME_CONTROL"):
        if key in raw and not isinstance(raw[key], bool):
            problems.append(
                Problem(
                    "slowwatch.E003",
                    f"SLOWWATCH[{key!r}] must be True or False, not {raw[key]!r}.",
                )
            )
    if "THRESHOLD" in raw:
        problems += _check_threshold(raw["THRESHOLD"], "SLOWWATCH['THRESHOLD']", "E004")
    problems += _validate_thresholds(raw.get("THRESHOLDS", {}))
    problems += _validate_ignore(raw.get("IGNORE", []))
    problems += _validate_reporters(raw.get("REPORTERS", DEFAULTS["REPORTERS"]))
    for key, problem_id in (("QUEUE_SIZE", "slowwatch.E010"), ("MAX_SAMPLES", "slowwatch.E012")):
        size = raw.get(key, DEFAULTS[key])
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            problems.append(
                Problem(problem_id, f"SLOWWATCH[{key!r}] must be a positive int, not {size!r}.")
            )
    interval = positive_seconds(raw.get("SAMPLE_INTERVAL", DEFAULTS["SAMPLE_INTERVAL"]))
    if interval is None or not 0.001 <= interval <= 10:
        problems.append(
            Problem(
                "slowwatch.E011",
                "SLOWWATCH['SAMPLE_INTERVAL'] must be a number of seconds from 0.001 "
                f"to 10, not {raw.get('SAMPLE_INTERVAL')!r}.",
                "The default, 0.05, samples a slow request 20 times a second.",
            )
        )
    escalations = raw.get("ESCALATIONS", [])
    if not isinstance(escalations, (list, tuple)) or not all(
        (positive_seconds(x) or 0) > 1 for x in escalations
    ):
        problems.append(
            Problem(
                "slowwatch.E013",
                "SLOWWATCH['ESCALATIONS'] must be a list of numbers above 1, "
                f"not {escalations!r}.",
                "Multiples of the threshold, e.g. [2, 4]: a 'still slow' report at 2x and 4x.",
            )
        )
    problems += _validate_storage(raw)
    problems += _validate_alerts(raw)
    return problems


def _validate_section(
    raw: Mapping[str, Any], key: str, defaults: dict[str, Any], problem_id: str
) -> list[Problem]:
    value = raw.get(key, {})
    hint = f"Keys: {', '.join(defaults)}; see docs/alerts.rst."
    if not isinstance(value, Mapping):
        return [Problem(problem_id, f"SLOWWATCH[{key!r}] must be a dict, not {value!r}.", hint)]
    wrong = [str(k) for k in value if k not in defaults]
    for name in ("WINDOW", "TIMEOUT"):
        if name in value and name in defaults and positive_seconds(value[name]) is None:
            wrong.append(f"{name}={value[name]!r}")
    per_hour = value.get("PER_HOUR", defaults["PER_HOUR"])
    if isinstance(per_hour, bool) or not isinstance(per_hour, int) or per_hour < 1:
        wrong.append(f"PER_HOUR={per_hour!r}")
    kinds = value.get("KINDS", defaults["KINDS"])
    if not isinstance(kinds, (list, tuple)) or not all(k in ALERT_KINDS for k in kinds):
        wrong.append(f"KINDS={kinds!r}")
    to = value.get("TO") if "TO" in defaults else None
    if to is not None and (
        not isinstance(to, (list, tuple)) or not all(isinstance(a, str) for a in to)
    ):
        wrong.append(f"TO={to!r}")
    for name in ("FROM", "SUBJECT_PREFIX"):
        if name in defaults and value.get(name) is not None and not isinstance(value[name], str):
            wrong.append(f"{name}={value[name]!r}")
    if wrong:
        return [
            Problem(
                problem_id, f"SLOWWATCH[{key!r}] has invalid entries: {', '.join(wrong)}.", hint
            )
        ]
    return []


def _validate_alerts(raw: Mapping[str, Any]) -> list[Problem]:
    problems = _validate_section(raw, "EMAIL", EMAIL_DEFAULTS, "slowwatch.E016")
    problems += _validate_section(raw, "SENTRY", SENTRY_DEFAULTS, "slowwatch.E017")
    base = raw.get("ADMIN_URL_BASE")
    if base is not None and (
        not isinstance(base, str) or not re.match(r"^https?://[^/\s]+", base)
    ):
        problems.append(
            Problem(
                "slowwatch.E018",
                f"SLOWWATCH['ADMIN_URL_BASE'] must be an http(s) URL or None, not {base!r}.",
                'For example: "https://ops.example.com" (links go to its /admin/...).',
            )
        )
    alias = raw.get("CACHE_ALIAS", DEFAULTS["CACHE_ALIAS"])
    caches = getattr(django_settings, "CACHES", None) or {"default": {}}
    if alias is not None and (not isinstance(alias, str) or alias not in caches):
        problems.append(
            Problem(
                "slowwatch.E019",
                f"SLOWWATCH['CACHE_ALIAS'] is {alias!r}, which is not in CACHES.",
                "Alert rate limits live in this cache; None keeps them in each process.",
            )
        )
    return problems


def _validate_storage(raw: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    alias = raw.get("DATABASE_ALIAS", DEFAULTS["DATABASE_ALIAS"])
    databases = getattr(django_settings, "DATABASES", {}) or {}
    if not isinstance(alias, str) or alias not in databases:
        problems.append(
            Problem(
                "slowwatch.E014",
                f"SLOWWATCH['DATABASE_ALIAS'] is {alias!r}, which is not in DATABASES.",
                f"Name one of: {', '.join(map(str, databases)) or '(none configured)'}.",
            )
        )
    retention = raw.get("RETENTION", DEFAULTS["RETENTION"])
    bad = not isinstance(retention, Mapping) or any(k not in RETENTION_KEYS for k in retention)
    if not bad:
        days = retention.get("MAX_AGE_DAYS")
        rows = retention.get("MAX_ROWS")
        bad = (days is not None and positive_seconds(days) is None) or (
            rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1)
        )
    if bad:
        problems.append(
            Problem(
                "slowwatch.E015",
                f"SLOWWATCH['RETENTION'] must be a dict with MAX_AGE_DAYS (days > 0 or None) "
                f"and MAX_ROWS (an int > 0 or None), not {retention!r}.",
                'The default is {"MAX_AGE_DAYS": 30, "MAX_ROWS": 50_000}.',
            )
        )
    return problems


def _validate_thresholds(value: object) -> list[Problem]:
    if not isinstance(value, Mapping):
        return [
            Problem(
                "slowwatch.E005",
                f"SLOWWATCH['THRESHOLDS'] must be a dict, not {type(value).__name__}.",
                'Map URL names or path regexes to seconds: {"reports:export": 120}.',
            )
        ]
    problems: list[Problem] = []
    for key, seconds in value.items():
        if not isinstance(key, (str, re.Pattern)) or not key:
            problems.append(
                Problem(
                    "slowwatch.E005",
                    f"SLOWWATCH['THRESHOLDS'] key {key!r} is not a URL name or path regex.",
                )
            )
        else:
            problems += _check_threshold(seconds, f"SLOWWATCH['THRESHOLDS'][{key!r}]", "E005")
            problems += _check_pattern(key, "THRESHOLDS")
    return problems


def _validate_ignore(value: object) -> list[Problem]:
    if not isinstance(value, (list, tuple)):
        return [
            Problem(
                "slowwatch.E006",
                f"SLOWWATCH['IGNORE'] must be a list, not {type(value).__name__}.",
                'For example: ["health", "^/static/"].',
            )
        ]
    problems: list[Problem] = []
    for item in value:
        if not isinstance(item, (str, re.Pattern)) or not item:
            problems.append(
                Problem(
                    "slowwatch.E006",
                    f"SLOWWATCH['IGNORE'] entry {item!r} is not a URL name or path regex.",
                )
            )
        else:
            problems += _check_pattern(item, "IGNORE")
    return problems


def _validate_reporters(value: object) -> list[Problem]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return [
            Problem(
                "slowwatch.E008",
                "SLOWWATCH['REPORTERS'] must be a list of dotted paths.",
                'For example: ["slowwatch.reporters.LoggingReporter"].',
            )
        ]
    problems: list[Problem] = []
    for path in value:
        try:
            import_string(path)
        except Exception as exc:
            # Whatever the module raises at import (a SyntaxError too) is the
            # user's to fix, not a reason for django.setup() to fail.
            problems.append(
                Problem(
                    "slowwatch.E009",
                    f"SLOWWATCH['REPORTERS'] entry {path!r} cannot be imported: "
                    f"{type(exc).__name__}: {exc}.",
                    "Check the dotted path, and that the reporter's extra is installed.",
                )
            )
    return problems
