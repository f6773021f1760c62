"""A tiny Sentry on loopback: takes the SDK's envelopes over real HTTP and keeps them.

``with Receiver() as sentry:`` then ``sentry_sdk.init(dsn=sentry.dsn)``. It can
be told to fail (``mode = "error"``: 500), to rate-limit (``"rate_limited"``:
429 with ``Retry-After`` and ``X-Sentry-Rate-Limits``) or to hang
(``"hang"``: no answer for 30 s, or until the receiver is released or closed).
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: How long a hanging receiver keeps the SDK waiting (unless released).
HANG = 30.0
_PATH = re.compile(r"^/api/(\d+)/(envelope|store)/(?:\?.*)?$")


@dataclass
class Item:
    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        return str(self.headers.get("type", ""))

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Envelope:
    headers: dict[str, Any]
    items: list[Item] = field(default_factory=list)


def parse_envelope(body: bytes) -> Envelope:
    """Sentry's envelope format: a header line, then (item header line, payload)*.

    A payload is ``length`` bytes when the item header says so, else up to the
    next newline.
    """
    line, _, rest = body.partition(b"\n")
    envelope = Envelope(json.loads(line))
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        if not line.strip():
            continue
        headers = json.loads(line)
        length = headers.get("length")
        if length is None:
            payload, _, rest = rest.partition(b"\n")
        else:
            payload, rest = rest[:length], rest[length:]
            if rest.startswith(b"\n"):
                rest = rest[1:]
        envelope.items.append(Item(headers, payload))
    return envelope


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        # The SDK only compresses with brotli when a brotli package is installed.
        try:
            import brotli  # type: ignore[import-not-found]
        except ImportError:
            import brotlicffi as brotli  # type: ignore[import-not-found, no-redef]
        return bytes(brotli.decompress(body))
    raise ValueError(f"unknown Content-Encoding {encoding!r}")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        receiver = self.server.receiver
        match = _PATH.match(self.path)
        if match is None:
            self._answer(404, b'{"detail":"not found"}')
            return
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = _decompress(raw, self.headers.get("Content-Encoding", ""))
        except Exception as exc:
            self._answer(400, json.dumps({"detail": str(exc)}).encode())
            return
        if match.group(2) == "store":  # the old endpoint: one JSON event
            envelope = Envelope({}, [Item({"type": "event"}, body)])
        else:
            envelope = parse_envelope(body)
        receiver.keep(body, envelope, dict(self.headers))
        mode = receiver.mode
        if mode == "hang":
            receiver.released.wait(HANG)
        if mode == "error":
            self._answer(500, b'{"detail":"internal error (the test asked for it)"}')
        elif mode == "rate_limited":
            self._answer(
                429,
                b'{"detail":"rate limited"}',
                {"Retry-After": "60", "X-Sentry-Rate-Limits": "60:error;transaction:key"},
            )
        else:
            event_id = envelope.headers.get("event_id") or ""
            self._answer(200, json.dumps({"id": event_id}).encode())

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests read what arrived, not an access log


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close (ThreadingMixIn.block_on_close).
    daemon_threads = True

    def __init__(self, receiver: Receiver) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.receiver = receiver


class Receiver:
    """Envelopes posted by the SDK, raw (decompressed) and parsed."""

    def __init__(self) -> None:
        #: "ok", "error" (500), "rate_limited" (429) or "hang".
        self.mode = "ok"
        self.released = threading.Event()
        self.raw: list[bytes] = []
        self.envelopes: list[Envelope] = []
        self.request_headers: list[dict[str, str]] = []
        self._cond = threading.Condition()
        self._server = _Server(self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sentry-receiver",
        )

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.port}/1"

    def keep(self, body: bytes, envelope: Envelope, headers: dict[str, str]) -> None:
        with self._cond:
            self.raw.append(body)
            self.envelopes.append(envelope)
            self.request_headers.append(headers)
            self._cond.notify_all()

    def items(self, kind: str) -> list[Item]:
        with self._cond:
            return [i for e in self.envelopes for i in e.items if i.type == kind]

    def events(self) -> list[dict[str, Any]]:
        return [i.json() for i in self.items("event")]

    def transactions(self) -> list[dict[str, Any]]:
        return [i.json() for i in self.items("transaction")]

    def attachments(self) -> list[Item]:
        return self.items("attachment")

    def wait_for(self, ready: Callable[[Receiver], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not ready(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def release(self) -> None:
        """Answer every request that is hanging, and hang no more."""
        self.mode = "ok"
        self.released.set()

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()  # joins the handler threads
        self._thread.join(5)
