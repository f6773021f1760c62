"""Where reports go. List the ones you want in ``SLOWWATCH["REPORTERS"]``."""

from __future__ import annotations

from slowwatch.reporters.base import Reporter
from slowwatch.reporters.database import DatabaseReporter
from slowwatch.reporters.email import EmailReporter
from slowwatch.reporters.log import LoggingReporter

# Built on optional packages: imported only when asked for by name.
_OPTIONAL = {
    "PrometheusReporter": "slowwatch.reporters.prometheus",
    "SentryReporter": "slowwatch.reporters.sentry",
}


def __getattr__(name: str) -> object:
    if name in _OPTIONAL:
        import importlib

        return getattr(importlib.import_module(_OPTIONAL[name]), name)
    raise AttributeError(f"module 'slowwatch.reporters' has no attribute {name!r}")


__all__ = ["DatabaseReporter", "EmailReporter", "LoggingReporter", "Reporter"]
