"""Masking of secrets before anything leaves the process.

Names are matched as case-insensitive substrings, the way Django's
``SafeExceptionReporterFilter`` does for settings: exact-name matching (as in
sentry-sdk's denylist) lets ``user_password`` or ``access_token`` through.

Values are masked by what they look like as well as by the name they are held
under, because a secret often travels in a variable with a harmless name
(``body``, ``headers``, ``dsn``): credentials (``Bearer …``), the password of
URL userinfo, ``name=value``, ``"name": value`` and ``("name", value)`` pairs
with a secret name (query strings, Cookie headers, JSON, libpq DSNs, header
lines, command lines, an ASGI scope's headers), the fields of
a multipart/form-data body with a secret name, and query strings inside text.
A view's ``sensitive_post_parameters`` add their names for the time its
locals are rendered (:func:`also_secret`).
Everything here is a regular expression or a linear scan over text already cut
to a bounded length; nothing parses into objects, calls back into user code or
raises.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from functools import partial
from urllib.parse import quote, unquote_plus

MASK = "********"

SECRET_NAMES = re.compile(
    r"pass|secret|token|key|auth|cookie|session|csrf|signature|credential|card|sig\b|jwt",
    re.IGNORECASE,
)

_SEPARATORS = re.compile(r"([&;])")
#: How deep a query value is decoded and searched again: enough for a ``next=``
#: URL that carries its own query, and no recursion an attacker can deepen.
_DEPTH = 2
#: Most passes over one text (see :func:`_settled`).
_PASSES = 4
#: Kept unencoded when a redacted query value is written back, so that it still
#: reads; never ``&``, ``;`` or ``=``, which would split it into new parameters.
_QUERY_SAFE = "*/:@!$'(),[]{}\""

_CREDENTIALS = re.compile(r"^\s*(?:bearer|basic|token|digest)\s+\S", re.IGNORECASE)
_SCHEMES = frozenset({"bearer", "basic", "token", "digest"})
_QUERY = re.compile(r"^[^\s=&?#]+=[^\s&]*(?:[&;][^\s=&]+=[^\s&]*)+$")
#: ``scheme://user:password@``: the last ``@`` before the path ends the userinfo,
#: as in RFC 3986, so a password holding an unencoded ``@`` is masked whole.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]{0,30}://)([^\s:/?#@]*):([^\s/?#]*)@")
#: The same at the end of text that was cut before its ``@`` arrived.
_USERINFO_CUT = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]{0,30}://)([^\s:/?#@]*):([^\s/?#@]*)\Z")
#: A name followed by ``=`` or ``:``: a quoted name (JSON, a Python repr) or a
#: bare one (query, Cookie, ``key=value`` configuration, a header line, a
#: form's ``user[password]``, a command line's ``--password=``, ``2fa_token``).
#: The look-behind keeps a bare name from starting mid-word, but lets it follow
#: a bracket (``[password: …``). A quoted name followed by ``,`` is a pair only
#: as a 2-tuple's first item (``(b"authorization", b"Bearer …")``, see
#: :func:`_opens_tuple`).
_PAIR = re.compile(
    r"""(?:(?:"(?P<dq>(?:[^"\\\n]|\\.){1,100})"|'(?P<sq>(?:[^'\\\n]|\\.){1,100})')"""
    r"""[ \t]{0,3}(?P<sep>[=:,])"""
    r"""|(?<![\w.\-%+])(?P<bare>[\w.\-%+][\w.\-\[\]%+]{0,100})[ \t]{0,3}[=:])[ \t]{0,3}"""
)
#: A tuple whose first item is a string: it may be a (name, value) pair.
_TUPLE = re.compile(r"""\([ \t]*[bB]?["'][^"'\n]{1,100}["'][ \t]*,""")
#: A part of a multipart/form-data body: its headers name the field, and its
#: value runs from the blank line to the next boundary (or the end of cut text).
_FORM_PART = re.compile(
    r"""(content-disposition:[^\r\n]{0,200}?\bname="([^"\r\n]{0,200})"[^\r\n]{0,500}\r?\n"""
    r"""(?:[^\r\n]{1,500}\r?\n){0,8}\r?\n)((?:(?!\r?\n--).)*)""",
    re.IGNORECASE | re.DOTALL,
)
#: Where a bare value ends.
_BARE_END = re.compile(r"[\s&;,}\])]")


_also = threading.local()


@contextmanager
def also_secret(names: Collection[str]) -> Iterator[None]:
    """On this thread, within the block, these exact names (in any case) are
    secret too: the POST parameters a view declared sensitive."""
    before: frozenset[str] = getattr(_also, "names", frozenset())
    _also.names = before | {name.lower() for name in names}
    try:
        yield
    finally:
        _also.names = before


def is_secret(name: str) -> bool:
    if SECRET_NAMES.search(name) is not None:
        return True
    extra: frozenset[str] = getattr(_also, "names", frozenset())
    return bool(extra) and name.lower() in extra


def redact_query(query: str) -> str:
    """Mask the values of sensitive parameters in a query string.

    Everything else is left byte for byte as it came, so the result still
    reads like the URL that was requested; only a value that itself holds a
    secret (a URL with a password, JSON with a ``"token"``) is written back,
    re-encoded, with that secret masked. Idempotent (see :func:`redact_text`).
    """
    return _settled(partial(_query, depth=_DEPTH), query)


def redact_url(path: str, query: str) -> str:
    """``path?query`` with secrets in the query masked."""
    query = redact_query(query)
    return f"{path}?{query}" if query else path


def redact_text(text: str, *, cut: bool = False) -> str:
    """``text`` with every secret it visibly holds masked.

    ``cut`` says that ``text`` was truncated, so that a URL's password
    whose ``@`` fell past the cut is masked too. Idempotent (see
    :func:`_settled`).
    """
    return _settled(partial(_text, depth=_DEPTH, cut=cut), text)


def redact_bytes(data: bytes, *, cut: bool = False) -> bytes:
    """:func:`redact_text` for bytes: a body, a header read raw from the socket."""
    # surrogateescape maps every byte that is not UTF-8 to a code point of its
    # own and back, so the bytes that are not masked come back unchanged.
    text = data.decode("utf-8", "surrogateescape")
    redacted = _settled(partial(_text, depth=_DEPTH, cut=cut), text)
    if redacted == text:
        return data
    try:
        return redacted.encode("utf-8", "surrogateescape")
    except UnicodeError:  # not expected; but a secret must not come back unmasked
        return MASK.encode()


def _settled(redact: Callable[[str], str], text: str) -> str:
    """``redact(text)``, again until a pass masks nothing more (at most
    _PASSES): a masked value can make what surrounds it read as a new pair
    (``'pg://password:"a b"@'`` becomes a URL with a password). Text with
    nothing to mask takes one pass, text with a secret usually two."""
    for _ in range(_PASSES):
        redacted = redact(text)
        if redacted == text:
            break
        text = redacted
    return text


def _query(query: str, depth: int) -> str:
    if not query:
        return ""
    parts = _SEPARATORS.split(query)
    for i in range(0, len(parts), 2):
        name, sep, value = parts[i].partition("=")
        if not sep:
            continue
        if is_secret(unquote_plus(name, errors="replace")):
            parts[i] = f"{name}={MASK}"
        elif depth > 0 and value:
            decoded = unquote_plus(value, errors="replace")
            redacted = _text(decoded, depth - 1, False)
            if redacted != decoded:
                # A lone surrogate must not make redaction raise, nor turn into a
                # character ("?") that reads differently the next time.
                encoded = quote(redacted, safe=_QUERY_SAFE, errors="backslashreplace")
                parts[i] = f"{name}={encoded}"
    return "".join(parts)


def _text(text: str, depth: int, cut: bool) -> str:
    if _CREDENTIALS.match(text):
        return MASK
    if "://" in text:
        text = _USERINFO.sub(_userinfo, text)
    if depth > 0 and "=" in text:
        if _QUERY.match(text):
            text = _query(text, depth)
        elif "?" in text:
            head, _, query = text.partition("?")
            text = f"{head}?{_query(query, depth)}"
    if "form-data" in text:
        text = _FORM_PART.sub(_form_part, text)
    if "=" in text or ":" in text or ("(" in text and _TUPLE.search(text)):
        text = _pairs(text)
    if cut and "://" in text:
        # Last: a pair masked above may have become the end of a userinfo.
        text = _USERINFO_CUT.sub(_userinfo, text)
    return text


def _userinfo(match: re.Match[str]) -> str:
    """Keep the scheme and the user, who says whose account it is; mask the password."""
    scheme, user, password = match.group(1, 2, 3)
    if password.startswith(MASK):  # masked already, maybe with what followed a cut
        return match.group(0)
    return f"{scheme}{user}:{MASK}{'' if match.re is _USERINFO_CUT else '@'}"


def _form_part(match: re.Match[str]) -> str:
    head, name, value = match.group(1, 2, 3)
    if not value or value == MASK or not is_secret(name):
        return match.group(0)
    return f"{head}{MASK}"


def _secret_name(match: re.Match[str]) -> bool:
    """Whether the pair's name is secret, read as written and as it decodes."""
    bare = match.group("bare")
    if bare is not None:
        # Percent-decoded ("user%5Bpassword%5D"), and as written: "%card"
        # decodes to another name.
        return is_secret(unquote_plus(bare, errors="replace")) or is_secret(bare)
    quoted = match.group("dq") or match.group("sq")
    # An escaped letter (JSON's "pass\u0077ord") must not hide the name.
    return is_secret(quoted) or ("\\" in quoted and is_secret(_unescaped(quoted)))


def _unescaped(quoted: str) -> str:
    try:
        return quoted.encode("latin-1", "backslashreplace").decode("unicode_escape", "replace")
    except (UnicodeError, ValueError):
        return quoted


def _pairs(text: str) -> str:
    """Mask the value of every ``name=value`` or ``"name": value`` with a secret name."""
    out: list[str] = []
    done = pos = 0
    while (match := _PAIR.search(text, pos)) is not None:
        start = pos = match.end()
        bare = match.group("bare")
        if bare is None:
            # A quoted "name" may be text holding pairs of its own, between
            # stray quotes ('= {"password": "x"} '=): masked inside it too.
            head, tail = match.span("dq" if match.group("dq") is not None else "sq")
            name = text[head:tail]
            masked = _pairs(name) if "=" in name or ":" in name else name
            if masked != name:
                out.append(text[done:head])
                out.append(masked)
                done = tail
        if start >= len(text) or not _secret_name(match):
            continue
        if match.group("sep") == "," and not _opens_tuple(text, match.start()):
            continue
        # The next search starts past this value: a name inside a value masked
        # whole (a nested object) is gone with it.
        # A bare name right after a quote is text inside a quoted string
        # ("password: x" as a JSON value): its value ends where that string does.
        before = text[match.start() - 1] if match.start() and bare else ""
        end, shown = _value(text, start, before if before in ("'", '"') else "")
        pos = end
        if shown is not None:
            out.append(text[done:start])
            out.append(shown)
            done = end
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


def _opens_tuple(text: str, quote: int) -> bool:
    """Whether the string whose quote is at ``quote`` is the first item of a
    tuple: after ``(``, with maybe a ``b`` prefix and blanks between."""
    i = quote - 1
    if i >= 0 and text[i] in "bB":
        i -= 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    return i >= 0 and text[i] == "("


def _value(text: str, start: int, within: str) -> tuple[int, str | None]:
    """Where the value at ``start`` ends, and what to show for it (None: keep it)."""
    first = text[start]
    if first in "bB" and text[start + 1 : start + 2] in ("'", '"'):
        # A bytes literal (b"Bearer abc"): its quotes bound it, as a string's.
        end, shown = _value(text, start + 1, within)
        return end, None if shown is None else first + shown
    if first in "\"'":
        end, closed = _closing_quote(text, start)
        inner = text[start + 1 : end - 1 if closed else end]
        if not inner or inner == MASK:
            return end, None
        # Unclosed: the text was cut inside the value, so mask up to the cut.
        return end, f"{first}{MASK}{first}" if closed else MASK
    if first in "{[":
        return _closing_bracket(text, start), MASK
    found = _BARE_END.search(text, start)
    end = found.start() if found else len(text)
    if within:
        closing = text.find(within, start, end)
        end = end if closing < 0 else closing
    word = text[start:end]
    if not word or word.startswith(MASK):
        return end, None
    if word.lower() in _SCHEMES:
        # "Authorization: Bearer abc": the credentials follow the scheme.
        rest = re.match(r"\s+\S+", text[end:])
        end += rest.end() if rest else 0
    return end, MASK


def _closing_quote(text: str, start: int) -> tuple[int, bool]:
    """The index past the quote closing the string at ``start`` (else the end of
    text), and whether it was closed."""
    quote_char = text[start]
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == quote_char:
            return i + 1, True
        i += 1
    return len(text), False


def _closing_bracket(text: str, start: int) -> int:
    """The index past the bracket closing the one at ``start``, else the end of text."""
    level = 0
    i = start
    while i < len(text):
        char = text[i]
        if char in "\"'":
            i = _closing_quote(text, i)[0]
            continue
        if char in "{[":
            level += 1
        elif char in "}]":
            level -= 1
            if level == 0:
                return i + 1
        i += 1
    return len(text)
