"""gunicorn configuration of the real-server tests: slowwatch's hooks."""

from __future__ import annotations

from slowwatch.gunicorn import child_exit, post_worker_init, worker_abort, worker_exit

__all__ = ["child_exit", "post_worker_init", "worker_abort", "worker_exit"]
