"""Keeping alerts quiet: rate limits with a digest, and circuit breakers for dead sinks.

When something slows down, it slows every request. :class:`RateLimit` lets one
alert per key (a route) through per window and at most ``per_hour`` in all,
counts what it held back, and hands that count to the next alert that goes
out ("and 37 more since 10:02"). Its state lives in a Django cache: with a
shared cache (Redis, Memcached) the limits hold across every worker and host,
with the default local-memory cache per process. Never in the database, which
may be what is slow. If the cache itself fails, the limit falls back to a
local one rather than letting a flood through.

:class:`CircuitBreaker` stops a reporter from hammering a sink that keeps
failing: after ``failures`` failures in a row it stays open for ``base``
seconds, doubling up to ``cap`` while the sink stays dead.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.cache import BaseCache, caches
from django.core.cache.backends.locmem import LocMemCache

from slowwatch.core.errors import InternalLog
from slowwatch.core.errors import errors as process_errors

__all__ = ["CircuitBreaker", "Decision", "RateLimit"]

#: A shared cache slower than this (seconds) for one check is left alone for a
#: while: far above what a loaded worker waits for a healthy one.
SLOW_CACHE = 2.0
#: How long a count of held-back alerts is kept waiting for the next alert.
DIGEST_TTL = 24 * 3600


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: Alerts held back for this key since ``since`` (sent ones only).
    suppressed: int = 0
    since: float | None = None


def _local(name: str) -> LocMemCache:
    return LocMemCache(f"slowwatch-{name}", {"OPTIONS": {"MAX_ENTRIES": 10_000}})


class RateLimit:
    """At most one alert per key per ``window`` seconds and ``per_hour`` in all.

    :param cache_alias: a ``CACHES`` alias; None for a cache of this process.
    """

    def __init__(
        self,
        name: str,
        *,
        window: float,
        per_hour: int,
        cache_alias: str | None = None,
        clock: Callable[[], float] = time.time,
        errors: InternalLog | None = None,
    ) -> None:
        self.name = name
        self.window = window
        self.per_hour = per_hour
        self.cache_alias = cache_alias
        self._clock = clock
        self._errors = errors or process_errors
        self._fallback = _local(name)
        #: Guards the shared cache: after a failure (or an answer slower than
        #: SLOW_CACHE) the limits are kept in this process for a while.
        self.breaker = CircuitBreaker(failures=1, base=30.0, cap=600.0)

    def _cache(self) -> BaseCache:
        return caches[self.cache_alias] if self.cache_alias else self._fallback

    def check(self, key: str) -> Decision:
        """May an alert for ``key`` go out now? Held-back alerts are counted."""
        if self.cache_alias and self.breaker.allow():
            started = time.monotonic()
            try:
                decision = self._check(self._cache(), key)
            except Exception as exc:  # a cache that is down must not open the floodgates
                self.breaker.failure()
                self._errors.error(f"rate limit {self.name}: cache {self.cache_alias!r}", exc)
            else:
                if time.monotonic() - started > SLOW_CACHE:
                    self.breaker.failure()
                    self._errors.note(
                        f"rate limit {self.name}: cache {self.cache_alias!r} is slow",
                        "slowwatch: cache %r took %.1f s; alert limits stay in this "
                        "process for a while",
                        self.cache_alias,
                        time.monotonic() - started,
                    )
                else:
                    self.breaker.success()
                return decision
        return self._check(self._fallback, key)

    def _check(self, cache: BaseCache, key: str) -> Decision:
        now = self._clock()
        base = f"slowwatch:{self.name}:{hashlib.sha1(key.encode(errors='replace')).hexdigest()}"
        if not cache.add(f"{base}:sent", now, timeout=max(1, round(self.window))):
            self._hold(cache, base, now)
            return Decision(False)
        hour = f"slowwatch:{self.name}:hour:{int(now // 3600)}"
        cache.add(hour, 0, timeout=3700)
        if _incr(cache, hour, 3700) > self.per_hour:
            self._hold(cache, base, now)
            return Decision(False)
        held = cache.get_many([f"{base}:held", f"{base}:since"])
        if held:
            cache.delete_many([f"{base}:held", f"{base}:since"])
        count = held.get(f"{base}:held") or 0
        return Decision(True, int(count), held.get(f"{base}:since") if count else None)

    def _hold(self, cache: BaseCache, base: str, now: float) -> None:
        cache.add(f"{base}:since", now, timeout=DIGEST_TTL)
        _incr(cache, f"{base}:held", DIGEST_TTL)


def _incr(cache: BaseCache, key: str, timeout: int) -> int:
    """``cache.incr`` that also creates the key (atomic where the cache is)."""
    if cache.add(key, 1, timeout=timeout):
        return 1
    try:
        return int(cache.incr(key))
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=timeout)
        return 1


class CircuitBreaker:
    """Opens after ``failures`` failures in a row, for ``base`` s, doubling up to ``cap``."""

    def __init__(
        self,
        failures: int = 3,
        base: float = 60.0,
        cap: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.base = base
        self.cap = cap
        self._clock = clock
        self._streak = 0
        self._open_until = 0.0
        self._pause = base
        #: Calls skipped while open.
        self.skipped = 0

    @property
    def open(self) -> bool:
        return self._clock() < self._open_until

    def allow(self) -> bool:
        """False while open (the call is skipped and counted)."""
        if self.open:
            self.skipped += 1
            return False
        return True

    def success(self) -> None:
        self._streak = 0
        self._pause = self.base

    def failure(self) -> None:
        self._streak += 1
        if self._streak >= self.failures:
            self._open_until = self._clock() + self._pause
            self._pause = min(self._pause * 2, self.cap)
            # One more failure after the pause re-opens it at once (half-open).
            self._streak = self.failures - 1

    def state(self) -> dict[str, Any]:
        return {"open": self.open, "skipped": self.skipped}
