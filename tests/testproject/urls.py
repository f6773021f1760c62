from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path

from slowwatch.views import metrics
from testproject import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics/", metrics, name="metrics"),
    path("django-prometheus/", include("django_prometheus.urls")),
    path("fast/", views.fast, name="fast"),
    path("sleep/", views.sleep, name="sleep"),
    path("other-sleep/", views.sleep, name="other-sleep"),
    path("cpu/", views.cpu, name="cpu"),
    path("deep/<int:depth>/", views.deep, name="deep"),
    path("boom/", views.boom, name="boom"),
    path("phases/", views.phases, name="phases"),
    path("locked/", views.locked, name="locked"),
    path("slow-sql/", views.slow_sql, name="slow-sql"),
    path("n-plus-one/", views.n_plus_one, name="n-plus-one"),
    path("pg-sleep/", views.pg_sleep, name="pg-sleep"),
    path("with-locals/", views.with_locals, name="with-locals"),
    path("whoami/", views.whoami, name="whoami"),
    path("sign-in/", views.sign_in, name="sign-in"),
    path("holds-secrets/", views.holds_secrets, name="holds-secrets"),
    path("holds-every-secret/", views.holds_every_secret, name="holds-every-secret"),
    # Any path at all, slow: attacker-chosen paths reach the reports.
    re_path(r"^anything/", views.sleep, name="anything"),
    path("exempt/", views.exempt, name="exempt"),
    path("patient/", views.patient, name="patient"),
    path("impatient/", views.impatient, name="impatient"),
    path("exempt-class/", views.ExemptView.as_view(), name="exempt-class"),
    path("exempt-dispatch/", views.ExemptDispatchView.as_view(), name="exempt-dispatch"),
    path("class/", views.SleepView.as_view(), name="class"),
    path("async-sleep/", views.async_sleep, name="async-sleep"),
    path("async-exempt/", views.async_exempt, name="async-exempt"),
    path("counters/", views.counters, name="counters"),
    path("queries-around-sleep/", views.queries_around_sleep, name="queries-around-sleep"),
    path("never-yields/", views.never_yields, name="never-yields"),
    path("stream/", views.stream, name="stream"),
    path("awaits-sync-work/", views.awaits_sync_work),
    path("awaits-orm/", views.awaits_orm),
    path("blocks-loop/", views.blocks_loop),
    path("spins-loop/", views.spins_loop),
    path("async-deep/<int:depth>/", views.async_deep),
    path("astream/", views.astream),
]
