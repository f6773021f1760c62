"""uWSGI: what slowwatch needs to say at start-up, and a graceful harakiri.

uWSGI's ``harakiri`` ends a worker with SIGKILL, which nothing can catch: the
request's ``slow`` report went out at its threshold, and the worker uWSGI
starts in its place closes the row ``lost``. With
``harakiri-graceful-timeout``, uWSGI first sends the worker
``harakiri-graceful-signal`` and waits that many seconds before the SIGKILL.
When that signal is one uWSGI leaves free (34, ``SIGRTMIN``, say), slowwatch
takes it in each worker: the requests in flight are reported ``killed`` (their
stacks at that moment, their profiles since the threshold), delivered within
the window, and the worker then ends itself, as the signal's default action
would. A worker that survived its graceful signal would keep uWSGI's mark on
it, and its next harakiri would come without one.

The signal is read by a thread of slowwatch's from Python's wake-up file
descriptor rather than by a Python signal handler: those run only on the
worker's main thread, which uWSGI keeps in its C loop between requests.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from typing import Any

__all__ = ["graceful_harakiri", "setup", "warn_if_threads_are_off"]

logger = logging.getLogger("slowwatch.internal")

#: Signals a uWSGI worker handles itself: slowwatch never takes them over.
UWSGI_OWN = frozenset(
    {
        signal.SIGHUP,  # graceful reload
        signal.SIGINT,
        signal.SIGTERM,  # the default graceful signal: the worker ends at once
        signal.SIGUSR1,  # its stats dump
        signal.SIGUSR2,
        signal.SIGPIPE,
        signal.SIGSYS,
        signal.SIGQUIT,
        signal.SIGKILL,
    }
)

#: Seconds of the graceful window kept after delivery, before uWSGI's SIGKILL.
MARGIN = 0.5


def _uwsgi() -> Any:
    return sys.modules.get("uwsgi")


def warn_if_threads_are_off() -> None:
    """Say once, at start-up, that slowwatch cannot see anything under a uWSGI
    whose Python threads are off (before 2.0.31, without ``--enable-threads``):
    its monitor thread would never run."""
    uwsgi = _uwsgi()
    if uwsgi is not None and not getattr(uwsgi, "has_threads", True):
        logger.warning(
            "slowwatch: uWSGI runs with Python threads disabled, so slowwatch's monitor "
            "thread never runs and no slow request is reported: start uWSGI with "
            "--enable-threads (threads are on by default from uWSGI 2.0.31)."
        )


def _option(name: str) -> str | None:
    value = getattr(_uwsgi(), "opt", {}).get(name)
    if isinstance(value, list):  # given more than once: the last one holds
        value = value[-1] if value else None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return None if value is None or isinstance(value, bool) else str(value)


def graceful_harakiri() -> tuple[int, float] | None:
    """``(signal, seconds)`` of uWSGI's graceful harakiri, when it has one."""
    if _uwsgi() is None:
        return None
    try:
        timeout = float(_option("harakiri-graceful-timeout") or 0)
        signum = int(_option("harakiri-graceful-signal") or signal.SIGTERM)
    except ValueError:
        return None
    return (signum, timeout) if timeout > 0 else None


def setup() -> None:
    """At start-up: warnings, and the graceful harakiri's signal taken in each worker."""
    warn_if_threads_are_off()
    graceful = graceful_harakiri()
    if graceful is None:
        return
    signum, timeout = graceful
    if signum in UWSGI_OWN:
        logger.warning(
            "slowwatch: harakiri-graceful-signal = %d is a signal uWSGI handles itself, so "
            "a request that harakiri kills is reported slow but never killed: set "
            "harakiri-graceful-signal to a free one, such as 34.",
            signum,
        )
        return
    uwsgi = _uwsgi()
    if uwsgi.worker_id() > 0:
        _take(signum, timeout)  # lazy-apps: the application loads in each worker
        return
    # Loaded in the master, before the fork: take it in each worker after it.
    try:
        # uWSGI's own module, next to its Python plugin.
        decorators = importlib.import_module("uwsgidecorators")
        decorators.postfork(lambda: _take(signum, timeout))
    except Exception:  # whatever stands in the way, say it
        logger.warning(
            "slowwatch: cannot run in uWSGI's workers after the fork (uwsgidecorators), so "
            "a request that harakiri kills is reported slow but never killed: start uWSGI "
            "with lazy-apps for that.",
            exc_info=True,
        )


def _take(signum: int, timeout: float) -> None:
    """In a worker's main thread: read ``signum`` from a pipe of our own."""
    from slowwatch import runtime
    from slowwatch.core import native

    with runtime.errors.guard("taking uWSGI's graceful harakiri signal"):
        if threading.current_thread() is not threading.main_thread():
            return
        read, write = os.pipe()
        os.set_blocking(write, False)
        previous = signal.set_wakeup_fd(write)
        if previous != -1:
            # Somebody else reads it (an event loop): not ours to take.
            signal.set_wakeup_fd(previous)
            os.close(read)
            os.close(write)
            logger.warning(
                "slowwatch: the worker's signal wake-up descriptor is taken, so a request "
                "that harakiri kills is reported slow but never killed."
            )
            return
        # The Python-level handler only makes the signal reach the pipe; it may
        # run much later, on the main thread, and does nothing.
        signal.signal(signum, _on_main_thread)
        native.start(lambda: _watch(read, signum, timeout), "slowwatch-harakiri")


def _on_main_thread(signum: int, frame: object) -> None:
    """The reading thread does the work (see the module's docstring)."""


def _watch(read: int, signum: int, timeout: float) -> None:
    while True:
        try:
            data = os.read(read, 64)
        except InterruptedError:
            continue
        except OSError:
            return
        if not data:
            return
        if signum in data:
            _condemned(timeout)


def _condemned(timeout: float) -> None:
    """uWSGI's graceful harakiri: report what is in flight, then end the worker."""
    from slowwatch.gunicorn import report_in_flight

    try:
        report_in_flight(grace=max(timeout - MARGIN, 0.2))
    finally:
        # The kill uWSGI sends a moment later; now, the ``killed`` reports are true.
        os.kill(os.getpid(), signal.SIGKILL)
