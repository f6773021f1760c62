"""gunicorn configuration of the real-server tests: slowwatch's hooks."""

from __future__ import annotations

from slowwatch.gunicorn import worker_abort, worker_exit

__all__ = ["worker_abort", "worker_exit"]
