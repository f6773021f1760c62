"""Settings of the project the tests (and the real-server tests) run."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "slowwatch-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "testproject.urls"
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "slowwatch",
]

MIDDLEWARE = [
    "slowwatch.middleware.SlowWatchMiddleware",
    "django.middleware.common.CommonMiddleware",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SLOWWATCH_TEST_DB", str(BASE_DIR / "test.sqlite3")),
    }
}

# The PostgreSQL the machine runs (CI starts it): for queries that wait in the server.
if os.environ.get("SLOWWATCH_TEST_PG", "1") != "0":
    DATABASES["pg"] = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "NAME": os.environ.get("PGDATABASE", "test"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
    }

SLOWWATCH = {"THRESHOLD": float(os.environ.get("SLOWWATCH_TEST_THRESHOLD", "0.3"))}

# Real-server tests read reports back from a JSON-lines file.
_REPORTS = os.environ.get("SLOWWATCH_TEST_REPORTS")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "reports": {
            "class": "testproject.logs.JsonLinesHandler",
            "filename": _REPORTS or os.devnull,
        },
    },
    "loggers": {
        "slowwatch.report": {
            "handlers": ["reports"] if _REPORTS else [],
            "level": "INFO",
        },
    },
}
