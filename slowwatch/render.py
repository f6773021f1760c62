"""A :class:`~slowwatch.report.Report` as text: for logs, mails and Sentry alike.

Plain functions over the report's data (pyinstrument's renderers are the
model): the report holds what happened, this module says it. Every piece of
text that may come from a request (path, method, host, view, SQL, rendered
locals, file and function names) goes through :func:`one_line`, so that it can
never start a new log line nor drive the terminal a log is read in.
"""

from __future__ import annotations

import linecache
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slowwatch.core.frames import Folded, fold, is_project_file
from slowwatch.core.states import LOOP, verdict

if TYPE_CHECKING:
    from slowwatch.report import Report, SourceFrame

__all__ = [
    "frame_lines",
    "headline",
    "hottest",
    "one_line",
    "process_line",
    "seconds",
    "sql_lines",
    "summary",
    "text",
    "traceback",
]

#: Longest path shown in a one-line summary; the JSON keeps the full one.
SUMMARY_PATH_MAX = 300
#: Longest SQL statement shown on one line.
SQL_MAX = 160

#: Characters that must not reach log text, a header or a title raw: all C0
#: controls, DEL, all C1 controls and the Unicode line and paragraph separators.
#: Not only CR and LF end a line: str.splitlines() and many log viewers also break
#: on VT, FF, FS to RS, NEL and U+2028/9; and ESC starts the escape sequences
#: that rewrite what a terminal shows (the pattern of Django's CVE-2025-48432).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SHORT = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    return "".join(
        _SHORT.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        for char in match.group()
    )


def one_line(text: str) -> str:
    """``text`` with every control character escaped visibly (``\\x1b``,
    ``\\u2028``): paths, headers and what a request sent are attacker-controlled."""
    return _CONTROL.sub(_escape, text)


def headline(text: str, limit: int) -> str:
    """``text`` as one line of at most ``limit`` characters: for subjects and titles."""
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut(sql: str, limit: int = SQL_MAX) -> str:
    sql = one_line(sql)
    return sql if len(sql) <= limit else sql[: limit - 1] + "…"


#: How the first line names what runs the request (see ``Report.serving``).
_SERVED_BY = {
    "thread": "thread",
    "task": "asyncio task on thread",
    "greenlet": "greenlet on thread",
}


def served_by(report: Report) -> str:
    """``thread Worker-1 (1402)``, ``asyncio task on thread MainThread (1397)``..."""
    thread = report.thread_name and f"{report.thread_name} ({report.thread_id})"
    return f"{_SERVED_BY.get(report.serving, 'thread')} {thread or report.thread_id}"


def summary(report: Report) -> str:
    """The first line: what, where, how long."""
    return one_line(_summary(report))


def _summary(report: Report) -> str:
    url = one_line(report.url)
    if len(url) > SUMMARY_PATH_MAX:
        url = url[: SUMMARY_PATH_MAX - 1] + "…"
    view = f" ({report.view})" if report.view else ""
    if report.kind == "lost":
        if report.extra.get("reason") == "monitor_late":
            return (
                f"Slow request not seen: {report.method} {url}{view} ran "
                f"{seconds(report.elapsed)} (threshold {report.threshold:g} s) and ended "
                f"before slowwatch's monitor, held up, took its stack (monitor_late)"
            )
        return (
            f"Report lost: the '{report.extra.get('dropped')}' report of {report.method} {url}"
            f"{view} was dropped ({report.extra.get('reason')})"
        )
    if report.kind == "still_slow":
        return (
            f"Still slow: {report.method} {url}{view} running for {seconds(report.elapsed)} "
            f"(threshold {report.threshold:g} s)"
        )
    if report.kind == "killed":
        return (
            f"Killed: {report.method} {url}{view} was still running after "
            f"{seconds(report.elapsed)} when its worker was terminated "
            f"(threshold {report.threshold:g} s)"
        )
    if report.kind == "finished":
        outcome = report.exception or (str(report.status_code) if report.status_code else "?")
        return (
            f"Slow request finished: {report.method} {url}{view} -> {outcome} "
            f"in {seconds(report.elapsed)} (threshold {report.threshold:g} s)"
        )
    return (
        f"Slow request: {report.method} {url}{view} running for {seconds(report.elapsed)}, "
        f"threshold {report.threshold:g} s, pid {report.pid}, {served_by(report)}, "
        f"taken {report.late_by * 1000:.0f} ms after the deadline"
    )


def traceback(report: Report, value: Callable[[str], str] = one_line) -> str:
    """The stack, Python style: oldest call first, the stuck line last.

    Runs of framework frames are folded to one line (the report's JSON, the
    admin and the exports keep every frame); slowwatch's own are left out.
    ``value`` makes each rendered local one line.
    """
    notes = []
    if report.hidden_frames:
        notes.append(f"{report.hidden_frames} server frames above slowwatch hidden")
    if report.truncated_frames:
        notes.append(f"{report.truncated_frames} frames cut")
    head = "Stack of the request (most recent call last"
    head += f"; {', '.join(notes)}):" if notes else "):"
    lines = [head]
    if not report.frames:
        lines.append("  (no stack: the thread had no Python frame to show)")
    for item in fold(report.frames, lambda frame: frame.filename):
        if isinstance(item, Folded):
            lines.append(f"  [{one_line(item.label)} folded]")
        else:
            lines += frame_lines(item, value)
    return "\n".join(lines)


def frame_lines(frame: SourceFrame, value: Callable[[str], str] = one_line) -> list[str]:
    """One frame as a Python traceback shows it, with its locals (``value`` makes
    each rendered local one line)."""
    lines = [
        f'  File "{one_line(frame.filename)}", line {frame.lineno}, in {one_line(frame.function)}'
    ]
    if frame.line:
        lines.append(f"    {one_line(frame.line)}")
    for name, shown in frame.locals or ():
        lines.append(f"      {one_line(name)} = {value(shown)}")
    return lines


def hottest(report: Report, n: int = 5) -> str:
    """Where the slow part of the request spent its time, from the profile."""
    profile = report.profile
    if profile is None or not profile.samples:
        return ""
    every = f"every {profile.interval * 1000:g} ms"
    notes = [f"{profile.samples} samples {every}"]
    if profile.cpu_time is not None:
        notes.append(f"{seconds(profile.cpu_time)} of CPU")
    if profile.decimated:
        notes.append("thinned out past the sample limit")
    if profile.throttled:
        notes.append("sampled less often to stay within the CPU budget")
    lines = []
    if profile.states:
        lines.append(f"Since the threshold: {verdict(dict(profile.states))}.")
    lines.append(f"Hottest lines since the threshold ({'; '.join(notes)}):")
    leaves = profile.hottest(n)
    lines.extend(_frame_lines(leaves))
    if not any(is_project_file(filename) for (filename, _, _), _ in leaves):
        # Every sample ended in library code (an await in asyncio, a query in
        # the driver): which of the project's functions were waiting on it.
        own = profile.hottest_functions(3)
        if own:
            lines.append("The project's functions on the stack in those samples:")
            lines.extend(_frame_lines(own))
    return "\n".join(lines)


def _frame_lines(frames: list[tuple[tuple[str, str, int], float]]) -> list[str]:
    lines = []
    for (filename, function, lineno), share in frames:
        lines.append(
            f'  {share:4.0%}  File "{one_line(filename)}", line {lineno}, in {one_line(function)}'
        )
        source = linecache.getline(filename, lineno).strip()
        if source:
            lines.append(f"          {one_line(source)}")
    return lines


def seconds(value: float) -> str:
    """A duration as every text form shows one: ``0.84 s``, ``12.3 s``, ``754 s``."""
    value = max(0.0, value)
    if value < 10:
        return f"{value:.2f} s"
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


def _queries(count: int) -> str:
    return "1 query" if count == 1 else f"{count} queries"


#: Statements quicker than this are not worth a line of "Slowest".
SLOWEST_FLOOR = 0.01


def sql_lines(report: Report) -> str:
    """Lines about the database, each starting with a newline ("" when none)."""
    sql = report.sql
    if not sql or not sql.get("count") and not sql.get("in_flight"):
        return ""
    done = "so far" if report.kind != "finished" else "in all"
    count = int(sql.get("count") or 0)
    current = sql.get("in_flight")
    if count:
        lines = [f"SQL {done}: {_queries(count)} finished, {seconds(sql['time'])}"]
    else:
        lines = [f"SQL {done}: no query finished yet"]
    if current:
        lines.append(
            f"In flight for {seconds(current['elapsed'])} on database "
            f"'{one_line(str(current['alias']))}': {_cut(current['sql'])}"
        )
    for query in sql.get("in_flight_seen", [])[:3]:
        if query["elapsed"] >= SLOWEST_FLOOR:
            lines.append(f"Seen in flight for {seconds(query['elapsed'])}: {_cut(query['sql'])}")
    for query in sql.get("slowest", [])[:3]:
        if query["slowest"] >= SLOWEST_FLOOR:
            lines.append(f"Slowest, {seconds(query['slowest'])}: {_cut(query['sql'])}")
    for query in sql.get("repeated", [])[:3]:
        lines.append(f"Repeated x{query['count']} (N+1?): {_cut(query['sql'])}")
    return "".join(f"\n{line}" for line in lines)


def process_line(found: dict[str, Any]) -> str:
    """One line: ``RSS 52.1 MB, 12 threads, 33 open files, CPU 85%, load 0.52``."""
    if not found:
        return ""
    parts = [f"RSS {found['rss'] / 1e6:.1f} MB", f"{found['threads']} threads"]
    if "open_fds" in found:
        parts.append(f"{found['open_fds']} open files")
    if found.get("cpu_percent") is not None:
        parts.append(f"CPU {found['cpu_percent']:.0f}% since the last report")
    if "load" in found:
        parts.append(f"load {found['load'][0]}")
    return ", ".join(parts)


def text(report: Report) -> str:
    """The whole report as the logging reporter logs it."""
    if report.kind == "lost":
        return summary(report)
    if report.kind != "finished":
        figures = process_line(report.process)
        process = f"\nProcess: {figures}" if figures else ""
        unit = report.serving if report.serving in _SERVED_BY else "thread"
        doing = f"\nThe {unit} is {report.verdict()}." if report.state else ""
        if report.state == LOOP:
            doing += " No other request of this worker runs until it yields."
        body = f"{summary(report)}{doing}{sql_lines(report)}{process}\n{traceback(report)}"
        lines = hottest(report) if report.kind == "killed" else ""
        return f"{body}\n{lines}" if lines else body
    lines = hottest(report)
    head = summary(report) + sql_lines(report)
    return f"{head}\n{lines}" if lines else head
