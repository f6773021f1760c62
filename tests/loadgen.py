"""A small HTTP/1.1 load generator for the load tests: nothing to install.

``clients`` keep-alive connections to one port of 127.0.0.1, each sending its
next request as soon as the last one was answered (a closed loop, as ``wrk``
does), on one asyncio event loop. Bounded both ways: it stops taking new
requests at ``requests`` or after ``duration`` seconds, whichever comes first,
and every request has ``timeout`` seconds to be answered. A client finishes
the request it is in before it stops, so every request sent has an outcome:
a status, or an error.

Run on its own to see what the machine can do::

    python tests/loadgen.py PORT [CLIENTS] [SECONDS]
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Result", "run"]

#: At most this many error descriptions are kept (all are counted).
KEPT_ERRORS = 20


@dataclass
class Result:
    """What a run sent and got back."""

    sent: int = 0
    #: Status code -> how many responses had it.
    statuses: Counter[int] = field(default_factory=Counter)
    #: Paths of the requests answered 200.
    ok_paths: list[str] = field(default_factory=list)
    error_count: int = 0
    errors: list[str] = field(default_factory=list)
    #: Seconds from sending each request to its whole response, by path prefix.
    latencies: dict[str, list[float]] = field(default_factory=dict)
    connections: int = 0
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed else 0.0

    def error(self, path: str, exc: BaseException) -> None:
        self.error_count += 1
        if len(self.errors) < KEPT_ERRORS:
            self.errors.append(f"{path}: {type(exc).__name__}: {exc}")


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):  # reset by the server: closed all the same
            await self.writer.wait_closed()


async def _exchange(conn: _Connection, path: str) -> tuple[int, bool]:
    """Send one GET, read its whole response; (status, server keeps the connection)."""
    conn.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("ascii"))
    await conn.writer.drain()
    head = await conn.reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        await conn.reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await conn.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await conn.reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await conn.reader.read()  # delimited by the end of the connection
        return status, False
    return status, headers.get("connection") != "close"


async def _client(
    port: int,
    numbers: itertools.count[int],
    path_for: Callable[[int], str],
    stop_at: float,
    requests: int,
    timeout: float,
    result: Result,
) -> None:
    conn: _Connection | None = None
    try:
        while time.monotonic() < stop_at:
            n = next(numbers)
            if n >= requests:
                break
            path = path_for(n)
            result.sent += 1
            started = time.monotonic()
            try:
                if conn is None:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", port), timeout
                    )
                    conn = _Connection(reader, writer)
                    result.connections += 1
                status, keep = await asyncio.wait_for(_exchange(conn, path), timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                result.error(path, exc)
                if conn is not None:
                    await conn.close()
                    conn = None
                continue
            took = time.monotonic() - started
            result.latencies.setdefault(path.split("?")[0], []).append(took)
            result.statuses[status] += 1
            if status == 200:
                result.ok_paths.append(path)
            if not keep:
                await conn.close()
                conn = None
    finally:
        if conn is not None:
            await conn.close()


async def _run(
    port: int,
    *,
    clients: int,
    requests: int,
    duration: float,
    path_for: Callable[[int], str],
    timeout: float,
) -> Result:
    result = Result()
    numbers = itertools.count()
    started = time.monotonic()
    stop_at = started + duration
    await asyncio.gather(
        *(
            _client(port, numbers, path_for, stop_at, requests, timeout, result)
            for _ in range(clients)
        )
    )
    result.elapsed = time.monotonic() - started
    return result


def run(
    port: int,
    *,
    clients: int,
    requests: int,
    duration: float,
    path_for: Callable[[int], str],
    timeout: float = 30.0,
) -> Result:
    """Send up to ``requests`` requests in at most ``duration`` s (plus one ``timeout``).

    ``path_for(n)`` is the path of the ``n``-th request (``n`` counts from 0
    across all clients).
    """
    if clients < 1 or requests < 1 or duration <= 0 or timeout <= 0:
        raise ValueError("clients, requests, duration and timeout must be positive")
    return asyncio.run(
        _run(
            port,
            clients=clients,
            requests=requests,
            duration=duration,
            path_for=path_for,
            timeout=timeout,
        )
    )


if __name__ == "__main__":
    got = run(
        int(sys.argv[1]),
        clients=int(sys.argv[2]) if len(sys.argv) > 2 else 200,
        requests=10**9,
        duration=float(sys.argv[3]) if len(sys.argv) > 3 else 10.0,
        path_for=lambda n: "/fast/",
    )
    print(f"{got.sent} requests in {got.elapsed:.1f} s: {got.rate:.0f}/s, {got.statuses}")
    print(f"{got.error_count} errors {got.errors[:3]}")
