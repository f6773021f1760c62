"""The process-wide wiring between Django and the core.

One :class:`~slowwatch.core.watchdog.Watchdog` and one
:class:`~slowwatch.core.dispatch.Dispatcher` per process, created on first
use (no thread starts until the first watched request), configured here from
:mod:`slowwatch.conf` and again whenever ``SLOWWATCH`` changes: settings flow
conf → runtime → core. The reporters are made here from their dotted paths,
each behind a queue and a thread of its own (a *sink*), and :func:`deliver`
hands each record, built into a report, to every sink: a reporter that is
slow, hangs or raises holds up only its own queue. Everything else reads this
state through the public functions below.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from slowwatch import control, executors
from slowwatch.conf import settings
from slowwatch.core.dispatch import Dispatcher
from slowwatch.core.errors import errors
from slowwatch.core.records import Finished, Lost, Record, Snapshot
from slowwatch.core.sqlstats import SqlStats
from slowwatch.core.watch import Claim
from slowwatch.core.watchdog import Watchdog
from slowwatch.report import Report, build_report
from slowwatch.requestinfo import exception_name, read_request, tag

if TYPE_CHECKING:
    from django.http import HttpResponseBase

    from slowwatch.reporters import Reporter

__all__ = [
    "counters",
    "deliver",
    "dispatcher",
    "errors",
    "finished",
    "flush",
    "loaded_reporters",
    "lost",
    "missed",
    "reporters",
    "request_hooks",
    "running_dispatcher",
    "running_watchdog",
    "shutdown",
    "sinks",
    "watchdog",
]

#: Seconds queued reports get at interpreter exit, all queues together.
EXIT_TIMEOUT = 2.0

_lock = threading.Lock()
_watchdog: Watchdog | None = None
_dispatcher: Dispatcher[Record] | None = None
_reporters: list[Reporter] | None = None
_sinks: list[tuple[Reporter, Dispatcher[Report]]] | None = None
#: Monotonic time by which a shutdown under way must be over: a second one (the
#: interpreter's exit after a server's exit hook) gets no more time than that.
_exit_deadline: float | None = None


def lost(record: Record) -> Lost | None:
    """The notice that replaces a dropped report."""
    if isinstance(record, Lost):
        return None
    dropped = record.kind if isinstance(record, Snapshot) else "finished"
    return Lost(record.report_id, record.request, record.pid, dropped, "queue_full")


def dispatcher() -> Dispatcher[Record]:
    """This process's report queue, made on first use."""
    global _dispatcher
    if _dispatcher is None:
        with _lock:
            if _dispatcher is None:
                _dispatcher = Dispatcher(
                    deliver,
                    label="delivering a report",
                    maxsize=settings.queue_size,
                    errors=errors,
                    exit_timeout=None,
                    on_drop=lost,
                )
                atexit.register(_at_exit)
    return _dispatcher


def watchdog() -> Watchdog:
    """This process's watchdog, made and configured on first use."""
    global _watchdog
    if _watchdog is None:
        queue = dispatcher()
        with _lock:
            if _watchdog is None:
                made = Watchdog(
                    on_slow=queue.submit, read_subject=read_request, on_claim=tag, errors=errors
                )
                configure(made)
                if settings.runtime_control and apps.is_installed("slowwatch"):
                    made.housekeeping = control.ensure_running
                _watchdog = made
    return _watchdog


def running_watchdog() -> Watchdog | None:
    """The watchdog if this process made one; never makes it."""
    return _watchdog


def running_dispatcher() -> Dispatcher[Record] | None:
    """The report queue if this process made one; never makes it."""
    return _dispatcher


def thresholds() -> list[float]:
    """Every threshold in force: the global one (or the admin's override) and the rules'."""
    override = control.current().threshold
    return [override or settings.threshold, *settings.rules.thresholds()]


def gil_enabled() -> bool:
    """False on a free-threaded CPython running without its GIL (3.13t and later)."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else bool(is_enabled())


def configure(target: Watchdog) -> None:
    """Apply the settings to ``target``."""
    # The middleware module holds the boundary's code objects, and imports us.
    from slowwatch.middleware import BOUNDARY

    target.configure(
        sample_interval=settings.sample_interval,
        max_samples=settings.max_samples,
        escalations=settings.escalations,
        # Free-threaded CPython: another thread's locals may change under the
        # monitor's feet with no GIL to keep them still; never read them there.
        capture_locals=settings.capture_locals and gil_enabled(),
        boundary=BOUNDARY if settings.hide_server_frames else (),
        thresholds=thresholds(),
        starts=BOUNDARY,
    )
    target.sync_thread = executors.thread_of


def _on_control(state: control.ControlState) -> None:
    # A new threshold override re-times the monitor, down or back up.
    if _watchdog is not None:
        configure(_watchdog)


control.listen(_on_control)


def reporters() -> Sequence[Reporter]:
    """The configured reporters, made on first use; one that fails to build is skipped."""
    global _reporters
    found = _reporters
    if found is None:
        found = []
        for path in settings.reporters:
            with errors.guard(f"creating reporter {path}"):
                found.append(import_string(path)())
        _reporters = found
    return found


def loaded_reporters() -> Sequence[Reporter]:
    """The reporters if they were made already; never makes them."""
    return _reporters or ()


def sinks() -> Sequence[tuple[Reporter, Dispatcher[Report]]]:
    """Each reporter with its own queue and thread, made on first use."""
    global _sinks
    found = _sinks
    if found is None:
        made = []
        for reporter in reporters():
            name = type(reporter).__name__
            queue: Dispatcher[Report] = Dispatcher(
                reporter.handle,
                name=f"slowwatch-sink-{name}",
                label=f"reporter {name}",
                maxsize=settings.queue_size,
                errors=errors,
                exit_timeout=None,
                # A reporter written without the base class may lack these.
                on_idle=getattr(reporter, "idle", None),
                on_exit=getattr(reporter, "close", None),
                idle_every=getattr(reporter, "idle_every", None),
            )
            made.append((reporter, queue))
        found = _sinks = made
    return found


def request_hooks() -> tuple[Callable[[Any], object], ...]:
    """What the configured reporters want run on each request's own thread.

    A reporter class asks for it with a static ``on_request(request)`` (the
    Sentry reporter hands the request's scope over this way). Classes are
    imported, not instantiated: nothing is built before the first report.
    """
    hooks = []
    for path in settings.reporters:
        with errors.guard(f"importing reporter {path}"):
            hook = getattr(import_string(path), "on_request", None)
            if callable(hook):
                hooks.append(hook)
    return tuple(hooks)


def counters() -> dict[str, int]:
    """Every counter of this process, for Prometheus and the settings page.

    ``queue <what>`` (submitted, delivered, dropped:<reason>), ``<Reporter>
    <what>`` for each reporter that counts, and ``internal error: <where>``.
    """
    found: dict[str, int] = {}
    queue = _dispatcher
    if queue is not None:
        found.update({f"queue {k}": v for k, v in sorted(queue.counts.items())})
    for reporter, sink in _sinks or ():
        name = type(reporter).__name__
        found.update({f"{name} queue {k}": v for k, v in sorted(sink.counts.items())})
        for key, value in sorted(getattr(reporter, "counts", {}).items()):
            found[f"{name} {key}"] = value
    found.update({f"internal error: {k}": v for k, v in sorted(errors.counts.items())})
    if errors.lost:
        found["internal log lost"] = errors.lost
    return found


def finished(
    claim: Claim,
    response: HttpResponseBase | None,
    exc: BaseException | None,
    stats: SqlStats | None = None,
    request: Any = None,
) -> None:
    """Send the ``finished`` transition of a reported request (request thread)."""
    with errors.guard("reporting a finished request"):
        duration = time.monotonic() - claim.started
        name = type(exc).__qualname__ if exc is not None else ""
        info = claim.info
        if request is not None:
            if not name:
                name = exception_name(request)
            if not info.view:
                # Reported before its URL was resolved (a slow middleware, a
                # first request importing the URLconf): it is resolved by now.
                info = read_request(request) or info
        dispatcher().submit(
            Finished(
                report_id=claim.report_id,
                request=info,
                pid=os.getpid(),
                thread_id=threading.get_ident(),
                started_at=time.time() - duration,
                threshold=claim.threshold,
                duration=duration,
                status_code=getattr(response, "status_code", None),
                exception=name,
                profile=claim.final,
                # Summarised on the reporter thread, not here on the request's.
                sql_stats=stats,
                inflight=claim.inflight,
            )
        )


def missed(started: float, threshold: float, request: Any) -> None:
    """Say that a request ran past its threshold and ended before the monitor
    took its stack (on the request's thread, as it ends).

    The monitor was held up: a process starved of CPU, or a thread that held
    the GIL. Counted as ``dropped:monitor_late``, and a ``lost`` notice says
    which request it was and how long it ran.
    """
    with errors.guard("reporting a request the monitor missed"):
        duration = time.monotonic() - started
        info = read_request(request)
        if info is None:
            return
        queue = dispatcher()
        queue.count_drop("monitor_late")
        queue.submit(
            Lost(
                uuid.uuid4().hex,
                info,
                os.getpid(),
                "slow",
                "monitor_late",
                started_at=time.time() - duration,
                threshold=threshold,
                duration=duration,
            )
        )


def deliver(record: Record) -> None:
    """Build the report (on the reporter thread) and hand it to every sink."""
    report = build_report(record)
    for _, sink in sinks():
        sink.submit(report)


def flush(timeout: float) -> bool:
    """Wait until every record queued so far reached every reporter; False on timeout."""
    deadline = time.monotonic() + timeout
    queue = _dispatcher
    done = queue is None or queue.flush(timeout)
    for _, sink in _sinks or ():
        done = sink.flush(max(0.0, deadline - time.monotonic())) and done
    return done


def shutdown(timeout: float) -> None:
    """Deliver what is queued within ``timeout`` seconds in all, drop the rest.

    The sinks drain side by side, each on its own thread: one that hangs
    costs the others nothing, and the whole stop takes ``timeout`` at most.
    """
    global _exit_deadline
    deadline = time.monotonic() + timeout
    if _exit_deadline is not None:
        deadline = min(deadline, _exit_deadline)
    _exit_deadline = deadline
    queue = _dispatcher
    if queue is not None:
        # The records still queued become reports, handed to every sink.
        queue.stop(max(0.0, deadline - time.monotonic()))
    sinks = list(_sinks or ())
    for _, sink in sinks:
        sink.close()  # a report that arrives now is dropped, counted
    for _, sink in sinks:
        sink.flush(max(0.0, deadline - time.monotonic()))
    for _, sink in sinks:
        sink.stop(0.0)


def _at_exit() -> None:
    with contextlib.suppress(Exception):
        shutdown(EXIT_TIMEOUT)


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs: object) -> None:
    global _reporters, _sinks
    if setting != "SLOWWATCH":
        return
    old, _reporters, _sinks = _sinks, None, None
    for _, sink in old or ():
        sink.stop(0.5)
    if _watchdog is not None:
        # An invalid setting is refused by the middleware when it is built.
        with contextlib.suppress(ImproperlyConfigured):
            configure(_watchdog)
