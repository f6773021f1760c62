"""Counting a request's queries: one execute wrapper per database connection.

The wrapper is installed when Django opens a connection (``connection_created``),
so a request pays nothing to install it. For each query it finds the current
thread's watch; outside a watched request it only forwards the call.
"""

from __future__ import annotations

from collections.abc import Callable
from threading import get_ident
from time import monotonic
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from slowwatch.sqlstats import SqlStats
from slowwatch.watch import CLAIM, SQL, Watch


class QueryTracker:
    """A ``connection.execute_wrapper``: times every query of a watched request."""

    def __init__(self, active: dict[object, Watch], alias: str) -> None:
        self.active = active
        #: One tracker per connection object, so one alias.
        self.alias = alias

    def __call__(
        self,
        execute: Callable[..., Any],
        sql: Any,
        params: Any,
        many: bool,
        context: dict[str, Any],
    ) -> Any:
        watch = self.active.get(get_ident())
        if watch is None:
            return execute(sql, params, many, context)
        stats = watch[SQL] if len(watch) > SQL else None
        if stats is None:
            stats = SqlStats()
            if len(watch) > SQL:
                watch[SQL] = stats
            else:
                watch.append(stats)
        # Composed SQL objects (psycopg.sql) are not rendered: that could run code.
        text = sql if isinstance(sql, str) else f"<{type(sql).__name__}>"
        started = monotonic()
        stats.current = (text, self.alias, started)
        try:
            return execute(sql, params, many, context)
        finally:
            seconds = monotonic() - started
            stats.current = None
            stats.count += 1
            stats.time += seconds
            if watch[CLAIM] is not None:
                stats.record(text, seconds)


def install(connection: BaseDatabaseWrapper, active: dict[object, Watch]) -> None:
    if not any(isinstance(w, QueryTracker) for w in connection.execute_wrappers):
        connection.execute_wrappers.append(QueryTracker(active, connection.alias))


def _on_connection_created(sender: object, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    from slowwatch import runtime

    with runtime.errors.guard("installing the query tracker"):
        install(connection, runtime.watchdog().active)


def connect() -> None:
    """Track queries on every connection opened from now on."""
    connection_created.connect(_on_connection_created, dispatch_uid="slowwatch.sql")
