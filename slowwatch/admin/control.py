"""The settings page: the effective configuration, this worker's counters, and the switch.

A superuser can pause watching or override the global threshold. The choice
is stored in the :class:`~slowwatch.models.Control` row; every worker's
monitor has its reporter thread re-read that row every ``PERIOD`` seconds and
applies it to its middleware, so nothing is read on the request path.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import HttpRequest

from slowwatch import runtime
from slowwatch.conf import settings
from slowwatch.models import Control
from slowwatch.sampler import HOUSEKEEPING_PERIOD

PERIOD = HOUSEKEEPING_PERIOD


class ControlForm(forms.Form):
    paused = forms.BooleanField(
        required=False,
        label="Pause watching",
        help_text="No request is watched (nor reported) while paused.",
    )
    threshold = forms.FloatField(
        required=False,
        min_value=0.001,
        max_value=86_400,
        label="Threshold override (seconds)",
        help_text="Empty: SLOWWATCH['THRESHOLD'] applies. Per-URL thresholds still apply.",
    )


def initial() -> dict[str, Any]:
    row = Control._default_manager.using(settings.database_alias).filter(pk=1).first()
    return {"paused": row.paused, "threshold": row.threshold} if row else {}


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
    runtime.refresh_control()


def describe() -> dict[str, Any]:
    """What the page shows besides the form."""
    row = Control._default_manager.using(settings.database_alias).filter(pk=1).first()
    queue = runtime._dispatcher
    counters: dict[str, int] = {}
    if queue is not None:
        counters.update({f"queue {k}": v for k, v in sorted(queue.counts.items())})
    for reporter in runtime._reporters or ():
        for key, value in sorted(getattr(reporter, "counts", {}).items()):
            counters[f"{type(reporter).__name__} {key}"] = value
    counters.update({f"internal error: {k}": v for k, v in sorted(runtime.errors.counts.items())})
    return {
        "control": row,
        "applied": runtime.control,
        "configuration": sorted(settings.values.items()),
        "counters": sorted(counters.items()),
        "period": PERIOD,
    }
