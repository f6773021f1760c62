"""slowwatch: a watchdog that tells why a Django request is slow while it still runs."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0.dev0"
