"""SentryReporter: a slow request as one Sentry event, with the request's real stack.

The event is made on slowwatch's reporter thread from the stack the monitor
took of the *request's* thread, so Sentry shows the line the request was stuck
on, not where the event was made. It goes through the SDK's own pipeline
(``scope.capture_event``): ``before_send``, ``sample_rate``/``error_sampler``,
the event scrubber and the transport's rate limits all apply, and the SDK
sends it from its own background thread, so a slow or dead Sentry never holds
up the reporter thread (and requests never wait for it anyway). The reporter
never flushes: the SDK's atexit integration flushes what is queued at exit
(within its ``shutdown_timeout``).

Quiet by design, like the mails: one event per kind and endpoint per
``WINDOW`` and ``PER_HOUR`` events in all, per process; the next event that
goes out carries the number held back (``extra["suppressed"]``).

Needs ``sentry_sdk.init()`` (2.x) to have been called: without an active client
nothing is done and ``counts["no_client"]`` goes up.
"""

from __future__ import annotations

import json
import linecache
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast

import sentry_sdk
from sentry_sdk.integrations.logging import ignore_logger
from sentry_sdk.scope import Scope, ScopeType, use_isolation_scope, use_scope
from sentry_sdk.utils import filename_for_module, set_in_app_in_frames

from slowwatch.alerting import CircuitBreaker, Decision, RateLimit
from slowwatch.conf import settings
from slowwatch.core.errors import errors
from slowwatch.core.export import speedscope
from slowwatch.core.states import label
from slowwatch.render import headline
from slowwatch.report import Report
from slowwatch.reporters.base import Reporter
from slowwatch.requestinfo import SENTRY_SCOPE_ATTR, SENTRY_SPAN_ATTR

if TYPE_CHECKING:
    from sentry_sdk._types import Event

__all__ = ["SentryReporter"]


#: Sentry's limit for a tag value; longer ones are dropped by Sentry, not cut.
TAG_MAX = 200
#: Longest message; a view's dotted path can be long.
MESSAGE_MAX = 500
#: Source lines around each frame when the SDK's options do not say.
CONTEXT_LINES = 5
#: Where the event says it came from (``event.logger``).
LOGGER = "slowwatch"
#: The LoggingReporter's logger: its records are the same news as our events.
REPORT_LOGGER = "slowwatch.report"

_TITLES = {
    "slow": "Slow request",
    "still_slow": "Still slow",
    "killed": "Killed",
    "finished": "Slow request finished",
    "lost": "Report lost",
}
#: Sentry levels, the same as the LoggingReporter's records.
LEVELS = {
    "slow": "warning",
    "still_slow": "info",
    "killed": "warning",
    "finished": "info",
    "lost": "warning",
}


def short_verdict(report: Report) -> str:
    """The main thing the request was doing, as a tag: ``in the database``."""
    profile = report.profile
    if profile is not None and profile.states:
        top = max(profile.states, key=lambda item: item[1])[0]
        return label(top)
    return label(report.state)


def message(report: Report) -> str:
    """``Slow request: GET /orders/<int:pk>/ (12.3 s, in the database)``."""
    title = _TITLES.get(report.kind, "Slow request")
    endpoint = f"{report.method} {report.where()}"
    if report.kind == "lost":
        detail = f"the {report.extra.get('dropped')} report was dropped"
        detail += f": {report.extra.get('reason')}" if report.extra.get("reason") else ""
    else:
        verdict = report.verdict()
        detail = f"{report.elapsed:.1f} s" + (f", {verdict}" if verdict else "")
    return headline(f"{title}: {endpoint} ({detail})", MESSAGE_MAX)


class Collection:
    """What the SDK's options let an event carry: user, frame variables, source, query.

    sentry-sdk resolves ``data_collection`` (2.7x) from ``send_default_pii``,
    ``include_local_variables`` and ``include_source_context`` when it is not
    given, so it is read first; older 2.x releases only have the legacy options.
    """

    def __init__(self, client: Any) -> None:
        options: Mapping[str, Any] = client.options
        collection = options.get("data_collection")
        if isinstance(collection, Mapping):
            self.user = bool(collection.get("user_info"))
            self.variables: bool | Mapping[str, Any] = collection.get(
                "stack_frame_variables", True
            )
            self.context_lines = int(collection.get("frame_context_lines", CONTEXT_LINES))
            # Like the SDK's WSGI integration: query strings are filtered only
            # when the user configured data_collection.
            queries = collection.get("url_query_params")
            self.queries: Mapping[str, Any] | None = (
                queries
                if collection.get("provided_by_user") and isinstance(queries, Mapping)
                else None
            )
        else:
            self.user = bool(client.should_send_default_pii())
            self.variables = options.get("include_local_variables", True) is not False
            source = options.get("include_source_context", True) is not False
            self.context_lines = CONTEXT_LINES if source else 0
            self.queries = None

    def query_string(self, query: str) -> str | None:
        """The query string, already masked by slowwatch, filtered as the SDK would."""
        rule = self.queries
        if rule is None:  # the SDK itself would send it as it came
            return query
        try:
            from sentry_sdk.data_collection import (
                _apply_data_collection_filtering_to_query_string,
            )
        except ImportError:  # a rule we cannot apply: no query at all
            return None
        return _apply_data_collection_filtering_to_query_string(query, cast(Any, rule))

    def frame_vars(self, values: tuple[tuple[str, str], ...]) -> dict[str, str] | None:
        """The captured locals (already rendered and redacted by slowwatch), as allowed."""
        rule = self.variables
        if rule is True:
            return dict(values)
        if not isinstance(rule, Mapping):
            return None
        try:
            # The SDK's own filter for a denylist/allowlist rule (2.7x).
            from sentry_sdk.data_collection import _apply_key_value_collection_filtering
        except ImportError:  # a rule we cannot apply: send no variables at all
            return None
        kept = _apply_key_value_collection_filtering(items=dict(values), behaviour=cast(Any, rule))
        return {str(k): str(v) for k, v in kept.items()} or None


def frames(report: Report, collection: Collection, options: Mapping[str, Any]) -> list[Any]:
    """Sentry frame dicts, oldest call first, with ``in_app`` by the SDK's own rules."""
    found: list[dict[str, Any]] = []
    lines = collection.context_lines
    for frame in report.frames:
        doc: dict[str, Any] = {
            "filename": filename_for_module(frame.module, frame.filename) or frame.filename,
            "abs_path": frame.filename,
            "function": frame.function,
            "module": frame.module or None,
            "lineno": frame.lineno,
        }
        if lines:
            # Read here, on the reporter thread: the snapshot only kept file and line.
            source = linecache.getlines(frame.filename)
            index = frame.lineno - 1
            if 0 <= index < len(source):
                doc["pre_context"] = [
                    s.rstrip("\r\n") for s in source[max(0, index - lines) : index]
                ]
                doc["context_line"] = source[index].rstrip("\r\n")
                doc["post_context"] = [
                    s.rstrip("\r\n") for s in source[index + 1 : index + 1 + lines]
                ]
            elif frame.line:
                doc["context_line"] = frame.line
        if frame.locals is not None:
            variables = collection.frame_vars(frame.locals)
            if variables is not None:
                doc["vars"] = variables
        found.append(doc)
    # The client applies the same rules in _prepare_event; doing it here keeps
    # in_app right whatever that step does in other 2.x releases.
    set_in_app_in_frames(
        found,
        options.get("in_app_exclude"),
        options.get("in_app_include"),
        options.get("project_root"),
    )
    return found


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat()


def build_event(
    report: Report, decision: Decision, collection: Collection, options: Mapping[str, Any]
) -> dict[str, Any]:
    """The event for ``report``; ``decision`` says how many were held back before it."""
    route = report.where()
    thread: dict[str, Any] = {
        "id": report.thread_id,
        "name": report.thread_name or None,
        "current": True,
        "crashed": False,
    }
    if report.frames:
        thread["stacktrace"] = {"frames": frames(report, collection, options)}
    timing = {
        "id": report.id,
        "kind": report.kind,
        "started_at": _timestamp(report.started_at) if report.started_at else None,
        "threshold": report.threshold,
        "elapsed": round(report.elapsed, 3),
        "late_by": round(report.late_by, 3),
        "state": report.state or None,
        "verdict": report.verdict() or None,
        "view": report.view or None,
        "route": report.route or None,
        "hostname": report.hostname,
        "pid": report.pid,
        "thread_id": report.thread_id,
        "thread_name": report.thread_name or None,
        "serving": report.serving or None,
        "hidden_frames": report.hidden_frames,
        "truncated_frames": report.truncated_frames,
    }
    if report.kind == "finished":
        timing["status_code"] = report.status_code
        timing["exception"] = report.exception or None
    path, _, query = report.url.partition("?")
    request: dict[str, Any] = {"method": report.method, "url": path}
    query_string = collection.query_string(query) if query else None
    if query_string:
        request["query_string"] = query_string
    event: dict[str, Any] = {
        "level": LEVELS.get(report.kind, "warning"),
        "logger": LOGGER,
        "message": message(report),
        "fingerprint": ["slowwatch", report.method, route],
        "transaction": route,
        "transaction_info": {
            # Unresolved requests share one name (not their path): "custom".
            "source": "route" if report.route else "component" if report.view else "custom"
        },
        "tags": {
            "route": headline(route, TAG_MAX),
            "state": report.kind,
            "slowwatch.id": report.id,
        },
        "contexts": {"slowwatch": timing},
        "request": request,
        # Present even without frames, so that attach_stacktrace does not add
        # the reporter thread's own (meaningless) stack.
        "threads": {"values": [thread]},
    }
    verdict = short_verdict(report)
    if verdict:
        event["tags"]["verdict"] = headline(verdict, TAG_MAX)
    if report.started_at:
        # When the snapshot was taken (or the request ended), not when it was sent.
        event["timestamp"] = datetime.fromtimestamp(
            report.started_at + report.elapsed, tz=timezone.utc
        )
    if report.sql:
        event["contexts"]["sql"] = {
            key: report.sql[key]
            for key in ("count", "time", "in_flight", "slowest", "repeated", "in_flight_seen")
            if report.sql.get(key) not in (None, [], {})
        }
    if report.process:
        event["contexts"]["process"] = dict(report.process)
    trace = report.trace
    if trace.get("trace_id") and trace.get("span_id"):
        # The request's own trace: the event shows up in it, next to its spans.
        event["contexts"]["trace"] = {"trace_id": trace["trace_id"], "span_id": trace["span_id"]}
    if decision.suppressed:
        event["extra"] = {"suppressed": decision.suppressed}
        if decision.since is not None:
            event["extra"]["suppressed_since"] = _timestamp(decision.since)
    if collection.user and report.user_id:
        event["user"] = {"id": report.user_id}
    return event


class SentryReporter(Reporter):
    """Sends ``slow`` requests to Sentry (``SLOWWATCH["SENTRY"]``; see docs/alerts.rst).

    ``counts``: ``sent`` (handed to the SDK's transport), ``dropped`` (the SDK
    did not keep it: ``before_send``, sampling...), ``rate_limited``,
    ``no_client``, ``circuit_open`` and ``failed``. ``before_send`` gets the
    :class:`~slowwatch.report.Report` as ``hint["slowwatch_report"]``.
    """

    def __init__(self) -> None:
        conf = settings.sentry
        self.kinds = frozenset(conf["KINDS"])
        # Per process: events are cheap to drop and Sentry groups them anyway.
        self.limit = RateLimit(
            "sentry",
            window=float(conf["WINDOW"]),
            per_hour=int(conf["PER_HOUR"]),
            cache_alias=None,
            errors=errors,
        )
        self.breaker = CircuitBreaker()
        self.counts: Counter[str] = Counter()
        # The LoggingReporter's WARNING says what this event says: with the
        # logging integration's event_level at WARNING it would be a second
        # event (and without it, a breadcrumb of nothing new).
        ignore_logger(REPORT_LOGGER)

    @staticmethod
    def on_request(request: Any) -> None:
        """On the request's own thread, as it starts: leave its Sentry isolation
        scope (a context variable, which only that thread can read) and its
        span on the request, so that the event links to the request's trace."""
        attributes = vars(request)
        attributes[SENTRY_SCOPE_ATTR] = sentry_sdk.get_isolation_scope()
        # The request's transaction when tracing is on: the event's parent span.
        attributes[SENTRY_SPAN_ATTR] = sentry_sdk.get_current_scope().span

    def handle(self, report: Report) -> None:
        if report.kind not in self.kinds:
            return
        client = sentry_sdk.get_client()
        if not client.is_active():
            self.counts["no_client"] += 1
            return
        if not self.breaker.allow():
            self.counts["circuit_open"] += 1
            return
        route = report.where()
        decision = self.limit.check(f"{report.kind} {report.method} {route}")
        if not decision.allowed:
            self.counts["rate_limited"] += 1
            return
        try:
            event_id = self.capture(report, decision, client)
        except Exception:
            self.counts["failed"] += 1
            self.breaker.failure()
            raise  # logged on slowwatch.internal, once a minute
        self.breaker.success()
        self.counts["sent" if event_id else "dropped"] += 1

    def capture(self, report: Report, decision: Decision, client: Any) -> str | None:
        """Capture on scopes of its own; the event id, or None when the SDK dropped it."""
        event = build_event(report, decision, Collection(client), client.options)
        # Fresh scopes, not forks: the reporter thread may have inherited a
        # request's scopes (the threading integration copies them into new
        # threads), with that request's tags, user and request data.
        with (
            use_isolation_scope(Scope(ty=ScopeType.ISOLATION)),
            use_scope(Scope(ty=ScopeType.CURRENT)) as scope,
        ):
            if report.profile is not None:
                profile = speedscope(report.profile, f"{report.method} {report.where()}")
                scope.add_attachment(
                    bytes=json.dumps(profile).encode(),
                    filename=f"slowwatch-{report.id}.speedscope.json",
                    content_type="application/json",
                )
            return scope.capture_event(cast("Event", event), hint={"slowwatch_report": report})
