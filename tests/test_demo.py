"""The demo project, as the README's demo command runs it: gunicorn, SQLite, console reports."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import pytest

from helpers import HERE, Server

DEMO = HERE.parent / "demo"
pytestmark = pytest.mark.server


def test_demo_reports_its_slow_sql_page_on_the_console(tmp_path):
    demo_env = {
        "DEMO_DB": str(tmp_path / "demo.sqlite3"),
        "DJANGO_SETTINGS_MODULE": "shop.settings",
    }
    env = {**os.environ, **demo_env}
    migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v0"]
    subprocess.run(migrate, cwd=DEMO, env=env, check=True, timeout=60)
    server = Server(
        tmp_path,
        ["-c", "shop/gunicorn.conf.py"],
        app="shop.wsgi",
        cwd=DEMO,
        env={"PORT": "0", "TZ": "UTC", **demo_env},  # as scripts/demo runs it
    )
    try:
        assert server.get("/")[0] == 200
        assert server.get("/orders/") == (200, b"0 orders")
        assert server.get("/report/?token=s3cret")[0] == 200
        assert server.wait_for_log("Slow request finished: GET /report/?token=********")
        log = "".join(server.log)
        assert "Slow request: GET /report/?token=******** (shop.views.report)" in log
        assert 'views.py", line' in log and "in sales_figures" in log
        assert "s3cret" not in log
        assert "/orders/" not in log.split("Slow request", 1)[1]
        # gunicorn's lines and slowwatch's read as one log: one format, one clock.
        stamps = re.findall(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ([+-]\d{4})\] \[\d+\]", log, re.M)
        assert len(stamps) >= 4 and set(stamps) == {"+0000"}, log
        assert re.search(r"^\[[^]]+\] \[\d+\] \[WARNING\] slowwatch.report$", log, re.M)
        # The default DatabaseReporter stored it for the admin.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with closing(sqlite3.connect(tmp_path / "demo.sqlite3")) as db, db:
                rows = db.execute("SELECT state, path FROM slowwatch_slowrequest").fetchall()
            if rows and rows[0][0] == "finished":
                break
            time.sleep(0.1)
        assert rows == [("finished", "/report/?token=********")]
        assert server.get("/admin/slowwatch/slowrequest/")[0] == 200  # the login page
        assert server.get("/static/slowwatch/admin.css")[0] == 200
    finally:
        server.stop()
