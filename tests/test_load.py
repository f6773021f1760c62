"""slowwatch under load, and how fast a worker stops, under a real gunicorn (gthread).

Two forms. The default (CI) one is short: about 10,000 requests (some 15 s of
load) and a few stops. The full one is the Hardening issue's figures:
100,000 requests after a warm-up (at least 60 s of load) and 50 stops::

    SLOWWATCH_LOAD=full SLOWWATCH_MATRIX=quick scripts/test -k load

(about 12 minutes). scripts/test runs the short form, with the default Python
only. The load comes from :mod:`loadgen`, in this process: nothing to install.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psutil
import pytest

import loadgen
from helpers import HERE, Server

pytestmark = [pytest.mark.server, pytest.mark.load]

FULL = os.environ.get("SLOWWATCH_LOAD") == "full"

THRESHOLD = 0.3
#: Above the threshold with room for the monitor to be late under load: with
#: 0.4 s, about 1 % of the slow requests ended before the monitor, up to 0.17 s
#: late, looked at them (they are said as not seen, but without their stack).
SLOW_SECONDS = 0.5
#: One request in SLOW_EVERY is slow.
SLOW_EVERY = 10
CLIENTS = 200
LOAD_SERVER = ["-k", "gthread", "-w", "2", "--threads", "16"]
LOGGING_ONLY = {
    "SLOWWATCH_TEST_REPORTERS": "slowwatch.reporters.LoggingReporter",
    "SLOWWATCH_TEST_PG": "0",
}


@dataclass(frozen=True)
class Form:
    warmup: int
    requests: int
    #: The load runs at least this long, requests or not (the issue's 60 s).
    min_seconds: float
    #: And at most this long: a bound, not a target.
    max_seconds: float
    #: Worker RSS growth allowed over ``requests``; None: not checked.
    rss_growth: int | None
    stops: int
    #: Ctrl-C stops under load, each of two workers.
    interrupts: int
    #: Also measure Ctrl-C without slowwatch (the control of the issue).
    without: bool


# The short form's RSS growth is not checked: over 10,000 requests the
# allocator's arenas of 16 threads move by about as much as a leak would.
SHORT = Form(
    warmup=1_000,
    requests=10_000,
    min_seconds=0,
    max_seconds=60,
    rss_growth=None,
    stops=5,
    interrupts=3,
    without=False,
)
LONG = Form(
    warmup=5_000,
    requests=100_000,
    min_seconds=60,
    max_seconds=600,
    rss_growth=5 << 20,
    stops=50,
    interrupts=25,
    without=True,
)
FORM = LONG if FULL else SHORT


# -- reading the workers and their reports -------------------------------------


@dataclass(frozen=True)
class Usage:
    rss: int
    threads: int
    fds: int


def usage(pid: int) -> Usage:
    """A worker's resident memory, thread count and open file descriptors, from /proc."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return Usage(
        rss=int(status["VmRSS"].split()[0]) * 1024,
        threads=int(status["Threads"]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
    )


def steady(pid: int, *, calm: float = 1.0, timeout: float = 20) -> Usage:
    """The worker's usage once its threads and descriptors have not moved for ``calm`` s.

    Connections the clients closed are closed by the worker when it next reads
    them: that is not a leak, so usage is read when it has settled.
    """
    deadline = time.monotonic() + timeout
    last = usage(pid)
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = usage(pid)
        if (now.threads, now.fds) != (last.threads, last.fds):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= calm:
            return now
    return usage(pid)


def until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


class ReportTail:
    """The reports file, read incrementally (a full run writes some 100 MB)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        #: (url, kind) -> how many reports.
        self.seen: Counter[tuple[str, str]] = Counter()
        self.pids: set[int] = set()
        self.lines = 0
        #: How late each report was: reported at ``threshold + late_by``.
        self.late: list[float] = []
        #: pid -> how many ``lost`` notices (drops) it reported.
        self.lost: Counter[int] = Counter()

    def read(self) -> ReportTail:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # a line being written is read next time
        self.offset += end
        for line in chunk[:end].splitlines():
            self.lines += 1
            doc = json.loads(line)["slowwatch"]
            if doc is None:
                self.seen["<not a report>", "?"] += 1
                continue
            url = doc.get("request", {}).get("url", "?")
            kind = doc.get("kind", "?")
            if kind == "lost":  # lost:queue_full, lost:monitor_late
                kind += ":" + str(doc.get("extra", {}).get("reason"))
            self.seen[url, kind] += 1
            pid = doc.get("process", {}).get("pid", 0)
            self.pids.add(pid)
            if kind.startswith("lost"):
                self.lost[pid] += 1
            if doc.get("kind") == "slow":
                self.late.append(doc["timing"]["late_by"])
        return self


# -- the load test ----------------------------------------------------------------


def mix(start: int) -> Callable[[int], str]:
    """Request ``n`` of a run numbered from ``start``: every SLOW_EVERY-th is slow."""

    def path_for(n: int) -> str:
        n += start
        if n % SLOW_EVERY == SLOW_EVERY - 1:
            return f"/sleep/?s={SLOW_SECONDS}&n={n}"
        return f"/fast/?n={n}"

    return path_for


def load(srv: Server, *, start: int, requests: int, form: Form) -> loadgen.Result:
    result = loadgen.run(
        srv.port,
        clients=CLIENTS,
        requests=requests,
        duration=form.max_seconds,
        path_for=mix(start),
        timeout=30,
    )
    assert result.error_count == 0, result.errors
    assert result.statuses == {200: result.sent}, result.statuses
    assert result.sent == requests, f"only {result.sent} of {requests} in {form.max_seconds} s"
    return result


#: What a slow request the monitor, held up, saw only after it ended gets instead.
UNSEEN = "lost:monitor_late"


def every_slow_request_reported_once(srv: Server, tail: ReportTail, slow_paths: set[str]) -> None:
    """Each slow request reported ``slow`` then ``finished``, once each. On a
    starved machine the monitor can be held up past a request's end: that
    request is then said once as not seen (``monitor_late``). None is silent."""

    def accounted(seen: Counter[tuple[str, str]]) -> bool:
        return all(
            ((path, "slow") in seen and (path, "finished") in seen) or (path, UNSEEN) in seen
            for path in slow_paths
        )

    arrived = until(lambda: accounted(tail.read().seen), timeout=30, step=0.25)
    seen = tail.read().seen
    unseen = {path for path in slow_paths if (path, UNSEEN) in seen}
    expected = {(path, kind): 1 for path in slow_paths - unseen for kind in ("slow", "finished")}
    expected.update({(path, UNSEEN): 1 for path in unseen})
    unexpected = {key: n for key, n in seen.items() if expected.get(key) != n}
    missing = sorted(key for key in expected if key not in seen)
    said = [line for line in srv.log if "slowwatch" in line][:10]
    assert arrived and not missing, (
        f"{len(missing)} reports missing, e.g. {missing[:5]}; {len(unexpected)} unexpected, "
        f"e.g. {list(unexpected.items())[:5]}; most late: {sorted(tail.late)[-5:]}; {said}"
    )
    # Held up that long is rare even on a loaded machine: most get their stack.
    assert len(unseen) <= len(slow_paths) // 10, f"{len(unseen)} of {len(slow_paths)} not seen"
    assert not unexpected, (
        f"{len(unexpected)} reports unexpected, e.g. {list(unexpected.items())[:5]}"
    )


@pytest.mark.timeout(FORM.max_seconds * 2 + 120)
def test_two_gthread_workers_under_load_report_each_slow_request_once_and_leak_nothing(
    tmp_path: Path,
) -> None:
    srv = Server(
        tmp_path, ["-b", "127.0.0.1:0", *LOAD_SERVER], threshold=THRESHOLD, env=LOGGING_ONLY
    )
    try:
        tail = ReportTail(srv.reports_file)
        # Warm up until the workers' thread pools are full and slowwatch's
        # threads running: until a round adds no thread.
        warm_slow: set[str] = set()
        before: dict[int, Usage] = {}
        for rounds in range(1, 6):
            warm = load(srv, start=len(warm_slow) * SLOW_EVERY, requests=FORM.warmup, form=FORM)
            assert len(srv.worker_pids) == 2
            warm_slow |= {p for p in warm.ok_paths if p.startswith("/sleep/")}
            every_slow_request_reported_once(srv, tail, warm_slow)
            last, before = before, {pid: steady(pid) for pid in srv.worker_pids}
            if rounds > 1 and all(before[p].threads == last[p].threads for p in before):
                break
        warmed = len(warm_slow) * SLOW_EVERY
        lost_before = Counter(tail.lost)

        started = time.monotonic()
        result = loadgen.Result()
        done = 0
        while done < FORM.requests or time.monotonic() - started < FORM.min_seconds:
            # Past `requests` only to reach the 60 s of load (full form).
            batch = FORM.requests if done < FORM.requests else FORM.requests // 10
            got = load(srv, start=warmed + done, requests=batch, form=FORM)
            done += got.sent
            result.ok_paths += got.ok_paths
            for path, took in got.latencies.items():
                result.latencies.setdefault(path, []).extend(took)
        elapsed = time.monotonic() - started
        slow_paths = {p for p in result.ok_paths if p.startswith("/sleep/")}
        every_slow_request_reported_once(srv, tail, warm_slow | slow_paths)
        assert len(slow_paths) == done // SLOW_EVERY
        assert tail.pids == srv.worker_pids

        after = {pid: steady(pid) for pid in srv.worker_pids}
        # Still the two workers we started with: none crashed or was replaced.
        assert len(srv.worker_pids) == 2 and srv.proc.poll() is None
        table = "\n".join(
            f"pid {pid}: rss {before[pid].rss >> 10} -> {after[pid].rss >> 10} KiB, "
            f"threads {before[pid].threads} -> {after[pid].threads}, "
            f"fds {before[pid].fds} -> {after[pid].fds}"
            for pid in sorted(before)
        )
        latency = {
            path: f"p50 {sorted(v)[len(v) // 2]:.3f} s, max {max(v):.3f} s"
            for path, v in result.latencies.items()
        }
        late = sorted(tail.late)
        p50, p99 = late[len(late) // 2], late[len(late) * 99 // 100]
        print(f"\nlate_by: p50 {p50:.3f} p99 {p99:.3f} max {late[-1]:.3f}")
        print(f"\n{done} requests in {elapsed:.1f} s ({done / elapsed:.0f}/s), {latency}\n{table}")
        said = "\n".join(line.rstrip() for line in srv.log if "slowwatch" in line)
        for pid in before:
            # slowwatch's log thread starts with a worker's first warning: a
            # drop (a report said as lost) that came only after the warm-up.
            first_warning = tail.lost[pid] > 0 and lost_before[pid] == 0
            threads = before[pid].threads + first_warning
            assert after[pid].threads == threads, f"{table}\n{said}"
            assert after[pid].fds == before[pid].fds, table
            if FORM.rss_growth is not None:
                assert after[pid].rss - before[pid].rss <= FORM.rss_growth, table
    finally:
        srv.stop()


# -- stopping ---------------------------------------------------------------------

#: The worker's stop, by the documented figures: ``worker_exit`` gives queued
#: reports GRACE (0.5 s), the interpreter's exit gives them EXIT_TIMEOUT (2 s).
STOP_WITHIN = 2.5
#: gunicorn kills a worker that has not stopped after this (its default is 30 s).
GRACEFUL_TIMEOUT = 10
#: Dumps every thread's stack of a worker that overran (faulthandler; gunicorn
#: leaves real-time signals alone).
DUMP = signal.SIGRTMIN + 1

CONF = """
import faulthandler
import os

{hooks}
hooked = globals().get("post_worker_init")

def post_worker_init(worker):
    global dump
    dump = open(os.path.join({folder!r}, f"stacks-{{os.getpid()}}.txt"), "w")
    faulthandler.register({signum}, file=dump, all_threads=True)
    if hooked is not None:
        hooked(worker)
"""
SLOWWATCH_HOOKS = (
    "from slowwatch.gunicorn import child_exit, post_worker_init, worker_abort, worker_exit"
)

#: The test project without slowwatch: neither the app nor the middleware.
WITHOUT_SLOWWATCH = """
from testproject.settings import *  # noqa: F403

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "slowwatch"]  # noqa: F405
MIDDLEWARE = [m for m in MIDDLEWARE if not m.startswith("slowwatch.")]  # noqa: F405
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@dataclass
class Stop:
    seconds: float
    dump: str


def start(
    tmp_path: Path, *, slowwatch: bool, reporters: str, workers: int, threads: int
) -> Server:
    tmp_path.mkdir(parents=True, exist_ok=True)
    conf = tmp_path / "gunicorn_conf.py"
    # Without slowwatch, gunicorn still gets the hook that lets a worker quit
    # once (gunicorn's own Ctrl-C race, tests/test_gunicorn.py).
    hooks = SLOWWATCH_HOOKS if slowwatch else "from slowwatch.gunicorn import post_worker_init"
    conf.write_text(CONF.format(hooks=hooks, signum=int(DUMP), folder=str(tmp_path)))
    env = {"SLOWWATCH_TEST_REPORTERS": reporters, "SLOWWATCH_TEST_PG": "0"}
    if not slowwatch:
        (tmp_path / "without_slowwatch.py").write_text(WITHOUT_SLOWWATCH)
        env["DJANGO_SETTINGS_MODULE"] = "without_slowwatch"
        env["PYTHONPATH"] = f"{HERE}{os.pathsep}{tmp_path}"
    args = ["-b", "127.0.0.1:0", "-k", "gthread", "-w", str(workers), "--threads", str(threads)]
    args += ["--graceful-timeout", str(GRACEFUL_TIMEOUT), "-c", str(conf)]
    return Server(tmp_path, args, threshold=THRESHOLD, env=env)


def stop(srv: Server, how: str) -> dict[int, Stop]:
    """Stop gunicorn; how long each worker took to be gone, and its stacks if it overran.

    ``SIGTERM``: to the master, as a process manager does. ``Ctrl-C``: SIGINT
    to the master and every worker at once, as a terminal does to its
    foreground process group.
    """
    workers = sorted(srv.worker_pids)
    assert workers and not any(gone(pid) for pid in workers)
    signalled = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGINT)
    if how == "Ctrl-C":
        for pid in workers:
            os.kill(pid, signal.SIGINT)
    stops: dict[int, Stop] = {}
    dumped: set[int] = set()
    deadline = signalled + GRACEFUL_TIMEOUT + 10
    while len(stops) < len(workers) and time.monotonic() < deadline:
        now = time.monotonic()
        for pid in workers:
            if pid in stops:
                continue
            if gone(pid):
                stacks = srv.reports_file.parent / f"stacks-{pid}.txt"
                log = [line for line in srv.log if f"({pid})" in line or f"pid: {pid}" in line]
                dump = stacks.read_text() if pid in dumped else ""
                stops[pid] = Stop(now - signalled, "".join(log) + dump)
            elif now - signalled > STOP_WITHIN + 1 and pid not in dumped:
                dumped.add(pid)
                os.kill(pid, DUMP)
        time.sleep(0.005)
    srv.stop()
    assert len(stops) == len(workers), "a worker outlived gunicorn's own kill"
    return stops


def slow_requests(srv: Server, count: int) -> None:
    result = loadgen.run(
        srv.port,
        clients=count,
        requests=count,
        duration=30,
        path_for=lambda n: f"/sleep/?s={SLOW_SECONDS}&n={n}",
    )
    assert result.statuses == {200: count}, (result.statuses, result.errors)


def bare_stop(tmp_path: Path, how: str) -> float:
    """How long a worker without slowwatch takes to stop right now, after the
    same 25 slow requests: the machine's own share of any stop, which a busy
    machine stretches. A stop over STOP_WITHIN is judged against it."""
    srv = start(
        tmp_path,
        slowwatch=False,
        reporters="slowwatch.reporters.LoggingReporter",
        workers=1,
        threads=25,
    )
    try:
        slow_requests(srv, 25)
        [(_, took)] = stop(srv, how).items()
    finally:
        srv.stop()
    return took.seconds


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
@pytest.mark.timeout(FORM.stops * 30 + 60)
def test_a_worker_with_a_hung_sink_and_50_reports_pending_stops_in_time(
    tmp_path: Path, how: str
) -> None:
    times: list[float] = []
    for i in range(FORM.stops):
        srv = start(
            tmp_path / str(i),
            slowwatch=True,
            reporters="helpers.Hanging,slowwatch.reporters.LoggingReporter",
            workers=1,
            threads=25,
        )
        try:
            slow_requests(srv, 25)
            # Every reported request's `slow` and `finished` reached the logging
            # sink: the hung one holds the first and has the others queued. On a
            # saturated machine a request can end before the monitor looks at it
            # (docs/limits.rst): at least 20 of the 25 must have been reported.
            tail = ReportTail(srv.reports_file)

            def settled(t: ReportTail) -> bool:
                kinds = Counter(kind for (_, kind), n in t.read().seen.items() for _ in range(n))
                return kinds["slow"] >= 20 and kinds["finished"] == kinds["slow"]

            assert until(partial(settled, tail), timeout=15), tail.seen
            [(pid, took)] = stop(srv, how).items()
        finally:
            srv.stop()
        times.append(took.seconds)
        if took.seconds > STOP_WITHIN:
            # slowwatch's share is at most STOP_WITHIN; the rest is the machine's.
            bare = bare_stop(tmp_path / f"bare-{i}", how)
            print(f"\nstop {i}: {took.seconds:.2f} s; without slowwatch, now: {bare:.2f} s")
            assert took.seconds <= STOP_WITHIN + bare, (
                f"stop {i}: {took.seconds:.2f} s, {bare:.2f} s without slowwatch\n{took.dump}"
            )
    spread = sorted(round(t, 2) for t in times)
    print(f"\n{how}: {len(times)} stops, max {max(times):.2f} s, {spread}")


@pytest.fixture
def load_in_background(request: pytest.FixtureRequest) -> Iterator[Callable[[Server], None]]:
    threads: list[threading.Thread] = []

    def begin(srv: Server) -> None:
        def run() -> None:
            # Errors are the point here: the server goes away under it.
            loadgen.run(
                srv.port, clients=50, requests=10**6, duration=4, path_for=mix(0), timeout=5
            )

        thread = threading.Thread(target=run, name="load")
        thread.start()
        threads.append(thread)

    yield begin
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()


@pytest.mark.parametrize(
    "slowwatch",
    [
        True,
        pytest.param(
            False,
            marks=pytest.mark.skipif(
                not FORM.without, reason="the control without slowwatch: SLOWWATCH_LOAD=full"
            ),
        ),
    ],
    ids=["with-slowwatch", "without"],
)
@pytest.mark.timeout(FORM.interrupts * 30 + 60)
def test_ctrl_c_under_load_stops_every_worker_in_time(
    tmp_path: Path, slowwatch: bool, load_in_background: Callable[[Server], None]
) -> None:
    """The issue: Ctrl-C on gthread sometimes hung until gunicorn killed the worker."""
    times: list[float] = []
    late: list[tuple[str, float]] = []
    for i in range(FORM.interrupts):
        srv = start(
            tmp_path / str(i),
            slowwatch=slowwatch,
            reporters="slowwatch.reporters.LoggingReporter",
            workers=2,
            threads=16,
        )
        try:
            load_in_background(srv)
            # Requests in flight, slow ones among them, reported or not.
            assert srv.get("/fast/")[0] == 200
            if slowwatch:  # slow requests are being reported
                assert until(partial(lambda f: f.stat().st_size > 0, srv.reports_file), 10)
            # Not a synchronisation: the stop lands at a random point of the load.
            time.sleep(random.uniform(0.2, 1.0))
            stops = stop(srv, "Ctrl-C")
        finally:
            srv.stop()
        for pid, took in stops.items():
            times.append(took.seconds)
            if took.seconds > STOP_WITHIN:
                late.append(
                    (f"stop {i}, worker {pid}: {took.seconds:.2f} s\n{took.dump}", took.seconds)
                )
    print(f"\n{len(times)} worker stops: {sorted(round(t, 2) for t in times)}")
    bare = 0.0
    if late:
        # slowwatch's share is at most STOP_WITHIN; the rest is the machine's.
        bare = bare_stop(tmp_path / "bare", "Ctrl-C")
        print(f"without slowwatch, now: {bare:.2f} s")
    overran = [text for text, seconds in late if seconds > STOP_WITHIN + bare]
    assert not overran, f"{len(overran)} of {len(times)} overran:\n" + "\n".join(overran)
