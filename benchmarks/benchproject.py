"""A minimal Django project for the benchmarks: one module, SQLite, no apps."""

from __future__ import annotations

import asyncio
import operator
import os
import time
from typing import Any

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.urls import path

SECRET_KEY = "benchmark"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = __name__
USE_TZ = True
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = [m for m in os.environ.get("BENCH_MIDDLEWARE", "").split(",") if m]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
SLOWWATCH = {"THRESHOLD": float(os.environ.get("BENCH_THRESHOLD", "25"))}
if os.environ.get("BENCH_RECORD"):
    # overhead.py defines this reporter to collect detection latencies.
    SLOWWATCH["REPORTERS"] = ["benchproject.RecordingReporter"]
DOGSLOW_TIMER = int(float(os.environ.get("BENCH_THRESHOLD", "25")))
DOGSLOW_LOG_TO_FILE = False
DOGSLOW_LOGGER = "dogslow_bench"
LOGGING_CONFIG = None


SLOWWATCH_MIDDLEWARE = "slowwatch.middleware.SlowWatchMiddleware"
EMPTY_ASYNC = "benchproject.PassThroughAsyncMiddleware"
DOGSLOW = "dogslow.WatchdogMiddleware"
#: The configurations every benchmark compares, by name.
CONFIGS = {
    "bare": [],
    "empty": ["benchproject.PassThroughMiddleware"],
    "slowwatch": [SLOWWATCH_MIDDLEWARE],
    "dogslow": [DOGSLOW],
}
#: Execute wrappers on the connection, for the per-query cost.
#: ("c-wrapper" is operator.call, new in Python 3.11.)
QUERY_CONFIGS = tuple(
    name
    for name in ("none", "c-wrapper", "passthrough", "tracker-unwatched", "tracker")
    if name != "c-wrapper" or hasattr(operator, "call")
)


def passthrough(execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
    """The floor of a query wrapper written in Python: it only forwards the call."""
    return execute(sql, params, many, context)


class PassThroughMiddleware:
    """The floor: what any middleware costs Django per request."""

    def __init__(self, get_response):  # type: ignore[no-untyped-def]
        self.get_response = get_response

    def __call__(self, request):  # type: ignore[no-untyped-def]
        return self.get_response(request)


class PassThroughAsyncMiddleware:
    """The floor under ASGI: an async-only middleware that only forwards."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response):  # type: ignore[no-untyped-def]
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request):  # type: ignore[no-untyped-def]
        return await self.get_response(request)


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def sleep(request: HttpRequest) -> HttpResponse:
    time.sleep(float(request.GET.get("s", "1")))
    return HttpResponse("slept")


def cpu(request: HttpRequest) -> HttpResponse:
    deadline = time.perf_counter() + float(request.GET.get("s", "1"))
    while time.perf_counter() < deadline:
        pass
    return HttpResponse("spun")


async def ahello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


async def asleep(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(float(request.GET.get("s", "1")))
    return HttpResponse("slept")


async def asgi_get(app: Any, path: str, query: str = "") -> None:
    """One GET through the ASGI ``app``, as a server sends it; the client stays
    connected (no disconnect message) until Django is done."""
    body = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if not body:
            await asyncio.Event().wait()
        return body.pop()

    async def send(message: dict[str, Any]) -> None:
        return None

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    await app(scope, receive, send)


urlpatterns = [
    path("hello", hello),
    path("sleep", sleep),
    path("cpu", cpu),
    path("ahello", ahello),
    path("asleep", asleep),
]
