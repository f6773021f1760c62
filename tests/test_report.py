from __future__ import annotations

import asyncio
import json
import linecache
from dataclasses import replace
from typing import Any

import pytest

from slowwatch.core.frames import Frame, Stack
from slowwatch.core.profile import FrozenProfile
from slowwatch.core.records import Finished, Lost, RequestInfo, Snapshot
from slowwatch.render import headline, hottest, one_line, sql_lines, summary, text
from slowwatch.report import SCHEMA_VERSION, UNRESOLVED, Report, build_report


def snapshot(path: str = "/orders/", query: str = "") -> Snapshot:
    frame = Frame(__file__, snapshot.__code__.co_firstlineno, "somewhere", __name__)
    return Snapshot(
        kind="slow",
        report_id="abc",
        request=RequestInfo("GET", path, query, "shop.views.orders", "orders/", "example.com"),
        pid=42,
        thread_id=7,
        thread_name="worker-1",
        started_at=1_700_000_000.0,
        threshold=0.5,
        elapsed=0.512,
        late_by=0.012,
        stack=Stack((frame,), hidden=12, truncated=0),
    )


def snapshot_of(path: str = "/orders/", *, view: str, route: str, **more: Any) -> Snapshot:
    """:func:`snapshot` of a request to ``path`` resolved (or not) as given."""
    event = snapshot(path)
    request = replace(event.request, view=view, route=route)
    return replace(event, request=request, **more)


def test_slow_report_text_is_a_summary_line_then_a_traceback():
    report = build_report(snapshot(query="q=1&password=hunter2"))
    written = text(report)
    first, *rest = written.splitlines()
    assert first.startswith("Slow request: GET /orders/?q=1&password=******** (shop.views.orders)")
    assert "running for 0.51 s, threshold 0.5 s, pid 42, thread worker-1 (7)" in first
    assert "taken 12 ms after the deadline" in first
    assert "hunter2" not in written
    assert rest[0].startswith("Process: RSS ")
    assert (
        rest[1]
        == "Stack of the request (most recent call last; 12 server frames above slowwatch hidden):"
    )
    line = snapshot.__code__.co_firstlineno
    assert rest[2] == f'  File "{__file__}", line {line}, in somewhere'
    assert rest[3] == '    def snapshot(path: str = "/orders/", query: str = "") -> Snapshot:'


def test_crlf_in_a_path_cannot_start_a_new_log_line():
    report = build_report(snapshot(path="/x\r\nBcc: victim@example.com"))
    assert "\n" not in summary(report)
    assert "\\r\\nBcc" in summary(report)


def test_json_document_is_stable_and_serialisable():
    doc = build_report(snapshot()).to_dict()
    assert doc["schema"] == SCHEMA_VERSION
    assert doc["kind"] == "slow"
    assert doc["request"] == {
        "method": "GET",
        "url": "/orders/",
        "view": "shop.views.orders",
        "route": "orders/",
        "host": "example.com",
    }
    assert doc["timing"]["late_by"] == 0.012
    assert doc["stack"]["frames"][0]["line"].startswith("def snapshot(")
    assert json.loads(json.dumps(doc)) == doc


@pytest.mark.parametrize(
    ("serving", "name", "first", "doing"),
    [
        ("thread", "worker-1", "pid 42, thread worker-1 (7), ", "The thread is sleeping."),
        ("task", "Main", "pid 42, asyncio task on thread Main (7), ", "The task is sleeping."),
        ("greenlet", "", "pid 42, greenlet on thread 7, ", "The greenlet is sleeping."),
    ],
)
def test_the_report_names_what_runs_the_request(
    serving: str, name: str, first: str, doing: str
) -> None:
    report = build_report(replace(snapshot(), serving=serving, thread_name=name, state="sleep"))
    head, state, *_ = text(report).splitlines()
    assert first in head
    assert state.startswith(doing)
    assert report.to_dict()["process"]["serving"] == serving


def test_finished_report():
    event = Finished(
        report_id="abc",
        request=RequestInfo("POST", "/pay/"),
        pid=42,
        thread_id=7,
        started_at=1.0,
        threshold=0.5,
        duration=3.25,
        status_code=502,
    )
    report = build_report(event)
    assert report.kind == "finished"
    assert text(report) == "Slow request finished: POST /pay/ -> 502 in 3.25 s (threshold 0.5 s)"
    assert report.to_dict()["outcome"] == {"status_code": 502, "exception": ""}
    assert "serving" not in report.to_dict()["process"]


def test_slow_report_carries_process_figures():
    report = build_report(snapshot())
    figures = report.process
    assert figures["rss"] > 1_000_000 and figures["threads"] >= 1
    assert set(figures["ctx_switches"]) == {"voluntary", "involuntary"}
    assert "Process: RSS " in text(report).splitlines()[1]
    assert report.to_dict()["process"]["figures"] == figures


#: Every character that must not reach log text raw, and how it is shown.
CONTROLS = {
    "\x1b": "\\x1b",  # ESC: starts the terminal's escape sequences
    "\x0b": "\\x0b",  # VT
    "\x0c": "\\x0c",  # FF
    "\x00": "\\x00",
    "\t": "\\t",
    "\x1e": "\\x1e",  # RS: str.splitlines() breaks on it
    "\x7f": "\\x7f",  # DEL
    "\x85": "\\x85",  # NEL
    "\x9b": "\\x9b",  # CSI, the C1 form of ESC [
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
    "\r": "\\r",
    "\n": "\\n",
}
EVIL = "".join(f"<{char}>" for char in CONTROLS)


def assert_escaped(written: str) -> None:
    assert not any(char in written for char in CONTROLS if char != "\n")
    for shown in CONTROLS.values():
        assert f"<{shown}>" in written


def test_one_line_escapes_every_control_character_visibly():
    assert one_line(EVIL) == "".join(f"<{shown}>" for shown in CONTROLS.values())
    assert one_line("/café/ü€") == "/café/ü€"
    assert one_line(one_line(EVIL)) == one_line(EVIL)
    assert all(chr(c) not in one_line("".join(map(chr, range(0xA0)))) for c in range(0x20))
    # Titles and subjects get spaces instead.
    assert headline(f"a{EVIL}b", 200) == "a" + "< >" * len(CONTROLS) + "b"


def test_control_characters_from_the_request_never_reach_the_log_raw():
    sql = {
        "count": 1,
        "time": 0.1,
        "in_flight": {"sql": f"SELECT '{EVIL}'", "alias": "default", "elapsed": 2.0},
    }
    report = build_report(snapshot_of(f"/x/{EVIL}", view="v", route="x/", sql=sql, state="db"))
    written = text(report)
    assert written.count("\n") + 1 == len(written.splitlines())  # no line ends but our own
    assert_escaped(summary(report))
    assert_escaped(sql_lines(report))
    assert len(summary(report).splitlines()) == 1


def test_locals_frames_and_hottest_lines_are_escaped():
    # No NUL in a file name: no code object can have one.
    evil_name = EVIL.replace("\x00", "")
    frame = Frame(f"/srv/{evil_name}.py", 3, f"f{EVIL}", "m")
    stack = Stack((frame,), 0, 0, locals=((("body", repr(EVIL)),),))
    written = text(build_report(snapshot_of(view="v", route="r/", stack=stack)))
    assert written.count("\n") + 1 == len(written.splitlines())
    assert 'File "/srv/<\\x1b>' in written and "in f<\\x1b>" in written
    assert "body = '<\\x1b>" in written
    profile = FrozenProfile(
        interval=0.01, samples=4, stacks=((((f"/a{evil_name}.py", "g", 1),), 4),)
    )
    finished = build_report(
        Finished("abc", RequestInfo("GET", f"/{EVIL}"), 1, 2, 0.0, 0.5, 1.0, profile=profile)
    )
    assert "\\x1b" in hottest(finished) and "\x1b" not in hottest(finished)
    assert_escaped(text(finished))


def test_hottest_lines_in_library_code_name_the_project_lines_waiting_on_them():
    view = ("/srv/shop/views.py", "stream", 40)
    helper = ("/srv/shop/views.py", "chunks", 52)
    sleep = (asyncio.tasks.__file__, "sleep", 665)

    def lines(*stacks: tuple[tuple[tuple[str, str, int], ...], int]) -> str:
        profile = FrozenProfile(
            interval=0.05, samples=sum(n for _, n in stacks), stacks=tuple(stacks)
        )
        return hottest(
            build_report(
                Finished("abc", RequestInfo("GET", "/s/"), 1, 2, 0.0, 0.5, 1.0, profile=profile)
            )
        )

    # Every sample ends in asyncio: the project's lines under it are named.
    written = lines(((view, helper, sleep), 3), ((view, sleep), 1))
    source = linecache.getline(asyncio.tasks.__file__, 665).strip()
    assert written.splitlines() == [
        "Hottest lines since the threshold (4 samples every 50 ms):",
        f'  100%  File "{asyncio.tasks.__file__}", line 665, in sleep',
        *([f"          {source}"] if source else []),
        "The project's functions on the stack in those samples:",
        '  100%  File "/srv/shop/views.py", line 40, in stream',
        '   75%  File "/srv/shop/views.py", line 52, in chunks',
    ]
    # A project line among the leaves says it already.
    assert "The project's functions" not in lines(((view, helper), 3), ((view, sleep), 1))


def test_the_lost_notice_is_escaped():
    lost = build_report(Lost("abc", RequestInfo(f"GET{EVIL}", f"/{EVIL}"), 1, "slow", "full"))
    assert_escaped(text(lost))
    assert len(text(lost).splitlines()) == 1


def where(path: str = "/orders/7/", *, view: str = "", route: str = "") -> str:
    return build_report(snapshot_of(path, view=view, route=route)).where()


def test_alerts_group_by_route_then_view_then_one_unresolved_key():
    assert where(view="shop.views.order", route="orders/<int:pk>/") == "/orders/<int:pk>/"
    assert where(view="shop.views.order") == "shop.views.order"
    # The site's root: route "" with a view is resolved, and grouped by its view.
    assert where("/", view="shop.views.home", route="") == "shop.views.home"
    # Never resolved (a slow middleware before routing, or a 404): one key for
    # every path, which an attacker could otherwise make distinct at will.
    keys = {where(f"/wp-admin/{i}.php") for i in range(25)}
    assert keys == {UNRESOLVED}
    assert where("/") == UNRESOLVED != where("/", view="shop.views.home")


@pytest.mark.parametrize("kind", ["slow", "finished", "lost"])
def test_unresolved_reports_of_every_kind_share_the_key(kind: str) -> None:
    request = RequestInfo("GET", "/nowhere/", "token=1")
    event: Snapshot | Finished | Lost
    if kind == "slow":
        event = snapshot_of("/nowhere/", view="", route="")
    elif kind == "finished":
        event = Finished("abc", request, 1, 2, 0.0, 0.5, 1.0)
    else:
        event = Lost("abc", request, 1, "slow", "full")
    report: Report = build_report(event)
    assert report.where() == UNRESOLVED
    assert report.url.startswith("/nowhere/")  # the path is still in the report itself


def test_sql_lines_read_as_an_operator_expects():
    from slowwatch.render import seconds, sql_lines

    base = build_report(snapshot())
    in_flight = {"sql": "SELECT ?", "alias": "default", "elapsed": 0.8}
    first = replace(base, sql={"count": 0, "time": 0.0, "in_flight": in_flight})
    assert sql_lines(first).splitlines()[1:] == [
        "SQL so far: no query finished yet",
        "In flight for 0.80 s on database 'default': SELECT ?",
    ]
    done = replace(
        base,
        kind="finished",
        sql={
            "count": 1,
            "time": 2.02,
            "in_flight_seen": [{"sql": "SELECT ?", "alias": "default", "elapsed": -0.0}],
            "slowest": [{"sql": "SELECT ?", "slowest": 2.02}, {"sql": "SELECT 1", "slowest": 0.0}],
        },
    )
    assert sql_lines(done).splitlines()[1:] == [
        "SQL in all: 1 query finished, 2.02 s",
        "Slowest, 2.02 s: SELECT ?",
    ]
    assert [seconds(x) for x in (-0.0, 0.5, 12.345, 754.2)] == [
        "0.00 s",
        "0.50 s",
        "12.3 s",
        "754 s",
    ]


def test_the_text_folds_framework_runs_and_the_json_keeps_every_frame() -> None:
    import django.core.handlers.base as handlers
    import django.db.backends.utils as utils

    import slowwatch.core.frames as own

    def at(module: Any, function: str) -> Frame:
        return Frame(module.__file__, 1, function, module.__name__)

    mine = Frame(__file__, snapshot.__code__.co_firstlineno, "somewhere", __name__)
    frames = (
        *[at(handlers, f"middleware{i}") for i in range(12)],
        mine,
        at(utils, "execute"),
        at(utils, "_execute_with_wrappers"),
        at(own, "track"),
        at(utils, "_execute"),
        at(utils, "inner"),
        at(utils, "execute_sql"),
    )
    report = build_report(replace(snapshot(), stack=Stack(frames, hidden=0, truncated=0)))
    lines = text(report).splitlines()
    start = lines.index("Stack of the request (most recent call last):")
    stack = lines[start + 1 :]
    assert stack[0] == "  [12 frames of django folded]"
    assert stack[1].endswith("in somewhere")
    assert stack[3].endswith("in execute")  # the call the project made
    assert stack[5] == "  [3 frames of django folded]"
    assert stack[6].endswith("in execute_sql")  # where the thread is now
    assert "track" not in text(report)  # slowwatch's own frame is left out
    kept = [frame["function"] for frame in report.to_dict()["stack"]["frames"]]
    assert len(kept) == len(frames) and "track" in kept and "middleware7" in kept
