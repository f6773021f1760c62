"""What slowwatch costs, measured side by side with an empty middleware and dogslow.

Run it through ``scripts/bench`` (which builds the virtualenv), or directly in
one that has slowwatch, dogslow, gunicorn and wrk::

    python benchmarks/overhead.py            # everything, about 25 minutes on 2 cores
    python benchmarks/overhead.py --quick    # fewer and shorter rounds

Every configuration is measured in interleaved batches, so that the machine's
drift hits all of them alike; differences are paired per round and their
median is reported. Where a process's memory lies shifts the figures as much
as a middleware costs (see ``LAYOUTS``), so each part measures over several
layouts: fresh processes, padded environments, a fresh server per round. The
output is a Markdown table, quoted in ``docs/performance.rst``.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import gc
import io
import json
import logging
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproject")
os.environ["BENCH_RECORD"] = "1"

import django  # noqa: E402

django.setup()

from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.test import RequestFactory, override_settings  # noqa: E402

import benchproject  # noqa: E402
from benchproject import CONFIGS, DOGSLOW, EMPTY_ASYNC, QUERY_CONFIGS  # noqa: E402
from benchproject import SLOWWATCH_MIDDLEWARE as SLOWWATCH  # noqa: E402


def out(line: str = "") -> None:
    print(line, flush=True)


def handler(middleware: list[str], **overrides: Any) -> WSGIHandler:
    with override_settings(MIDDLEWARE=middleware, **overrides):
        return WSGIHandler()


def environ(path: str, query: str = "") -> dict[str, Any]:
    return RequestFactory()._base_environ(PATH_INFO=path, QUERY_STRING=query, REQUEST_METHOD="GET")


def call(app: WSGIHandler, base: dict[str, Any]) -> None:
    env = dict(base)
    env["wsgi.input"] = io.BytesIO()
    response = app(env, lambda status, headers, exc_info=None: None)
    b"".join(response)
    response.close()  # fires request_finished, as a server would


# -- 1. in-process cost per request -------------------------------------------


def inprocess(rounds: int, batch: int) -> dict[str, tuple[float, float, float]]:
    apps = {name: handler(mw) for name, mw in CONFIGS.items()}
    base = environ("/hello")
    for app in apps.values():
        for _ in range(500):
            call(app, base)
    timings: dict[str, list[float]] = {name: [] for name in apps}
    order = list(apps)
    rng = random.Random(1)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            app = apps[name]
            t0 = time.perf_counter()
            for _ in range(batch):
                call(app, base)
            timings[name].append((time.perf_counter() - t0) / batch * 1e6)
    result = {}
    for name, values in timings.items():
        diffs = [a - b for a, b in zip(values, timings["bare"], strict=True)]
        q = statistics.quantiles(diffs, n=4) if len(diffs) > 3 else [0, 0, 0]
        result[name] = (statistics.median(values), statistics.median(diffs), q[2] - q[0])
    return result


# -- 2. arm + disarm with many concurrent watches -----------------------------


def arm_disarm(concurrent: int, calls: int) -> float:
    """µs per pass through the middleware around a no-op, with N other watches armed."""
    from slowwatch import runtime
    from slowwatch.middleware import SlowWatchMiddleware

    with override_settings(SLOWWATCH={"THRESHOLD": 25}):
        mw = SlowWatchMiddleware(lambda request: None)
    watchdog = runtime.watchdog()
    watchdog.ensure_running()
    started = time.monotonic()
    # Other requests in flight, as if on other threads or tasks.
    for i in range(concurrent - 1):
        watchdog.active[("other", i)] = [started, 25.0, None, None, None]
    watchdog.wake()  # let the monitor file them in its heap
    time.sleep(0.05)
    request = RequestFactory().get("/hello")
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            mw(request)
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    for i in range(concurrent - 1):
        watchdog.active.pop(("other", i), None)
    return best


# -- 3. detection latency ----------------------------------------------------

_lock = threading.Lock()
_late: list[float] = []


_reports: list[Any] = []


class RecordingReporter:
    """Keeps the reports, and how late each snapshot was taken (slowwatch says so)."""

    def handle(self, report: Any) -> None:
        with _lock:
            _reports.append(report)
            if report.kind == "slow":
                _late.append(report.late_by)


benchproject.RecordingReporter = RecordingReporter  # type: ignore[attr-defined]


def _dogslow_recorder(threshold: float) -> None:
    import dogslow

    original = dogslow.WatchdogMiddleware.peek

    def peek(request: Any, thread_id: int, started: Any) -> Any:
        # dogslow's deadline: its start (naive UTC) plus DOGSLOW_TIMER.
        start = calendar.timegm(started.timetuple()) + started.microsecond / 1e6
        with _lock:
            _late.append(max(0.0, time.time() - (start + threshold)))
        return original(request, thread_id, started)

    if not getattr(dogslow.WatchdogMiddleware.peek, "_bench", False):
        peek._bench = True  # type: ignore[attr-defined]
        dogslow.WatchdogMiddleware.peek = staticmethod(peek)  # it is a static method


#: How long each full (generation 2) garbage collection of the current detection try took, in s.
_collections: list[float] = []
_collection_started = [0.0]


def _time_collections(phase: str, info: dict[str, int]) -> None:
    # A full collection stops every thread, the monitor too: the detection
    # table shows the longest one next to the latencies.
    if info["generation"] != 2:
        return
    if phase == "start":
        _collection_started[0] = time.perf_counter()
    else:
        _collections.append(time.perf_counter() - _collection_started[0])


def detection(tool: str, kind: str, concurrent: int) -> list[float]:
    threshold, duration = 1.0, 1.6
    if tool == "slowwatch":
        app = handler([SLOWWATCH], SLOWWATCH={**benchproject.SLOWWATCH, "THRESHOLD": threshold})
    else:
        _dogslow_recorder(threshold)
        app = handler([DOGSLOW], DOGSLOW_TIMER=int(threshold))
    base = environ(f"/{kind}", f"s={duration}")
    with _lock:
        _late.clear()
        # Reports kept from try to try would make each collection slower than the last.
        _reports.clear()
    threads = [threading.Thread(target=call, args=(app, base)) for _ in range(concurrent)]
    gc.callbacks.append(_time_collections)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        gc.callbacks.remove(_time_collections)
    if tool == "slowwatch":
        from slowwatch import runtime

        runtime.flush(5)
    with _lock:
        return list(_late)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# -- 4. sampling cost, per-query cost, report size ----------------------------


def sampling_cost(concurrent: int, seconds: float) -> tuple[float, int, int]:
    """Monitor-thread CPU share while ``concurrent`` slow requests are sampled at 20 Hz."""
    from slowwatch import runtime

    app = handler([SLOWWATCH], SLOWWATCH={**benchproject.SLOWWATCH, "THRESHOLD": 0.5})
    base = environ("/sleep", f"s={seconds + 1.0}")
    with _lock:
        _reports.clear()
    threads = [threading.Thread(target=call, args=(app, base)) for _ in range(concurrent)]
    for t in threads:
        t.start()
    time.sleep(0.75)  # all past the threshold, being sampled
    monitor = next(t for t in threading.enumerate() if t.name == "slowwatch-monitor")
    clock = time.pthread_getcpuclockid(monitor.ident or 0)
    cpu0, wall0 = time.clock_gettime(clock), time.monotonic()
    time.sleep(seconds)
    cpu1, wall1 = time.clock_gettime(clock), time.monotonic()
    for t in threads:
        t.join()
    runtime.flush(5)
    with _lock:
        slow = [r for r in _reports if r.kind == "slow"]
        done = [r for r in _reports if r.kind == "finished"]
    slow_size = max((len(json.dumps(r.to_dict())) for r in slow), default=0)
    done_size = max((len(json.dumps(r.to_dict())) for r in done), default=0)
    return (cpu1 - cpu0) / (wall1 - wall0), slow_size, done_size


def query_cost(queries: int) -> tuple[float, float, float]:
    """µs per ``SELECT 1``: no wrapper, a pass-through wrapper, slowwatch's tracker."""
    from django.db import connection

    from slowwatch import runtime
    from slowwatch.sql import QueryTracker, install

    watchdog = runtime.watchdog()
    connection.ensure_connection()
    install(connection, watchdog.active)
    tracker = [
        w
        for w in connection.execute_wrappers
        if isinstance(getattr(w, "__self__", None), QueryTracker)
    ]
    key = threading.get_ident()

    def run() -> float:
        with connection.cursor() as cursor:
            t0 = time.perf_counter()
            for _ in range(queries):
                cursor.execute("SELECT 1")
            return (time.perf_counter() - t0) / queries * 1e6

    without, empty, with_ = [], [], []
    for _ in range(7):
        connection.execute_wrappers[:] = []
        without.append(run())
        connection.execute_wrappers[:] = [benchproject.passthrough]
        empty.append(run())
        connection.execute_wrappers[:] = tracker
        watchdog.active[key] = [time.monotonic(), 25.0, None, None, None]
        with_.append(run())
        watchdog.active.pop(key, None)
    return statistics.median(without), statistics.median(empty), statistics.median(with_)


# -- 5. instruction counts under callgrind ----------------------------------


#: Environment padding, in bytes, of the runs a count is the median of. Where
#: the process's memory lies shifts with the size of its environment, and with
#: it how often dict and cache lookups collide: one layout can count more
#: instructions per request than another for the same code, by more than a
#: whole middleware costs (docs/performance.rst). The median over several
#: layouts is what code costs.
LAYOUTS = (0, 8, 16, 24, 32, 40, 48, 56, 64)
QUICK_LAYOUTS = (0, 24, 48)


def instructions(part: str, config: str, small: int, large: int, pad: int) -> int:
    """Instructions the main thread spends per request (or query) in ``config``.

    Two callgrind runs of benchmarks/instructions.py, ``small`` and ``large``
    iterations: the difference divided by ``large - small`` leaves start-up,
    warm-up and slowwatch's own threads (counted apart) out. A fixed hash seed
    and no ``.pyc`` writing make the two runs do the same start-up work.
    """
    env = {k: v for k, v in os.environ.items() if k != "BENCH_RECORD"}
    # Not BENCH_RECORD: its reporter exists only in this process.
    env.update(PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1", BENCH_PAD="x" * pad)
    totals = []
    for count in (small, large):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--separate-threads=yes",
                    f"--callgrind-out-file={tmp}/out",
                    sys.executable,
                    str(HERE / "instructions.py"),
                    part,
                    config,
                    str(count),
                ],
                env=env,
                capture_output=True,
                check=True,
            )
            main_thread = Path(f"{tmp}/out-01").read_text()
            found = re.search(r"^summary: (\d+)", main_thread, re.MULTILINE)
            assert found, "no summary line in callgrind's output"
            totals.append(int(found.group(1)))
    return round((totals[1] - totals[0]) / (large - small))


def counted(
    part: str, configs: list[str], small: int, large: int, layouts: tuple[int, ...]
) -> dict[str, list[int]]:
    """Each configuration's count under every layout, sorted (runs use every core)."""
    jobs = [(config, pad) for pad in layouts for config in configs]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = pool.map(lambda job: instructions(part, job[0], small, large, job[1]), jobs)
        found: dict[str, list[int]] = {config: [] for config in configs}
        for (config, _), count in zip(jobs, counts, strict=True):
            found[config].append(count)
    return {config: sorted(values) for config, values in found.items()}


def instructions_table(raw: dict[str, Any], quick: bool) -> None:
    if shutil.which("valgrind") is None:
        out("(instruction counts skipped: valgrind is not installed; apt-get install valgrind)")
        return
    layouts = QUICK_LAYOUTS if quick else LAYOUTS
    small, large = (300, 1300) if quick else (1000, 4000)
    spread = counted("request", list(CONFIGS), small, large, layouts)
    counts = {name: round(statistics.median(values)) for name, values in spread.items()}
    base = counts["bare"]
    # Time per instruction of the bare request, from the wall-clock part when it ran.
    bare_us = raw.get("inprocess", {}).get("bare", (None,))[0]
    per_ns = bare_us * 1000 / base if bare_us else None
    raw["instructions"] = {"request": spread, "ns_per_instruction": per_ns, "layouts": layouts}
    out(
        f"## Per request, counted by callgrind (hello-world view; {large:,} minus "
        f"{small:,} requests, main thread; median of {len(layouts)} memory layouts)"
    )
    out()
    out(
        "| configuration | instructions per request | layouts min–max "
        "| added vs bare | added vs empty | µs* |"
    )
    out("|---|---|---|---|---|---|")
    for name, count in counts.items():
        above_empty = f"{count - counts['empty']:+,}" if name not in ("bare", "empty") else ""
        us = f"{(count - base) * per_ns / 1000:+.2f}" if per_ns else "n/a"
        low, high = spread[name][0], spread[name][-1]
        out(
            f"| {name} | {count:,} | {low:,}–{high:,} | {count - base:+,} | {above_empty} | {us} |"
        )
    out()
    qsmall, qlarge = (1000, 6000) if quick else (5000, 25000)
    qspread = counted("query", list(QUERY_CONFIGS), qsmall, qlarge, layouts)
    queries = {name: round(statistics.median(values)) for name, values in qspread.items()}
    raw["instructions"]["query"] = qspread
    out(
        f"## Per query, counted by callgrind (`SELECT 1` on SQLite; {qlarge:,} minus "
        f"{qsmall:,}; median of {len(layouts)} memory layouts)"
    )
    out()
    out(
        "| execute wrappers | per query | layouts min–max | added vs none "
        "| added vs pass-through | µs* |"
    )
    out("|---|---|---|---|---|---|")
    for name, count in queries.items():
        above = f"{count - queries['passthrough']:+,}" if name.startswith("tracker") else ""
        us = f"{(count - queries['none']) * per_ns / 1000:+.2f}" if per_ns else "n/a"
        low, high = qspread[name][0], qspread[name][-1]
        out(
            f"| {name} | {count:,} | {low:,}–{high:,} | {count - queries['none']:+,} | {above} "
            f"| {us} |"
        )
    out()
    if per_ns:
        out(
            f"\\* added instructions times this run's bare request time per instruction "
            f"({per_ns:.3f} ns)."
        )
        sw, empty = counts["slowwatch"] - base, counts["empty"] - base
        ds = counts["dogslow"] - base
        out(
            f"slowwatch above the empty middleware: {(sw - empty) * per_ns / 1000:+.2f} µs; "
            f"slowwatch / dogslow added cost: {sw / ds:.3f}; the empty middleware / "
            f"dogslow: {empty / ds:.3f}"
        )
        out()
    other_servers_table(raw)


def other_servers_table(raw: dict[str, Any]) -> None:
    """Per request under gevent and under ASGI, counted as above.

    Fewer requests and layouts than the sync counts: an ASGI request costs
    several times a WSGI one, and callgrind runs each about 50 times slower.
    """
    small, large = 200, 1200
    gevent = counted("gevent-request", ["bare", "empty", "slowwatch"], small, large, QUICK_LAYOUTS)
    asgi = counted("asgi-request", ["bare", "empty", "slowwatch"], small, large, QUICK_LAYOUTS)
    raw["instructions"]["gevent-request"] = gevent
    raw["instructions"]["asgi-request"] = asgi
    out(
        f"## Per request under gevent (monkey-patched, in a greenlet) and under ASGI "
        f"(Django's ASGI handler, async view, a task per request), counted by callgrind "
        f"({large:,} minus {small:,} requests; median of {len(QUICK_LAYOUTS)} memory layouts)"
    )
    out()
    out("| serving | bare | empty / bare | slowwatch / bare | slowwatch above empty |")
    out("|---|---|---|---|---|")
    for name, spread in (("gevent", gevent), ("ASGI", asgi)):
        med = {config: statistics.median(values) for config, values in spread.items()}
        out(
            f"| {name} | {med['bare']:,.0f} | {med['empty'] / med['bare']:.4f} | "
            f"{med['slowwatch'] / med['bare']:.4f} | {med['slowwatch'] - med['empty']:+,.0f} |"
        )
    out()


# -- 6. gunicorn throughput ---------------------------------------------------


def _pinned(cpu: int | None) -> Any:
    """A ``preexec_fn`` that keeps the child (and what it forks) on one core."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


#: With two cores or more, the server gets the last one and wrk the first, so
#: that the scheduler neither moves the worker nor puts wrk on its core.
SERVER_CPU, CLIENT_CPU = (
    ((os.cpu_count() or 1) - 1, 0) if (os.cpu_count() or 1) > 1 else (None, None)
)


#: gunicorn's arguments for each worker class measured.
WORKER_ARGS = {
    "sync": ["-k", "sync"],
    "gthread": ["-k", "gthread", "--threads", "4"],
    "gevent": ["-k", "gevent"],
}


class Gunicorn:
    """A gunicorn with one worker running the benchmark project in one configuration."""

    #: Where the server says its port, and its worker's pid.
    PORT = r"Listening at: http://127.0.0.1:(\d+)"
    PID = r"Booting worker with pid: (\d+)"
    PATH = "/hello"

    def command(self, worker: str) -> list[str]:
        args = [sys.executable, "-m", "gunicorn", "benchwsgi:application", "-b", "127.0.0.1:0"]
        return [*args, "-w", "1", "--log-level", "info", *WORKER_ARGS[worker]]

    def __init__(self, middleware: list[str], worker: str) -> None:
        env = dict(os.environ, BENCH_MIDDLEWARE=",".join(middleware), PYTHONPATH=str(HERE))
        env.pop("BENCH_RECORD")  # the recording reporter lives in this process only
        args = self.command(worker)
        self.proc = subprocess.Popen(
            args,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            cwd=HERE,
            preexec_fn=_pinned(SERVER_CPU),
        )
        port = pid = None
        deadline = time.monotonic() + 20
        assert self.proc.stderr is not None
        while (port is None or pid is None) and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            found = re.search(self.PORT, line)
            port = int(found.group(1)) if found else port
            found = re.search(self.PID, line)
            pid = int(found.group(1)) if found else pid
        if port is None or pid is None:
            self.close()
            raise RuntimeError(f"{args[2]} did not start")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        self.url, self.pid = f"http://127.0.0.1:{port}{self.PATH}", pid
        self.wrk(1)  # warm up

    def wrk(self, seconds: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["wrk", "-t1", "-c8", f"-d{seconds}s", self.url],
            capture_output=True,
            text=True,
            preexec_fn=_pinned(CLIENT_CPU),
        )

    def measure(self, seconds: int) -> tuple[float, float]:
        """Requests/s by wrk, and the worker's CPU time per request in µs.

        CPU time per request is the steadier figure on a shared machine: time the
        worker spends waiting for a core does not count in it.
        """
        cpu = self.cpu_seconds()
        run = self.wrk(seconds)
        busy = self.cpu_seconds() - cpu
        found = re.search(r"Requests/sec:\s+([\d.]+)", run.stdout)
        count = re.search(r"(\d+) requests in", run.stdout)
        if run.returncode or not found or not count:
            out(f"(wrk failed for {self.url}: {run.stdout} {run.stderr})")
            return float("nan"), float("nan")
        return float(found.group(1)), busy / int(count.group(1)) * 1e6

    def cpu_seconds(self) -> float:
        """The worker's CPU time, to the nanosecond where Linux tells it."""
        try:
            # Linux's CPU clock of another process (MAKE_PROCESS_CPUCLOCK): the
            # figures of /proc count in 10 ms ticks, coarse next to the 1 % of a
            # 3 s round that is being measured.
            return time.clock_gettime(((~self.pid) << 3) | 2)
        except OSError:
            import psutil

            times = psutil.Process(self.pid).cpu_times()
            return float(times.user + times.system)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


class Uvicorn(Gunicorn):
    """uvicorn (one process) running the benchmark project's async view."""

    PORT = r"Uvicorn running on http://127.0.0.1:(\d+)"
    PID = r"Started server process \[(\d+)\]"
    PATH = "/ahello"

    def command(self, worker: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "benchasgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-access-log",
            "--lifespan",
            "off",
        ]


#: Under ASGI: no middleware, an async one that only forwards, slowwatch.
ASGI_CONFIGS = {"bare": [], "empty": [EMPTY_ASYNC], "slowwatch": [SLOWWATCH]}


def paired(values: dict[str, list[float]], a: str, b: str) -> float:
    """Median of ``a / b`` within each round, so that slow and fast moments cancel out."""
    return statistics.median(x / y for x, y in zip(values[a], values[b], strict=True))


def interval(values: dict[str, list[float]], a: str, b: str) -> str:
    """The 95 % interval of ``a / b`` over the rounds (geometric mean of the
    paired ratios, plus or minus two standard errors): what one run can resolve.

    On a shared host the noise is the CPU's own speed: one process doing the
    same work can spend 1.7x the CPU time per request from one round to the
    next, and an interval of +-5 to 10 % cannot show a difference of 2 %.
    """
    logs = [math.log(x / y) for x, y in zip(values[a], values[b], strict=True)]
    if len(logs) < 2:
        return "n/a"
    mean, error = statistics.mean(logs), statistics.stdev(logs) / math.sqrt(len(logs))
    return f"{math.exp(mean - 2 * error):.3f}–{math.exp(mean + 2 * error):.3f}"


def asgi_table(raw: dict[str, Any], runs: int = 12, seconds: int = 3) -> None:
    """uvicorn's requests/s for a hello-world async view, as gunicorn_table does."""
    if shutil.which("wrk") is None:
        out("(uvicorn throughput skipped: wrk is not installed; apt-get install wrk)")
        return
    out(
        f"## Under uvicorn (ASGI), an async view: requests/s by wrk -t1 -c8, and the "
        f"server's CPU time per request; {runs} interleaved rounds of {seconds} s, medians "
        f"of ratios paired within a round, and their 95 % interval"
    )
    out()
    out(
        "| server | req/s bare | empty / bare | slowwatch / bare | slowwatch / empty "
        "| CPU µs/req bare | empty | slowwatch | bare / slowwatch (CPU) "
        "| 95 % interval: slowwatch / bare | slowwatch / empty |"
    )
    out("|---|---|---|---|---|---|---|---|---|---|---|")
    rps: dict[str, list[float]] = {name: [] for name in ASGI_CONFIGS}
    cpu: dict[str, list[float]] = {name: [] for name in ASGI_CONFIGS}
    for i in range(runs):
        names = list(rps)
        names = names[i % len(names) :] + names[: i % len(names)]
        for name in names:
            server = Uvicorn(ASGI_CONFIGS[name], "asgi")
            try:
                got_rps, got_cpu = server.measure(seconds)
            finally:
                server.close()
            rps[name].append(got_rps)
            cpu[name].append(got_cpu)
    raw["uvicorn"] = {"rps": rps, "cpu_us": cpu}
    med = {k: statistics.median(v) for k, v in cpu.items()}
    out(
        f"| uvicorn | {statistics.median(rps['bare']):.0f} | {paired(rps, 'empty', 'bare'):.3f} | "
        f"{paired(rps, 'slowwatch', 'bare'):.3f} | {paired(rps, 'slowwatch', 'empty'):.3f} | "
        f"{med['bare']:.1f} | {med['empty']:.1f} | {med['slowwatch']:.1f} | "
        f"{paired(cpu, 'bare', 'slowwatch'):.3f} | {interval(rps, 'slowwatch', 'bare')} | "
        f"{interval(rps, 'slowwatch', 'empty')} |"
    )
    out()


def async_detection(concurrent: int) -> list[float]:
    """How late each of ``concurrent`` async requests sleeping past their
    threshold is reported: Django's ASGI handler, in this process."""
    from django.core.handlers.asgi import ASGIHandler
    from django.test.utils import override_settings

    threshold, duration = 1.0, 1.6
    overrides = {
        "MIDDLEWARE": [SLOWWATCH],
        "SLOWWATCH": {**benchproject.SLOWWATCH, "THRESHOLD": threshold},
    }
    with _lock:
        _late.clear()
        _reports.clear()
    with override_settings(**overrides):
        app = ASGIHandler()

        async def all_of_them() -> None:
            query = f"s={duration}"
            await asyncio.gather(
                *(benchproject.asgi_get(app, "/asleep", query) for _ in range(concurrent))
            )

        asyncio.run(all_of_them())
        from slowwatch import runtime

        runtime.flush(5)
    with _lock:
        return list(_late)


def async_detection_table(raw: dict[str, Any], repeats: int) -> None:
    out(
        "## Detection latency of async requests: report time minus deadline (threshold "
        f"1 s; 50 concurrent requests in asyncio.sleep, {repeats} tries, pooled)"
    )
    out()
    out("| requests | reported | p50 ms | p99 ms | max ms |")
    out("|---|---|---|---|---|")
    late: list[float] = []
    for _ in range(repeats):
        late.extend(async_detection(50))
    raw["async_detection"] = late
    ms = [x * 1000 for x in late]
    out(
        f"| 50 | {len(late)}/{50 * repeats} | {pct(ms, 50):.1f} | {pct(ms, 99):.1f} | "
        f"{max(ms, default=float('nan')):.1f} |"
    )
    out()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument(
        "--parts",
        default="inprocess,instructions,arm,detection,sampling,sql,gunicorn,asgi",
        help="comma-separated subset of: inprocess, instructions, arm, detection, "
        "sampling, sql, gunicorn, asgi",
    )
    parser.add_argument(
        "--workers",
        default=",".join(WORKER_ARGS),
        help=f"gunicorn worker classes to measure, of: {', '.join(WORKER_ARGS)}",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=200, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        # One process of the in-process part (see inprocess_table).
        print(json.dumps(inprocess(args.rounds, args.batch)))
        return
    raw: dict[str, Any] = {}
    import dogslow

    out("# slowwatch overhead benchmark")
    out()
    out(
        f"Python {platform.python_version()}, Django {django.get_version()}, "
        f"dogslow {getattr(dogslow, '__version__', '1.2')}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    out()

    parts = set(args.parts.split(","))
    logging.getLogger("dogslow_bench").addHandler(logging.NullHandler())
    logging.getLogger("dogslow_bench").propagate = False
    if "inprocess" in parts:
        inprocess_table(raw, *((3, 40, 200) if args.quick else (9, 100, 200)))
    if "instructions" in parts:
        instructions_table(raw, args.quick)
    if "arm" in parts:
        arm_table(raw, 20_000 if args.quick else 100_000)
    if "detection" in parts:
        detection_table(raw, 2 if args.quick else 6)
    if "sampling" in parts:
        sampling_table(raw, 3.0 if args.quick else 10.0)
    if "sql" in parts:
        sql_table(raw, 2_000 if args.quick else 20_000)
    if "gunicorn" in parts:
        workers = tuple(w for w in args.workers.split(",") if w in WORKER_ARGS)
        gunicorn_table(raw, *((3, 2) if args.quick else (12, 3)), workers)
    if "asgi" in parts:
        async_detection_table(raw, 2 if args.quick else 6)
        asgi_table(raw, *((3, 2) if args.quick else (12, 3)))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1, default=str))


def inprocess_table(raw: dict[str, Any], processes: int, rounds: int, batch: int) -> None:
    # Each process is one memory layout (see LAYOUTS): the same code measured in
    # two fresh processes differs by up to a microsecond per request, more than
    # a middleware costs. So each process measures every configuration, and the
    # figures are medians over the processes.
    runs = []
    for _ in range(processes):
        child = subprocess.run(
            [sys.executable, "-W", "ignore::DeprecationWarning", __file__, "--child"]
            + ["--rounds", str(rounds), "--batch", str(batch)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(child.stdout.splitlines()[-1]))
    res = {
        name: tuple(statistics.median(run[name][i] for run in runs) for i in range(3))
        for name in CONFIGS
    }
    raw["inprocess"] = res
    raw["inprocess_runs"] = runs
    out(
        f"## Per request, in process (hello-world view; {processes} processes, each "
        f"{rounds} interleaved rounds of {batch})"
    )
    out()
    out(
        "| configuration | µs per request | added vs bare (median over processes) "
        "| processes min–max |"
    )
    out("|---|---|---|---|")
    for name, (median, diff, _) in res.items():
        diffs = sorted(run[name][1] for run in runs)
        out(f"| {name} | {median:.1f} | {diff:+.2f} µs | {diffs[0]:+.2f} to {diffs[-1]:+.2f} |")
    above = statistics.median(run["slowwatch"][1] - run["empty"][1] for run in runs)
    ratio = statistics.median(run["slowwatch"][1] / run["dogslow"][1] for run in runs)
    floor = statistics.median(run["empty"][1] / run["dogslow"][1] for run in runs)
    out()
    out(
        f"slowwatch above the empty middleware: {above:+.2f} µs; slowwatch / dogslow "
        f"added cost: {ratio:.3f}; the empty middleware / dogslow: {floor:.3f} "
        "(medians over the processes)"
    )
    out()


def arm_table(raw: dict[str, Any], calls: int) -> None:
    out("## Arm + disarm with other watches in flight (µs per pass, monitor running)")
    out()
    out("| concurrent watches | µs per pass |")
    out("|---|---|")
    raw["arm_disarm"] = {}
    for n in (1, 100, 10_000):
        cost = arm_disarm(n, calls)
        raw["arm_disarm"][n] = cost
        out(f"| {n:,} | {cost:.3f} |")
    out()


def detection_table(raw: dict[str, Any], repeats: int) -> None:
    out(
        "## Detection latency: report time minus deadline (threshold 1 s; each case "
        f"{repeats} times per tool, alternating, pooled)"
    )
    out()
    out(
        "| tool | requests | concurrent | reported | p50 ms | p99 ms | max ms "
        "| p99 ms, median try | longest full GC ms |"
    )
    out("|---|---|---|---|---|---|---|---|---|")
    raw["detection"] = {}
    cases = [("sleep", 1), ("sleep", 20), ("sleep", 200), ("cpu", 1), ("cpu", 4), ("cpu", 20)]
    for kind, n in cases:
        late: dict[str, list[float]] = {"slowwatch": [], "dogslow": []}
        tries: dict[str, list[float]] = {"slowwatch": [], "dogslow": []}
        collections: dict[str, list[float]] = {"slowwatch": [], "dogslow": []}
        for i in range(repeats):
            # Who goes first alternates: a tool's lateness with spinning threads
            # swings from one try to the next more than between the tools.
            for tool in ("slowwatch", "dogslow")[:: 1 if i % 2 == 0 else -1]:
                _collections.clear()
                got = detection(tool, kind, n)
                late[tool].extend(got)
                tries[tool].append(pct(got, 99))
                collections[tool].extend(_collections)
        for tool, values in late.items():
            raw["detection"][f"{tool}/{kind}/{n}"] = values
            raw["detection"][f"{tool}/{kind}/{n}/full-gc"] = collections[tool]
            ms = [x * 1000 for x in values]
            out(
                f"| {tool} | {kind} | {n} | {len(values)}/{n * repeats} | {pct(ms, 50):.1f} | "
                f"{pct(ms, 99):.1f} | {max(ms, default=float('nan')):.1f} | "
                f"{statistics.median(tries[tool]) * 1000:.1f} | "
                f"{max(collections[tool], default=0.0) * 1000:.1f} |"
            )
    out()


def sampling_table(raw: dict[str, Any], seconds: float) -> None:
    share, slow_size, done_size = sampling_cost(10, seconds)
    raw["sampling"] = {"cpu_share": share, "slow_bytes": slow_size, "finished_bytes": done_size}
    out(f"## Sampling: 10 slow requests at once, 20 Hz, {seconds:g} s")
    out()
    out("| monitor thread CPU (% of one core) | slow report (JSON bytes) | finished report |")
    out("|---|---|---|")
    out(f"| {share * 100:.2f} % | {slow_size:,} | {done_size:,} |")
    out()


def sql_table(raw: dict[str, Any], queries: int) -> None:
    without, empty, with_ = query_cost(queries)
    raw["sql"] = {"without": without, "passthrough": empty, "with": with_}
    out(f"## Per query: `SELECT 1` on SQLite, {queries:,} queries, median of 7")
    out()
    out("| no wrapper | a pass-through wrapper | slowwatch's tracker (watched request) |")
    out("|---|---|---|")
    out(
        f"| {without:.2f} µs | {empty:.2f} µs ({empty - without:+.2f}) | "
        f"{with_:.2f} µs ({with_ - without:+.2f}) |"
    )
    out()


def gunicorn_table(
    raw: dict[str, Any], runs: int = 12, seconds: int = 3, workers: tuple[str, ...] = ()
) -> None:
    if shutil.which("wrk") is None:
        out("(gunicorn throughput skipped: wrk is not installed; apt-get install wrk)")
        return
    pinned = f", worker pinned to core {SERVER_CPU} and wrk to core {CLIENT_CPU}"
    out(
        f"## Under gunicorn, 1 worker: requests/s by wrk -t1 -c8, and the worker's CPU "
        f"time per request; {runs} interleaved rounds of {seconds} s, medians of ratios "
        f"paired within a round, and their 95 % interval"
        f"{pinned if SERVER_CPU is not None else ''}"
    )
    out()
    out(
        "| worker | req/s bare | empty / bare | slowwatch / bare | dogslow / bare "
        "| CPU µs/req bare | empty | slowwatch | dogslow | bare / empty (CPU) "
        "| bare / slowwatch (CPU) | 95 % interval: empty / bare | slowwatch / bare |"
    )
    out("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    raw["gunicorn"] = {}
    for worker in workers or tuple(WORKER_ARGS):
        # The empty middleware is the floor here too: in a real server any
        # middleware costs a few times what it costs in the in-process loop.
        rps: dict[str, list[float]] = {name: [] for name in CONFIGS}
        cpu: dict[str, list[float]] = {name: [] for name in rps}
        for i in range(runs):
            names = list(rps)
            names = names[i % len(names) :] + names[: i % len(names)]
            for name in names:
                # A fresh server each round: each process lands on its own memory
                # layout, worth a few tenths of a percent either way (see LAYOUTS),
                # and only over many processes does that average out.
                server = Gunicorn(CONFIGS[name], worker)
                try:
                    got_rps, got_cpu = server.measure(seconds)
                finally:
                    server.close()
                rps[name].append(got_rps)
                cpu[name].append(got_cpu)
        raw["gunicorn"][worker] = {"rps": rps, "cpu_us": cpu}
        med = {k: statistics.median(v) for k, v in cpu.items()}
        out(
            f"| {worker} | {statistics.median(rps['bare']):.0f} | "
            f"{paired(rps, 'empty', 'bare'):.3f} | "
            f"{paired(rps, 'slowwatch', 'bare'):.3f} | {paired(rps, 'dogslow', 'bare'):.3f} | "
            f"{med['bare']:.1f} | {med['empty']:.1f} | {med['slowwatch']:.1f} | "
            f"{med['dogslow']:.1f} | {paired(cpu, 'bare', 'empty'):.3f} | "
            f"{paired(cpu, 'bare', 'slowwatch'):.3f} | {interval(rps, 'empty', 'bare')} | "
            f"{interval(rps, 'slowwatch', 'bare')} |"
        )
    out()


if __name__ == "__main__":
    main()
