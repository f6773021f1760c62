"""slowwatch's pages as plain views, for projects without Django's admin.

Mount them where your internal pages live::

    path("slowwatch/", include("slowwatch.urls")),

They are the admin's pages (the list of slow requests, a request's page with
its flame graph, the endpoint summary, the settings page) without
``django.contrib.admin`` and without ``is_staff``: a signed-in user needs the
``slowwatch.view_slowrequest`` permission (a superuser has it), and only a
superuser changes the runtime control. Anyone else signed in gets 403; anyone
signed out is sent to ``LOGIN_URL``. The pages are read-only: rows are deleted
by retention (``RETENTION``, ``manage.py slowwatch_prune``) or in the admin.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods

from slowwatch.admin import control, detail, summary
from slowwatch.conf import settings
from slowwatch.models import SlowRequest

__all__ = [
    "endpoint_summary",
    "profile_download",
    "request_detail",
    "request_list",
    "settings_page",
]

#: Rows per page of the list.
PER_PAGE = 50
#: The list's filters: query parameter -> field.
FILTERS = {"route": "route", "method": "method", "view": "view", "state": "state"}

View = Callable[..., HttpResponseBase]


def permitted(view: View) -> View:
    """Signed in with ``slowwatch.view_slowrequest``, or 403 (signed out: the login page)."""

    @wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not user.has_perm("slowwatch.view_slowrequest"):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return checked


def _rows() -> QuerySet[SlowRequest]:
    rows = SlowRequest._default_manager.using(settings.database_alias)
    return cast("QuerySet[SlowRequest]", rows)


def _row(pk: int) -> SlowRequest:
    found = _rows().filter(pk=pk).first()
    if found is None:
        raise Http404("No such slow request.")
    return cast(SlowRequest, found)


def requests_url(route: str, method: str) -> str:
    return f"{reverse('slowwatch:requests')}?{urlencode({'route': route, 'method': method})}"


def _page(request: HttpRequest, template: str, title: str, **context: Any) -> TemplateResponse:
    return TemplateResponse(
        request,
        f"slowwatch/pages/{template}",
        {"title": title, "can_change": request.user.is_superuser, **context},
    )


@permitted
@require_http_methods(["GET", "HEAD"])
def request_list(request: HttpRequest) -> HttpResponse:
    rows = _rows().order_by("-started_at", "-pk")
    shown: dict[str, str | int] = {}
    for param, field in FILTERS.items():
        value = request.GET.get(param)
        if value is not None:
            rows = rows.filter(**{field: value})
            shown[param] = value
    search = request.GET.get("q", "").strip()
    if search:
        rows = rows.filter(path__icontains=search)
        shown["q"] = search
    try:
        page = max(1, int(request.GET.get("page", "1")))
    except ValueError:
        page = 1
    # No COUNT(*) over a big table: one row more than a page says if there is a next.
    found = list(rows[(page - 1) * PER_PAGE : page * PER_PAGE + 1])
    return _page(
        request,
        "list.html",
        "Slow requests",
        # The verdict's largest share ("80% in the database"), as the admin list shows it.
        rows=[(row, row.verdict.split(", ", 1)[0] or "–") for row in found[:PER_PAGE]],
        filters=shown,
        search=search,
        previous_page=urlencode({**shown, "page": page - 1}) if page > 1 else "",
        next_page=urlencode({**shown, "page": page + 1}) if len(found) > PER_PAGE else "",
    )


@permitted
@require_http_methods(["GET", "HEAD"])
def request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    obj = _row(pk)
    return _page(
        request,
        "detail.html",
        f"{obj.method} {obj.path[:120]}",
        original=obj,
        **detail.context(obj, every_frame=request.GET.get("frames") == "all"),
        speedscope_url=reverse("slowwatch:speedscope", args=[obj.pk]),
        collapsed_url=reverse("slowwatch:collapsed", args=[obj.pk]),
        requests_url=requests_url(obj.route, obj.method),
    )


@permitted
@require_http_methods(["GET", "HEAD"])
def profile_download(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    return detail.download(_row(pk), fmt)


@permitted
@require_http_methods(["GET", "HEAD"])
def endpoint_summary(request: HttpRequest) -> HttpResponse:
    context = summary.page_context(_rows(), request.GET.get("window"), requests_url)
    return _page(request, "summary.html", "Slow endpoints", **context)


@permitted
@require_http_methods(["GET", "HEAD", "POST"])
def settings_page(request: HttpRequest) -> HttpResponseBase:
    if request.method == "POST":
        form = control.posted(request)
        if form is None:
            return redirect(f"{reverse('slowwatch:settings')}?saved=1")
    else:
        form = control.ControlForm(initial=control.initial())
    return _page(
        request,
        "settings.html",
        "slowwatch settings",
        form=form,
        saved=request.GET.get("saved") == "1",
        period_text=f"{control.PERIOD:g}",
        **control.page_context(),
    )
