"""LoggingReporter: slow requests as records on the ``slowwatch.report`` logger."""

from __future__ import annotations

import logging

from slowwatch.report import Report
from slowwatch.reporters.base import Reporter

logger = logging.getLogger("slowwatch.report")


class LoggingReporter(Reporter):
    """One WARNING record when a request turns slow, one INFO record when it ends.

    The WARNING's message is a one-line summary followed by the stack; both
    records carry the structured report as ``record.slowwatch`` (a dict, see
    ``docs/report.rst``) for JSON formatters.
    """

    def handle(self, report: Report) -> None:
        level = logging.WARNING if report.kind == "slow" else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(level, "%s", report.text(), extra={"slowwatch": report.to_dict()})
