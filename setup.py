# Metadata lives in pyproject.toml; this shim only lets old tooling that calls
# ``setup.py`` directly still build the package.
from __future__ import annotations

from setuptools import setup

setup()
