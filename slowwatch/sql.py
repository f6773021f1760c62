"""Counting a request's queries: one execute wrapper per database connection.

The wrapper is installed when Django opens a connection (``connection_created``),
so a request pays nothing to install it. For each query it finds the current
thread's watch; outside a watched request it only forwards the call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import monotonic
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from slowwatch.core.sqlstats import SqlStats, sql_text
from slowwatch.core.watch import CLAIM, SQL, Watch
from slowwatch.executors import current


class QueryTracker:
    """Times every query of a watched request, through its :meth:`track` method
    (the ``connection.execute_wrapper``: a bound method is a cheaper call for
    Django than an instance with ``__call__``)."""

    def __init__(self, active: dict[object, Watch], alias: str) -> None:
        self.active = active
        #: One tracker per connection object, so one alias.
        self.alias = alias
        #: The request's key, as the middleware files it (read now: gevent
        #: may have patched threading since import).
        self.get_ident = threading.get_ident

    def track(
        self,
        execute: Callable[..., Any],
        sql: Any,
        params: Any,
        many: bool,
        context: dict[str, Any],
    ) -> Any:
        # Paid by every query, watched or not: a dict lookup, then the call.
        watch = self.active.get(self.get_ident())
        if watch is None:
            # An ASGI request's query runs on its executor thread; the request's
            # watch came along in its context (slowwatch.executors).
            held = current.get()
            if held is None or self.active.get(held[0]()) is not held[1]:
                return execute(sql, params, many, context)
            watch = held[1]
        stats = watch[SQL]
        if stats is None:
            stats = watch[SQL] = SqlStats()
        started = monotonic()
        # The raw statement: turned into text only when somebody reads it.
        stats.current = (sql, self.alias, started)
        try:
            return execute(sql, params, many, context)
        finally:
            seconds = monotonic() - started
            stats.current = None
            stats.count += 1
            stats.time += seconds
            if watch[CLAIM] is not None:  # reported slow: keep the statement
                stats.record(sql_text(sql), seconds)


def install(connection: BaseDatabaseWrapper, active: dict[object, Watch]) -> None:
    wrappers = connection.execute_wrappers
    if not any(isinstance(getattr(w, "__self__", None), QueryTracker) for w in wrappers):
        wrappers.append(QueryTracker(active, connection.alias).track)


def _on_connection_created(sender: object, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    from slowwatch import runtime

    with runtime.errors.guard("installing the query tracker"):
        install(connection, runtime.watchdog().active)


def connect() -> None:
    """Track queries on every connection opened from now on."""
    connection_created.connect(_on_connection_created, dispatch_uid="slowwatch.sql")
