"""slowwatch's pages without Django's admin (see :mod:`slowwatch.pages`)::

path("slowwatch/", include("slowwatch.urls")),
"""

from __future__ import annotations

from django.urls import path

from slowwatch import pages

app_name = "slowwatch"

urlpatterns = [
    path("", pages.request_list, name="requests"),
    path("<int:pk>/", pages.request_detail, name="request"),
    path("<int:pk>/speedscope/", pages.profile_download, {"fmt": "speedscope"}, name="speedscope"),
    path("<int:pk>/collapsed/", pages.profile_download, {"fmt": "collapsed"}, name="collapsed"),
    path("endpoints/", pages.endpoint_summary, name="endpoints"),
    path("settings/", pages.settings_page, name="settings"),
]
