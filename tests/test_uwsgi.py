"""uWSGI, built from PyPI: pre-fork without fork hooks, and harakiri.

uWSGI forks its workers in C, so Python's at-fork hooks do not run: each new
worker notices its new pid on its first requests, several of them at once.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from test_control import migrate

from helpers import HERE, Server, slow

UWSGI = shutil.which("uwsgi", path=str(Path(sys.executable).parent))

pytestmark = [
    pytest.mark.server,
    # Built from source for the default Python only (scripts/test): once is enough.
    pytest.mark.load,
    pytest.mark.skipif(
        UWSGI is None, reason="uWSGI is not installed next to this Python (pip install uwsgi)"
    ),
]


def uwsgi(tmp_path: Path, *options: str, reporters: str = "") -> Server:
    migrate(tmp_path / "db.sqlite3")
    assert UWSGI is not None
    command = [
        UWSGI,
        "--http-socket",
        "127.0.0.1:0",
        "--module",
        "testproject.wsgi:application",
        "--master",
        "--die-on-term",
        "--home",
        str(Path(sys.executable).parent.parent),
        *options,
    ]
    env = {"SLOWWATCH_TEST_PG": "0", "DJANGO_SETTINGS_MODULE": "testproject.settings"}
    if reporters:
        env["SLOWWATCH_TEST_REPORTERS"] = reporters
    return Server(tmp_path, [], env=env, command=command, cwd=HERE)


def rows(db: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(db)) as conn:
        return sorted(conn.execute("SELECT path, state FROM slowwatch_slowrequest").fetchall())


def test_concurrent_first_requests_of_new_workers_are_each_reported(tmp_path: Path) -> None:
    """Pre-fork without lazy-apps: 8 slow requests reach 2 fresh workers of 4
    threads at once. Each is reported, with its own stack (its depth)."""
    srv = uwsgi(tmp_path, "--processes", "2", "--threads", "4")
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda n: srv.get(f"/deep/{n}/?s=1.0"), range(8)))
        assert [status for status, _ in answers] == [200] * 8
        reports = srv.reports(8, slow("slow"))
        assert sorted(r["slowwatch"]["request"]["url"] for r in reports) == [
            f"/deep/{n}/?s=1.0" for n in range(8)
        ]
        for report in reports:
            depth = int(report["slowwatch"]["request"]["url"].split("/")[2])
            frames = report["slowwatch"]["stack"]["frames"]
            assert sum(f["function"] == "descend" for f in frames) == depth + 1
        assert len(srv.reports(8, slow("finished"))) == 8
    finally:
        srv.stop()


def test_harakiri_the_slow_report_is_out_before_the_kill_and_the_row_is_closed(
    tmp_path: Path,
) -> None:
    """harakiri kills the worker with SIGKILL: the ``slow`` report went out at
    the threshold; the worker uWSGI starts in its place closes the row."""
    db = tmp_path / "db.sqlite3"
    reporters = "slowwatch.reporters.LoggingReporter,slowwatch.reporters.DatabaseReporter"
    srv = uwsgi(tmp_path, "--processes", "1", "--harakiri", "3", reporters=reporters)
    try:
        with contextlib.suppress(OSError):  # the connection dies with the worker
            srv.get("/sleep/?s=30", timeout=20)
        [report] = srv.reports(1, slow("slow"))
        assert report["slowwatch"]["request"]["url"] == "/sleep/?s=30"
        assert ("/sleep/?s=30", "slow") in rows(db) or ("/sleep/?s=30", "lost") in rows(db)
        # The next worker's first report closes the row the killed one left.
        assert srv.get("/sleep/?s=0.6")[0] == 200
        deadline = time.monotonic() + 20
        while ("/sleep/?s=30", "lost") not in rows(db) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ("/sleep/?s=30", "lost") in rows(db), rows(db)
    finally:
        srv.stop()


def test_a_uwsgi_without_python_threads_is_named_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """uWSGI before 2.0.31 without --enable-threads never runs another Python
    thread. That uWSGI cannot be built here (2.0.31 always has threads), so
    its module is stood in for by one that says what it would say."""
    import types

    from slowwatch.uwsgi import warn_if_threads_are_off

    stand_in = types.ModuleType("uwsgi")
    stand_in.has_threads = 0  # type: ignore[attr-defined]
    sys.modules["uwsgi"] = stand_in
    try:
        with caplog.at_level("WARNING", logger="slowwatch.internal"):
            warn_if_threads_are_off()
    finally:
        del sys.modules["uwsgi"]
    assert "--enable-threads" in caplog.text
    caplog.clear()
    warn_if_threads_are_off()  # no uWSGI here: nothing to say
    assert caplog.text == ""


@pytest.mark.parametrize("loading", [[], ["--lazy-apps"]], ids=["pre-fork", "lazy-apps"])
def test_a_graceful_harakiri_reports_each_request_killed_every_time(
    tmp_path: Path, loading: list[str]
) -> None:
    """With a free graceful signal, uWSGI's warning reaches slowwatch: the four
    requests in flight are reported ``killed`` and their rows say so. The worker
    ends itself, so the next harakiri is graceful again: killed reports again."""
    db = tmp_path / "db.sqlite3"
    reporters = "slowwatch.reporters.LoggingReporter,slowwatch.reporters.DatabaseReporter"
    options = [*loading, "--processes", "1", "--threads", "4", "--harakiri", "2"]
    graceful = ["--harakiri-graceful-timeout", "3", "--harakiri-graceful-signal", "34"]
    srv = uwsgi(tmp_path, *options, *graceful, reporters=reporters)

    def four_stuck(round_: int) -> None:
        def get(n: int) -> None:
            with contextlib.suppress(OSError):  # the connection dies with the worker
                srv.get(f"/deep/{n}/?s=30&round={round_}", timeout=30)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(get, range(4)))

    try:
        for round_ in (1, 2):
            four_stuck(round_)

            def this_round(kind: str, r: int = round_) -> Any:
                return lambda rep: slow(kind)(rep) and f"round={r}" in rep["message"]

            killed = srv.reports(4, this_round("killed"), timeout=20)
            assert len(killed) == 4, srv.all_reports()
            slows = {r["slowwatch"]["id"] for r in srv.reports(4, this_round("slow"))}
            assert {r["slowwatch"]["id"] for r in killed} == slows
            for report in killed:
                depth = int(report["slowwatch"]["request"]["url"].split("/")[2])
                frames = report["slowwatch"]["stack"]["frames"]
                assert sum(f["function"] == "descend" for f in frames) == depth + 1
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                states = [s for path, s in rows(db) if f"round={round_}" in path]
                if states == ["killed"] * 4:
                    break
                time.sleep(0.1)
            assert states == ["killed"] * 4, rows(db)
        assert "graceful termination attempt" in "".join(srv.log)
    finally:
        srv.stop()


def test_a_graceful_signal_uwsgi_handles_itself_is_named_at_start_up(tmp_path: Path) -> None:
    srv = uwsgi(
        tmp_path,
        "--processes",
        "1",
        "--harakiri",
        "2",
        "--harakiri-graceful-timeout",
        "3",
        "--harakiri-graceful-signal",
        "10",
    )
    try:
        assert srv.get("/fast/")[0] == 200
        assert srv.wait_for_log("harakiri-graceful-signal = 10 is a signal uWSGI handles")
    finally:
        srv.stop()
