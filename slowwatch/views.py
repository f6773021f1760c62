"""A Prometheus scrape endpoint, for projects that do not export metrics already.

Route it yourself, behind whatever protects your internal endpoints::

    from slowwatch.views import metrics
    urlpatterns += [path("metrics/", metrics)]

With ``PROMETHEUS_MULTIPROC_DIR`` set (several gunicorn workers), it adds up
every worker's figures, as prometheus-client's multiprocess mode prescribes.
django-prometheus users need none of this: its ``/metrics`` exports them.
"""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse

__all__ = ["metrics"]


def metrics(request: HttpRequest) -> HttpResponse:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
