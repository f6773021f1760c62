"""slowwatch in Django's admin: the slow requests, their endpoints, and the switch.

Read-only: rows are written by :class:`~slowwatch.reporters.DatabaseReporter`.
Staff with the view permission on slow requests see everything; deleting (one
record, the selection, or every record of the selected endpoints) needs the
delete permission; pausing or re-timing the watchdog needs a superuser.
"""

from __future__ import annotations

from django.apps import apps
from django.contrib import admin

from slowwatch.admin.requests import SlowRequestAdmin
from slowwatch.models import SlowRequest

# The pages' parts (detail, summary, control) serve slowwatch.urls as well,
# in projects without Django's admin (admin.site does not exist there).
if apps.is_installed("django.contrib.admin"):
    admin.site.register(SlowRequest, SlowRequestAdmin)

__all__ = ["SlowRequestAdmin"]
