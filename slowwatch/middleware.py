"""SlowWatchMiddleware: arms a watch when a request comes in, disarms it when it leaves.

That is all it does on the request thread. Everything else (noticing the
deadline, capturing, reporting) happens on slowwatch's own threads.
Put it first in ``MIDDLEWARE`` so that the time spent in every other
middleware is watched too.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from threading import get_ident
from time import monotonic
from typing import TYPE_CHECKING, Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import MiddlewareNotUsed

from slowwatch import runtime
from slowwatch.conf import EXEMPT, settings
from slowwatch.sampler import STALE_AFTER
from slowwatch.watch import CLAIM, SQL

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponseBase

#: Under ASGI, where the decorators and URL-name rules find the request's watch key.
WATCH_ATTR = "_slowwatch_key"


def apply_rule(request: HttpRequest, rule: float | str) -> None:
    """Exempt or re-time the request's watch (URL-name rules and decorators)."""
    with runtime.errors.guard("applying a per-view rule"):
        watchdog = runtime.watchdog()
        # Sync requests are found by thread, which costs the fast path nothing;
        # async ones (whose sync views run on another thread) by attribute.
        key = getattr(request, WATCH_ATTR, None) or watchdog.current()
        if key is None:
            return
        if rule == EXEMPT:
            watchdog.exempt(key)
        elif isinstance(rule, float):
            watchdog.retune(key, rule)


class SlowWatchMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        # Checks do not run in a deployed worker: invalid settings raise
        # ImproperlyConfigured here, when the handler is built.
        if not settings.enabled:
            raise MiddlewareNotUsed("slowwatch is disabled (SLOWWATCH['ENABLED'] is False)")
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
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
        self.watchdog = watchdog = runtime.watchdog()
        watchdog.configure(
            sample_interval=settings.sample_interval,
            max_samples=settings.max_samples,
            escalations=settings.escalations,
            capture_locals=settings.capture_locals,
        )
        self.active = watchdog.active
        for threshold in (self.threshold, *rules.thresholds()):
            watchdog.require(threshold)
        if settings.hide_server_frames:
            watchdog.boundary.update(
                (SlowWatchMiddleware.__call__.__code__, SlowWatchMiddleware.__acall__.__code__)
            )
        runtime.register(self)
        if any(path.endswith(".SentryReporter") for path in settings.reporters):
            # Only then does a request pay for handing its Sentry scope over.
            self.__class__ = SentryScopeMiddleware
            watchdog.boundary.add(SentryScopeMiddleware.__call__.__code__)

    def apply_control(self, control: runtime.ControlState) -> None:
        """Pause, resume or re-time watching (see the admin's settings page).

        One attribute store: the request path reads ``self.threshold`` anyway,
        so runtime control costs it nothing.
        """
        threshold = control.threshold or self.configured_threshold
        if not control.paused:
            self.watchdog.require(threshold)
        self.threshold = None if control.paused else threshold

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

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        threshold = self.threshold if self.path_rules is None else self._threshold(request)
        if threshold is None:  # ignored, or watching is paused
            return self.get_response(request)
        # Watchdog.arm and Watchdog.disarm, inlined (this is the per-request
        # cost of slowwatch; see benchmarks/overhead.py).
        started = monotonic()
        key = get_ident()
        watch = [started, threshold, request, None]
        active = self.active
        if active.setdefault(key, watch) is not watch:
            # A handler nested in this thread's request: the outer watch covers it.
            return self.get_response(request)
        if started - self.watchdog.beat > STALE_AFTER:
            self.watchdog.ensure_running()
        response: Any = None
        try:
            response = self.get_response(request)
        finally:
            # Our watch, or the copy a per-view rule filed in its place.
            filed = active.pop(key, watch)
            claim = filed[CLAIM]
            if claim is not None and self.watchdog.settle(claim) is not None:
                stats = filed[SQL] if len(filed) > SQL else None
                runtime.finished(claim, response, sys.exc_info()[1], stats, request)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        threshold = self._threshold(request)
        # Keyed by the task serving this request: while it waits, its frames are
        # on its await chain rather than on the loop thread's stack.
        task = asyncio.current_task()
        watch = None if threshold is None else self.watchdog.arm(request, threshold, task=task)
        if watch is None:
            return await self.get_response(request)  # type: ignore[no-any-return, misc]
        setattr(request, WATCH_ATTR, task)
        response = None
        try:
            response = await self.get_response(request)  # type: ignore[misc]
        finally:
            claim = self.watchdog.disarm(task, watch)
            if claim is not None:
                runtime.finished(claim, response, sys.exc_info()[1], request=request)
        return response  # type: ignore[no-any-return]

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


#: Where the request thread leaves its Sentry isolation scope for the monitor.
SCOPE_ATTR = "_slowwatch_sentry_scope"
SPAN_ATTR = "_slowwatch_sentry_span"


class SentryScopeMiddleware(SlowWatchMiddleware):
    """The middleware when a SentryReporter is configured: it also hands the
    request's Sentry isolation scope to the monitor (a context variable, which
    only the request's own thread can read), so that events link to its trace."""

    def __call__(self, request: HttpRequest) -> Any:
        with runtime.errors.guard("reading the Sentry scope"):
            import sentry_sdk

            vars(request)[SCOPE_ATTR] = sentry_sdk.get_isolation_scope()
            # The request's transaction when tracing is on: the event's parent span.
            vars(request)[SPAN_ATTR] = sentry_sdk.get_current_scope().span
        return super().__call__(request)
