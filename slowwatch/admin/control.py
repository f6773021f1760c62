"""The settings page: the effective configuration, this worker's counters, and the switch.

A superuser can pause watching or override the global threshold. The choice
is stored in the :class:`~slowwatch.models.Control` row, which every worker
re-reads every ``PERIOD`` seconds on a thread of its own and applies to its
middleware (:mod:`slowwatch.control`), so nothing is read on the request path.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from django import forms
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from slowwatch import control, fleet, runtime
from slowwatch.conf import MIN_THRESHOLD, settings
from slowwatch.models import Control

PERIOD = control.PERIOD


class ControlForm(forms.Form):
    paused = forms.BooleanField(
        required=False,
        label="Pause watching",
        help_text="No request is watched (nor reported) while paused.",
    )
    threshold = forms.FloatField(
        required=False,
        min_value=MIN_THRESHOLD,
        max_value=86_400,
        label="Threshold override (seconds)",
        help_text="Empty: SLOWWATCH['THRESHOLD'] applies. Per-URL thresholds still apply.",
    )


def initial() -> dict[str, Any]:
    # What this worker applies, as its control thread last read it: the page
    # reads nothing from a database that may be the one in trouble.
    state = control.current()
    return {"paused": state.paused, "threshold": state.threshold}


def posted(request: HttpRequest) -> ControlForm | None:
    """A POST of the settings form: None once saved, else the form with its errors.
    Only a superuser changes the control."""
    if not request.user.is_superuser:
        raise PermissionDenied
    form = ControlForm(request.POST)
    if not form.is_valid():
        return form
    save(form, request)
    return None


def save(form: ControlForm, request: HttpRequest) -> None:
    user = request.user
    Control._default_manager.using(settings.database_alias).update_or_create(
        pk=1,
        defaults={
            "paused": form.cleaned_data["paused"],
            "threshold": form.cleaned_data["threshold"],
            "changed_by": user.get_username() if user.is_authenticated else "",
        },
    )
    # This worker at once; the others at their next refresh.
    control.refresh()


#: What each counter says, for the settings page.
QUEUE_WORDS = {
    "submitted": "reports taken into the queue",
    "delivered": "reports handed over",
    "failed": "reports whose hand-over raised (logged on slowwatch.internal)",
    "restarted": "times the queue's thread had died and was started again",
    "dropped:queue_full": "reports dropped: the queue was full",
    "dropped:shutdown": "reports dropped: the process was stopping",
    "dropped:monitor_late": (
        "slow requests that ended before the monitor, held up, took their stack"
    ),
}
REPORTER_WORDS = {
    "saved": "rows written",
    "dropped": "reports not stored after the retries",
    "dropped:not_migrated": "reports not stored: the table is missing (run migrate)",
    "sent": "alerts sent",
    "failed": "alerts or files that failed",
    "rate_limited": "alerts held back by the limits (counted in the next one)",
    "circuit_open": "alerts skipped while the server kept failing",
    "no_client": "events with no Sentry client to send them",
    "written": "files written",
    "pruned": "old files removed",
}


def meaning(key: str) -> str:
    """What the counter ``key`` of :func:`slowwatch.runtime.counters` counts."""
    if key.startswith("internal error: "):
        return "errors inside slowwatch there, each logged once a minute on slowwatch.internal"
    if key == "internal log lost":
        return "lines slowwatch.internal could not keep (its own queue was full)"
    owner, _, what = key.partition("queue ")
    if what:
        words = QUEUE_WORDS.get(what, what)
        if not owner:
            return f"All reports, before the reporters: {words}."
        return f"{owner.strip()}'s own queue: {words}."
    name, _, what = key.partition(" ")
    return f"{name}: {REPORTER_WORDS.get(what, what)}."


def page_context() -> dict[str, Any]:
    """What the page shows besides the form."""
    state = control.current()
    return {
        "changed_at": (
            datetime.fromtimestamp(state.changed_at, tz=timezone.utc)
            if state.changed_at is not None
            else None
        ),
        "applied": state,
        "configuration": sorted(settings.values.items()),
        "counters": [
            (key, value, meaning(key)) for key, value in sorted(runtime.counters().items())
        ],
        "period": PERIOD,
        "pid": os.getpid(),
        "workers": fleet.read(),
        "shared_cache": fleet.shared() is not None,
    }
