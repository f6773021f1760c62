"""The ModelAdmin of :class:`~slowwatch.models.SlowRequest` and its extra pages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.dateformat import format as date_format
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.timezone import localtime

from slowwatch.admin import control, detail, summary
from slowwatch.conf import settings
from slowwatch.models import SlowRequest

if TYPE_CHECKING:
    _Base = admin.ModelAdmin[SlowRequest]
else:  # ModelAdmin is generic for type checkers only
    _Base = admin.ModelAdmin


class SlowRequestAdmin(_Base):
    # The view comes last: it is long, and a filter and on the detail page too.
    list_display = [
        "started",
        "method",
        "short_path",
        "seconds",
        "state",
        "why",
        "outcome",
        "short_view",
    ]
    list_display_links = ["started", "short_path"]
    list_filter = ["state", "method", "view", "started_at"]
    date_hierarchy = "started_at"
    search_fields = ["path", "view", "=request_id"]
    ordering = ["-started_at"]
    list_per_page = 50
    # COUNT(*) over a big table on every page view is not worth it.
    show_full_result_count = False
    actions = ["purge_endpoints"]
    change_list_template = "admin/slowwatch/slowrequest/change_list.html"

    # -- read-only -------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[SlowRequest]:
        rows = super().get_queryset(request).using(settings.database_alias)
        return cast("QuerySet[SlowRequest]", rows)

    # -- columns ---------------------------------------------------------

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: SlowRequest) -> str:
        return date_format(localtime(obj.started_at), "Y-m-d H:i:s")

    @admin.display(description="path", ordering="path")
    def short_path(self, obj: SlowRequest) -> str:
        return obj.path if len(obj.path) <= 80 else obj.path[:79] + "…"

    @admin.display(description="duration", ordering="duration")
    def seconds(self, obj: SlowRequest) -> str:
        return f"{obj.duration:.2f} s"

    @admin.display(description="mostly", ordering="verdict")
    def why(self, obj: SlowRequest) -> str:
        # The largest share of the verdict ("80% in the database"); the whole
        # verdict is on the request's page.
        return obj.verdict.split(", ", 1)[0] if obj.verdict else "–"

    @admin.display(description="view", ordering="view")
    def short_view(self, obj: SlowRequest) -> str:
        # The function's own name and its module's last part keep the column
        # narrow; the full dotted path is the tooltip, and a filter.
        if not obj.view:
            return "–"
        short = ".".join(obj.view.rsplit(".", 2)[-2:])
        return format_html('<span title="{}">{}</span>', obj.view, short)

    @admin.display(description="status", ordering="status_code")
    def outcome(self, obj: SlowRequest) -> str:
        if obj.exception:
            return obj.exception
        return str(obj.status_code) if obj.status_code else "–"

    # -- actions ---------------------------------------------------------

    @admin.action(
        description="Purge every record of the selected requests' endpoints",
        permissions=["delete"],
    )
    def purge_endpoints(self, request: HttpRequest, queryset: QuerySet[SlowRequest]) -> None:
        endpoints = set(queryset.values_list("route", "method").distinct())
        rows = self.get_queryset(request)
        deleted = 0
        for route, method in endpoints:
            deleted += rows.filter(route=route, method=method).delete()[0]
        self.message_user(
            request,
            f"Deleted {deleted} slow request(s) of {len(endpoints)} endpoint(s).",
            messages.SUCCESS,
        )

    # -- pages -----------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        own = [
            path("summary/", wrap(self.summary_view), name="slowwatch_summary"),
            path("settings/", wrap(self.settings_view), name="slowwatch_settings"),
            path(
                "request/<str:request_id>/",
                wrap(self.by_request_id_view),
                name="slowwatch_by_request_id",
            ),
            path(
                "<path:object_id>/speedscope/",
                wrap(self.download_view),
                {"fmt": "speedscope"},
                name="slowwatch_speedscope",
            ),
            path(
                "<path:object_id>/collapsed/",
                wrap(self.download_view),
                {"fmt": "collapsed"},
                name="slowwatch_collapsed",
            ),
        ]
        return own + super().get_urls()

    def _require_view(self, request: HttpRequest, obj: Any = None) -> None:
        if not self.has_view_permission(request, obj):
            raise PermissionDenied

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "has_view_permission": True,
            **extra,
        }

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The detail page (there is nothing to change)."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404("No such slow request.")
        self._require_view(request, obj)
        context = self._context(
            request,
            f"{obj.method} {obj.path[:120]}",
            original=obj,
            object_id=obj.pk,
            **detail.context(obj, every_frame=request.GET.get("frames") == "all"),
            has_delete_permission=self.has_delete_permission(request, obj),
            delete_url=(
                reverse("admin:slowwatch_slowrequest_delete", args=[obj.pk])
                if self.has_delete_permission(request, obj)
                else ""
            ),
            speedscope_url=reverse("admin:slowwatch_speedscope", args=[obj.pk]),
            collapsed_url=reverse("admin:slowwatch_collapsed", args=[obj.pk]),
            requests_url=_requests_url(obj.route, obj.method),
            **(extra_context or {}),
        )
        return TemplateResponse(request, "admin/slowwatch/slowrequest/detail.html", context)

    def by_request_id_view(self, request: HttpRequest, request_id: str) -> HttpResponseBase:
        """Where alerts link to: they know the report id, not the row's pk."""
        self._require_view(request)
        row = self.get_queryset(request).filter(request_id=request_id).first()
        if row is None:
            raise Http404("No such slow request (yet, or any more).")
        return HttpResponseRedirect(reverse("admin:slowwatch_slowrequest_change", args=[row.pk]))

    def download_view(self, request: HttpRequest, object_id: str, fmt: str) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404("No such slow request.")
        self._require_view(request, obj)
        return detail.download(obj, fmt)

    def summary_view(self, request: HttpRequest) -> TemplateResponse:
        self._require_view(request)
        context = self._context(
            request,
            "Slow endpoints",
            **summary.page_context(
                self.get_queryset(request), request.GET.get("window"), _requests_url
            ),
        )
        return TemplateResponse(request, "admin/slowwatch/slowrequest/summary.html", context)

    def settings_view(self, request: HttpRequest) -> HttpResponseBase:
        self._require_view(request)
        if request.method == "POST":
            form = control.posted(request)
            if form is None:
                self.message_user(
                    request,
                    "Saved. Every worker applies it within about "
                    f"{control.PERIOD:g} seconds (this one already has).",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(request.path)
        else:
            form = control.ControlForm(initial=control.initial())
        context = self._context(
            request,
            "slowwatch settings",
            form=form,
            can_change=request.user.is_superuser,
            **control.page_context(),
        )
        return TemplateResponse(request, "admin/slowwatch/slowrequest/settings.html", context)


def _requests_url(route: str, method: str) -> str:
    base = reverse("admin:slowwatch_slowrequest_changelist")
    return f"{base}?{urlencode({'route': route, 'method': method})}"
