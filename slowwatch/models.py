"""What slowwatch keeps in the database: one row per slow request, and the switch.

Rows are written by :class:`~slowwatch.reporters.DatabaseReporter` on the
reporter thread and read by the admin. Every text column holds data taken
from a request (paths, SQL, stack text): attacker-influenced, so it is only
ever shown through Django's autoescaping.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

__all__ = ["Control", "SlowRequest"]


class SlowRequest(models.Model):
    class State(models.TextChoices):
        SLOW = "slow", _("still running")
        FINISHED = "finished", _("finished")
        KILLED = "killed", _("killed")
        LOST = "lost", _("lost")

    request_id = models.CharField(_("request id"), max_length=32, unique=True)
    state = models.CharField(_("state"), max_length=10, choices=State.choices)
    method = models.CharField(_("method"), max_length=16)
    #: The path with its query string, secrets redacted.
    path = models.TextField(_("path"))
    route = models.CharField(_("route"), max_length=255, blank=True)
    view = models.CharField(_("view"), max_length=255, blank=True)
    host = models.CharField(_("host"), max_length=255, blank=True)
    hostname = models.CharField(_("server"), max_length=255, blank=True)
    pid = models.IntegerField(_("pid"), null=True)
    thread = models.CharField(_("thread"), max_length=255, blank=True)
    #: The pk of the user, only when the request had already loaded it.
    user_id = models.CharField(_("user id"), max_length=64, blank=True)

    started_at = models.DateTimeField(_("started"))
    detected_at = models.DateTimeField(_("reported slow"), null=True)
    finished_at = models.DateTimeField(_("ended"), null=True)
    threshold = models.FloatField(_("threshold (s)"))
    #: Seconds: so far while ``slow``, in all once it ended.
    duration = models.FloatField(_("duration (s)"))
    status_code = models.PositiveSmallIntegerField(_("status"), null=True)
    exception = models.CharField(_("exception"), max_length=255, blank=True)

    cpu_time = models.FloatField(_("CPU time (s)"), null=True)
    cpu_share = models.FloatField(_("on CPU"), null=True)
    db_share = models.FloatField(_("in the database"), null=True)
    wait_share = models.FloatField(_("waiting otherwise"), null=True)
    verdict = models.CharField(_("verdict"), max_length=255, blank=True)
    #: Samples by state (cpu, db, io, sleep, lock, gil, other).
    states = models.JSONField(_("samples by state"), default=dict)

    sql_count = models.PositiveIntegerField(_("queries"), null=True)
    sql_time = models.FloatField(_("SQL time (s)"), null=True)
    sql_in_flight = models.TextField(_("query in flight"), blank=True)
    sql = models.JSONField(_("SQL"), default=dict)
    process = models.JSONField(_("process figures"), default=dict)
    #: ``{"frames": [...], "hidden": n, "truncated": n}`` of the first snapshot.
    stack = models.JSONField(_("stack"), default=dict)
    profile = models.JSONField(_("profile"), null=True)
    #: ``[{"kind", "at", "elapsed"}, ...]``: every transition received.
    timeline = models.JSONField(_("timeline"), default=list)
    extra = models.JSONField(_("extra"), default=dict)

    class Meta:
        verbose_name = _("slow request")
        verbose_name_plural = _("slow requests")
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["-started_at"], name="slowwatch_started"),
            # Covers the endpoint summary: it never reads the (large) rows.
            models.Index(
                fields=[
                    "route",
                    "method",
                    "started_at",
                    "duration",
                    "cpu_share",
                    "db_share",
                    "wait_share",
                ],
                name="slowwatch_endpoints",
            ),
            models.Index(fields=["state", "started_at"], name="slowwatch_state"),
            models.Index(fields=["view", "started_at"], name="slowwatch_view"),
            models.Index(fields=["duration"], name="slowwatch_duration"),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.path[:80]} ({self.duration:.1f} s)"

    @property
    def endpoint(self) -> str:
        return self.route or self.view or "(unresolved)"


class Control(models.Model):
    """The one row of runtime control: what the admin's settings page changes.

    Every worker reads it every ``slowwatch.control.PERIOD`` seconds on a thread
    of its own and applies it to its middleware; the request path never
    queries it.
    """

    paused = models.BooleanField(_("paused"), default=False)
    threshold = models.FloatField(_("threshold override (s)"), null=True, blank=True)
    changed_at = models.DateTimeField(_("changed"), auto_now=True)
    changed_by = models.CharField(_("changed by"), max_length=150, blank=True)

    class Meta:
        verbose_name = _("runtime control")
        verbose_name_plural = _("runtime control")
        default_permissions = ()

    def __str__(self) -> str:
        return "paused" if self.paused else f"threshold {self.threshold or 'from settings'}"
