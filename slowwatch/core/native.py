"""Real OS threads and locks, whatever gevent patched.

Under gevent's monkey-patching (gunicorn ``-k gevent``), ``threading.Thread``
starts a greenlet and ``threading.Lock`` is a greenlet lock. The monitor must
run while a greenlet that never yields holds the worker's only OS thread, and
the reporter must deliver while it does: both are real OS threads, built here
from the originals gevent keeps (as gevent's own monitor thread and
sentry-sdk's profiler do), with a lock and a condition that work between a
greenlet and a real thread. Without gevent these are the standard library's.

Nothing here is chosen at import time: slowwatch may be imported before or
after gevent patches, and what counts is the moment a thread or lock is made.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = [
    "Condition",
    "Event",
    "NativeThread",
    "allocate_lock",
    "gevent_patched",
    "greenlet_functions",
    "is_current",
    "real_ident",
    "sleep",
    "start",
]


def gevent_patched() -> bool:
    """Whether gevent has monkey-patched ``threading`` in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def _original(module: str, name: str) -> Any:
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched(module):
        return monkey.get_original(module, name)
    return getattr(sys.modules.get(module) or __import__(module), name)


def allocate_lock() -> Any:
    """A real lock (never a greenlet's): held only for bookkeeping, so a
    greenlet that meets it held waits microseconds, not a switch."""
    return _original("_thread", "allocate_lock")()


def real_ident() -> int:
    """The OS thread's ident (gevent's ``get_ident`` gives the greenlet's)."""
    return int(_original("_thread", "get_ident")())


def sleep(seconds: float) -> None:
    """Sleep this OS thread (gevent's ``sleep`` would switch greenlets)."""
    _original("time", "sleep")(seconds)


def greenlet_functions() -> tuple[Callable[[], int], Callable[[], Any]] | None:
    """Under gevent, the functions that give the OS thread's ident and the
    running greenlet; None without gevent.

    For a caller that asks on every request: looked up once, since finding
    gevent's saved originals costs a few dictionary searches each time.
    """
    if not gevent_patched():
        return None
    greenlet = sys.modules.get("greenlet")
    if greenlet is None:
        return None
    get_ident: Callable[[], int] = _original("_thread", "get_ident")
    return get_ident, greenlet.getcurrent


class Condition:
    """A condition variable on a real lock, with real waiter locks.

    The standard library's ``Condition`` allocates its waiter locks from the
    ``threading`` module at each wait: under gevent those are greenlet locks,
    which a real thread cannot wait on. This one is the same algorithm on
    locks that are always real.
    """

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._waiters: deque[Any] = deque()

    def __enter__(self) -> bool:
        return bool(self._lock.acquire())

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait for a notify (or ``timeout``), take it again."""
        waiter = allocate_lock()
        waiter.acquire()
        self._waiters.append(waiter)
        self._lock.release()
        try:
            if timeout is None:
                got = bool(waiter.acquire())
            else:
                got = bool(waiter.acquire(True, max(0.0, timeout)))
        finally:
            self._lock.acquire()
            if not got:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        return got

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.wait(left)
            else:
                self.wait()
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        while self._waiters and n > 0:
            self._waiters.popleft().release()
            n -= 1

    def notify_all(self) -> None:
        self.notify(len(self._waiters))


class Event:
    """``threading.Event`` on :class:`Condition`."""

    def __init__(self) -> None:
        self._cond = Condition()
        self._flag = False

    def set(self) -> None:
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._flag, timeout)


class NativeThread:
    """A daemon OS thread started with the original ``start_new_thread``.

    It offers the part of ``threading.Thread`` slowwatch uses: ``name``,
    ``ident``, :meth:`is_alive` and :meth:`join`. It is not in
    ``threading.enumerate()``.
    """

    def __init__(self, target: Callable[[], object], name: str) -> None:
        self.name = name
        self.ident: int | None = None
        self._target = target
        self._done = Event()
        self._started = False

    def start(self) -> None:
        self._started = True
        try:
            _original("_thread", "start_new_thread")(self._bootstrap, ())
        except BaseException:
            self._done.set()
            raise

    def _bootstrap(self) -> None:
        self.ident = real_ident()
        try:
            self._target()
        finally:
            self._done.set()

    def is_alive(self) -> bool:
        return self._started and not self._done.is_set()

    def join(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)


def start(target: Callable[[], object], name: str) -> threading.Thread | NativeThread:
    """Start a daemon thread running ``target``: a real OS thread even under gevent.

    Raises RuntimeError as ``Thread.start`` does (the interpreter is shutting down).
    """
    thread: threading.Thread | NativeThread
    if gevent_patched():
        thread = NativeThread(target, name)
    else:
        thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def is_current(thread: object) -> bool:
    """Whether ``thread`` (from :func:`start`) is the calling OS thread."""
    if isinstance(thread, NativeThread):
        return thread.ident == real_ident()
    return thread is threading.current_thread()
