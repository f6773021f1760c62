"""Which thread runs an ASGI request's sync code, found without guessing.

Under ASGI, Django runs a sync view, sync middleware and every
``sync_to_async`` call of a request on the executor of the request's asgiref
``ThreadSensitiveContext``, which Django opens per request: one
``ThreadPoolExecutor`` with a single thread. The middleware files that context
with the request's watch as the request starts; the monitor asks here, at each
look, for the executor's thread. While the thread runs the request's code the
report shows its stack and its CPU clock; while the task runs on the event
loop, or waits, the task's.

A request's queries run on that thread too: :data:`current` carries the
request's watch into it (asgiref copies the task's context variables into the
executor for each call), so the query tracker counts them, and the per-view
rules (URL-name rules, the decorators) find the request's watch there.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from asgiref.sync import SyncToAsync

from slowwatch.core.frames import nested_codes

__all__ = ["BOUNDARY", "SYNC_CONTEXT", "current", "thread_of"]


#: The frames where the executor thread starts running the request's code:
#: the report's stack starts below the innermost of them. Newer asgiref runs
#: the code through two small closures of ``SyncToAsync.__call__`` (``func``
#: entering the context, ``run_child`` restoring its locals), which are
#: asgiref's, not the request's; older ones call it from ``thread_handler``.
BOUNDARY = (
    SyncToAsync.thread_handler.__code__,
    *nested_codes(SyncToAsync.__call__.__code__, ("func", "run_child")),
)

#: A weak reference to the task of the ASGI request whose context this is
#: (the key of its watch), and the watch.
current: contextvars.ContextVar[tuple[Callable[[], object], list[Any]] | None] = (
    contextvars.ContextVar("slowwatch_request", default=None)
)


#: Where asgiref keeps the calling task's thread-sensitive context.
SYNC_CONTEXT: contextvars.ContextVar[Any] = SyncToAsync.thread_sensitive_context


def thread_of(holder: object) -> int | None:
    """The ident of the thread of ``holder``'s executor, once it has one.

    Runs on the monitor thread: two dictionary reads, no call into asgiref.
    """
    executor = SyncToAsync.context_to_thread_executor.get(holder)  # type: ignore[call-overload]
    threads = getattr(executor, "_threads", None)  # ThreadPoolExecutor's own
    if not threads:
        return None
    try:
        for thread in tuple(threads):
            ident = getattr(thread, "ident", None)
            return ident if isinstance(ident, int) else None
    except RuntimeError:  # the set changed as we read it
        return None
    return None
