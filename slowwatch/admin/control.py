"""The settings page: the effective configuration, this worker's counters, and the switch.

A superuser can pause watching or override the global threshold. The choice
is stored in the :class:`~slowwatch.models.Control` row, which every worker
re-reads every ``PERIOD`` seconds on a thread of its own and applies to its
middleware (:mod:`slowwatch.control`), so nothing is read on the request path.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from django import forms
from django.http import HttpRequest

from slowwatch import control, runtime
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
        "counters": sorted(runtime.counters().items()),
        "period": PERIOD,
    }
