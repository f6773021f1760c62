"""gunicorn's gevent worker: slowwatch neither harms the host nor goes blind.

Each request is a greenlet on the worker's one OS thread. slowwatch's monitor
and reporter are real OS threads there, the report shows the request
greenlet's own frames, and a greenlet that never yields (which stops every
other request of its worker) is reported while it runs, as blocking its event
loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from test_control import migrate

from helpers import HERE, Server, slow

pytest.importorskip("gevent")
pytestmark = pytest.mark.server

THRESHOLD = 0.5


@pytest.fixture
def server(tmp_path: Path) -> Any:
    migrate(tmp_path / "db.sqlite3")
    env = {
        "SLOWWATCH_TEST_REPORTERS": (
            "slowwatch.reporters.LoggingReporter,slowwatch.reporters.DatabaseReporter"
        ),
        "SLOWWATCH_TEST_PG": "0",
    }
    args = [
        "-k",
        "gevent",
        "-w",
        "1",
        "-b",
        "127.0.0.1:0",
        "-c",
        str(HERE / "testproject" / "gunicorn_conf.py"),
    ]
    srv = Server(tmp_path, args, threshold=THRESHOLD, env=env)
    try:
        assert srv.get("/fast/")[0] == 200  # the first request loads the URLconf
        yield srv
    finally:
        srv.stop()


def stored(srv: Server) -> int:
    db = srv.reports_file.parent / "db.sqlite3"
    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM slowwatch_slowrequest").fetchone()[0])


def harmed(srv: Server) -> list[str]:
    """Lines of the server's log that say a request failed."""
    return [line for line in srv.log if "Error handling request" in line or "Traceback" in line]


def test_waves_of_slow_greenlets_that_query_are_reported_and_no_request_is_harmed(
    server: Server,
) -> None:
    """The database reporter on; each slow view queries, sleeps cooperatively
    and queries again. Every request answers 200, each slow one is reported
    with its own line, and the fast ones are not reported."""
    paths = ["/queries-around-sleep/?s=1.2"] * 8 + ["/fast/"] * 20
    statuses: Counter[int] = Counter()
    with ThreadPoolExecutor(len(paths)) as pool:
        for _ in range(3):
            statuses.update(status for status, _ in pool.map(server.get, paths))
    assert statuses == {200: 84}, (statuses, harmed(server))
    slow_reports = server.reports(24, slow("slow"))
    finished = server.reports(24, slow("finished"))
    assert len(slow_reports) == 24 and len(finished) == 24
    for report in slow_reports:
        data = report["slowwatch"]
        assert data["request"]["url"].startswith("/queries-around-sleep/")
        assert "the sleep between queries" in report["message"]
        assert data["verdict"] == "sleeping"
        assert data["sql"]["count"] == 1
        assert data["process"]["serving"] == "greenlet"
        assert ", greenlet on thread " in report["message"]
        assert "\nThe greenlet is sleeping.\n" in report["message"]
    for report in finished:
        assert report["slowwatch"]["sql"]["count"] == 2
        assert "% sleeping" in report["message"]
    assert not [r for r in server.all_reports() if "/fast/" in r["message"]]
    deadline = time.monotonic() + 15
    while stored(server) < 24 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stored(server) == 24
    assert not harmed(server)


def test_a_greenlet_that_never_yields_is_reported_while_it_holds_the_hub(
    server: Server,
) -> None:
    """Only a real OS thread can see it: every greenlet of the worker waits."""
    with ThreadPoolExecutor(4) as pool:
        blocking = pool.submit(server.get, "/never-yields/?s=1.5")
        fast = [pool.submit(server.get, "/fast/") for _ in range(3)]
        assert blocking.result()[0] == 200
        assert all(f.result()[0] == 200 for f in fast)
    (report,) = server.reports(1, slow("slow"))
    data = report["slowwatch"]
    assert data["verdict"] == "blocking its event loop"
    assert "The greenlet is blocking its event loop." in report["message"]
    assert "No other request of this worker runs until it yields" in report["message"]
    assert "the loop that never yields" in report["message"]
    # Taken on time although the hub never ran: the monitor is a thread of its own.
    assert data["timing"]["late_by"] < 0.25, data["timing"]
    assert data["process"]["figures"]["threads"] >= 3
    (finished,) = server.reports(1, slow("finished"))
    assert "100% blocking its event loop" in finished["message"]
    assert not harmed(server)


def test_importing_the_gunicorn_hooks_loads_nothing_but_the_standard_library() -> None:
    """gunicorn reads its configuration in the master, before the gevent worker
    patches: a thread-local made then (Django's connections) would be shared
    by every greenlet."""
    code = (
        "import sys; before = set(sys.modules); import slowwatch.gunicorn; "
        "print(sorted(set(sys.modules) - before))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(HERE)},
    ).stdout
    loaded = json.loads(out.replace("'", '"'))
    assert [m for m in loaded if m.startswith(("django", "asgiref", "slowwatch."))] == [
        "slowwatch.gunicorn"
    ]


def test_a_streaming_response_is_watched_until_its_last_chunk(server: Server) -> None:
    status, body = server.get("/stream/?s=1.5")
    assert status == 200 and body.count(b"chunk") == 5
    (report,) = server.reports(1, slow("slow"))
    assert "# the streaming line" in report["message"]
    (done,) = server.reports(1, slow("finished"))
    assert done["slowwatch"]["timing"]["elapsed"] >= 1.4
    # It ended well: its status, and no exception (the end of the iteration is none).
    assert done["slowwatch"]["outcome"] == {"status_code": 200, "exception": ""}
    assert not harmed(server)


def test_a_greenlet_killed_by_the_worker_timeout_is_reported_with_its_own_stack(
    tmp_path: Path,
) -> None:
    """gunicorn aborts a worker whose greenlet never yields: the signal handler
    runs inside that greenlet, and the ``killed`` report's stack is the
    greenlet's, down to the line the signal interrupted, not the handler's."""
    conf = str(HERE / "testproject" / "gunicorn_conf.py")
    args = ["-k", "gevent", "-w", "1", "-b", "127.0.0.1:0", "--timeout", "2", "-c", conf]
    srv = Server(tmp_path, args, threshold=THRESHOLD, env={"SLOWWATCH_TEST_PG": "0"})
    try:
        assert srv.get("/fast/")[0] == 200
        # The worker dies under the request: that is the point.
        with contextlib.suppress(OSError):
            srv.get("/never-yields/?s=30", timeout=20)
        (killed,) = srv.reports(1, slow("killed"), timeout=20)
        data = killed["slowwatch"]
        functions = [frame["function"] for frame in data["stack"]["frames"]]
        assert functions[-1] == "never_yields", functions
        assert "the loop that never yields" in killed["message"]
        assert not {"where", "capture_in_flight", "report_in_flight"} & set(functions)
        assert data["process"]["serving"] == "greenlet"
    finally:
        srv.stop()
