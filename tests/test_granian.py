"""granian (WSGI and ASGI interfaces): its worker threads are not Python's.

granian serves WSGI requests on threads its Rust runtime starts: ``threading``
does not know them, so slowwatch finds their kernel ids itself (from their CPU
clock ids) to tell sleeping from spinning.
"""

from __future__ import annotations

import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import Server, slow

GRANIAN = shutil.which("granian", path=str(Path(sys.executable).parent))

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(GRANIAN is None, reason="granian is not installed next to this Python"),
]


def free_port() -> int:
    # granian does not say which port it got for port 0: pick one for it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["wsgi", "asgi"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    assert GRANIAN is not None
    interface = request.param
    command = [
        # granian logs on its standard output; the helper reads standard error.
        "/bin/sh",
        "-c",
        'exec "$0" "$@" 1>&2',
        GRANIAN,
        "--interface",
        interface,
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--workers",
        "1",
        f"testproject.{interface}:application",
    ]
    srv = Server(tmp_path, [], env={"SLOWWATCH_TEST_PG": "0"}, command=command)
    try:
        # granian says where it listens before its worker is up.
        assert srv.wait_for_log("Started worker-1", timeout=30), "".join(srv.log)
        assert srv.get("/fast/")[0] == 200  # the first request loads the URLconf
        yield srv
    finally:
        srv.stop()


def test_a_sleeping_view_is_reported_sleeping_on_its_line(server: Server) -> None:
    assert server.get("/sleep/?s=1.2")[0] == 200
    [report] = server.reports(1, slow("slow"))
    assert "# the sleeping line" in report["message"]
    [done] = server.reports(1, slow("finished"))
    assert "% sleeping" in done["message"], done["message"]
    assert not [r for r in server.all_reports() if "/fast/" in r["message"]]


def test_a_spinning_view_is_reported_on_cpu(server: Server) -> None:
    assert server.get("/cpu/?s=1.2")[0] == 200
    [report] = server.reports(1, slow("slow"))
    assert "# the spinning line" in report["message"]
    [done] = server.reports(1, slow("finished"))
    # On a busy machine it may also wait for a CPU; it never sleeps or waits on I/O.
    assert "on CPU" in done["message"], done["message"]
    assert "sleeping" not in done["message"] and "I/O" not in done["message"]
