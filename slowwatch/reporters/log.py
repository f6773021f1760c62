"""LoggingReporter: slow requests as records on the ``slowwatch.report`` logger."""

from __future__ import annotations

import logging

from slowwatch.render import text
from slowwatch.report import Report
from slowwatch.reporters.base import Reporter

__all__ = ["LoggingReporter"]


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
