from __future__ import annotations

import json
import logging
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
