"""slowwatch's own troubles: caught, counted, and logged at most once a minute.

Nothing slowwatch does may raise into the host application, and a broken
reporter must not flood the logs either. Every internal failure goes through
one :class:`InternalLog` per process, :data:`errors`: the watchdog, the
dispatcher, every reporter and the alert limits report there, so its
``counts`` (which Prometheus and the admin's settings page show) see every
failure. It logs to ``slowwatch.internal`` at most once per ``interval`` for
each (place, error type), with the number suppressed since. That logger never
feeds a reporter: reports and internal errors stay apart.

Recording a failure is bookkeeping only: a count, and (when it is due) a
message put aside. The logging call itself happens on a thread of the log's
own, ``slowwatch-log``, because a failure may be recorded on a request's
thread or under the watchdog's lock, and a logging handler may be slow, hang
or raise. A handler that hangs holds up only that thread; what it cannot take
is dropped and counted (:attr:`InternalLog.lost`).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from slowwatch.core.forks import reset_in_child

logger = logging.getLogger("slowwatch.internal")

#: Messages waiting for the log thread at most; past it they are dropped and counted.
MAX_PENDING = 100

_Message = tuple[int, str, tuple[object, ...]]


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
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: Counter[tuple[str, str]] = Counter()
        #: Every failure, counted by place, whether it was logged or not.
        self.counts: Counter[str] = Counter()
        #: Messages that could not be logged: the log thread was behind, or a
        #: handler raised.
        self.lost = 0
        self._pending: deque[_Message] = deque()
        self._after_fork()
        reset_in_child(self._after_fork)

    def _after_fork(self) -> None:
        # Fresh in a child: the parent's lock may be held there, its thread is gone.
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._pending.clear()

    @contextmanager
    def guard(self, where: str) -> Iterator[None]:
        """Run a block; any ``Exception`` in it is recorded, never raised."""
        try:
            yield
        except Exception as exc:
            self.error(where, exc)

    def error(self, where: str, exc: BaseException) -> None:
        """Count a failure at ``where``; log it (later, on the log thread) if due."""
        key = (where, type(exc).__qualname__)
        self.counts[where] += 1
        if not self._due(key):
            self._suppressed[key] += 1
            return
        suppressed = self._suppressed.pop(key, 0)
        # The frames are summarised now, without reading a source file, so that
        # the message holds none of them (nor their locals).
        trace = traceback.TracebackException.from_exception(exc, lookup_lines=False)
        self._put(
            logging.ERROR,
            "slowwatch: error in %s (%d more like it were not logged)\n%s",
            (where, suppressed, _Trace(trace)),
        )

    def warning(self, key: str, message: str, *args: object) -> None:
        """A rate-limited warning that is not an exception (drops, for instance)."""
        if self._due((key, "")):
            self._put(logging.WARNING, message, args)

    def note(self, where: str, message: str, *args: object) -> None:
        """Count a trouble at ``where`` that raised nothing, and warn if due."""
        self.counts[where] += 1
        self.warning(where, message, *args)

    def _due(self, key: tuple[str, str]) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                return False
            self._last[key] = now
            return True

    def _put(self, level: int, message: str, args: tuple[object, ...]) -> None:
        if len(self._pending) >= MAX_PENDING:
            self.lost += 1
            return
        self._pending.append((level, message, args))
        self._wake.set()
        if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: the parent's thread is not here.
                self._pid, self._thread = os.getpid(), None
            if self._thread is not None and self._thread.is_alive():
                return
            thread = threading.Thread(target=self._run, name="slowwatch-log", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down: the messages stay put
                return
            self._thread = thread

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        while self._pending:
            self._busy = True
            try:
                level, message, args = self._pending.popleft()
            except IndexError:  # another thread took the last one
                self._busy = False
                return
            try:
                self._log.log(level, message, *args)
            except Exception:
                # A handler or filter that raises: logging lets it through.
                self.lost += 1
            finally:
                self._busy = False

    def flush(self, timeout: float) -> bool:
        """Wait until every message put aside was handed to logging; False on timeout.

        Without a log thread (none could be started: the interpreter is
        exiting) the caller logs them itself.
        """
        thread = self._thread
        if thread is None or not thread.is_alive() or self._pid != os.getpid():
            self._drain()
            return True
        deadline = time.monotonic() + timeout
        while self._pending or self._busy:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True


class _Trace:
    """A traceback summary that becomes text only when a handler formats it."""

    def __init__(self, trace: traceback.TracebackException) -> None:
        self._trace = trace

    def __str__(self) -> str:
        return "".join(self._trace.format()).rstrip("\n")


#: The process's internal error log. Components take it as their default; tests
#: may hand one a log of its own.
errors = InternalLog()
# Registered first, so run last: after the queues' own exit handlers said what
# they dropped. Bounded: a hung handler must not hold the exit.
atexit.register(errors.flush, 0.5)
