"""A reporter of your own: one JSON line per transition, appended to a file.

List it in ``SLOWWATCH["REPORTERS"]`` by its dotted path, for instance
``"myproject.reporters.JsonLinesReporter"``, and set ``SLOWWATCH_JSONL_PATH``
in your settings.
"""

from __future__ import annotations

import json
import threading

from django.conf import settings

from slowwatch.render import summary
from slowwatch.report import Report
from slowwatch.reporters import Reporter


class JsonLinesReporter(Reporter):
    def __init__(self) -> None:
        # Made once per process, on the reporter thread, before the first report.
        self.path = settings.SLOWWATCH_JSONL_PATH
        self.lock = threading.Lock()

    def handle(self, report: Report) -> None:
        # On slowwatch's reporter thread: a slow write here delays the reports
        # behind it, never a request. An exception is logged and counted.
        line = {"summary": summary(report), **report.to_dict()}
        with self.lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
