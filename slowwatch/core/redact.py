"""Masking of secrets before anything leaves the process.

Names are matched as case-insensitive substrings, the way Django's
``SafeExceptionReporterFilter`` does for settings: exact-name matching (as in
sentry-sdk's denylist) lets ``user_password`` or ``access_token`` through.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

MASK = "********"

SECRET_NAMES = re.compile(
    r"pass|secret|token|key|auth|cookie|session|csrf|signature|credential|card|sig\b|jwt",
    re.IGNORECASE,
)

_SEPARATORS = re.compile(r"([&;])")


def is_secret(name: str) -> bool:
    return SECRET_NAMES.search(name) is not None


def redact_query(query: str) -> str:
    """Mask the values of sensitive parameters in a query string.

    Everything else is left byte for byte as it came, so the result still
    reads like the URL that was requested. Idempotent.
    """
    if not query:
        return ""
    parts = _SEPARATORS.split(query)
    for i in range(0, len(parts), 2):
        name, sep, _value = parts[i].partition("=")
        if sep and is_secret(unquote_plus(name, errors="replace")):
            parts[i] = f"{name}={MASK}"
    return "".join(parts)


def redact_url(path: str, query: str) -> str:
    """``path?query`` with secrets in the query masked."""
    query = redact_query(query)
    return f"{path}?{query}" if query else path
