"""gunicorn settings for the demo: two workers with four threads each, loopback only."""

from __future__ import annotations

import os

# A request gunicorn kills is reported as `killed`; Ctrl-C stops every worker at once.
from slowwatch.gunicorn import post_worker_init, worker_abort, worker_exit  # noqa: F401

bind = f"127.0.0.1:{os.environ.get('PORT', '8000')}"
workers = 2
worker_class = "gthread"
threads = 4
timeout = 60
