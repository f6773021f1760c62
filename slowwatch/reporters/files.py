"""FileReporter: one text file per slow request, written atomically into a directory.

For projects that read reports from disk, as dogslow wrote them. Each file is
written under a temporary name and renamed into place, so a reader never sees
half a report. The directory stays bounded: past ``max_files`` reports, the
oldest files this reporter named are deleted; nothing else there is touched,
since the directory may be shared (the default is the temporary directory).

A failure (a full disk, a directory that is missing or not writable) costs
that one report: it is counted and logged on ``slowwatch.internal``, never
raised.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from slowwatch.core.errors import errors
from slowwatch.render import text
from slowwatch.report import Report
from slowwatch.reporters.base import Reporter

__all__ = ["FileReporter"]


#: dogslow's prefix, which log shippers set up for dogslow already look for.
PREFIX = "slow_request_"
#: The names this reporter makes: only these are pruned. dogslow's own files
#: (``slow_request_<random>.log``) never match, having no timestamp.
OURS = re.compile(r"^slow_request_\d{8}T\d{6}\.\d{6}Z_[0-9A-Za-z]+\.log$")
#: How many report files a directory keeps by default.
MAX_FILES = 1000


class FileReporter(Reporter):
    """Writes each ``slow`` report to ``slow_request_<UTC start>_<id>.log``.

    The name starts with the request's start time, so the names sort by age.
    Files are created with mode 0600 (``mkstemp``): reports hold URLs, and
    locals when they are captured.
    """

    #: The transitions written: one file per slow request, as dogslow wrote.
    kinds: frozenset[str] = frozenset({"slow"})

    def __init__(
        self, *, directory: str | os.PathLike[str] | None = None, max_files: int = MAX_FILES
    ) -> None:
        if isinstance(max_files, bool) or max_files < 1:
            raise ValueError(f"max_files must be a positive int, not {max_files!r}")
        self.directory = Path(tempfile.gettempdir() if directory is None else directory)
        self.max_files = max_files
        #: written, failed, pruned.
        self.counts: Counter[str] = Counter()

    def handle(self, report: Report) -> None:
        if report.kind not in self.kinds:
            return
        try:
            self.write(report)
        except Exception as exc:
            self.counts["failed"] += 1
            errors.error("FileReporter writing a report", exc)
            return
        self.counts["written"] += 1
        try:
            self.prune()
        except OSError as exc:
            errors.error("FileReporter pruning its directory", exc)

    def filename(self, report: Report) -> str:
        started = datetime.fromtimestamp(report.started_at, timezone.utc)
        # The id becomes part of a path: keep only what cannot climb out of it.
        safe_id = re.sub(r"[^0-9A-Za-z]", "", report.id)[:64] or "report"
        return f"{PREFIX}{started:%Y%m%dT%H%M%S.%f}Z_{safe_id}.log"

    def write(self, report: Report) -> Path:
        """Write the report under a temporary name, then rename it into place."""
        body = text(report) + "\n"
        target = self.directory / self.filename(report)
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{PREFIX}", suffix=".tmp")
        try:
            # URLs may carry lone surrogates: they are escaped, not a reason to fail.
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as out:
                out.write(body)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return target

    def prune(self) -> None:
        """Delete the oldest of this reporter's files beyond ``max_files``."""
        with os.scandir(self.directory) as entries:
            names = sorted(e.name for e in entries if OURS.match(e.name))
        for name in names[: max(0, len(names) - self.max_files)]:
            # Another worker writing to the same directory may have deleted it first.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / name)
                self.counts["pruned"] += 1
