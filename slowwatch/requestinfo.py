"""What slowwatch reads from, and leaves on, a live ``HttpRequest``.

:func:`read_request` runs on the monitor thread, while the request is still
being served by another: it reads plain instance attributes only (never a
property, ``__getattr__`` or a lazy object), so no user code runs there.
Every attribute slowwatch sets on a request is named here.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from typing import Any

from slowwatch.core.records import RequestInfo

#: The class name of an exception the view raised (Django answers it with a 500).
EXCEPTION_ATTR = "_slowwatch_exception"
#: The report id of a request reported slow, for the project's own correlation.
ID_ATTR = "slowwatch_id"
#: Where the request thread leaves its Sentry isolation scope and span for the
#: monitor (see :mod:`slowwatch.reporters.sentry`).
SENTRY_SCOPE_ATTR = "_slowwatch_sentry_scope"
SENTRY_SPAN_ATTR = "_slowwatch_sentry_span"


def plain(obj: object, name: str) -> Any:
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
    user = plain(request, "_cached_user") or plain(request, "_acached_user")
    meta = getattr(type(user), "_meta", None)
    pk = getattr(meta, "pk", None)
    attname = getattr(pk, "attname", None)
    if user is None or not isinstance(attname, str):
        return ""  # not loaded, or AnonymousUser
    value = plain(user, attname)
    return str(value) if isinstance(value, (int, str, uuid.UUID)) else ""


def _trace(request: Any) -> tuple[tuple[str, str], ...]:
    """The trace of the Sentry scope the request thread left us, as plain strings."""
    scope = plain(request, SENTRY_SCOPE_ATTR)
    if scope is None:
        return ()
    found = scope.get_trace_context()
    span = plain(request, SENTRY_SPAN_ATTR)
    if span is not None:
        found = {**found, "trace_id": span.trace_id, "span_id": span.span_id}
    return tuple(
        (key, found[key]) for key in ("trace_id", "span_id") if isinstance(found.get(key), str)
    )


def _route(match: object) -> str:
    """The URL pattern that matched; the root pattern (``path("", ...)``,
    whose route is empty) is ``/``, so that it never reads as unresolved."""
    if match is None:
        return ""
    route = _text(plain(match, "route"))
    return route or "/"


def read_request(request: Any) -> RequestInfo | None:
    """What a report needs from the live request. Runs on the monitor thread."""
    meta = plain(request, "META")
    meta = meta if isinstance(meta, dict) else {}
    match = plain(request, "resolver_match")
    return RequestInfo(
        method=_text(plain(request, "method")),
        path=_text(plain(request, "path")),
        query=_text(meta.get("QUERY_STRING")),
        view=_text(plain(match, "_func_path")) if match is not None else "",
        route=_route(match),
        host=_text(meta.get("HTTP_HOST") or meta.get("SERVER_NAME")),
        user_id=_user_id(request),
        trace=_trace(request),
    )


def tag(request: Any, report_id: str) -> None:
    """``request.slowwatch_id``: set, from the monitor thread, once a request is reported.

    One store into the request's ``__dict__``, the only write slowwatch makes
    to a live request from another thread; fast requests never get (or pay
    for) an id.
    """
    with contextlib.suppress(TypeError):  # a request class with __slots__
        vars(request)[ID_ATTR] = report_id


def note_exception(sender: object, request: Any = None, **kwargs: object) -> None:
    """``got_request_exception``: Django turns a view's exception into a 500
    response before our middleware sees it; this keeps its class for the report."""
    exc = sys.exc_info()[1]
    if request is not None and exc is not None:
        with contextlib.suppress(TypeError):
            # The first one: the view's, not one raised while handling it.
            vars(request).setdefault(EXCEPTION_ATTR, type(exc).__qualname__)


def exception_name(request: Any) -> str:
    """The class name :func:`note_exception` kept, if any."""
    name = plain(request, EXCEPTION_ATTR)
    return name if isinstance(name, str) else ""
