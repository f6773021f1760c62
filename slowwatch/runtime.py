"""The process-wide wiring between Django and the core.

One :class:`~slowwatch.sampler.Watchdog` and one
:class:`~slowwatch.dispatch.Dispatcher` per process, created on first use
(no thread starts until the first watched request). The Django-specific
pieces live here: how to read a request on the monitor thread, and how to
turn a raw record into a report and hand it to every configured reporter.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.core.signals import setting_changed
from django.db import connections
from django.dispatch import receiver
from django.utils.module_loading import import_string

from slowwatch.conf import settings
from slowwatch.dispatch import Dispatcher
from slowwatch.internal import InternalLog
from slowwatch.report import Finished, Lost, RequestInfo, Snapshot, build_report
from slowwatch.sampler import Watchdog
from slowwatch.sqlstats import SqlStats
from slowwatch.watch import Claim

if TYPE_CHECKING:
    from django.http import HttpResponseBase

    from slowwatch.reporters import Reporter

errors = InternalLog()
_lock = threading.Lock()
_watchdog: Watchdog | None = None
_dispatcher: Dispatcher[Event] | None = None
_reporters: list[Reporter] | None = None


class Refresh:
    """Queued by the monitor every few seconds: re-read the runtime control row."""


REFRESH = Refresh()
Event = Snapshot | Finished | Lost | Refresh


@dataclass(frozen=True)
class ControlState:
    """What the admin's settings page set: applies to every worker's middleware."""

    paused: bool = False
    #: Replaces ``SLOWWATCH["THRESHOLD"]`` (per-URL rules still apply).
    threshold: float | None = None
    changed_at: float | None = None


control = ControlState()
#: Every SlowWatchMiddleware of this process, told when the control changes.
_middlewares: weakref.WeakSet[Any] = weakref.WeakSet()


def _plain(obj: object, name: str) -> Any:
    """An instance attribute read straight from ``__dict__``: no property, no
    ``__getattr__``, no lazy evaluation can run on the monitor thread."""
    try:
        return vars(obj).get(name)
    except TypeError:
        return None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _user_id(request: Any) -> str:
    """The pk of the request's user, only if the request thread already loaded it.

    ``request.user`` is lazy: touching it here would run authentication (and a
    query) on the monitor thread. What auth's middleware cached is plain data.
    """
    user = _plain(request, "_cached_user") or _plain(request, "_acached_user")
    meta = getattr(type(user), "_meta", None)
    pk = getattr(meta, "pk", None)
    attname = getattr(pk, "attname", None)
    if user is None or not isinstance(attname, str):
        return ""  # not loaded, or AnonymousUser
    value = _plain(user, attname)
    return str(value) if isinstance(value, (int, str, uuid.UUID)) else ""


def _trace(request: Any) -> tuple[tuple[str, str], ...]:
    """The trace of the Sentry scope the request thread left us, as plain strings."""
    scope = _plain(request, "_slowwatch_sentry_scope")
    if scope is None:
        return ()
    found = scope.get_trace_context()
    span = _plain(request, "_slowwatch_sentry_span")
    if span is not None:
        found = {**found, "trace_id": span.trace_id, "span_id": span.span_id}
    return tuple(
        (key, found[key]) for key in ("trace_id", "span_id") if isinstance(found.get(key), str)
    )


def describe(request: Any) -> RequestInfo | None:
    """What a report needs from the live request. Runs on the monitor thread."""
    meta = _plain(request, "META")
    meta = meta if isinstance(meta, dict) else {}
    match = _plain(request, "resolver_match")
    return RequestInfo(
        method=_text(_plain(request, "method")),
        path=_text(_plain(request, "path")),
        query=_text(meta.get("QUERY_STRING")),
        view=_text(_plain(match, "_func_path")) if match is not None else "",
        route=_text(_plain(match, "route")) if match is not None else "",
        host=_text(meta.get("HTTP_HOST") or meta.get("SERVER_NAME")),
        user_id=_user_id(request),
        trace=_trace(request),
    )


def lost(event: Event) -> Lost | None:
    """The notice that replaces a dropped report."""
    if isinstance(event, (Lost, Refresh)):
        return None
    dropped = event.kind if isinstance(event, Snapshot) else "finished"
    return Lost(event.report_id, event.request, event.pid, dropped, "queue_full")


def tag(request: Any, report_id: str) -> None:
    """``request.slowwatch_id``: set, from the monitor thread, once a request is reported.

    One store into the request's ``__dict__``, the only write slowwatch makes
    to a live request; fast requests never get (or pay for) an id.
    """
    with contextlib.suppress(TypeError):  # a request class with __slots__
        vars(request)["slowwatch_id"] = report_id


def dispatcher() -> Dispatcher[Event]:
    global _dispatcher
    if _dispatcher is None:
        with _lock:
            if _dispatcher is None:
                _dispatcher = Dispatcher(
                    deliver,
                    maxsize=settings.queue_size,
                    errors=errors,
                    on_drop=lost,
                    on_idle=idle,
                )
    return _dispatcher


def watchdog() -> Watchdog:
    global _watchdog
    if _watchdog is None:
        queue = dispatcher()
        with _lock:
            if _watchdog is None:
                # Sampling settings are applied by each middleware as it is built.
                _watchdog = Watchdog(
                    on_slow=queue.submit, describe=describe, on_claim=tag, errors=errors
                )
                if settings.runtime_control and apps.is_installed("slowwatch"):
                    _watchdog.housekeeping = schedule_refresh
    return _watchdog


def schedule_refresh() -> None:
    """Monitor thread: have the reporter thread re-read the control row."""
    queue = dispatcher()
    # Reports first: a busy queue can wait for the next round.
    if queue.pending() < queue.maxsize // 2:
        queue.submit(REFRESH)


def register(middleware: Any) -> None:
    """Keep ``middleware`` told of the runtime control, starting now."""
    _middlewares.add(middleware)
    middleware.apply_control(control)


def apply_control(state: ControlState) -> None:
    global control
    if state != control:
        control = state
        for middleware in list(_middlewares):
            middleware.apply_control(state)


def refresh_control() -> None:
    """Read the control row and apply it (reporter thread, or the admin's view)."""
    from slowwatch.models import Control

    alias = settings.database_alias
    try:
        row = Control._default_manager.using(alias).filter(pk=1).first()
    finally:
        if threading.current_thread().name == "slowwatch-reporter":
            connections[alias].close()
    if row is None:
        apply_control(ControlState())
    else:
        apply_control(ControlState(row.paused, row.threshold, row.changed_at.timestamp()))


#: Where :func:`note_exception` leaves the class of an exception a view raised.
EXCEPTION_ATTR = "_slowwatch_exception"


def note_exception(sender: object, request: Any = None, **kwargs: object) -> None:
    """``got_request_exception``: Django turns a view's exception into a 500
    response before our middleware sees it; this keeps its class for the report."""
    exc = sys.exc_info()[1]
    if request is not None and exc is not None:
        with contextlib.suppress(TypeError):
            # The first one: the view's, not one raised while handling it.
            vars(request).setdefault(EXCEPTION_ATTR, type(exc).__qualname__)


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
        if not name and request is not None:
            name = _plain(request, EXCEPTION_ATTR) or ""
        dispatcher().submit(
            Finished(
                report_id=claim.report_id,
                request=claim.info,
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


def reporters() -> Sequence[Reporter]:
    global _reporters
    found = _reporters
    if found is None:
        found = []
        for path in settings.reporters:
            with errors.guard(f"creating reporter {path}"):
                found.append(import_string(path)())
        _reporters = found
    return found


def deliver(event: Event) -> None:
    """Build the report and run every reporter, each on its own guard."""
    if isinstance(event, Refresh):
        with errors.guard("reading the runtime control"):
            refresh_control()
        return
    report = build_report(event)
    for reporter in reporters():
        with errors.guard(f"reporter {type(reporter).__qualname__}"):
            reporter.handle(report)


def idle() -> None:
    """The queue ran empty: let each reporter release what it holds."""
    for reporter in _reporters or ():
        # A reporter written without the base class may lack idle(): nothing to release.
        release = getattr(reporter, "idle", None)
        if release is not None:
            with errors.guard(f"reporter {type(reporter).__qualname__} going idle"):
                release()


@receiver(setting_changed)
def _reset_reporters(*, setting: str, **kwargs: object) -> None:
    global _reporters
    if setting == "SLOWWATCH":
        _reporters = None
