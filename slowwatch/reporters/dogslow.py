"""The reporters that dogslow's ``DOGSLOW_LOGGER`` and ``DOGSLOW_LOG_TO_FILE``
settings ask for (see :mod:`slowwatch.dogslow`)."""

from __future__ import annotations

import logging

from django.core.exceptions import ImproperlyConfigured

from slowwatch.dogslow import translation
from slowwatch.render import text
from slowwatch.report import Report
from slowwatch.reporters.files import FileReporter
from slowwatch.reporters.log import LoggingReporter

__all__ = ["DogslowFileReporter", "DogslowLoggingReporter"]


class DogslowLoggingReporter(LoggingReporter):
    """Logs each ``slow`` report to ``DOGSLOW_LOGGER`` at ``DOGSLOW_LOG_LEVEL``.

    One record per slow request, as dogslow logged: the other transitions go to
    the ``LoggingReporter``'s ``slowwatch.report``, if it is configured. The
    record carries the structured report as ``record.slowwatch``, like the
    ``LoggingReporter``'s.
    """

    def __init__(self) -> None:
        found = translation().logger
        if found is None:
            raise ImproperlyConfigured("DogslowLoggingReporter needs a valid DOGSLOW_LOGGER.")
        name, self.level = found
        self.logger = logging.getLogger(name)

    def handle(self, report: Report) -> None:
        if report.kind == "slow" and self.logger.isEnabledFor(self.level):
            self.logger.log(self.level, "%s", text(report), extra={"slowwatch": report.to_dict()})


class DogslowFileReporter(FileReporter):
    """A :class:`~slowwatch.reporters.files.FileReporter` writing into ``DOGSLOW_OUTPUT``
    (by default the temporary directory, as dogslow did)."""

    def __init__(self) -> None:
        super().__init__(directory=translation().output)
