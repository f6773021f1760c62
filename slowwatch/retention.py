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


#: Rows looked at per round of :func:`close_orphans`.
ORPHANS_PER_ROUND = 500


def process_alive(pid: int | None, started_at: float) -> bool:
    """Whether the process ``pid`` of this host is the one that began a request
    at ``started_at`` (a POSIX timestamp): alive, and not a later process that
    was given the same pid. When it cannot tell, it says alive."""
    import psutil

    if pid is None:
        return True
    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # not ours to look at
        return True
    return bool(created <= started_at + 1.0)


def close_orphans(hostname: str, *, using: str = "default", now: float | None = None) -> int:
    """Close the still-running rows of this host whose process is gone.

    A worker killed without a word (SIGKILL from uWSGI's harakiri or the OOM
    killer) leaves its requests' rows ``slow`` for good. Their state becomes
    ``lost``, with what was known kept: the stack, the samples and the duration
    of their last report. Returns how many rows were closed.
    """
    import time

    from slowwatch.models import SlowRequest

    rows = SlowRequest._default_manager.db_manager(using)
    running = rows.filter(state="slow", hostname=hostname).order_by()
    candidates = running.values_list("pk", "pid", "started_at")[:ORPHANS_PER_ROUND]
    gone = [pk for pk, pid, started in candidates if not process_alive(pid, started.timestamp())]
    closed = 0
    when = time.time() if now is None else now
    for found in rows.filter(pk__in=gone, state="slow").values(
        "pk", "pid", "duration", "timeline", "extra"
    ):
        timeline = [*found["timeline"], {"kind": "lost", "at": when, "elapsed": found["duration"]}]
        extra = {
            **(found["extra"] or {}),
            "lost": {"reason": "process_gone", "detail": f"process {found['pid']} is gone"},
        }
        closed += rows.filter(pk=found["pk"], state="slow").update(
            state="lost", timeline=timeline, extra=extra
        )
    return closed
