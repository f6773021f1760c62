"""Helpers shared by the tests: a collecting reporter and a real-server runner."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.conf import settings

from slowwatch.render import text
from slowwatch.report import Report
from slowwatch.reporters.base import Reporter
from slowwatch.reporters.database import DatabaseReporter
from slowwatch.reporters.log import LEVELS as LOG_LEVELS
from slowwatch.reporters.log import LoggingReporter

HERE = Path(__file__).resolve().parent

#: scripts/test starts PostgreSQL, or says loudly that it could not (SLOWWATCH_TEST_PG=0).
needs_postgres = pytest.mark.skipif(
    "pg" not in settings.DATABASES, reason="PostgreSQL is not available (SLOWWATCH_TEST_PG=0)"
)


class Collected(Reporter):
    """A reporter that keeps what it receives, for in-process tests."""

    reports: list[object] = []
    arrived = threading.Event()

    def handle(self, report: object) -> None:
        Collected.reports.append(report)
        Collected.arrived.set()


class Hanging(Reporter):
    """A reporter that hangs on every report until :attr:`release` is set."""

    release = threading.Event()
    entered = threading.Event()

    def handle(self, report: object) -> None:
        Hanging.entered.set()
        Hanging.release.wait(30)


class DownDatabaseReporter(DatabaseReporter):
    """A DatabaseReporter writing to the alias ``down``, which a test points at nothing."""

    alias = "down"

    def __init__(self) -> None:
        super().__init__()
        self.alias = type(self).alias


class Server:
    """The test project under a real server in a subprocess, on a free port of 127.0.0.1.

    Reports come back through the project's JSON-lines log handler.
    """

    def __init__(
        self,
        tmp_path: Path,
        args: list[str],
        *,
        threshold: float = 0.3,
        module: str = "gunicorn",
        app: str = "testproject.wsgi:application",
        env: dict[str, str] | None = None,
        cwd: Path = HERE,
        command: list[str] | None = None,
    ) -> None:
        self.reports_file = tmp_path / "reports.jsonl"
        self.reports_file.touch()
        full_env = {
            **os.environ,
            "PYTHONPATH": str(HERE),
            "SLOWWATCH_TEST_REPORTS": str(self.reports_file),
            "SLOWWATCH_TEST_THRESHOLD": str(threshold),
            "SLOWWATCH_TEST_DB": str(tmp_path / "db.sqlite3"),
            **(env or {}),
        }
        # ``command``: a server that is not a Python module (uWSGI's binary).
        cmd = command or [sys.executable, "-m", module, app, *args]
        # A session of its own: stop() can end whatever the server left behind.
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=full_env, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self.log: list[str] = []
        self.worker_pids: set[int] = set()
        self.port = 0
        ready = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(ready,), daemon=True)
        self._reader.start()
        if not ready.wait(30) or not self.port:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.log))

    def _read(self, ready: threading.Event) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            found = re.search(
                r"(?:Listening at: |running on )http://127\.0\.0\.1:(\d+)"
                r"|(?:bound to|Listening on) TCP address 127\.0\.0\.1:(\d+)",
                line,
            )
            if found:
                self.port = int(found.group(1) or found.group(2))
                ready.set()
            worker = re.search(
                r"Booting worker with pid: (\d+)|uWSGI worker \d+ \(pid: (\d+)", line
            )
            if worker:
                self.worker_pids.add(int(worker.group(1) or worker.group(2)))
        ready.set()

    def wait_for_log(self, text: str, timeout: float = 15) -> bool:
        """Wait until the server's stderr contains ``text`` (it is another process)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in "".join(self.log):
                return True
            time.sleep(0.05)
        return False

    def get(self, path: str, timeout: float = 30) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def all_reports(self) -> list[dict[str, Any]]:
        # The server may be halfway through writing the last line: skip it.
        lines = self.reports_file.read_text().split("\n")[:-1]
        return [json.loads(line) for line in lines if line.strip()]

    def reports(
        self,
        count: int,
        where: Callable[[dict[str, Any]], bool] = lambda r: True,
        timeout: float = 15,
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` reports match ``where`` (polling a file another process writes)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.all_reports() if where(r)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # A worker that outlived its server would keep the log pipe open (and
        # the reader blocked on it) for good.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._reader.join(5)
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()


def slow(kind: str) -> Callable[[dict[str, Any]], bool]:
    """Matches report documents of one kind (``slow`` or ``finished``)."""
    return lambda r: r["slowwatch"] is not None and r["slowwatch"]["kind"] == kind


class Broken(Reporter):
    """A reporter that always fails."""

    def handle(self, report: object) -> None:
        raise RuntimeError("this reporter is broken")


class Bare:
    """A reporter written without the base class: ``handle`` and nothing else."""

    reports: ClassVar[list[object]] = []

    def handle(self, report: object) -> None:
        Bare.reports.append(report)


class OuterMiddleware:
    """Put before slowwatch in MIDDLEWARE: records what the layers below answered."""

    seen: ClassVar[list[int]] = []

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)  # an exception here would be a leak
        OuterMiddleware.seen.append(response.status_code)
        return response


class SecondLoggingReporter(LoggingReporter):
    """A second log sink (tests/test_faults.py): the LoggingReporter's records, on a
    logger of its own (``testproject.second``), as ``DogslowLoggingReporter`` has.

    A handler of ``slowwatch.report`` that hangs is then the fault of one sink,
    and this one's records show what the other sinks got meanwhile.
    """

    logger = logging.getLogger("testproject.second")

    def handle(self, report: Report) -> None:
        level = LOG_LEVELS.get(report.kind, logging.INFO)
        self.logger.log(level, "%s", text(report), extra={"slowwatch": report.to_dict()})


def reach_both_workers(srv: Server, path: str = "/sleep/?s=0.4", batch: int = 8) -> int:
    """Send ``batch`` concurrent requests at a time until both of a two-worker
    server's workers answered some; how many requests were sent."""
    from concurrent.futures import ThreadPoolExecutor

    pids: set[int] = set()
    sent = 0
    for _ in range(10):
        with ThreadPoolExecutor(batch) as pool:
            answers = list(pool.map(srv.get, [path] * batch))
        sent += len(answers)
        pids |= {json.loads(body)["pid"] for _, body in answers}
        if len(pids) == 2:
            return sent
    raise AssertionError(f"one worker answered every request: {pids}")
