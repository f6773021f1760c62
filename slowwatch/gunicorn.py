"""gunicorn server hooks: a request still running when its worker dies is reported.

In your gunicorn configuration file (``gunicorn.conf.py``)::

    from slowwatch.gunicorn import post_worker_init, worker_abort, worker_exit  # noqa: F401

and, with the ``PrometheusReporter`` in prometheus-client's multiprocess mode,
``child_exit`` as well.

``worker_abort`` runs when gunicorn's arbiter aborts a worker that timed out
(SIGABRT); the arbiter follows with SIGKILL about a second later, so each
request in flight is snapshotted at once as ``killed`` and delivery gets at
most :data:`GRACE` seconds. ``worker_exit`` does the same for a worker that
exits with requests still running (a graceful shutdown that ran out of time).

``post_worker_init`` lets the worker's quit handler run once. Ctrl-C in a
terminal sends SIGINT to the master and to every worker, and the master then
sends each worker SIGQUIT: both run gunicorn's ``handle_quit``. If the second
lands while the first is inside the thread pool's ``shutdown()`` (gthread), it
waits for a lock its own thread holds, and the worker hangs until the master
kills it after ``--graceful-timeout``. Once quitting, the worker ignores
further quit signals; it exits as the first one asked.

gunicorn reads its configuration file in the master, before a gevent or
eventlet worker monkey-patches: importing this module loads nothing but the
standard library, so that no lock or thread-local (Django's database
connections are one) is made before the patching and then shared by every
greenlet. slowwatch itself is imported by the hooks, in the worker.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any

__all__ = [
    "child_exit",
    "post_worker_init",
    "report_in_flight",
    "report_on_abort",
    "worker_abort",
    "worker_exit",
]

#: Seconds the hooks wait for the reports to be delivered.
GRACE = 0.5


def interrupted_frame(signum: int = signal.SIGABRT) -> FrameType | None:
    """The frame the handler of ``signum`` interrupted, if we are inside that handler."""
    handler = signal.getsignal(signum)
    code = getattr(getattr(handler, "__func__", handler), "__code__", None)
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            return frame.f_back
        frame = frame.f_back
    return None


def report_in_flight(grace: float = GRACE, interrupted: FrameType | None = None) -> int:
    """Report every request in flight as ``killed``; deliver within ``grace`` s.

    Also usable from other servers' hooks (:mod:`slowwatch.uwsgi` uses it).
    Returns how many requests were reported.
    """
    from slowwatch import runtime

    watchdog = runtime.running_watchdog()
    if watchdog is None:
        return 0
    count = 0
    with runtime.errors.guard("reporting requests in flight"):
        count = watchdog.snapshot_in_flight("killed", interrupted)
        runtime.shutdown(grace)
    return count


def post_worker_init(worker: Any) -> None:
    """Run gunicorn's quit handler once, however many quit signals arrive; and
    under an event-loop worker, report a request in flight when the worker is
    aborted (see :func:`report_on_abort`)."""
    from slowwatch import runtime

    with runtime.errors.guard("reporting requests in flight on SIGABRT"):
        report_on_abort(worker)
    with runtime.errors.guard("guarding the worker's quit handler"):
        handler = getattr(worker, "handle_quit", None)
        if handler is None:
            return
        quitting = False

        def quit_once(signum: int, frame: FrameType | None) -> None:
            nonlocal quitting
            if quitting:
                return
            quitting = True
            handler(signum, frame)

        for signum in (signal.SIGQUIT, signal.SIGINT):
            # Only gunicorn's own handler: never one installed by something else.
            if signal.getsignal(signum) == handler:
                signal.signal(signum, quit_once)


def report_on_abort(worker: Any) -> None:
    """Make gunicorn's SIGABRT report the requests in flight under any worker class.

    gunicorn's sync, gthread and gevent workers handle SIGABRT in Python and
    call the ``worker_abort`` hook. The event-loop workers do not, when it
    matters: uvicorn's worker leaves SIGABRT to its default action (the
    process ends at once), and gunicorn's asgi worker handles it as a callback
    of its event loop, which never runs when a request blocks the loop: the
    very case gunicorn's timeout catches. There, a handler of our own reports
    first, then hands the signal on as before (the default action again, or
    the loop's callback, which the loop's wake-up file descriptor still gets).
    """
    previous = signal.getsignal(signal.SIGABRT)
    ours = getattr(worker, "handle_abort", None)
    if ours is not None and previous == ours:
        return  # gunicorn's own handler: it calls worker_abort
    if previous is None or previous == signal.SIG_IGN:
        return  # not set from Python, or ignored: not ours to change
    if callable(previous) and getattr(previous, "__name__", "") != "_sighandler_noop":
        return  # somebody else's handler (asyncio's and uvloop's are no-ops)

    def on_abort(signum: int, frame: FrameType | None) -> None:
        report_in_flight(interrupted=frame)
        if callable(previous):
            previous(signum, frame)
        else:
            # The default action, as if we had never been here.
            signal.signal(signal.SIGABRT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGABRT)

    signal.signal(signal.SIGABRT, on_abort)


def worker_abort(worker: Any) -> None:
    # We run inside gunicorn's SIGABRT handler, on top of the request it interrupted.
    report_in_flight(interrupted=interrupted_frame(signal.SIGABRT))


def worker_exit(server: Any, worker: Any) -> None:
    report_in_flight()


def child_exit(server: Any, worker: Any) -> None:
    """With prometheus-client's multiprocess mode: forget a dead worker's live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from slowwatch import runtime

        with runtime.errors.guard("marking a worker dead for Prometheus"):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
