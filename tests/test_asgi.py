"""Real ASGI servers: what holds an async request is reported.

uvicorn, daphne, and gunicorn's uvicorn and asgi workers.

Under ASGI a request is an asyncio task. While it awaits, its frames are on
its await chain; while its sync code (a sync view, sync middleware,
``sync_to_async`` work, the ORM) runs, they are on the executor thread of the
request's thread-sensitive context; while its own coroutine runs without
awaiting, every other request of the event loop waits, and the report says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from helpers import Server, slow

pytestmark = pytest.mark.server

LOOP = "blocking its event loop"
GUNICORN = ["-b", "127.0.0.1:0", "-w", "1", "--timeout", "60", "-k"]
SERVERS = {
    "uvicorn": ("uvicorn", ["--host", "127.0.0.1", "--port", "0", "--no-access-log"]),
    "daphne": ("daphne", ["-b", "127.0.0.1", "-p", "0"]),
    # uvicorn's worker class for gunicorn (the uvicorn-worker package).
    "gunicorn-uvicorn": ("gunicorn", [*GUNICORN, "uvicorn_worker.UvicornWorker"]),
    # gunicorn's own ASGI worker (gunicorn 24 and later).
    "gunicorn-asgi": ("gunicorn", [*GUNICORN, "asgi"]),
}


def _has_asgi_worker() -> bool:
    from gunicorn.workers import SUPPORTED_WORKERS

    return "asgi" in SUPPORTED_WORKERS


@pytest.fixture(params=list(SERVERS))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    module, options = SERVERS[request.param]
    pytest.importorskip(module)
    if request.param == "gunicorn-uvicorn":
        pytest.importorskip("uvicorn_worker")
    if request.param == "gunicorn-asgi" and not _has_asgi_worker():
        pytest.skip("this gunicorn has no ASGI worker (it came in gunicorn 24)")
    app = "testproject.asgi:application"
    srv = Server(tmp_path, options, module=module, app=app, env={"SLOWWATCH_TEST_PG": "0"})
    try:
        assert srv.get("/fast/")[0] == 200  # the first request loads the URLconf
        yield srv
    finally:
        srv.stop()


def only_report(srv: Server, kind: str = "slow") -> dict[str, Any]:
    [report] = srv.reports(1, slow(kind))
    return report


@pytest.mark.parametrize(
    ("path", "line", "verdict", "serving"),
    [
        ("/async-sleep/?s=1.2", "# the awaiting line", "sleeping", "task"),
        # A sync view: Django runs it on the executor thread.
        ("/sleep/?s=1.2", "# the sleeping line", "sleeping", "thread"),
        ("/awaits-sync-work/?s=1.2", "# the sync work line", "sleeping", "thread"),
        ("/blocks-loop/?s=1.2", "# the line that blocks the loop", LOOP, "task"),
        ("/spins-loop/?s=1.2", "# the loop that spins the loop", LOOP, "task"),
    ],
    ids=["async-sleep", "sync-view", "sync-to-async", "blocked-loop", "cpu-on-the-loop"],
)
def test_the_report_shows_what_holds_the_request(
    server: Server, path: str, line: str, verdict: str, serving: str
) -> None:
    assert server.get(path)[0] == 200
    report = only_report(server)
    assert line in report["message"], report["message"]
    assert report["slowwatch"]["verdict"] == verdict
    # Its own coroutine on the loop, or its sync code on the executor thread.
    assert report["slowwatch"]["process"]["serving"] == serving
    assert f"\nThe {serving} is {verdict}." in report["message"], report["message"]
    if serving == "task":
        assert ", asyncio task on thread MainThread (" in report["message"]
    else:
        assert ", thread ThreadPoolExecutor-" in report["message"], report["message"]
    # On the executor thread the stack starts below asgiref's own frames.
    assert "asgiref/sync.py" not in report["message"], report["message"]
    if verdict == LOOP:
        assert "No other request of this worker runs until it yields" in report["message"]
    finished = only_report(server, "finished")
    assert f"100% {verdict}" in finished["message"] or verdict in finished["message"]
    assert not [r for r in server.all_reports() if "/fast/" in r["message"]]


def test_a_slow_query_of_an_async_view_is_in_flight_and_counted(server: Server) -> None:
    assert server.get("/awaits-orm/?rows=3000000")[0] == 200
    data = only_report(server)["slowwatch"]
    assert data["verdict"] == "in the database"
    # Queries run on the executor thread; they are the request's.
    assert data["sql"]["count"] == 1
    assert "WITH RECURSIVE" in data["sql"]["in_flight"]["sql"]
    assert only_report(server, "finished")["slowwatch"]["sql"]["count"] == 2


def test_fifty_concurrent_async_requests_each_get_their_own_stack(server: Server) -> None:
    """Each sleeps ``depth`` coroutines deep: its stack tells which request it is.

    On a busy server a request may spend part of its slow time waiting for a
    thread for its sync middleware; whenever it was sampled asleep in the view,
    it was at its own depth, never at another request's. A sample taken as its
    coroutines return, one by one, after the sleep is shallower: that is its
    own stack at that instant, but never deeper than its own.
    """
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda n: server.get(f"/async-deep/{n}/?s=1.5"), range(50)))
    assert [status for status, _ in answers] == [200] * 50
    assert len(server.reports(50, slow("slow"), timeout=30)) == 50
    finished = server.reports(50, slow("finished"), timeout=30)
    assert len(finished) == 50
    for report in finished:
        depth = int(report["slowwatch"]["request"]["url"].split("/")[2])
        profile = report["slowwatch"]["profile"]
        asleep, returning = set(), set()
        for stack in profile["stacks"]:
            functions = [profile["frames"][i][1] for i in stack["frames"]]
            if "async_deep" in functions:
                found = functions.count("async_descend")
                (asleep if functions[-1] == "sleep" else returning).add(found)
        assert asleep == {depth + 1}, (depth, asleep, returning)
        assert all(found <= depth + 1 for found in returning), (depth, asleep, returning)


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("/astream/?s=1.5", "# the async streaming line"),
        ("/stream/?s=1.5", "# the streaming line"),
    ],
    ids=["async-iterator", "sync-iterator"],
)
def test_a_streaming_response_is_watched_until_its_last_chunk(
    server: Server, path: str, line: str
) -> None:
    """The view returns at once; the 1.5 s go to the stream, which Django sends
    from the request's task (a sync iterator is consumed on a thread)."""
    status, body = server.get(path)
    assert status == 200 and body.count(b"chunk") == 5
    report = only_report(server)
    assert line in report["message"], report["message"]
    finished = only_report(server, "finished")
    assert finished["slowwatch"]["timing"]["elapsed"] >= 1.4
    # It ended well: its status, and no exception (the end of the iteration is none).
    assert finished["slowwatch"]["outcome"] == {"status_code": 200, "exception": ""}
    assert "sleeping" in finished["message"]
    # The generator's line, even where every sample ended in asyncio.sleep.
    assert line in finished["message"], finished["message"]


@pytest.mark.parametrize("worker", ["uvicorn_worker.UvicornWorker", "asgi"])
def test_a_loop_blocked_past_gunicorns_timeout_is_reported_killed(
    tmp_path: Path, worker: str
) -> None:
    """gunicorn aborts a worker whose event loop stopped answering (SIGABRT,
    then SIGKILL): the request that blocked it is reported ``killed``."""
    pytest.importorskip("uvicorn_worker")
    if worker == "asgi" and not _has_asgi_worker():
        pytest.skip("this gunicorn has no ASGI worker (it came in gunicorn 24)")
    args = ["-b", "127.0.0.1:0", "-w", "1", "--timeout", "2", "-k", worker]
    app = "testproject.asgi:application"
    srv = Server(
        tmp_path,
        [*args, "-c", "testproject/gunicorn_conf.py"],
        app=app,
        env={"SLOWWATCH_TEST_PG": "0"},
    )
    try:
        assert srv.get("/fast/")[0] == 200
        # The worker dies under the request: that is the point.
        with contextlib.suppress(OSError):
            srv.get("/blocks-loop/?s=30", timeout=20)
        [killed] = srv.reports(1, slow("killed"), timeout=20)
        [first] = srv.reports(1, slow("slow"))
        assert killed["slowwatch"]["id"] == first["slowwatch"]["id"]
        assert "# the line that blocks the loop" in killed["message"], killed["message"]
        assert killed["slowwatch"]["timing"]["elapsed"] >= 2
    finally:
        srv.stop()
