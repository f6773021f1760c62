"""Rendering local variables from another thread without running any of their code.

Only values of a few built-in types are rendered, by exact type: ``None``,
``bool``, ``int``, ``float``, ``str``, ``bytes``, ``Decimal``, ``UUID``,
dates and times, ``Enum`` members, and lists, tuples, sets and dicts of these,
bounded in length, breadth and depth. Anything else, a QuerySet, a lazy
object, a model instance, becomes ``<module.Class at 0x...>``: its
``__repr__``, ``__str__``, ``__len__``, ``__iter__`` and properties are never
called, so nothing is evaluated and no query runs. Secrets are masked by name
(:mod:`slowwatch.core.redact`): a dict's secret keys, and the second item of a
pair whose first is a secret name (``("Cookie", "…")`` from
``request.headers.items()``). Text and bytes are masked by what they hold:
credentials, a URL's password, secret ``name=value`` pairs (query strings,
Cookie headers, a form body) and ``"name": value`` pairs (JSON).
"""

from __future__ import annotations

import datetime
import enum
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from itertools import islice
from types import FrameType
from typing import Any

from slowwatch.core.redact import MASK, is_secret, redact_bytes, redact_query, redact_text

SCALARS = (
    type(None),
    bool,
    float,
    Decimal,
    uuid.UUID,
    datetime.date,
    datetime.datetime,
    datetime.time,
    datetime.timedelta,
)
MAX_VALUE = 1024
MAX_LOCALS = 32
DEPTH = 3
BREADTH = 10
#: CPU time (of the thread that captures) one capture may take before the
#: remaining values are skipped. CPU, not wall time: on a saturated machine the
#: monitor waits for a core, and that wait is not work the budget should cut.
BUDGET = 0.05

#: How much of a text or bytes value is read and redacted: more than is shown,
#: so that what is masked shortens the text rather than letting the unread part in.
READ = MAX_VALUE * 4
#: Keys of WSGI's environ (request.META) whose value is a URL with a query string.
_URI_KEYS = frozenset({"RAW_URI", "REQUEST_URI"})

_type_name = type.__dict__["__qualname__"].__get__
_type_module = type.__dict__["__module__"].__get__


def opaque(value: object) -> str:
    """``<module.Class at 0x…>``, read from the type object's C slots only."""
    cls = type(value)
    try:
        name = f"{_type_module(cls, type)}.{_type_name(cls, type)}"
    except Exception:
        name = "object"
    return f"<{name} at {id(value):#x}>"


def _text(value: str, key: str, cut: bool) -> str:
    # Named as a query string, a value is redacted as one even when it does not
    # look like one ("token=1" alone).
    name = key.upper()
    if name == "QUERY_STRING":
        value = redact_query(value)
    elif name in _URI_KEYS and "?" in value:
        head, _, query = value.partition("?")
        value = f"{head}?{redact_query(query)}"
    return redact_text(value, cut=cut)


def _secret_name(value: object) -> bool:
    """Whether ``value`` is text (or bytes) naming a secret: a dict key, a pair's first item."""
    if type(value) is str:
        return is_secret(value[:256])
    if type(value) is bytes:
        return is_secret(value[:256].decode("latin-1"))
    return False


def _cut(text: str) -> str:
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _full(parts: list[str]) -> bool:
    """Whether the items rendered so far already fill what :func:`_cut` keeps.

    The items after them would be cut away unseen, so they are not rendered:
    each string costs its redaction, and nested containers multiply that.
    """
    return sum(len(part) + 2 for part in parts) >= MAX_VALUE


def render(
    value: object, key: str = "", depth: int = DEPTH, seen: frozenset[int] = frozenset()
) -> str:
    """A bounded, side-effect-free rendering of ``value``."""
    kind = type(value)
    if kind is str:
        cut = len(value) > READ  # type: ignore[arg-type]
        text = _text(value[:READ], key, cut)  # type: ignore[index]
        return text if text == MASK else _cut(repr(text))
    if kind is bytes:
        cut = len(value) > READ  # type: ignore[arg-type]
        return _cut(repr(redact_bytes(value[:READ], cut=cut)))  # type: ignore[index]
    if kind is int:
        if value.bit_length() > 256:  # type: ignore[attr-defined]
            return f"<int of {value.bit_length()} bits>"  # type: ignore[attr-defined]
        return repr(value)
    if kind in SCALARS:
        return _cut(repr(value))
    # issubclass on the type, never isinstance on the value: isinstance falls
    # back to value.__class__, which a lazy object answers by evaluating itself.
    if issubclass(kind, enum.Enum):
        name = vars(value).get("_name_")
        return f"{_type_name(kind, type)}.{name}" if isinstance(name, str) else opaque(value)
    if kind in (list, tuple, set, frozenset, dict):
        if id(value) in seen:
            return "<cycle>"
        if depth <= 0:
            return opaque(value)
        return _container(value, depth - 1, seen | {id(value)})
    return opaque(value)


def _container(value: Any, depth: int, seen: frozenset[int]) -> str:
    try:
        if type(value) is dict:
            items = list(islice(value.items(), BREADTH + 1))
        else:
            items = list(islice(value, BREADTH + 1))
    except RuntimeError:  # changed size while we read it
        return "<changed during capture>"
    more = "…" if len(items) > BREADTH else ""
    items = items[:BREADTH]
    parts: list[str] = []
    if type(value) is dict:
        for k, v in items:
            name = k if type(k) is str else ""
            shown = MASK if _secret_name(k) else render(v, name, depth, seen)
            parts.append(f"{render(k, '', 0, seen)}: {shown}")
            if _full(parts):
                break
        brackets = "{}"
    elif type(value) in (list, tuple) and len(items) == 2 and _secret_name(items[0]):
        # A (name, value) pair: request.headers.items(), a cookie jar, a form's
        # fields. Only an exact list or tuple: a namedtuple's items mean something else.
        parts = [render(items[0], "", depth, seen), MASK]
        brackets = "[]" if type(value) is list else "()"
    else:
        for v in items:
            parts.append(render(v, "", depth, seen))
            if _full(parts):
                break
        brackets = "[]" if type(value) is list else "()" if type(value) is tuple else "{}"
    if len(parts) < len(items):
        more = "…"
    body = ", ".join(parts)
    if type(value) is tuple and len(items) == 1 and not more:
        body += ","
    if more:
        body = f"{body}, {more}" if body else more
    return _cut(f"{brackets[0]}{body}{brackets[1]}")


def _sensitive(frame: FrameType) -> bool:
    """Django's ``sensitive_variables``: we mask every local of such a function."""
    caller = frame.f_back
    if caller is not None and caller.f_code.co_name == "sensitive_variables_wrapper":
        return True
    try:
        from django.views.decorators.debug import coroutine_functions_to_sensitive_variables
    except ImportError:
        return False
    code = frame.f_code
    return hash(f"{code.co_filename}:{code.co_firstlineno}") in (
        coroutine_functions_to_sensitive_variables
    )


def capture_locals(
    frame: FrameType, deadline: float, clock: Callable[[], float] = time.monotonic
) -> tuple[tuple[str, str], ...]:
    """One frame's locals as ``(name, rendered)``; past ``deadline``, ``<skipped: budget>``."""
    if _sensitive(frame):
        return (("*", "<all locals hidden: sensitive_variables>"),)
    # A snapshot dict (3.11/3.12) or a write-through proxy (3.13+): copy the
    # pairs once, then only read the copy.
    names = list(islice(dict(frame.f_locals).items(), MAX_LOCALS + 1))
    out: list[tuple[str, str]] = []
    for name, value in names[:MAX_LOCALS]:
        if clock() > deadline:
            out.append((name, "<skipped: budget>"))
        elif is_secret(name):
            out.append((name, MASK))
        else:
            try:
                out.append((name, render(value, name)))
            except Exception:
                out.append((name, opaque(value)))
    if len(names) > MAX_LOCALS:
        out.append(("…", f"<more than {MAX_LOCALS} locals>"))
    return tuple(out)
