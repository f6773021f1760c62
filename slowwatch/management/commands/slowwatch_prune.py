"""``manage.py slowwatch_prune``: apply the retention limits now."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from slowwatch.conf import settings
from slowwatch.retention import prune


class Command(BaseCommand):
    help = (
        "Delete stored slow requests older than --older-than days and all but the newest "
        "--keep rows (defaults: SLOWWATCH['RETENTION'])."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=float, metavar="DAYS")
        parser.add_argument("--keep", type=int, metavar="N")
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")
        parser.add_argument("--database", help="Defaults to SLOWWATCH['DATABASE_ALIAS'].")

    def handle(self, *args: Any, **options: Any) -> None:
        days, rows = settings.retention
        if options["older_than"] is not None:
            days = options["older_than"]
        if options["keep"] is not None:
            rows = options["keep"]
        if days is not None and days < 0:
            raise CommandError("--older-than must be 0 or more days.")
        if rows is not None and rows < 0:
            raise CommandError("--keep must be 0 or more.")
        using = options["database"] or settings.database_alias
        found = prune(days, rows, using=using, dry_run=options["dry_run"])
        verb = "Would delete" if options["dry_run"] else "Deleted"
        self.stdout.write(
            f"{verb} {found.total} slow request(s): {found.too_old} older than "
            f"{'-' if days is None else f'{days:g}'} days, {found.too_many} beyond the newest "
            f"{'-' if rows is None else rows}."
        )
