"""Runs N requests (or N queries) in one configuration, for valgrind's callgrind.

``overhead.py`` starts this script under ``valgrind --tool=callgrind`` twice
per configuration and memory layout, with two values of N, and divides the
difference in the main thread's instruction count by the difference in N:
start-up and warm-up cancel out, and what is left is the instructions one
request (or one query) costs. Unlike wall-clock time, that count is the same
from run to run of one layout, whatever else the machine is doing.

    python benchmarks/instructions.py request slowwatch 1000
    python benchmarks/instructions.py query tracker 5000
    python benchmarks/instructions.py gevent-request slowwatch 1000
    python benchmarks/instructions.py asgi-request slowwatch 1000

``gevent-request`` is ``request`` in a process gevent has monkey-patched, in
a greenlet, as gunicorn's gevent worker serves it; ``asgi-request`` sends the
async view's requests through Django's ASGI handler, each in its own task on
one event loop, as uvicorn does.
"""

from __future__ import annotations

import sys

if sys.argv[1:2] == ["gevent-request"]:
    # Before anything imports threading or socket, as gunicorn's worker does.
    from gevent import monkey

    monkey.patch_all()

import asyncio
import gc
import io
import operator
import os
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproject")

import django  # noqa: E402

django.setup()

from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import RequestFactory, override_settings  # noqa: E402

from benchproject import (  # noqa: E402
    CONFIGS,
    EMPTY_ASYNC,
    SLOWWATCH_MIDDLEWARE,
    asgi_get,
    passthrough,
)

#: Under ASGI: no middleware, an async one that only forwards, slowwatch.
ASGI_CONFIGS = {"bare": [], "empty": [EMPTY_ASYNC], "slowwatch": [SLOWWATCH_MIDDLEWARE]}

WARM_UP = 200


def settle() -> None:
    """After the warm-up: what start-up left is moved out of the collector's sight.

    Otherwise a full collection of the whole heap (millions of instructions)
    lands in one run's measured loop and not in the other's, and the counts
    per request swing by thousands from one run to the next.
    """
    gc.collect()
    gc.freeze()


def requests(config: str, n: int) -> None:
    """``n`` hello-world requests through Django's WSGI handler."""
    with override_settings(MIDDLEWARE=CONFIGS[config]):
        app = WSGIHandler()
    base = RequestFactory()._base_environ(PATH_INFO="/hello", REQUEST_METHOD="GET")

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        return None

    for i in range(WARM_UP + n):
        if i == WARM_UP:
            settle()
        env = dict(base)
        env["wsgi.input"] = io.BytesIO()
        response = app(env, start_response)
        b"".join(response)
        response.close()


def asgi_requests(config: str, n: int) -> None:
    """``n`` requests to the async hello-world view through Django's ASGI handler."""
    from django.core.handlers.asgi import ASGIHandler

    with override_settings(MIDDLEWARE=ASGI_CONFIGS[config]):
        app = ASGIHandler()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for i in range(WARM_UP + n):
            if i == WARM_UP:
                settle()
            await loop.create_task(asgi_get(app, "/ahello"))

    asyncio.run(run())


def queries(config: str, n: int) -> None:
    """``n`` ``SELECT 1`` on SQLite; with slowwatch's tracker, inside a watch or not."""
    from slowwatch import runtime
    from slowwatch.sql import install

    connection.ensure_connection()
    if config == "passthrough":
        connection.execute_wrappers.append(passthrough)
    elif config == "c-wrapper":
        # operator.call(execute, *args) is written in C: what Django's wrapper
        # mechanism costs by itself, whatever the wrapper does.
        connection.execute_wrappers.append(operator.call)
    elif config.startswith("tracker"):
        watchdog = runtime.watchdog()
        install(connection, watchdog.active)
        if config == "tracker":
            # What the middleware files for a request in flight (not yet slow).
            watchdog.active[threading.get_ident()] = [time.monotonic(), 25.0, None, None, None]
    with connection.cursor() as cursor:
        for i in range(WARM_UP + n):
            if i == WARM_UP:
                settle()
            cursor.execute("SELECT 1")


if __name__ == "__main__":
    part, config, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if part == "gevent-request":
        import gevent

        gevent.spawn(requests, config, count).join()
    elif part == "asgi-request":
        asgi_requests(config, count)
    else:
        (requests if part == "request" else queries)(config, count)
