"""Per-view rules: ``@slowwatch_threshold(seconds)`` and ``@slowwatch_exempt``.

They work on function views (sync or async), on class-based views (decorate
the class) and through ``method_decorator(..., name="dispatch")``. A decorated
view wins over ``SLOWWATCH["THRESHOLDS"]`` and ``SLOWWATCH["IGNORE"]``: the rule
is applied when the view is called, after the URL rules. Only decorated views
pay for it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured

from slowwatch.conf import EXEMPT, MIN_THRESHOLD, threshold_seconds
from slowwatch.middleware import apply_rule

__all__ = ["slowwatch_exempt", "slowwatch_threshold"]

V = TypeVar("V", bound=Callable[..., Any])


def _wrap_view(view: V, rule: float | str) -> V:
    if isinstance(view, type):
        # A class-based view: wrap its dispatch, which every request goes through.
        dispatch = view.dispatch  # type: ignore[attr-defined]

        @functools.wraps(dispatch)
        def wrapped_dispatch(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            apply_rule(request, rule)
            return dispatch(self, request, *args, **kwargs)

        view.dispatch = wrapped_dispatch  # type: ignore[attr-defined]
        view.slowwatch_rule = rule  # type: ignore[attr-defined]
        return view

    if iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
            apply_rule(request, rule)
            return await view(request, *args, **kwargs)

        wrapper: Any = async_wrapper
    else:

        @functools.wraps(view)
        def sync_wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
            apply_rule(request, rule)
            return view(request, *args, **kwargs)

        wrapper = sync_wrapper
    wrapper.slowwatch_rule = rule
    return cast(V, wrapper)


def slowwatch_threshold(seconds: float) -> Callable[[V], V]:
    """Report this view when it runs longer than ``seconds``."""
    value = threshold_seconds(seconds)
    if value is None:
        raise ImproperlyConfigured(
            f"slowwatch_threshold() needs a number of seconds, at least {MIN_THRESHOLD:g}, "
            f"not {seconds!r}."
        )

    def decorator(view: V) -> V:
        return _wrap_view(view, value)

    return decorator


def slowwatch_exempt(view: V) -> V:
    """Never watch this view (long polls, streaming, file exports...)."""
    return _wrap_view(view, EXEMPT)
