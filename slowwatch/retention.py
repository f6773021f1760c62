"""Keeping the table small: delete rows past a maximum age or beyond a maximum count.

Called by :class:`~slowwatch.reporters.DatabaseReporter` (on the reporter
thread, at most once an hour), by ``manage.py slowwatch_prune`` and by the
admin's purge action; never on a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from slowwatch.models import SlowRequest

#: Rows deleted per statement, so a big purge never holds a long lock.
BATCH = 5000


@dataclass(frozen=True)
class Pruned:
    too_old: int
    too_many: int

    @property
    def total(self) -> int:
        return self.too_old + self.too_many


def prune(
    max_age_days: float | None,
    max_rows: int | None,
    *,
    using: str = "default",
    dry_run: bool = False,
) -> Pruned:
    """Delete rows older than ``max_age_days`` and all but the newest ``max_rows``."""
    from slowwatch.models import SlowRequest

    rows = SlowRequest._default_manager.db_manager(using)
    too_old = rows.none()
    if max_age_days is not None:
        too_old = rows.filter(started_at__lt=timezone.now() - timedelta(days=max_age_days))
    old = too_old.count()
    extra = 0
    beyond = None
    if max_rows is not None:
        kept = rows.exclude(pk__in=too_old.values("pk")) if old else rows.all()
        newest = kept.order_by("-started_at", "-pk").values_list("started_at", "pk")
        cutoff = next(iter(newest[max_rows : max_rows + 1]), None)
        if cutoff is not None:
            # That row and every row after it in the admin's order.
            when, pk = cutoff
            beyond = kept.filter(Q(started_at__lt=when) | Q(started_at=when, pk__lte=pk))
            extra = beyond.count()
    if dry_run:
        return Pruned(old, extra)
    if old:
        _delete(too_old, using)
    if beyond is not None:
        _delete(beyond, using)
    return Pruned(old, extra)


def _delete(queryset: QuerySet[SlowRequest], using: str) -> None:
    while True:
        with transaction.atomic(using=using):
            batch = list(queryset.values_list("pk", flat=True)[:BATCH])
            if not batch:
                return
            queryset.model._default_manager.db_manager(using).filter(pk__in=batch).delete()
