"""Where reports go. List the ones you want in ``SLOWWATCH["REPORTERS"]``."""

from __future__ import annotations

from slowwatch.reporters.base import Reporter
from slowwatch.reporters.database import DatabaseReporter
from slowwatch.reporters.email import EmailReporter
from slowwatch.reporters.log import LoggingReporter

__all__ = ["DatabaseReporter", "EmailReporter", "LoggingReporter", "Reporter"]
