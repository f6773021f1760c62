"""The core imports nothing from Django: every module under slowwatch/core/ runs
with Django made unimportable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import slowwatch.core

CORE = Path(slowwatch.core.__file__).parent


def core_modules() -> list[str]:
    return sorted(
        "slowwatch.core" if path.stem == "__init__" else f"slowwatch.core.{path.stem}"
        for path in CORE.glob("*.py")
    )


def test_the_core_holds_its_modules():
    found = core_modules()
    assert "slowwatch.core.watchdog" in found and len(found) >= 10, found


def test_core_modules_import_without_django():
    code = "import sys; sys.modules['django'] = None\n" + "".join(
        f"import {module}\n" for module in core_modules()
    )
    code += "print('ok')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
