from __future__ import annotations

import json

from slowwatch.core.frames import Frame, Stack
from slowwatch.core.records import Finished, RequestInfo, Snapshot
from slowwatch.render import summary, text
from slowwatch.report import SCHEMA_VERSION, build_report


def snapshot(path: str = "/orders/", query: str = "") -> Snapshot:
    frame = Frame(__file__, 11, "somewhere", __name__)
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
    assert rest[2] == f'  File "{__file__}", line 11, in somewhere'
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


def test_slow_report_carries_process_figures():
    report = build_report(snapshot())
    figures = report.process
    assert figures["rss"] > 1_000_000 and figures["threads"] >= 1
    assert set(figures["ctx_switches"]) == {"voluntary", "involuntary"}
    assert "Process: RSS " in text(report).splitlines()[1]
    assert report.to_dict()["process"]["figures"] == figures
