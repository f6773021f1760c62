"""slowwatch's own database connections, bounded in time.

The database reporter and the runtime control use Django's connection for
their alias on a thread of slowwatch's own, so the connection is theirs alone.
Before it first connects, its settings get limits of their own (the
application's connections keep theirs): a connect timeout, and a statement
and lock timeout on PostgreSQL and MySQL, the busy timeout on SQLite. A
database that is down, locked by a migration or held by another process then
costs slowwatch seconds, not its reporter thread.
"""

from __future__ import annotations

import weakref
from typing import Any

from django.db import OperationalError, ProgrammingError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["CONNECT_TIMEOUT", "LOCK_TIMEOUT", "STATEMENT_TIMEOUT", "bounded", "not_migrated"]

#: Seconds to establish a connection.
CONNECT_TIMEOUT = 5
#: Seconds one of slowwatch's statements may run, and wait for a lock.
STATEMENT_TIMEOUT = 5
LOCK_TIMEOUT = 2

_bounded: weakref.WeakSet[BaseDatabaseWrapper] = weakref.WeakSet()


def bounded(alias: str) -> BaseDatabaseWrapper:
    """This thread's connection to ``alias``, with slowwatch's time limits."""
    connection = connections[alias]
    if connection not in _bounded:
        if connection.connection is None:
            connection.settings_dict = limits(connection.settings_dict, connection.vendor)
        _bounded.add(connection)
    return connection


def limits(settings_dict: dict[str, Any], vendor: str) -> dict[str, Any]:
    """A copy of ``settings_dict`` with slowwatch's limits in its OPTIONS.

    A limit the project set in OPTIONS is kept as it is.
    """
    options = dict(settings_dict.get("OPTIONS") or {})
    if vendor == "postgresql":
        options.setdefault("connect_timeout", CONNECT_TIMEOUT)
        limit = (
            f"-c statement_timeout={STATEMENT_TIMEOUT * 1000} "
            f"-c lock_timeout={LOCK_TIMEOUT * 1000}"
        )
        existing = options.get("options")
        if not existing:
            options["options"] = limit
        elif "statement_timeout" not in existing and "lock_timeout" not in existing:
            options["options"] = f"{existing} {limit}"
    elif vendor == "sqlite":
        # sqlite3's busy timeout: how long a write waits for another's lock.
        options["timeout"] = min(float(options.get("timeout", LOCK_TIMEOUT)), LOCK_TIMEOUT)
    elif vendor == "mysql":
        options.setdefault("connect_timeout", CONNECT_TIMEOUT)
        options.setdefault("read_timeout", STATEMENT_TIMEOUT)
        options.setdefault("write_timeout", STATEMENT_TIMEOUT)
    return {**settings_dict, "OPTIONS": options}


def not_migrated(exc: BaseException) -> bool:
    """Whether ``exc`` says one of slowwatch's tables does not exist: retrying
    cannot help, ``manage.py migrate`` does."""
    if not isinstance(exc, (OperationalError, ProgrammingError)):
        return False
    text = str(exc).lower()
    return "no such table" in text or "does not exist" in text or "doesn't exist" in text
