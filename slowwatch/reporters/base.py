"""The reporter interface."""

from __future__ import annotations

from slowwatch.report import Report


class Reporter:
    """Receives every transition of every slow request, on the reporter thread.

    Subclasses implement :meth:`handle`. It may block (it is on slowwatch's
    reporter thread, never on a request), but not for long: reports queue up
    behind it. Whatever it raises is logged on ``slowwatch.internal`` at most
    once a minute and does not stop the other reporters.
    """

    def handle(self, report: Report) -> None:
        raise NotImplementedError

    def idle(self) -> None:
        """Called on the reporter thread whenever no report is waiting: release
        what is worth keeping only during a burst (a database connection)."""
