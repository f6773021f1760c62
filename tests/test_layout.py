"""The core imports nothing from Django: it runs with Django made unimportable."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "slowwatch.sampler",
    "slowwatch.capture",
    "slowwatch.report",
    "slowwatch.profile",
    "slowwatch.budget",
    "slowwatch.watch",
    "slowwatch.threadstate",
    "slowwatch.sqlstats",
    "slowwatch.redact",
    "slowwatch.saferepr",
    "slowwatch.dispatch",
    "slowwatch.internal",
    "slowwatch.process",
    "slowwatch.flame",
]


def test_core_modules_import_without_django():
    code = "import sys; sys.modules['django'] = None\n" + "".join(
        f"import {module}\n" for module in CORE
    )
    code += "print('ok')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
