from __future__ import annotations

import json
import logging
import os
import time


class JsonLinesHandler(logging.FileHandler):
    """Writes each report record as one JSON line, flushed at once."""

    def emit(self, record: logging.LogRecord) -> None:
        doc = {
            "logged_at": time.time(),
            "level": record.levelname,
            "message": record.getMessage(),
            "slowwatch": getattr(record, "slowwatch", None),
        }
        self.acquire()
        try:
            stream = self.stream or self._open()
            self.stream = stream
            stream.write(json.dumps(doc) + "\n")
            stream.flush()
        finally:
            self.release()


class FaultyHandler(logging.Handler):
    """A handler that raises (``behaviour="raise"``) or sleeps 30 s (``"sleep"``)
    on every record: the logging faults of tests/test_faults.py.

    Each call appends its time to the file ``calls`` (the test's proof that the
    fault was met); a sleep ends as soon as the file ``release`` exists, and
    once it does, no call sleeps (the test lifts the fault).
    """

    def __init__(self, behaviour: str, calls: str, release: str, seconds: float = 30.0) -> None:
        super().__init__()
        if behaviour not in ("raise", "sleep"):
            raise ValueError(f"behaviour must be 'raise' or 'sleep', not {behaviour!r}")
        self.behaviour = behaviour
        # Not ``self.release``: that is Handler's method releasing its lock.
        self.calls_file = calls
        self.release_file = release
        self.seconds = seconds

    def emit(self, record: logging.LogRecord) -> None:
        with open(self.calls_file, "a") as out:
            out.write(f"{time.time()} {record.name}\n")
        if self.behaviour == "raise":
            raise RuntimeError("a logging handler that raises (tests/test_faults.py)")
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline and not os.path.exists(self.release_file):
            time.sleep(0.02)
