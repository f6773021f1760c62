"""What slowwatch costs, measured side by side with an empty middleware and dogslow.

Run it through ``scripts/bench`` (which builds the virtualenv), or directly in
one that has slowwatch, dogslow, gunicorn and wrk::

    python benchmarks/overhead.py            # everything, about 6 minutes
    python benchmarks/overhead.py --quick    # fewer and shorter rounds

Every configuration is built in the same process (or started under the same
gunicorn) and measured in interleaved batches, so that the machine's drift
hits all of them alike; differences are paired per round and their median is
reported. The output is a Markdown table, quoted in ``docs/performance.rst``.
"""

from __future__ import annotations

import argparse
import calendar
import io
import json
import logging
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
from benchproject import CONFIGS, DOGSLOW, QUERY_CONFIGS  # noqa: E402
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
    watchdog._wake.set()  # let the monitor file them in its heap
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
    threads = [threading.Thread(target=call, args=(app, base)) for _ in range(concurrent)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if tool == "slowwatch":
        from slowwatch import runtime

        runtime.dispatcher().flush(5)
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
    runtime.dispatcher().flush(5)
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


SEED = {"PYTHONHASHSEED": "0"}


def instructions(part: str, config: str, small: int, large: int) -> int:
    """Instructions the main thread spends per request (or query) in ``config``.

    Two callgrind runs of benchmarks/instructions.py, ``small`` and ``large``
    iterations: the difference divided by ``large - small`` leaves start-up,
    warm-up and slowwatch's own threads (counted apart) out. A fixed hash
    seed makes the two runs lay out their dicts alike.
    """
    totals = []
    # The first run is thrown away: the first import after an install writes
    # the .pyc files, thousands of instructions per request when divided out
    # of one run and not the other.
    for count in (small, small, large):
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
                # Not BENCH_RECORD: its reporter exists only in this process.
                env={**{k: v for k, v in os.environ.items() if k != "BENCH_RECORD"}, **SEED},
                capture_output=True,
                check=True,
            )
            main_thread = Path(f"{tmp}/out-01").read_text()
            found = re.search(r"^summary: (\d+)", main_thread, re.MULTILINE)
            assert found, "no summary line in callgrind's output"
            totals.append(int(found.group(1)))
    return round((totals[2] - totals[1]) / (large - small))


def instructions_table(raw: dict[str, Any], quick: bool) -> None:
    if shutil.which("valgrind") is None:
        out("(instruction counts skipped: valgrind is not installed; apt-get install valgrind)")
        return
    small, large = (300, 1300) if quick else (1000, 4000)
    counts = {name: instructions("request", name, small, large) for name in CONFIGS}
    base = counts["bare"]
    # Time per instruction of the bare request, from the wall-clock part when it ran.
    bare_us = raw.get("inprocess", {}).get("bare", (None,))[0]
    per_ns = bare_us * 1000 / base if bare_us else None
    raw["instructions"] = {"request": counts, "ns_per_instruction": per_ns}
    out(
        f"## Per request, counted by callgrind (hello-world view; {large:,} minus "
        f"{small:,} requests, main thread)"
    )
    out()
    out("| configuration | instructions per request | added vs bare | added vs empty | µs* |")
    out("|---|---|---|---|---|")
    for name, count in counts.items():
        above_empty = f"{count - counts['empty']:+,}" if name not in ("bare", "empty") else ""
        us = f"{(count - base) * per_ns / 1000:+.2f}" if per_ns else "n/a"
        out(f"| {name} | {count:,} | {count - base:+,} | {above_empty} | {us} |")
    out()
    qsmall, qlarge = (1000, 6000) if quick else (5000, 25000)
    queries = {name: instructions("query", name, qsmall, qlarge) for name in QUERY_CONFIGS}
    raw["instructions"]["query"] = queries
    out(f"## Per query, counted by callgrind (`SELECT 1` on SQLite; {qlarge:,} minus {qsmall:,})")
    out()
    out("| execute wrappers | per query | added vs none | added vs pass-through | µs* |")
    out("|---|---|---|---|---|")
    for name, count in queries.items():
        above = f"{count - queries['passthrough']:+,}" if name.startswith("tracker") else ""
        us = f"{(count - queries['none']) * per_ns / 1000:+.2f}" if per_ns else "n/a"
        out(f"| {name} | {count:,} | {count - queries['none']:+,} | {above} | {us} |")
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
            f"slowwatch / dogslow added cost: {sw / ds:.3f}"
        )
        out()


# -- 6. gunicorn throughput ---------------------------------------------------


def gunicorn_rps(middleware: list[str], worker: str, seconds: int) -> tuple[float, float]:
    """Requests/s by wrk, and the worker's CPU time per request in µs.

    CPU time per request is the steadier figure on a shared machine: time the
    worker spends waiting for a core does not count in it.
    """
    import psutil

    env = dict(os.environ, BENCH_MIDDLEWARE=",".join(middleware), PYTHONPATH=str(HERE))
    env.pop("BENCH_RECORD")  # the recording reporter lives in this process only
    args = [sys.executable, "-m", "gunicorn", "benchwsgi:application", "-b", "127.0.0.1:0"]
    args += ["-w", "1", "--log-level", "info"]
    args += ["-k", "gthread", "--threads", "4"] if worker == "gthread" else ["-k", "sync"]
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True, cwd=HERE)
    failed = (float("nan"), float("nan"))
    try:
        port = pid = None
        deadline = time.monotonic() + 20
        assert proc.stderr is not None
        while (port is None or pid is None) and time.monotonic() < deadline:
            line = proc.stderr.readline()
            found = re.search(r"Listening at: http://127.0.0.1:(\d+)", line)
            port = int(found.group(1)) if found else port
            found = re.search(r"Booting worker with pid: (\d+)", line)
            pid = int(found.group(1)) if found else pid
        if port is None or pid is None:
            raise RuntimeError("gunicorn did not start")
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        url = f"http://127.0.0.1:{port}/hello"
        subprocess.run(["wrk", "-t1", "-c8", "-d1s", url], capture_output=True)
        cpu = psutil.Process(pid).cpu_times()
        run = subprocess.run(
            ["wrk", "-t1", "-c8", f"-d{seconds}s", url], capture_output=True, text=True
        )
        used = psutil.Process(pid).cpu_times()
        found = re.search(r"Requests/sec:\s+([\d.]+)", run.stdout)
        count = re.search(r"(\d+) requests in", run.stdout)
        if run.returncode or not found or not count:
            out(f"(wrk failed for {middleware} {worker}: {run.stdout} {run.stderr})")
            return failed
        busy = (used.user - cpu.user) + (used.system - cpu.system)
        return float(found.group(1)), busy / int(count.group(1)) * 1e6
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument(
        "--parts",
        default="inprocess,instructions,arm,detection,sampling,sql,gunicorn",
        help="comma-separated subset of: inprocess, instructions, arm, detection, "
        "sampling, sql, gunicorn",
    )
    args = parser.parse_args()
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
    rounds, batch = (60, 200) if args.quick else (300, 200)
    if "inprocess" in parts:
        inprocess_table(raw, rounds, batch)
    if "instructions" in parts:
        instructions_table(raw, args.quick)
    if "arm" in parts:
        arm_table(raw, 20_000 if args.quick else 100_000)
    if "detection" in parts:
        detection_table(raw)
    if "sampling" in parts:
        sampling_table(raw, 3.0 if args.quick else 10.0)
    if "sql" in parts:
        sql_table(raw, 2_000 if args.quick else 20_000)
    if "gunicorn" in parts:
        gunicorn_table(raw, *((3, 2) if args.quick else (8, 4)))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1, default=str))


def inprocess_table(raw: dict[str, Any], rounds: int, batch: int) -> None:
    res = inprocess(rounds, batch)
    raw["inprocess"] = res
    out(f"## Per request, in process (hello-world view, {rounds} interleaved rounds of {batch})")
    out()
    out("| configuration | µs per request | added vs bare (median of paired rounds) | IQR |")
    out("|---|---|---|---|")
    for name, (median, diff, iqr) in res.items():
        out(f"| {name} | {median:.1f} | {diff:+.2f} µs | {iqr:.2f} |")
    empty, sw, ds = res["empty"][1], res["slowwatch"][1], res["dogslow"][1]
    out()
    out(
        f"slowwatch above the empty middleware: {sw - empty:+.2f} µs; "
        f"slowwatch / dogslow added cost: {sw / ds:.3f}"
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


def detection_table(raw: dict[str, Any]) -> None:
    out("## Detection latency: report time minus deadline (threshold 1 s)")
    out()
    out("| tool | requests | concurrent | reported | p50 ms | p99 ms | max ms |")
    out("|---|---|---|---|---|---|---|")
    raw["detection"] = {}
    cases = [("sleep", 1), ("sleep", 20), ("sleep", 200), ("cpu", 1), ("cpu", 4), ("cpu", 20)]
    for kind, n in cases:
        for tool in ("slowwatch", "dogslow"):
            late = detection(tool, kind, n)
            raw["detection"][f"{tool}/{kind}/{n}"] = late
            ms = [x * 1000 for x in late]
            out(
                f"| {tool} | {kind} | {n} | {len(late)}/{n} | {pct(ms, 50):.1f} | "
                f"{pct(ms, 99):.1f} | {max(ms, default=float('nan')):.1f} |"
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


def gunicorn_table(raw: dict[str, Any], runs: int = 8, seconds: int = 4) -> None:
    if shutil.which("wrk") is None:
        out("(gunicorn throughput skipped: wrk is not installed; apt-get install wrk)")
        return
    out(
        f"## Under gunicorn, 1 worker: requests/s by wrk -t1 -c8, and the worker's CPU "
        f"time per request; {runs} interleaved rounds of {seconds} s, medians of ratios "
        "paired within a round"
    )
    out()
    out(
        "| worker | req/s bare | slowwatch / bare | dogslow / bare "
        "| CPU µs/req bare | slowwatch | dogslow | bare / slowwatch (CPU) |"
    )
    out("|---|---|---|---|---|---|---|---|")
    raw["gunicorn"] = {}
    for worker in ("sync", "gthread"):
        rps: dict[str, list[float]] = {"bare": [], "slowwatch": [], "dogslow": []}
        cpu: dict[str, list[float]] = {name: [] for name in rps}
        for i in range(runs):
            names = list(rps)
            names = names[i % 3 :] + names[: i % 3]
            for name in names:
                got_rps, got_cpu = gunicorn_rps(CONFIGS[name], worker, seconds)
                rps[name].append(got_rps)
                cpu[name].append(got_cpu)
        raw["gunicorn"][worker] = {"rps": rps, "cpu_us": cpu}

        def paired(values: dict[str, list[float]], a: str, b: str) -> float:
            # Ratios within each round, so that slow and fast moments cancel out.
            return statistics.median(x / y for x, y in zip(values[a], values[b], strict=True))

        med = {k: statistics.median(v) for k, v in cpu.items()}
        out(
            f"| {worker} | {statistics.median(rps['bare']):.0f} | "
            f"{paired(rps, 'slowwatch', 'bare'):.3f} | {paired(rps, 'dogslow', 'bare'):.3f} | "
            f"{med['bare']:.0f} | {med['slowwatch']:.0f} | {med['dogslow']:.0f} | "
            f"{paired(cpu, 'bare', 'slowwatch'):.3f} |"
        )
    out()


if __name__ == "__main__":
    main()
