"""Every worker's counters for the settings page, through the shared cache.

A page is served by one worker, and each worker counts its own reports. When
the cache named by ``CACHE_ALIAS`` is shared (Redis, Memcached, a database
cache: not the local-memory or dummy one), each worker's control thread
writes its counters there every :data:`slowwatch.control.PERIOD` seconds,
under a key of its own that expires when the worker is gone, and lists that
key in an index. The settings page reads them back with a deadline of its
own, on a thread of its own, so a cache that hangs costs the page a second
and then is left alone for a while (a breaker), like the alert limits.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from django.core.cache import BaseCache, caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache

from slowwatch.alerting import SLOW_CACHE, CircuitBreaker
from slowwatch.conf import settings
from slowwatch.core.errors import errors

__all__ = ["Worker", "publish", "read", "shared"]

INDEX = "slowwatch:workers"
#: A worker's figures outlive it by this many seconds.
TTL = 35
#: Workers listed at most (the index is trimmed, oldest first).
MAX_WORKERS = 200
#: Seconds the settings page waits for the cache.
READ_TIMEOUT = 1.0

_breaker = CircuitBreaker(failures=1, base=60.0, cap=600.0)

T = TypeVar("T")


@dataclass(frozen=True)
class Worker:
    name: str  # "host:pid"
    seen: float  # Unix time of its last write
    counters: dict[str, int]

    @property
    def seen_at(self) -> datetime:
        return datetime.fromtimestamp(self.seen, tz=timezone.utc)

    @property
    def reports(self) -> int:
        """Reports offered to the first queue: taken in, or dropped there."""
        return sum(
            v
            for k, v in self.counters.items()
            if k == "queue submitted" or k.startswith("queue dropped:")
        )

    @property
    def dropped(self) -> int:
        return sum(v for k, v in self.counters.items() if "dropped" in k)

    @property
    def failed(self) -> int:
        return sum(v for k, v in self.counters.items() if k.endswith(" failed"))

    @property
    def errors(self) -> int:
        return sum(v for k, v in self.counters.items() if k.startswith("internal error: "))


def shared() -> BaseCache | None:
    """The cache every worker can read, or None."""
    alias = settings.cache_alias
    if not alias:
        return None
    cache = caches[alias]
    return None if isinstance(cache, (LocMemCache, DummyCache)) else cache


def _name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


_call_lock = threading.Lock()
_last_call: threading.Thread | None = None


def _bounded(what: str, fn: Callable[[], T], timeout: float) -> T | None:
    """``fn()`` on a thread of its own, waited for ``timeout`` s; None if it failed
    or did not answer. One call at a time: while one hangs, the next is skipped,
    so a cache that never answers holds one thread, never more."""
    global _last_call
    result: list[T] = []

    def run() -> None:
        try:
            result.append(fn())
        except Exception as exc:
            errors.error(f"{what} (cache {settings.cache_alias!r})", exc)

    with _call_lock:
        if _last_call is not None and _last_call.is_alive():
            _breaker.failure()
            return None
        _last_call = thread = threading.Thread(target=run, name="slowwatch-fleet", daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        _breaker.failure()
        return None
    _breaker.success()
    return result[0]


def publish(counters: dict[str, int]) -> None:
    """Write this worker's counters (its control thread, every period)."""
    cache = shared()
    if cache is None or not _breaker.allow():
        return

    def write() -> bool:
        key = f"slowwatch:worker:{_name()}"
        cache.set(key, {"seen": time.time(), "counters": counters}, TTL)
        listed = cache.get(INDEX) or []
        if key not in listed:
            cache.set(INDEX, [*listed, key][-MAX_WORKERS:], None)
        return True

    _bounded("writing this worker's counters", write, SLOW_CACHE)


def _read(cache: BaseCache) -> list[Worker]:
    listed = cache.get(INDEX) or []
    found = cache.get_many(listed)
    workers = []
    for key in listed:
        doc: Any = found.get(key)
        if isinstance(doc, dict) and isinstance(doc.get("counters"), dict):
            name = key.removeprefix("slowwatch:worker:")
            workers.append(Worker(name, float(doc.get("seen", 0)), dict(doc["counters"])))
    if len(found) < len(listed):  # the workers that are gone leave the index
        cache.set(INDEX, [key for key in listed if key in found], None)
    return sorted(workers, key=lambda w: w.name)


def read(timeout: float = READ_TIMEOUT) -> list[Worker] | None:
    """Every live worker's figures; None without a shared cache or when it does not answer."""
    cache = shared()
    if cache is None or not _breaker.allow():
        return None
    return _bounded("reading the workers' counters", lambda: _read(cache), timeout)
