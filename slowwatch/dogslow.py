"""dogslow's ``DOGSLOW_*`` settings, honoured where ``SLOWWATCH`` does not say otherwise.

A project moving from dogslow keeps its behaviour before it moves its
settings: :func:`translate` turns each ``DOGSLOW_*`` setting into the
``SLOWWATCH`` value that replaces it, and :class:`slowwatch.conf.Settings`
merges those between the defaults and the project's ``SLOWWATCH``. A key the
project sets always wins; reporters a setting asks for are appended to the
project's ``REPORTERS`` (or to the default list).

Each setting found is a warning naming its replacement (``W003``–``W005``,
never an error: a leftover setting must not stop a worker from starting).

dogslow's quirks are smoothed over, not copied: ``DOGSLOW_TIMER`` may be a
fraction or a numeric string (dogslow's ``int()`` truncated the one and refused
the other), ``DOGSLOW_LOG_LEVEL`` a level name in any case or a number. Report
files are written only when ``DOGSLOW_LOG_TO_FILE = True`` is set explicitly:
dogslow wrote them by default, which is not what anyone adding slowwatch expects.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from slowwatch.conf import DEFAULTS, is_path_pattern, raw_setting, threshold_seconds
from slowwatch.validation import Problem, validate

__all__ = ["NAMES", "Translation", "found_settings", "translate", "translation"]


#: Every setting dogslow 1.2 read, in the order the warnings list them.
NAMES = (
    "DOGSLOW",
    "DOGSLOW_TIMER",
    "DOGSLOW_IGNORE_URLS",
    "DOGSLOW_STACK_VARS",
    "DOGSLOW_EMAIL_TO",
    "DOGSLOW_EMAIL_FROM",
    "DOGSLOW_LOGGER",
    "DOGSLOW_LOG_LEVEL",
    "DOGSLOW_LOG_TO_SENTRY",
    "DOGSLOW_LOG_TO_FILE",
    "DOGSLOW_OUTPUT",
)

#: dogslow's middleware, and that of its maintained fork.

EMAIL_REPORTER = "slowwatch.reporters.EmailReporter"
SENTRY_REPORTER = "slowwatch.reporters.SentryReporter"
LOGGING_REPORTER = "slowwatch.reporters.dogslow.DogslowLoggingReporter"
FILE_REPORTER = "slowwatch.reporters.dogslow.DogslowFileReporter"

#: What a slowwatch configuration says instead of each setting (the warnings' hints).
REPLACEMENTS = {
    "DOGSLOW": "SLOWWATCH['ENABLED']",
    "DOGSLOW_TIMER": "SLOWWATCH['THRESHOLD']",
    "DOGSLOW_IGNORE_URLS": "SLOWWATCH['IGNORE'] (or @slowwatch_exempt)",
    "DOGSLOW_STACK_VARS": "SLOWWATCH['CAPTURE_LOCALS']",
    "DOGSLOW_EMAIL_TO": f"SLOWWATCH['EMAIL']['TO'], with {EMAIL_REPORTER} in REPORTERS",
    "DOGSLOW_EMAIL_FROM": f"SLOWWATCH['EMAIL']['FROM'], with {EMAIL_REPORTER} in REPORTERS",
    "DOGSLOW_LOGGER": "a handler on the 'slowwatch.report' logger in LOGGING",
    "DOGSLOW_LOG_LEVEL": "the 'slowwatch.report' logger's level in LOGGING",
    "DOGSLOW_LOG_TO_SENTRY": f"{SENTRY_REPORTER} in SLOWWATCH['REPORTERS']",
    "DOGSLOW_LOG_TO_FILE": "a logging.FileHandler on the 'slowwatch.report' logger",
    "DOGSLOW_OUTPUT": "a logging.FileHandler on the 'slowwatch.report' logger",
}

#: Settings whose dogslow default is None: set to None, they do nothing.
NONE_DEFAULTS = ("DOGSLOW_EMAIL_TO", "DOGSLOW_EMAIL_FROM", "DOGSLOW_LOGGER", "DOGSLOW_OUTPUT")


@dataclass(frozen=True)
class Translation:
    """What the ``DOGSLOW_*`` settings found mean for slowwatch."""

    #: Merged over the project's ``SLOWWATCH``: only keys it does not set, plus
    #: ``REPORTERS`` (its list, extended) and ``EMAIL`` (its keys kept).
    values: dict[str, Any]
    problems: tuple[Problem, ...]
    #: The logger and level :class:`DogslowLoggingReporter` logs to.
    logger: tuple[str, int] | None = None
    #: The directory :class:`DogslowFileReporter` writes to.
    output: str | None = None


class _Invalid(ValueError):
    """A value slowwatch cannot use; the message says what it must be."""


def _flag(value: object) -> bool:
    # dogslow tested truthiness; 0 and 1 are as clear as False and True.
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise _Invalid("it must be True or False")


def _seconds(value: object) -> float:
    number: object = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    seconds = threshold_seconds(number)
    if seconds is None:
        raise _Invalid("it must be a number of seconds of at least 0.01, such as 25 or '2.5'")
    return seconds


def _names(value: object) -> list[str]:
    # dogslow tested `url_name in DOGSLOW_IGNORE_URLS`: a lone string was meant as one name.
    items = [value] if isinstance(value, str) else value
    if isinstance(items, (set, frozenset)):
        items = sorted(items, key=str)
    if isinstance(items, (list, tuple)) and all(
        isinstance(item, str) and item and not is_path_pattern(item) for item in items
    ):
        return list(items)
    raise _Invalid("it must be a list of URL names")


def _addresses(value: object) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if isinstance(items, (list, tuple)) and items and all(isinstance(a, str) for a in items):
        return list(items)
    raise _Invalid("it must be an address or a list of addresses")


def _text(value: object) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and value:
        return value
    raise _Invalid("it must be a non-empty string")


def _level(value: object) -> int:
    level: object = None
    if isinstance(value, int) and not isinstance(value, bool):
        level = value
    elif isinstance(value, str):
        try:
            level = int(value)
        except ValueError:
            # getLevelName maps a known name to its number and anything else to a string.
            level = logging.getLevelName(value.strip().upper())
    if isinstance(level, int) and level > 0:
        return level
    raise _Invalid("it must be a logging level: a name such as 'WARNING' (any case) or a number")


class _Builder:
    """Collects the values and problems of one translation."""

    def __init__(self, project: Mapping[str, Any], found: Mapping[str, object]) -> None:
        self.project = project
        self.found = found
        self.values: dict[str, Any] = {}
        self.problems: list[Problem] = []
        self.logger: tuple[str, int] | None = None
        self.output: str | None = None
        # Problems the project's own SLOWWATCH has: the checks report those already.
        self.known = {(p.id, p.msg) for p in validate(project)}

    def honoured(self, name: str, how: str) -> None:
        self.problems.append(
            Problem(
                "slowwatch.W003",
                f"{name} is honoured: {how}.",
                f"Replace it with {REPLACEMENTS[name]}, then delete it (see docs/dogslow.rst).",
            )
        )

    def unused(self, name: str, why: str) -> None:
        self.problems.append(
            Problem("slowwatch.W003", f"{name} does nothing: {why}.", f"Delete {name}.")
        )

    def overruled(self, name: str, counterpart: str) -> None:
        self.problems.append(
            Problem(
                "slowwatch.W004",
                f"{name} is ignored: SLOWWATCH sets its counterpart, {counterpart}.",
                f"Delete {name}.",
            )
        )

    def invalid(self, name: str, why: str) -> None:
        self.problems.append(
            Problem(
                "slowwatch.W005",
                f"{name} = {self.found.get(name)!r} is ignored: {why}.",
                f"slowwatch's default applies. Fix or delete {name} (see docs/dogslow.rst).",
            )
        )

    def parse(self, name: str, parser: Callable[[object], Any]) -> Any:
        """The parsed value, or None (with a W005) when it cannot be used."""
        try:
            return parser(self.found[name])
        except _Invalid as exc:
            self.invalid(name, str(exc))
        except (TypeError, ValueError, OverflowError) as exc:
            # An odd object's own methods (an __fspath__, an __eq__) may raise:
            # that makes it unusable, never a settings object that fails to load.
            self.invalid(name, f"it cannot be read ({type(exc).__name__}: {exc})")
        return None

    def apply(self, name: str, changes: dict[str, Any]) -> bool:
        """Take ``changes`` if ``SLOWWATCH`` with them and what was taken is still valid."""
        candidate = {**self.project, **self.values, **changes}
        new = [p for p in validate(candidate) if (p.id, p.msg) not in self.known]
        refused = [p.msg for p in new if p.is_error]
        if refused:
            self.invalid(name, " ".join(refused).rstrip("."))
            return False
        self.values.update(changes)
        self.known.update((p.id, p.msg) for p in new)
        # Warnings about the translated value (W002, a low threshold), traced to it.
        self.problems += [Problem(p.id, f"{name}: {p.msg}", p.hint) for p in new]
        return True

    def reporters(self) -> list[str]:
        listed = self.values.get("REPORTERS", self.project.get("REPORTERS"))
        if isinstance(listed, (list, tuple)) and all(isinstance(p, str) for p in listed):
            return list(listed)
        return list(DEFAULTS["REPORTERS"])

    def add_reporter(self, name: str, path: str) -> bool:
        listed = self.reporters()
        return path in listed or self.apply(name, {"REPORTERS": [*listed, path]})


def _simple(b: _Builder, name: str, key: str, parser: Callable[[object], Any]) -> None:
    if name not in b.found:
        return
    if key in b.project:
        b.overruled(name, repr(key))
        return
    value = b.parse(name, parser)
    if value is not None and b.apply(name, {key: value}):
        b.honoured(name, f"SLOWWATCH[{key!r}] = {value!r}")


def _email(b: _Builder) -> None:
    parsed: dict[str, Any] = {}
    for name, key, parser in (
        ("DOGSLOW_EMAIL_TO", "TO", _addresses),
        ("DOGSLOW_EMAIL_FROM", "FROM", _text),
    ):
        if name in b.found:
            value = b.parse(name, parser)
            if value is not None:
                parsed[name] = (key, value)
    if len(parsed) == 1:
        [(name, _)] = parsed.items()
        other = "DOGSLOW_EMAIL_FROM" if name == "DOGSLOW_EMAIL_TO" else "DOGSLOW_EMAIL_TO"
        b.unused(name, f"without {other} dogslow sent no mail, and neither does slowwatch")
        return
    if not parsed:
        return
    section = b.project.get("EMAIL")
    email = dict(section) if isinstance(section, Mapping) else {}
    taken = []
    for name, (key, value) in parsed.items():
        if key in email:
            b.overruled(name, f"'EMAIL'[{key!r}]")
        else:
            email[key] = value
            taken.append((name, key, value))
    # SLOWWATCH's EMAIL sets both: the project has configured mail itself.
    if not taken or not b.apply("DOGSLOW_EMAIL_TO", {"EMAIL": email}):
        return
    if not b.add_reporter("DOGSLOW_EMAIL_TO", EMAIL_REPORTER):
        return
    for name, key, value in taken:
        b.honoured(name, f"SLOWWATCH['EMAIL'][{key!r}] = {value!r}, mailed by {EMAIL_REPORTER}")


def _logger(b: _Builder) -> None:
    level_set = "DOGSLOW_LOG_LEVEL" in b.found
    # An unusable level (W005) falls back to dogslow's default, WARNING.
    parsed: int | None = b.parse("DOGSLOW_LOG_LEVEL", _level) if level_set else None
    if "DOGSLOW_LOGGER" not in b.found:
        if parsed is not None:
            b.unused("DOGSLOW_LOG_LEVEL", "it is the level of DOGSLOW_LOGGER, which is not set")
        return
    name = b.parse("DOGSLOW_LOGGER", _text)
    if name is None or not b.add_reporter("DOGSLOW_LOGGER", LOGGING_REPORTER):
        return
    level = logging.WARNING if parsed is None else parsed
    b.logger = (name, level)
    how = f"{LOGGING_REPORTER} logs each slow request to {name!r} at "
    how += str(logging.getLevelName(level))
    b.honoured("DOGSLOW_LOGGER", how)
    if parsed is not None:
        b.honoured("DOGSLOW_LOG_LEVEL", how)


def _sentry(b: _Builder) -> None:
    name = "DOGSLOW_LOG_TO_SENTRY"
    if name not in b.found:
        return
    wanted = b.parse(name, _flag)
    if wanted is False:
        b.unused(name, "it is False")
    elif wanted and b.add_reporter(name, SENTRY_REPORTER):
        b.honoured(name, f"{SENTRY_REPORTER} is in REPORTERS")


def _files(b: _Builder) -> None:
    output: str | None = tempfile.gettempdir()
    if "DOGSLOW_OUTPUT" in b.found:
        output = b.parse("DOGSLOW_OUTPUT", _text)
    if "DOGSLOW_LOG_TO_FILE" not in b.found:
        if "DOGSLOW_OUTPUT" in b.found:
            why = "slowwatch writes report files only when DOGSLOW_LOG_TO_FILE = True is set"
            b.unused("DOGSLOW_OUTPUT", why)
        return
    wanted = b.parse("DOGSLOW_LOG_TO_FILE", _flag)
    if wanted is False:
        b.unused("DOGSLOW_LOG_TO_FILE", "slowwatch writes no report files unless asked")
        if "DOGSLOW_OUTPUT" in b.found:
            b.unused("DOGSLOW_OUTPUT", "DOGSLOW_LOG_TO_FILE is False")
    elif wanted and output is not None and b.add_reporter("DOGSLOW_LOG_TO_FILE", FILE_REPORTER):
        # An unusable DOGSLOW_OUTPUT writes nothing rather than somewhere unexpected.
        b.output = output
        how = f"{FILE_REPORTER} writes one file per slow request into {output!r}"
        b.honoured("DOGSLOW_LOG_TO_FILE", how)
        if "DOGSLOW_OUTPUT" in b.found:
            b.honoured("DOGSLOW_OUTPUT", how)
    elif wanted:
        b.unused("DOGSLOW_LOG_TO_FILE", "DOGSLOW_OUTPUT cannot be used, so no file is written")


def translate(raw: object, found: Mapping[str, object]) -> Translation:
    """The ``SLOWWATCH`` values and check problems for the ``DOGSLOW_*`` settings ``found``."""
    if not found:
        return Translation({}, ())
    # A SLOWWATCH that is not a dict is E001's business; translate as if it were empty.
    project: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    # None is dogslow's "not set" for these: treated as absent, and said to be useless.
    unset = [n for n in NONE_DEFAULTS if n in found and found[n] is None]
    b = _Builder(project, {k: v for k, v in found.items() if k not in unset})
    for name in unset:
        b.unused(name, "None is dogslow's default")
    _simple(b, "DOGSLOW", "ENABLED", _flag)
    _simple(b, "DOGSLOW_TIMER", "THRESHOLD", _seconds)
    _simple(b, "DOGSLOW_IGNORE_URLS", "IGNORE", _names)
    _simple(b, "DOGSLOW_STACK_VARS", "CAPTURE_LOCALS", _flag)
    _email(b)
    _logger(b)
    _sentry(b)
    _files(b)
    return Translation(b.values, tuple(b.problems), b.logger, b.output)


_MISSING = object()


def found_settings() -> dict[str, object]:
    """The ``DOGSLOW_*`` settings the project sets.

    Read only when :mod:`slowwatch.conf` builds its values and by the checks,
    like ``SLOWWATCH`` itself: never on a request or the monitor thread.
    """
    found = {}
    for name in NAMES:
        value = getattr(django_settings, name, _MISSING)
        if value is not _MISSING:
            found[name] = value
    return found


def translation() -> Translation:
    """The translation of this project's settings."""
    return translate(raw_setting(), found_settings())


@receiver(setting_changed)
def _dogslow_changed(*, setting: str, enter: bool, **kwargs: object) -> None:
    if setting in NAMES:
        # What SLOWWATCH means has changed: everything made from it (the
        # settings cache, the runtime's reporters and monitor) is remade by
        # those that listen for it.
        setting_changed.send(
            sender=_dogslow_changed, setting="SLOWWATCH", value=raw_setting(), enter=enter
        )
