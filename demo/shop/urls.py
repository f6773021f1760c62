from __future__ import annotations

from django.urls import path

from shop import views

urlpatterns = [
    path("", views.index, name="index"),
    path("health/", views.health, name="health"),
    path("orders/", views.orders, name="orders"),
    path("report/", views.report, name="report"),
    path("recommendations/", views.recommendations, name="recommendations"),
    path("export/", views.export, name="export"),
]
