"""End to end under a real gunicorn, started on a free port of 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any

import psutil
import pytest
from test_control import migrate

from helpers import Server, needs_postgres, slow

pytestmark = pytest.mark.server

WORKERS = {
    "sync": ["-k", "sync", "-w", "1"],
    "gthread": ["-k", "gthread", "-w", "1", "--threads", "24"],
}


@pytest.fixture(params=list(WORKERS))
def server(request: pytest.FixtureRequest, tmp_path) -> Iterator[Server]:
    srv = Server(tmp_path, ["-b", "127.0.0.1:0", "--timeout", "60", *WORKERS[request.param]])
    yield srv
    srv.stop()


def test_a_sleeping_view_is_reported_on_its_sleep_line(server):
    status, body = server.get("/sleep/?s=1.5")
    assert status == 200
    [report] = server.reports(1, slow("slow"))
    doc = report["slowwatch"]
    top = doc["stack"]["frames"][-1]
    assert top["function"] == "sleep"
    assert top["line"] == "time.sleep(seconds)  # the sleeping line"
    assert doc["process"]["pid"] == json.loads(body)["pid"]
    # Reported within threshold + 100 ms, and saying how late it was.
    assert doc["timing"]["elapsed"] <= 0.3 + 0.1
    assert doc["timing"]["late_by"] <= 0.1
    assert doc["stack"]["hidden"] > 0  # gunicorn's frames are left out
    [done] = server.reports(1, slow("finished"))
    assert done["slowwatch"]["id"] == doc["id"]
    assert done["slowwatch"]["outcome"]["status_code"] == 200
    assert done["slowwatch"]["timing"]["elapsed"] >= 1.5
    assert done["level"] == "INFO" and report["level"] == "WARNING"


def test_a_cpu_bound_view_is_reported_in_its_loop(server):
    assert server.get("/cpu/?s=1.5")[0] == 200
    [report] = server.reports(1, slow("slow"))
    doc = report["slowwatch"]
    top = doc["stack"]["frames"][-1]
    assert top["function"] == "cpu"
    assert top["line"] in ("while time.perf_counter() < deadline:  # the spinning line", "n += 1")
    assert doc["timing"]["elapsed"] <= 0.3 + 0.1


def test_a_fast_view_is_never_reported(server):
    for _ in range(30):
        assert server.get("/fast/")[0] == 200
    assert server.get("/sleep/?s=0.6")[0] == 200  # a marker that reports do flow
    got = server.reports(2, lambda r: r["slowwatch"] is not None)
    assert {r["slowwatch"]["request"]["url"] for r in got} == {"/sleep/?s=0.6"}


@pytest.mark.parametrize("server", ["gthread"], indirect=True)
def test_twenty_concurrent_slow_requests_each_get_their_own_stack(server):
    paths = [f"/deep/{depth}/?s=1.2" for depth in range(20)]
    with ThreadPoolExecutor(20) as pool:
        statuses = [status for status, _ in pool.map(server.get, paths)]
    assert statuses == [200] * 20
    got = server.reports(20, slow("slow"))
    assert sorted(r["slowwatch"]["request"]["url"] for r in got) == sorted(paths)
    threads = set()
    for report in got:
        doc = report["slowwatch"]
        depth = int(doc["request"]["url"].split("/")[2])
        frames = doc["stack"]["frames"]
        # The request for depth N sleeps N+1 calls of descend() deep.
        assert sum(f["function"] == "descend" for f in frames) == depth + 1
        assert frames[-1]["function"] == "descend"
        threads.add(doc["process"]["thread_id"])
    assert len(threads) == 20


def test_preload_with_two_workers_each_reports_its_own(tmp_path):
    srv = Server(tmp_path, ["-b", "127.0.0.1:0", "-k", "sync", "-w", "2", "--preload"])
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(srv.get, [f"/sleep/?s=1&n={i}" for i in range(6)]))
        assert [status for status, _ in answers] == [200] * 6
        served_by = {
            f"/sleep/?s=1&n={i}": json.loads(body)["pid"] for i, (_, body) in enumerate(answers)
        }
        got = srv.reports(6, slow("slow"))
        assert len(got) == 6
        for report in got:
            doc = report["slowwatch"]
            assert doc["process"]["pid"] == served_by[doc["request"]["url"]]
        pids = {r["slowwatch"]["process"]["pid"] for r in got}
        assert len(pids) == 2
        assert pids <= srv.worker_pids
        assert srv.proc.pid not in pids
        # No thread in the master before it forked (Python 3.12+ would warn).
        assert "DeprecationWarning" not in "".join(srv.log)
    finally:
        srv.stop()


def test_a_request_slow_in_two_places_shows_both_in_its_profile(server):
    assert server.get("/phases/?a=1&b=1")[0] == 200
    [done] = server.reports(1, slow("finished"))
    profile = done["slowwatch"]["profile"]
    # A stack lists indices into the frames table; time.sleep is C, so the leaf is the phase.
    leaves: Counter[str] = Counter()
    for stack in profile["stacks"]:
        leaves[profile["frames"][stack["frames"][-1]][1]] += stack["count"]
    # Both phases, and little else: on a busy machine a sample may also catch
    # the view between its phases or building its response.
    assert leaves["phase_one"] >= 5 and leaves["phase_two"] >= 5, leaves
    assert leaves["phase_one"] + leaves["phase_two"] >= 0.9 * sum(leaves.values()), leaves
    assert profile["samples"] >= 20
    assert "# phase one" in done["message"] and "# phase two" in done["message"]


def test_a_request_killed_by_the_worker_timeout_is_reported_killed(tmp_path):
    migrate(tmp_path / "db.sqlite3")
    args = ["-b", "127.0.0.1:0", "-k", "sync", "-w", "1", "--timeout", "2"]
    reporters = "slowwatch.reporters.LoggingReporter,slowwatch.reporters.DatabaseReporter"
    env = {"SLOWWATCH_TEST_REPORTERS": reporters, "SLOWWATCH_TEST_PG": "0"}
    srv = Server(tmp_path, [*args, "-c", "testproject/gunicorn_conf.py"], env=env)
    try:
        # The worker dies under the request: that is the point.
        with contextlib.suppress(OSError):
            srv.get("/sleep/?s=30", timeout=20)
        [killed] = srv.reports(1, slow("killed"), timeout=20)
        [first] = srv.reports(1, slow("slow"))
        doc = killed["slowwatch"]
        assert doc["id"] == first["slowwatch"]["id"]
        assert doc["timing"]["elapsed"] >= 2
        assert doc["stack"]["frames"][-1]["function"] == "sleep"
        assert killed["message"].startswith("Killed: GET /sleep/?s=30")
        # Sampled from the threshold (0.3 s) until the kill (2 s): the profile
        # of the request that had to be killed goes with its record.
        assert doc["profile"]["samples"] >= 10
        # Mostly sleeping: a sample taken as the thread re-enters its sleep
        # can read as CPU, so one sample in twenty may say so.
        assert re.search(r"Since the threshold: (100|9\d)% sleeping", killed["message"])
        assert "Hottest lines since the threshold" in killed["message"]
        # ... and with its row, which the admin shows.
        deadline = time.monotonic() + 10
        row = None
        while time.monotonic() < deadline:
            with closing(sqlite3.connect(tmp_path / "db.sqlite3")) as conn:
                row = conn.execute("SELECT state, profile FROM slowwatch_slowrequest").fetchone()
            if row is not None and row[0] == "killed":
                break
            time.sleep(0.1)
        assert row is not None and row[0] == "killed"
        assert json.loads(row[1])["samples"] >= 10
    finally:
        srv.stop()


@needs_postgres
def test_a_query_waiting_in_postgresql_is_in_flight(server):
    # The worker's first query imports the backend and connects: on a busy
    # machine that alone can outlast the threshold, before any query runs.
    # (That first request may be reported slow too: only the second counts.)
    assert server.get("/pg-sleep/?s=0")[0] == 200
    assert server.get("/pg-sleep/?s=1.2")[0] == 200

    def waiting(kind: str) -> Callable[[dict[str, Any]], bool]:
        return lambda r: slow(kind)(r) and r["slowwatch"]["request"]["url"].endswith("1.2")

    [report] = server.reports(1, waiting("slow"))
    doc = report["slowwatch"]
    assert doc["sql"]["in_flight"]["sql"] == "SELECT pg_sleep(?)"
    assert "on database 'pg': SELECT pg_sleep(?)" in report["message"]
    [done] = server.reports(1, waiting("finished"))
    states = done["slowwatch"]["profile"]["states"]
    assert max(states, key=states.__getitem__) == "db"


@pytest.mark.parametrize("server", ["sync"], indirect=True)
def test_each_kind_of_slow_gets_its_line_and_verdict(server):
    cases = {
        "/sleep/?s=1": ("sleep", "time.sleep(seconds)  # the sleeping line", "sleep"),
        "/cpu/?s=1": ("cpu", None, "cpu"),
        "/locked/?s=1": ("locked", "with _held:  # the waiting line", "lock"),
        "/slow-sql/?rows=3000000": ("slow_sql", None, "db"),
    }
    for path in cases:
        assert server.get(path)[0] == 200
    done = server.reports(len(cases), slow("finished"))
    first = {
        r["slowwatch"]["request"]["url"]: r["slowwatch"] for r in server.reports(4, slow("slow"))
    }
    for report in done:
        doc = report["slowwatch"]
        url = doc["request"]["url"]
        function, line, state = cases[url]
        frames = first[url]["stack"]["frames"]
        assert any(f["function"] == function for f in frames), url
        if line is not None:
            assert frames[-1]["line"] == line
        states = doc["profile"]["states"]
        top = max(states, key=states.__getitem__)
        # A spinning thread is on a CPU, or, on a busy machine, waiting for one.
        assert top in ({"cpu", "runnable"} if state == "cpu" else {state}), (url, states)
    sql = first["/slow-sql/?rows=3000000"]["sql"]["in_flight"]
    assert sql["sql"].startswith("WITH RECURSIVE n(i) AS")


#: A gunicorn configuration that widens the window of gunicorn's own race:
#: the thread pool's wake-up in ``shutdown()`` takes half a second, inside the
#: pool's shutdown lock, so the master's SIGQUIT lands there every time.
WIDE_QUIT_WINDOW = """
import time

{hooks}
hooked = globals().get("post_worker_init")


class SlowWakeUp:
    def __init__(self, queue):
        self.queue = queue

    def __getattr__(self, name):
        return getattr(self.queue, name)

    def put(self, item, *args, **kwargs):
        if item is None:
            time.sleep(0.5)
        self.queue.put(item, *args, **kwargs)


def post_worker_init(worker):
    worker.tpool._work_queue = SlowWakeUp(worker.tpool._work_queue)
    if hooked is not None:
        hooked(worker)
"""


def worker_gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("hook", [True, False], ids=["post_worker_init", "gunicorn-alone"])
def test_ctrl_c_then_the_masters_sigquit_stop_a_gthread_worker(tmp_path, hook):
    """Ctrl-C: SIGINT to the worker, then the master's SIGQUIT while the first is handled."""
    conf = tmp_path / "gunicorn_conf.py"
    hooks = "from slowwatch.gunicorn import post_worker_init" if hook else ""
    conf.write_text(WIDE_QUIT_WINDOW.format(hooks=hooks))
    args = ["-b", "127.0.0.1:0", "-k", "gthread", "-w", "1", "--threads", "4"]
    srv = Server(tmp_path, [*args, "--graceful-timeout", "2", "-c", str(conf)])
    pid = 0
    try:
        assert srv.get("/fast/")[0] == 200  # the pool has threads to wake
        [pid] = srv.worker_pids
        os.kill(pid, signal.SIGINT)
        time.sleep(0.2)
        os.kill(pid, signal.SIGQUIT)
        stopped = worker_gone(pid, 2.5)
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        srv.stop()
    if hook:
        assert stopped, "the worker hung on its second quit signal"
    elif stopped:
        pytest.skip("this gunicorn no longer hangs on a second quit signal")


def test_the_row_of_a_request_whose_worker_was_sigkilled_is_closed_by_the_next_worker(tmp_path):
    """SIGKILL (uWSGI's harakiri, the OOM killer) leaves no time for a word:
    the new worker's reporter closes the row the dead one left running."""
    db = tmp_path / "db.sqlite3"
    migrate(db)
    reporters = "slowwatch.reporters.LoggingReporter,slowwatch.reporters.DatabaseReporter"
    env = {"SLOWWATCH_TEST_REPORTERS": reporters, "SLOWWATCH_TEST_PG": "0"}
    args = ["-b", "127.0.0.1:0", "-k", "sync", "-w", "1", "-c", "testproject/gunicorn_conf.py"]
    srv = Server(tmp_path, args, env=env)

    def rows() -> list[tuple[str, str, int]]:
        with closing(sqlite3.connect(db)) as conn:
            found = conn.execute("SELECT path, state, pid FROM slowwatch_slowrequest")
            return sorted(found.fetchall())

    def wait_for(check: Callable[[list[tuple[str, str, int]]], bool]) -> list[Any]:
        deadline = time.monotonic() + 20
        found = rows()
        while not check(found) and time.monotonic() < deadline:
            time.sleep(0.1)
            found = rows()
        return found

    try:
        with ThreadPoolExecutor(1) as pool:
            hanging = pool.submit(srv.get, "/sleep/?s=30", 30)
            [(path, state, pid)] = wait_for(lambda r: len(r) == 1)
            assert (path, state) == ("/sleep/?s=30", "slow")
            os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                hanging.result()
        # The next worker's first report closes the dead worker's row.
        assert srv.get("/sleep/?s=0.6")[0] == 200
        found = wait_for(lambda r: ("/sleep/?s=30", "lost", pid) in r)
        assert ("/sleep/?s=30", "lost", pid) in found, found
    finally:
        srv.stop()


def test_a_streaming_response_is_watched_until_its_last_chunk(server):
    """The view returns at once; the 1.5 s are spent sending the stream."""
    status, body = server.get("/stream/?s=1.5")
    assert status == 200 and body.count(b"chunk") == 5
    [report] = server.reports(1, slow("slow"))
    assert "# the streaming line" in report["message"]
    functions = [f["function"] for f in report["slowwatch"]["stack"]["frames"]]
    # "stream.<locals>.chunks" from Python 3.11 on (qualified names), "chunks" before.
    assert any(name.rpartition(".")[2] == "chunks" for name in functions), functions
    [done] = server.reports(1, slow("finished"))
    assert done["slowwatch"]["timing"]["elapsed"] >= 1.4
    # It ended well: its status, and no exception (the end of the iteration is none).
    assert done["slowwatch"]["outcome"] == {"status_code": 200, "exception": ""}
    assert "% sleeping" in done["message"]
    # The worker's next request is watched as usual.
    assert server.get("/sleep/?s=0.6")[0] == 200
    assert len(server.reports(2, slow("finished"))) == 2
