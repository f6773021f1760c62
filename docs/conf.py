"""Sphinx configuration for slowwatch's documentation (``sphinx-build docs docs/_build``)."""

from __future__ import annotations

import django
from django.conf import settings

# autodoc imports the reporters, which import Django's models.
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "slowwatch"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
)
django.setup()

project = "slowwatch"
author = "the slowwatch authors"
copyright = "2026, the slowwatch authors"  # noqa: A001
extensions = ["sphinx.ext.autodoc"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
exclude_patterns = ["_build", "examples"]
html_theme = "alabaster"
