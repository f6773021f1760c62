"""Runtime control: pause watching, or change the threshold, in every worker at once.

The admin's settings page writes one :class:`~slowwatch.models.Control` row.
Each process that watches requests runs a small thread of its own,
``slowwatch-control``, that re-reads the row every :data:`PERIOD` seconds and
applies it: to every :class:`~slowwatch.middleware.SlowWatchMiddleware`
(one attribute store: the request path reads that attribute anyway) and to
whoever else listens (the runtime re-times the monitor). Nothing is read on a
request, nothing travels the report queue, and no reporter waits on it.

The thread starts with the first watched request's monitor (its housekeeping
calls :func:`ensure_running`) and again after a fork or if it ever died.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connections

from slowwatch.conf import settings
from slowwatch.connections import bounded, not_migrated
from slowwatch.core.errors import errors

#: Seconds between two reads of the control row.
PERIOD = 10.0


@dataclass(frozen=True)
class ControlState:
    """What the admin's settings page set: applies to every worker's middleware."""

    paused: bool = False
    #: Replaces ``SLOWWATCH["THRESHOLD"]`` (per-URL rules still apply).
    threshold: float | None = None
    changed_at: float | None = None
    changed_by: str = ""


_state = ControlState()
#: Every SlowWatchMiddleware of this process, told when the state changes.
_middlewares: weakref.WeakSet[Any] = weakref.WeakSet()
_listeners: list[Callable[[ControlState], object]] = []
_lock = threading.Lock()
_thread: threading.Thread | None = None
_thread_pid = 0
_wake = threading.Event()


def current() -> ControlState:
    """The state in force in this process."""
    return _state


def register(middleware: Any) -> None:
    """Keep ``middleware`` told of the state (its ``apply_control``), starting now."""
    _middlewares.add(middleware)
    middleware.apply_control(_state)


def listen(callback: Callable[[ControlState], object]) -> None:
    """Call ``callback`` with each new state (after the middlewares have it)."""
    _listeners.append(callback)


def apply(state: ControlState) -> None:
    """Put ``state`` in force in this process."""
    global _state
    if state == _state:
        return
    _state = state
    for middleware in list(_middlewares):
        middleware.apply_control(state)
    for callback in _listeners:
        with errors.guard("applying the runtime control"):
            callback(state)


def refresh(*, close: bool = False) -> None:
    """Read the control row and apply it.

    ``close``: close this thread's connection afterwards (the control thread
    does; a request thread, the admin's view, leaves its own to Django).
    """
    from slowwatch.models import Control

    alias = settings.database_alias
    if close:
        bounded(alias)  # this thread's own connection: with slowwatch's time limits
    try:
        row = Control._default_manager.using(alias).filter(pk=1).first()
    finally:
        if close:
            connections[alias].close()
    if row is None:
        apply(ControlState())
    else:
        apply(ControlState(row.paused, row.threshold, row.changed_at.timestamp(), row.changed_by))


def _run() -> None:
    while True:
        try:
            refresh(close=True)
        except Exception as exc:
            if not_migrated(exc):
                errors.note(
                    "runtime control: not migrated",
                    "slowwatch: the runtime control's table is missing: run 'manage.py migrate'",
                )
            else:
                errors.error("reading the runtime control", exc)
        with errors.guard("sharing this worker's counters"):
            from slowwatch import fleet, runtime

            fleet.publish(runtime.counters())
        _wake.wait(PERIOD)
        _wake.clear()


def ensure_running() -> None:
    """Start this process's control thread, unless it is running already."""
    global _thread, _thread_pid
    thread = _thread
    if thread is not None and _thread_pid == os.getpid() and thread.is_alive():
        return
    with _lock:
        thread = _thread
        if thread is not None and _thread_pid == os.getpid() and thread.is_alive():
            return
        thread = threading.Thread(target=_run, name="slowwatch-control", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # interpreter shutting down
            errors.error("starting the control thread", exc)
            return
        _thread, _thread_pid = thread, os.getpid()


def _after_fork() -> None:
    global _lock, _wake
    # The parent's thread is not ours, and its lock may have been held.
    _lock, _wake = threading.Lock(), threading.Event()


os.register_at_fork(after_in_child=_after_fork)
