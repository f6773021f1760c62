"""Settings of the project the tests (and the real-server tests) run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import django

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "slowwatch-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "testproject.urls"
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "slowwatch",
]

MIDDLEWARE = [
    "slowwatch.middleware.SlowWatchMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "testproject.middleware.SlowBeforeRouting",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PG = {
    "ENGINE": "django.db.backends.postgresql",
    "HOST": os.environ.get("PGHOST", "127.0.0.1"),
    "PORT": os.environ.get("PGPORT", "5432"),
    "USER": os.environ.get("PGUSER", "postgres"),
    "NAME": os.environ.get("PGDATABASE", "test"),
    "PASSWORD": os.environ.get("PGPASSWORD", ""),
}

# SLOWWATCH_TEST_DATABASE=postgresql runs the whole suite's database tests on
# PostgreSQL instead of SQLite.
if os.environ.get("SLOWWATCH_TEST_DATABASE") == "postgresql":
    DATABASES = {"default": dict(PG)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SLOWWATCH_TEST_DB", str(BASE_DIR / "test.sqlite3")),
        }
    }

# The PostgreSQL the machine runs (CI starts it): for queries that wait in the server.
if os.environ.get("SLOWWATCH_TEST_PG", "1") != "0":
    DATABASES["pg"] = dict(PG)

# Real-server tests point these at their own Redis database and SMTP server.
if os.environ.get("SLOWWATCH_TEST_REDIS"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["SLOWWATCH_TEST_REDIS"],
            "KEY_PREFIX": os.environ.get("SLOWWATCH_TEST_CACHE_PREFIX", ""),
        }
    }
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ.get("SLOWWATCH_TEST_SMTP_PORT", "25"))
# Django 6 takes plain addresses (and deprecates the (name, address) pairs).
ADMINS = ["ops@example.com"] if django.VERSION >= (6, 0) else [("Ops", "ops@example.com")]

SLOWWATCH = {
    "THRESHOLD": float(os.environ.get("SLOWWATCH_TEST_THRESHOLD", "0.3")),
    # Tests that store reports ask for the DatabaseReporter themselves.
    "REPORTERS": os.environ.get(
        "SLOWWATCH_TEST_REPORTERS", "slowwatch.reporters.LoggingReporter"
    ).split(","),
    "RUNTIME_CONTROL": os.environ.get("SLOWWATCH_TEST_CONTROL") == "1",
}

# Real-server tests read reports back from a JSON-lines file.
_REPORTS = os.environ.get("SLOWWATCH_TEST_REPORTS")
LOGGING: dict[str, Any] = {
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

# Real-server tests that count Sentry events point the SDK at their receiver.
if os.environ.get("SLOWWATCH_TEST_SENTRY_DSN"):
    import sentry_sdk

    sentry_sdk.init(dsn=os.environ["SLOWWATCH_TEST_SENTRY_DSN"])

# tests/test_faults.py: slowwatch's own database (DATABASE_ALIAS) on an alias of
# its own, "store", given as JSON settings: a black hole, a locked file, ...
if os.environ.get("SLOWWATCH_TEST_STORE"):
    import json

    DATABASES["store"] = json.loads(os.environ["SLOWWATCH_TEST_STORE"])
    SLOWWATCH["DATABASE_ALIAS"] = "store"

# tests/test_faults.py: a second log sink, helpers.SecondLoggingReporter, whose
# records go to a JSON-lines file of their own through a logger of their own.
if os.environ.get("SLOWWATCH_TEST_SECOND_REPORTS"):
    LOGGING["handlers"]["second"] = {
        "class": "testproject.logs.JsonLinesHandler",
        "filename": os.environ["SLOWWATCH_TEST_SECOND_REPORTS"],
    }
    LOGGING["loggers"]["testproject.second"] = {
        "handlers": ["second"],
        "level": "INFO",
        "propagate": False,
    }

# tests/test_faults.py: a handler that raises or hangs on every record of one
# logger, "<logger>:<raise|sleep>", listed after the logger's other handlers.
if os.environ.get("SLOWWATCH_TEST_LOG_FAULT"):
    _faulty_logger, _behaviour = os.environ["SLOWWATCH_TEST_LOG_FAULT"].split(":")
    LOGGING["handlers"]["fault"] = {
        "class": "testproject.logs.FaultyHandler",
        "behaviour": _behaviour,
        "calls": os.environ["SLOWWATCH_TEST_LOG_FAULT_CALLS"],
        "release": os.environ["SLOWWATCH_TEST_LOG_FAULT_RELEASE"],
    }
    LOGGING["loggers"].setdefault(_faulty_logger, {"handlers": [], "level": "INFO"})
    LOGGING["loggers"][_faulty_logger]["handlers"].append("fault")
