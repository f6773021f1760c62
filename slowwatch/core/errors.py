"""slowwatch's own troubles: caught, counted, and logged at most once a minute.

Nothing slowwatch does may raise into the host application, and a broken
reporter must not flood the logs either. Every internal failure goes through
one :class:`InternalLog` per process, :data:`errors`: the watchdog, the
dispatcher, every reporter and the alert limits report there, so its
``counts`` (which Prometheus and the admin's settings page show) see every
failure. It logs to ``slowwatch.internal`` at most once per ``interval`` for
each (place, error type), with the number suppressed since. That logger never
feeds a reporter: reports and internal errors stay apart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

logger = logging.getLogger("slowwatch.internal")


class InternalLog:
    def __init__(
        self,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger = logger,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._log = log
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: Counter[tuple[str, str]] = Counter()
        #: Every failure, counted by place, whether it was logged or not.
        self.counts: Counter[str] = Counter()

    @contextmanager
    def guard(self, where: str) -> Iterator[None]:
        """Run a block; any ``Exception`` in it is recorded, never raised."""
        try:
            yield
        except Exception as exc:
            self.error(where, exc)

    def error(self, where: str, exc: BaseException) -> None:
        key = (where, type(exc).__qualname__)
        self.counts[where] += 1
        if self._due(key):
            suppressed = self._suppressed.pop(key, 0)
            self._log.error(
                "slowwatch: error in %s (%d more like it were not logged)",
                where,
                suppressed,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        else:
            self._suppressed[key] += 1

    def warning(self, key: str, message: str, *args: object) -> None:
        """A rate-limited warning that is not an exception (drops, for instance)."""
        if self._due((key, "")):
            self._log.warning(message, *args)

    def _due(self, key: tuple[str, str]) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                return False
            self._last[key] = now
            return True


#: The process's internal error log. Components take it as their default; tests
#: may hand one a log of its own.
errors = InternalLog()
