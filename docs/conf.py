"""Sphinx configuration for slowwatch's documentation (``sphinx-build docs docs/_build``)."""

from __future__ import annotations

project = "slowwatch"
author = "the slowwatch authors"
copyright = "2026, the slowwatch authors"  # noqa: A001
extensions: list[str] = []
exclude_patterns = ["_build"]
html_theme = "alabaster"
