"""The "write your own reporter" example of docs/api.rst, run as a user would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from slowwatch import runtime

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def test_the_documented_reporter_writes_a_line_per_transition(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    out = tmp_path / "slow.jsonl"
    settings.SLOWWATCH_JSONL_PATH = str(out)
    settings.SLOWWATCH = {**settings.SLOWWATCH, "REPORTERS": ["jsonl_reporter.JsonLinesReporter"]}
    assert Client().get("/sleep/?s=0.5").status_code == 200
    assert runtime.flush(10)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["slow", "finished"]
    assert lines[0]["summary"].startswith("Slow request: GET /sleep/?s=0.5")
    assert lines[1]["outcome"]["status_code"] == 200
    assert not any("JsonLinesReporter" in where for where in runtime.errors.counts)
