"""Runtime control and storage under a real gunicorn with two workers.

The admin's settings page writes the control row; here the test writes it the
same way (one UPDATE) and checks that every worker applies it within one
refresh period, and that the workers' reports land in the database.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from helpers import HERE, Server, slow
from slowwatch.control import PERIOD

pytestmark = pytest.mark.server


def migrate(db: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(HERE),
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "SLOWWATCH_TEST_DB": str(db),
        "SLOWWATCH_TEST_PG": "0",
    }
    env.pop("SLOWWATCH_TEST_DATABASE", None)
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "-v", "0"], env=env, check=True, timeout=120
    )


def burst(srv: Server, n: int = 8) -> set[int]:
    """``n`` concurrent 0.5 s requests; the pids of the workers that served them."""
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda _: srv.get("/sleep/?s=0.5"), range(n)))
    assert all(status == 200 for status, _ in answers)
    return {json.loads(body)["pid"] for _, body in answers}


def set_control(db: Path, paused: bool, threshold: float | None) -> None:
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM slowwatch_control")
        conn.execute(
            "INSERT INTO slowwatch_control (id, paused, threshold, changed_at, changed_by) "
            "VALUES (1, ?, ?, datetime('now'), 'test')",
            (paused, threshold),
        )


def test_every_worker_follows_the_control_row_and_stores_its_reports(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    migrate(db)
    env = {
        "SLOWWATCH_TEST_REPORTERS": (
            "slowwatch.reporters.LoggingReporter,slowwatch.reporters.DatabaseReporter"
        ),
        "SLOWWATCH_TEST_CONTROL": "1",
        "SLOWWATCH_TEST_PG": "0",
    }
    args = ["-b", "127.0.0.1:0", "-k", "gthread", "-w", "2", "--threads", "4"]
    srv = Server(tmp_path, args, threshold=2.0, env=env)
    try:
        served: set[int] = set()
        for _ in range(5):  # until both workers have run (and armed) a request
            served |= burst(srv)
            if len(served) == 2:
                break
        assert len(served) == 2, served
        assert srv.all_reports() == []  # 0.5 s is under the 2 s threshold

        set_control(db, paused=False, threshold=0.2)
        time.sleep(PERIOD + 1.5)
        pids: set[int] = set()
        for _ in range(5):
            pids |= burst(srv)
            if len(pids) == 2:
                break
        found = srv.reports(16, slow("slow"))
        assert {r["slowwatch"]["process"]["pid"] for r in found} == pids == served
        assert all(r["slowwatch"]["timing"]["threshold"] == pytest.approx(0.2) for r in found)
        with closing(sqlite3.connect(db)) as conn, conn:
            stored: list[Any] = conn.execute(
                "SELECT DISTINCT pid FROM slowwatch_slowrequest"
            ).fetchall()
        assert {pid for (pid,) in stored} == pids

        set_control(db, paused=True, threshold=0.2)
        time.sleep(PERIOD + 1.5)
        before = len(srv.all_reports())
        for _ in range(2):
            burst(srv)
        time.sleep(1)
        assert len(srv.all_reports()) == before  # paused everywhere
    finally:
        srv.stop()


def test_a_request_killed_by_gunicorn_is_stored_as_killed(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    migrate(db)
    env = {
        "SLOWWATCH_TEST_REPORTERS": (
            "slowwatch.reporters.LoggingReporter,slowwatch.reporters.DatabaseReporter"
        ),
        "SLOWWATCH_TEST_PG": "0",
    }
    args = ["-b", "127.0.0.1:0", "-k", "sync", "-w", "1", "--timeout", "2"]
    srv = Server(tmp_path, [*args, "-c", "testproject/gunicorn_conf.py"], env=env)
    try:
        with contextlib.suppress(OSError):  # the worker dies under the request
            srv.get("/sleep/?s=30", timeout=20)
        assert srv.reports(1, slow("killed"), timeout=20)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with closing(sqlite3.connect(db)) as conn, conn:
                rows = conn.execute(
                    "SELECT state, duration, timeline FROM slowwatch_slowrequest"
                ).fetchall()
            if rows and rows[0][0] == "killed":
                break
            time.sleep(0.1)
        [(state, duration, timeline)] = rows
        assert state == "killed" and duration >= 2
        assert [e["kind"] for e in json.loads(timeline)] == ["slow", "killed"]
    finally:
        srv.stop()
