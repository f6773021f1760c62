from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse


class SlowBeforeRouting:
    """Sleeps ``?before=SECONDS`` before Django resolves the URL: a request
    that turns slow with no view known yet. Sync and async capable, so that
    it leaves ASGI requests on the event loop."""

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponse]
        | Callable[[HttpRequest], Awaitable[HttpResponse]],
    ) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self._acall(request)
        before = request.GET.get("before")
        if before:
            time.sleep(float(before))
        return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        before = request.GET.get("before")
        if before:
            await asyncio.sleep(float(before))
        return await self.get_response(request)  # type: ignore[no-any-return, misc]
