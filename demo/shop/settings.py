"""A small shop whose report page is slow: slowwatch's demo project."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "slowwatch-demo-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "slowwatch",
    "shop",
]

MIDDLEWARE = [
    "slowwatch.middleware.SlowWatchMiddleware",  # first, so every other layer is watched
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB", str(BASE_DIR / "db.sqlite3")),
    }
}

SLOWWATCH = {
    # Production sites keep the 25 s default; the demo wants answers quickly.
    "THRESHOLD": 1.0,
    # A login hashes the password on purpose (PBKDF2, about a second of CPU on
    # a small machine): give it a threshold of its own rather than an alert.
    "THRESHOLDS": {"export": 5.0, "admin:login": 5.0},
    "IGNORE": ["health", "^/static/"],
    # LoggingReporter prints to this console; DatabaseReporter feeds /admin/.
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # gunicorn's own format, so that the console reads as one log (scripts/demo
    # runs everything in UTC).
    "formatters": {
        "plain": {
            "format": "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s\n%(message)s\n",
            "datefmt": "%Y-%m-%d %H:%M:%S %z",
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"slowwatch": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
