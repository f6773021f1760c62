"""SlowWatchMiddleware: arms a watch when a request comes in, disarms it when it leaves.

That is all it does on the request thread. Everything else (noticing the
deadline, capturing, reporting) happens on slowwatch's own threads.
Put it first in ``MIDDLEWARE`` so that the time spent in every other
middleware is watched too.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable
from functools import partial
from time import monotonic
from types import CodeType
from typing import TYPE_CHECKING, Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import MiddlewareNotUsed
from django.core.handlers.exception import convert_exception_to_response

from slowwatch import control, executors, runtime
from slowwatch.conf import EXEMPT, settings
from slowwatch.core import native
from slowwatch.core.frames import nested_codes
from slowwatch.core.watch import CLAIM, SQL, STARTED, THRESHOLD, Watch
from slowwatch.streams import AsyncStream, Stream

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponseBase

__all__ = ["SlowWatchMiddleware", "apply_rule"]


def apply_rule(request: HttpRequest, rule: float | str) -> None:
    """Exempt or re-time the request's watch (URL-name rules and decorators)."""
    with runtime.errors.guard("applying a per-view rule"):
        watchdog = runtime.watchdog()
        # Sync requests are found by thread, which costs the fast path nothing;
        # async ones (whose sync views run on another thread) by the context
        # variable their task set, which asgiref carries into that thread.
        held = executors.current.get()
        key = held[0]() if held is not None else watchdog.current()
        if key is None:
            return
        if rule == EXEMPT:
            watchdog.exempt(key)
        elif isinstance(rule, float):
            watchdog.retune(key, rule)


def _converter_code() -> CodeType:
    def handler(request: HttpRequest) -> HttpResponseBase:
        raise AssertionError("only its wrapper's code is looked at")

    return convert_exception_to_response(handler).__code__


#: The code of the function Django wraps around each sync middleware.
CONVERTER_CODE = _converter_code()


def _past_converter(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    """The handler behind Django's exception-to-response wrapper, if that is what we got.

    Django wraps every middleware in ``convert_exception_to_response``, both
    the one it hands us and the one it makes around us. Both do the same thing:
    turn an exception from inside into the error response. Calling past the
    inner one lets an exception rise through ``__call__`` (which re-raises it
    untouched) to the outer one, which answers exactly as the inner one would
    have, and saves every request one Python call: about as much as all of
    slowwatch's own work on the request path (docs/performance.rst).
    """
    wrapped = getattr(get_response, "__wrapped__", None)
    if getattr(get_response, "__code__", None) is CONVERTER_CODE and callable(wrapped):
        return wrapped  # type: ignore[no-any-return]
    return get_response


def _serving(middleware: SlowWatchMiddleware) -> Callable[..., Any]:
    """The sync request path: a closure, which Django calls as cheaply as a function.

    Django calls a middleware instance through its ``__call__``, a slot lookup
    and a fresh interpreter frame, which costs about as much as the watch
    itself (docs/performance.rst). The plain configuration hands Django this
    function instead; the others call it from ``__call__``.
    """
    get_response = middleware.get_response
    active = middleware.active
    watchdog = middleware.watchdog
    # Read now, not at import: gevent may have patched threading since.
    get_ident = threading.get_ident
    # Under gevent each request is a greenlet: its watch also holds the
    # greenlet (whose frames the monitor reads while it is suspended) and the
    # OS thread (whose stack is the greenlet's while it runs).
    greenlets = native.greenlet_functions()
    real_ident, current_greenlet = greenlets or (native.real_ident, lambda: None)

    def serve(request: HttpRequest, threshold: float | None = None) -> Any:
        # Every line here is paid by every request, so Watchdog.arm and disarm
        # are inlined and the rare cases live in the middleware's methods.
        if threshold is None:
            threshold = middleware.threshold
            if threshold is None:  # watching is paused
                return get_response(request)
        started = monotonic()
        key = get_ident()
        if key in active and not middleware._drop_stale_stream(key):
            # A handler nested in this thread's request: the outer watch covers
            # it. Only this thread files or removes the entry under its ident.
            return get_response(request)
        if greenlets:
            watch = [started, threshold, request, None, None, real_ident(), current_greenlet()]
        else:
            watch = [started, threshold, request, None, None]
        active[key] = watch
        if started > watchdog.stale_at:
            watchdog.ensure_running()
        try:
            response = get_response(request)
        except BaseException as exc:
            middleware._end(key, watch, None, request, exc)
            raise
        if getattr(response, "streaming", False):
            # Watched until its last chunk is sent (see _streamed).
            return middleware._stream(key, watch, response, request)
        # Our watch, or the copy a per-view rule filed in its place; none if
        # a rule exempted the request (ours then holds any claim made before).
        filed = active.pop(key, None)
        if filed is None:
            filed = watch
        elif filed[CLAIM] is None and monotonic() - started > filed[THRESHOLD]:
            middleware._missed(filed, request)  # the monitor was held up
        if filed[CLAIM] is not None:  # it was reported slow
            middleware._finish(filed, response, request)
        return response

    return serve


def _aserving(middleware: SlowWatchMiddleware) -> Callable[..., Awaitable[Any]]:
    """The async request path (under ASGI): a coroutine function, as ``_serving``.

    The watch is keyed by the task serving the request: while it waits, its
    frames are on its await chain rather than on the loop thread's stack.
    """
    get_response: Callable[[HttpRequest], Awaitable[Any]] = middleware.get_response  # type: ignore[assignment]
    active = middleware.active
    watchdog = middleware.watchdog
    current_task = asyncio.current_task
    get_ident = threading.get_ident
    # The request's asgiref ThreadSensitiveContext, which tells the monitor
    # which thread runs the request's sync code (see slowwatch.executors).
    sync_context = executors.SYNC_CONTEXT
    carried = executors.current
    task_ref = weakref.ref

    async def aserve(request: HttpRequest, threshold: float | None = None) -> Any:
        if threshold is None:
            threshold = middleware.threshold
            if threshold is None:  # watching is paused
                return await get_response(request)
        task = current_task()
        # Nested in this task's request (the outer watch covers it), or run
        # without a task, which nothing here could key a watch by.
        if task is None or task in active:
            return await get_response(request)
        started = monotonic()
        watch = [started, threshold, request, None, None, get_ident(), sync_context.get(None)]
        active[task] = watch
        if started > watchdog.stale_at:
            watchdog.ensure_running()
        # For per-view rules and for the query tracker on the executor thread
        # (slowwatch.executors), which asgiref copies into the executor thread
        # for each sync call, so nothing need be set on the request. The task
        # is held by weak reference: its context holds the variable, so a
        # strong one would make each request a cycle for the garbage collector.
        carried.set((task_ref(task), watch))
        try:
            response = await get_response(request)
        except BaseException as exc:
            middleware._end(task, watch, None, request, exc)
            raise
        if getattr(response, "streaming", False):
            # Django sends the stream from this same task: watched to its end.
            middleware._astream(task, watch, response, request)
            return response
        filed = active.pop(task, None)
        if filed is None:  # exempted by a per-view rule
            filed = watch
        elif filed[CLAIM] is None and monotonic() - started > filed[THRESHOLD]:
            middleware._missed(filed, request)  # the monitor was held up
        if filed[CLAIM] is not None:  # it was reported slow
            middleware._finished(filed, response, request, None)
        return response

    return aserve


#: The code of the request paths' frames, where a report's own stack begins.
[SERVE_CODE] = nested_codes(_serving.__code__, ("serve",))
[ASERVE_CODE] = nested_codes(_aserving.__code__, ("aserve",))


class SlowWatchMiddleware:
    """Arms a watch per request.

    Building it picks what Django gets: the bare request function (the
    closure made by ``_serving``, or the coroutine function made by
    ``_aserving`` under ASGI) for the plain configuration, else the instance,
    whose ``__call__`` handles what the plain path leaves out (path rules,
    URL-name rules, reporters' request hooks).
    """

    sync_capable = True
    async_capable = True

    def __new__(
        cls,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> Any:
        # A middleware factory may return any callable (Django's middleware
        # docs): the plain configuration returns the closure itself. Python
        # then skips ``__init__``, so the set-up lives in ``_setup``.
        self = super().__new__(cls)
        self._setup(get_response)
        if self.plain:
            return self.serve
        return self

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        """Everything was done by ``__new__`` (through ``_setup``)."""

    def _setup(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        # Checks do not run in a deployed worker: invalid settings raise
        # ImproperlyConfigured here, when the handler is built.
        if not settings.enabled:
            raise MiddlewareNotUsed("slowwatch is disabled (SLOWWATCH['ENABLED'] is False)")
        self.async_mode = iscoroutinefunction(get_response)
        self.get_response = get_response if self.async_mode else _past_converter(get_response)
        if self.async_mode:
            # Tells Django this instance's __call__ returns a coroutine.
            markcoroutinefunction(self)
        #: None while watching is paused from the admin.
        self.threshold: float | None = settings.threshold
        self.configured_threshold = settings.threshold
        rules = settings.rules
        self.path_rules = rules if rules.paths else None
        self.name_rules = rules.names
        # Django only calls process_view on middleware that has it: without
        # URL-name rules the fast path skips that call entirely.
        if self.name_rules:
            self.process_view = self._aprocess_view if self.async_mode else self._process_view
        #: What reporters run on the request's thread first (the Sentry scope
        #: hand-off); only a configuration that has some pays for them.
        self.request_hooks = runtime.request_hooks()
        #: key -> the watch of a streaming response still being sent.
        self.streams: dict[int, Watch] = {}
        self.watchdog = runtime.watchdog()
        self.active = self.watchdog.active
        self.plain = not (self.name_rules or self.path_rules or self.request_hooks)
        #: The request path (see ``_serving`` and ``_aserving``).
        self.serve: Callable[..., Any] = (_aserving if self.async_mode else _serving)(self)
        control.register(self)

    def apply_control(self, state: control.ControlState) -> None:
        """Pause, resume or re-time watching (see :mod:`slowwatch.control`).

        One attribute store: the request path reads ``self.threshold`` anyway,
        so runtime control costs it nothing.
        """
        threshold = state.threshold or self.configured_threshold
        self.threshold = None if state.paused else threshold

    def __call__(self, request: HttpRequest) -> Any:
        for hook in self.request_hooks:
            with runtime.errors.guard("a reporter's request hook"):
                hook(request)
        if self.async_mode:
            return self._acall(request)
        threshold = self._threshold(request)
        if threshold is None:  # ignored, or watching is paused
            return self.get_response(request)
        return self.serve(request, threshold)

    def _threshold(self, request: HttpRequest) -> float | None:
        """The request's threshold by path rule; None when it is not watched."""
        threshold = self.threshold
        if threshold is None:
            return None
        if self.path_rules is not None:
            rule = self.path_rules.for_path(request.path_info)
            if rule == EXEMPT:
                return None
            if isinstance(rule, float):
                threshold = rule
        return threshold

    def _end(
        self,
        key: object,
        watch: Watch,
        response: Any,
        request: HttpRequest,
        error: BaseException | None,
    ) -> None:
        """The end of a request off the inlined paths (its view raised, or its
        stream ended): ``finished`` if it was reported, said if the
        monitor missed it."""
        filed = self.active.pop(key, None)
        if filed is None:  # exempted
            filed = watch
        elif filed[CLAIM] is None:
            self._check_missed(filed, request)
        if filed[CLAIM] is not None:
            self._finished(filed, response, request, error)

    def _check_missed(self, filed: Watch, request: HttpRequest) -> None:
        """At the end of a request the monitor never took up: was it slow?"""
        if monotonic() - filed[STARTED] > filed[THRESHOLD]:
            self._missed(filed, request)

    def _missed(self, filed: Watch, request: HttpRequest) -> None:
        """A request that ran past its threshold and ended before the monitor,
        held up, took its stack: counted and said (see :func:`runtime.missed`)."""
        runtime.missed(filed[STARTED], filed[THRESHOLD], request)

    def _stream(self, key: int, watch: Watch, response: Any, request: HttpRequest) -> Any:
        """Keep watching a streaming response until its last chunk is sent.

        The server iterates the response on the request's own thread (or
        greenlet) and closes it when done (PEP 3333): the watch stays filed
        under the same key until then, so sampling, SQL and the deadline carry
        on through the generator, whose frames the report shows.
        """
        filed = self.active.get(key, watch)
        if getattr(response, "is_async", False):
            # An async iterator under WSGI: Django consumes it in one go, elsewhere.
            self.active.pop(key, None)
            if filed[CLAIM] is not None:
                self._finish(filed, response, request)
            return response
        self.streams[key] = filed
        content = response.streaming_content
        response.streaming_content = Stream(
            content, lambda error: self._end_stream(key, filed, response, request, error)
        )
        return response

    def _end_stream(
        self,
        key: int,
        filed: Watch,
        response: Any,
        request: HttpRequest,
        error: BaseException | None,
    ) -> None:
        """The stream ended (sent, closed, or collected): end its watch."""
        if self.streams.get(key) is filed:
            del self.streams[key]
        # Only while the thread has not moved on to another request.
        if self.active.get(key) is filed:
            self._end(key, filed, response, request, error)

    def _drop_stale_stream(self, key: int) -> bool:
        """Whether this thread's watch is a stream that was never closed (and is
        now dropped): the thread serves a new request, not a nested one."""
        parked = self.streams.get(key)
        if parked is None or self.active.get(key) is not parked:
            return False
        del self.streams[key]
        self.active.pop(key, None)
        return True

    def _finish(self, filed: Watch, response: Any, request: HttpRequest) -> None:
        """The end of a request the monitor took up: send ``finished`` if it was reported."""
        self._finished(filed, response, request, sys.exc_info()[1])

    def _finished(
        self, filed: Watch, response: Any, request: HttpRequest, exc: BaseException | None
    ) -> None:
        claim = filed[CLAIM]
        if self.watchdog.settle(claim) is not None:
            runtime.finished(claim, response, exc, filed[SQL], request)
        elif not claim.reported and not claim.killed:
            # The monitor found it due just as it ended, and let it go.
            self._missed(filed, request)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        threshold = self._threshold(request)
        if threshold is None:  # ignored, or watching is paused
            return await self.get_response(request)  # type: ignore[no-any-return, misc]
        return await self.serve(request, threshold)  # type: ignore[no-any-return]

    def _astream(self, task: Any, watch: Watch, response: Any, request: HttpRequest) -> None:
        """Keep watching an ASGI streaming response until its last chunk is sent."""
        end = partial(self._end, task, watch, response, request)
        if response.is_async:
            # Where the task waits while Django sends the stream: the view's
            # async generator (the await chain from the task's own coroutine
            # stops at Django's async generator).
            watch.append(getattr(response, "_iterator", None))
        content = response.streaming_content
        stream = AsyncStream(content, end) if response.is_async else Stream(content, end)
        response.streaming_content = stream

    def _process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> None:
        match = request.resolver_match
        names = self.name_rules
        if match is None or names is None:
            return
        with runtime.errors.guard("applying a URL-name rule"):
            rule = names.get(match.view_name)
            if rule is None and match.url_name:
                rule = names.get(match.url_name)
            if rule is not None:
                apply_rule(request, rule)

    async def _aprocess_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> None:
        # A coroutine so that Django does not hop to a thread to call it.
        self._process_view(request, view_func, view_args, view_kwargs)


#: Code of the frames where a request's own stack begins: what lies above
#: them (the server, Django's handler) is hidden from reports by default.
BOUNDARY = (
    *executors.BOUNDARY,
    SERVE_CODE,
    ASERVE_CODE,
    Stream.__next__.__code__,
    AsyncStream.__anext__.__code__,
    SlowWatchMiddleware.__call__.__code__,
    SlowWatchMiddleware._acall.__code__,
)
