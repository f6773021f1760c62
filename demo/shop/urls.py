from __future__ import annotations

from django.contrib import admin
from django.contrib.staticfiles.views import serve
from django.urls import path, re_path

from shop import views

urlpatterns = [
    path("admin/", admin.site.urls),
    # The demo serves the admin's CSS itself; a real site uses whitenoise or its web server.
    re_path(r"^static/(?P<path>.*)$", serve, {"insecure": True}),
    path("", views.index, name="index"),
    path("health/", views.health, name="health"),
    path("orders/", views.orders, name="orders"),
    path("report/", views.report, name="report"),
    path("recommendations/", views.recommendations, name="recommendations"),
    path("export/", views.export, name="export"),
]
