"""LoggingReporter: slow requests as records on the ``slowwatch.report`` logger."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from slowwatch.render import text
from slowwatch.report import Report
from slowwatch.reporters.base import Reporter

__all__ = ["LoggingReporter", "show_when_unconfigured"]


logger = logging.getLogger("slowwatch.report")


#: The level of each transition's record.
LEVELS = {
    "slow": logging.WARNING,
    "still_slow": logging.INFO,
    "killed": logging.WARNING,
    "finished": logging.INFO,
    "lost": logging.WARNING,
}


class LoggingReporter(Reporter):
    """One WARNING record when a request turns slow, one INFO record when it ends.

    The WARNING's message is a one-line summary followed by the stack; the
    INFO's, the outcome with the verdict, the SQL and the hottest lines. Other
    transitions: ``still_slow`` (INFO), ``killed`` and ``lost`` (WARNING). Every
    record carries the structured report as ``record.slowwatch`` (a dict, see
    ``docs/report.rst``) for JSON formatters.
    """

    def handle(self, report: Report) -> None:
        level = LEVELS.get(report.kind, logging.INFO)
        if logger.isEnabledFor(level):
            logger.log(level, "%s", text(report), extra={"slowwatch": report.to_dict()})


class _Fallback(logging.StreamHandler):  # type: ignore[type-arg]
    """Standard error, with timestamps, for slowwatch's records that no other
    handler would show; silent as soon as one would (the project's LOGGING)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    @property
    def stream(self) -> TextIO:
        # Whatever sys.stderr is now, as logging's own last resort does.
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass

    def handle(self, record: logging.LogRecord) -> bool:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            for handler in logger.handlers:
                if handler is not self and record.levelno >= handler.level:
                    return False
            logger = logger.parent if logger.propagate else None
        return bool(super().handle(record))


def show_when_unconfigured() -> None:
    """A project that configured no logging for slowwatch still sees whole reports.

    Python's last resort shows only warnings, without a time: a new project
    would see the ``slow`` record and never its ``finished`` one. When nothing
    handles slowwatch's loggers, they get a handler of their own that writes
    both to standard error, with timestamps, until the project's logging
    shows them itself.
    """
    base = logging.getLogger("slowwatch")
    if base.hasHandlers():
        return
    if not any(isinstance(h, _Fallback) for h in base.handlers):
        base.addHandler(_Fallback())
    report = logging.getLogger("slowwatch.report")
    if report.level == logging.NOTSET:
        report.setLevel(logging.INFO)
