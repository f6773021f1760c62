from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class SlowBeforeRouting:
    """Sleeps ``?before=SECONDS`` before Django resolves the URL: a request
    that turns slow with no view known yet."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        before = request.GET.get("before")
        if before:
            time.sleep(float(before))
        return self.get_response(request)
