"""EmailReporter: a mail when a request turns slow, that says why in its first lines.

Quiet by design: one mail per endpoint per ``WINDOW`` and ``PER_HOUR`` mails in
all (across every worker when the cache is shared), and the next mail that goes
out counts what was held back. Sent through Django's email backend with a
timeout of its own; a mail server that keeps failing is left alone for a while
(a circuit breaker) rather than tried for every report.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

from django.conf import settings as django_settings
from django.core.cache import caches
from django.core.cache.backends.dummy import DummyCache
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMultiAlternatives, get_connection
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse

from slowwatch import render
from slowwatch.alerting import CircuitBreaker, Decision, RateLimit
from slowwatch.conf import settings
from slowwatch.core.errors import errors
from slowwatch.render import headline
from slowwatch.report import Report
from slowwatch.reporters.base import Reporter

__all__ = ["EmailReporter"]


#: Longest subject line, prefix included.
SUBJECT_MAX = 200
_TITLES = {"slow": "Slow request", "still_slow": "Still slow", "killed": "Killed"}


def endpoint(report: Report) -> str:
    return f"{report.method} {report.where()}"


def shared_cache_alias(alias: str | None) -> str | None:
    """The cache for rate limits; None (this process) when it is Django's dummy cache."""
    if alias is None:
        return None
    return None if isinstance(caches[alias], DummyCache) else alias


def _recipients(configured: list[str] | None) -> list[str]:
    if configured is not None:
        return list(configured)
    found = []
    for admin in getattr(django_settings, "ADMINS", []) or []:
        # (name, address) pairs, or plain addresses (Django 6.0).
        found.append(admin[1] if isinstance(admin, (list, tuple)) else str(admin))
    return found


def admin_link(report: Report) -> str:
    """An absolute link to the stored record, when a trustworthy base URL is known."""
    try:
        path = reverse("admin:slowwatch_by_request_id", args=[report.id])
    except NoReverseMatch:
        return ""
    base = settings.admin_url_base
    if base is None:
        # The request's Host header is attacker-controlled: only a host that is
        # named (not matched by a wildcard) in ALLOWED_HOSTS makes a link.
        host = report.host.lower()
        if not host or host not in [h.lower() for h in django_settings.ALLOWED_HOSTS]:
            return ""
        local = host.split(":")[0] in ("localhost", "127.0.0.1", "[::1]")
        base = f"{'http' if local else 'https'}://{host}"
    return base + path


class EmailReporter(Reporter):
    """Mails ``slow`` and ``killed`` requests (``SLOWWATCH["EMAIL"]``; see docs/alerts.rst)."""

    def __init__(self) -> None:
        conf = settings.email
        self.to = _recipients(conf["TO"])
        if not self.to:
            raise ImproperlyConfigured(
                "EmailReporter has no recipients: set SLOWWATCH['EMAIL']['TO'] or ADMINS."
            )
        self.sender = conf["FROM"] or django_settings.SERVER_EMAIL
        prefix = conf["SUBJECT_PREFIX"]
        self.prefix = django_settings.EMAIL_SUBJECT_PREFIX if prefix is None else prefix
        self.kinds = frozenset(conf["KINDS"])
        self.timeout = float(conf["TIMEOUT"])
        self.limit = RateLimit(
            "email",
            window=float(conf["WINDOW"]),
            per_hour=int(conf["PER_HOUR"]),
            cache_alias=shared_cache_alias(settings.cache_alias),
            errors=errors,
        )
        self.breaker = CircuitBreaker()
        #: sent, held back (rate_limited), skipped (circuit_open), failed.
        self.counts: Counter[str] = Counter()

    def handle(self, report: Report) -> None:
        if report.kind not in self.kinds:
            return
        if not self.breaker.allow():
            self.counts["circuit_open"] += 1
            return
        decision = self.limit.check(endpoint(report))
        if not decision.allowed:
            self.counts["rate_limited"] += 1
            return
        message = self.message(report, decision)
        try:
            message.connection = get_connection(timeout=self.timeout)
            message.send()
        except Exception:
            self.counts["failed"] += 1
            self.breaker.failure()
            raise  # logged on slowwatch.internal, once a minute
        self.breaker.success()
        self.counts["sent"] += 1

    def subject(self, report: Report, decision: Decision) -> str:
        title = _TITLES.get(report.kind, "Slow request")
        verdict = report.verdict()
        detail = f"{report.elapsed:.1f} s" + (f", {verdict}" if verdict else "")
        more = f" (+{decision.suppressed} more)" if decision.suppressed else ""
        return headline(f"{self.prefix}{title}: {endpoint(report)} ({detail}){more}", SUBJECT_MAX)

    def message(self, report: Report, decision: Decision) -> EmailMultiAlternatives:
        context = self.context(report, decision)
        text = render_to_string("slowwatch/email.txt", context)
        html = render_to_string("slowwatch/email.html", context)
        message = EmailMultiAlternatives(
            self.subject(report, decision), text, self.sender, self.to
        )
        message.attach_alternative(html, "text/html")
        return message

    def context(self, report: Report, decision: Decision) -> dict[str, Any]:
        since = ""
        if decision.suppressed and decision.since is not None:
            when = datetime.fromtimestamp(decision.since, tz=timezone.utc)
            since = when.strftime("%Y-%m-%d %H:%M:%S UTC")
        return {
            "report": report,
            "summary": render.summary(report),
            "verdict": report.verdict(),
            "sql": render.sql_lines(report).strip("\n"),
            "hottest": render.hottest(report),
            "traceback": render.traceback(report, lambda value: headline(value, 500)),
            "endpoint": endpoint(report),
            "suppressed": decision.suppressed,
            "since": since,
            "link": admin_link(report),
            "process": render.process_line(report.process),
        }
