"""The reporter interface: what a custom reporter implements."""

from __future__ import annotations

from slowwatch.report import Report

__all__ = ["Reporter"]


class Reporter:
    """Receives every transition of every slow request, on the reporter thread.

    Subclasses implement :meth:`handle`. It may block (it is on slowwatch's
    reporter thread, never on a request), but not for long: reports queue up
    behind it. Whatever it raises is logged on ``slowwatch.internal`` at most
    once a minute and does not stop the other reporters.

    A reporter class that needs something from the request's own thread (a
    context variable, which other threads cannot read) defines a static
    ``on_request(request)``: the middleware calls it as each request starts,
    before the watch is filed. It must be quick and may only set attributes on
    the request; the Sentry reporter hands the request's scope over this way.
    Configurations without such a reporter pay nothing for it.
    """

    #: Seconds between two calls of :meth:`idle` while no report arrives;
    #: None: only when the queue runs empty.
    idle_every: float | None = None

    def handle(self, report: Report) -> None:
        raise NotImplementedError

    def idle(self) -> None:
        """Called on the reporter thread whenever no report is waiting: release
        what is worth keeping only during a burst (a database connection)."""

    def close(self) -> None:
        """Called on the reporter's thread when it stops (the process exits, or
        the settings changed): release what the thread holds."""
