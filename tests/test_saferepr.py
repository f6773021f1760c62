"""Locals: rendered without running their code, bounded, secrets masked."""

from __future__ import annotations

import datetime
import enum
import sys
import threading
import time
import uuid
from decimal import Decimal

import pytest
from django.db.backends.signals import connection_created
from django.test import Client
from django.utils.functional import SimpleLazyObject
from django.views.decorators.debug import sensitive_variables
from hypothesis import given
from hypothesis import strategies as st

from slowwatch import runtime
from slowwatch.core import saferepr
from slowwatch.core.redact import MASK
from slowwatch.core.saferepr import capture_locals, render
from slowwatch.render import text


class Hostile:
    calls = 0

    def __repr__(self) -> str:
        Hostile.calls += 1
        raise RuntimeError("never call me")

    def __str__(self) -> str:
        Hostile.calls += 1
        time.sleep(10)
        return "slow"

    def __len__(self) -> int:
        Hostile.calls += 1
        return 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        Hostile.calls += 1
        return iter(())

    def __getattr__(self, name: str) -> object:
        Hostile.calls += 1
        raise AttributeError(name)


class Color(enum.Enum):
    RED = 1


def test_scalars_render_as_python_does():
    when = datetime.datetime(2026, 11, 25, 8, 0)
    assert render(None) == "None"
    assert render(3) == "3" and render(2.5) == "2.5" and render(True) == "True"
    assert render(Decimal("1.10")) == "Decimal('1.10')"
    assert render(uuid.UUID(int=1)) == "UUID('00000000-0000-0000-0000-000000000001')"
    assert render(when) == repr(when)
    assert render(Color.RED) == "Color.RED"
    assert render(b"\xff\xfe") == "b'\\xff\\xfe'"
    assert render("\udc80") == "'\\udc80'"
    assert render(10**400) == "<int of 1329 bits>"


def test_other_objects_are_opaque_and_never_called():
    Hostile.calls = 0
    for value in (Hostile(), [Hostile()], {"k": Hostile()}, {Hostile()}):
        text = render(value)
        assert f"{__name__}.Hostile at 0x" in text
    assert Hostile.calls == 0


def test_lazy_objects_are_not_evaluated():
    evaluated: list[int] = []
    lazy = SimpleLazyObject(lambda: evaluated.append(1) or "x")
    assert render(lazy).startswith("<django.utils.functional.SimpleLazyObject at 0x")
    assert render({"user": lazy}).startswith("{'user': <django.utils.functional.SimpleLazyObject")
    assert evaluated == []


def test_containers_are_bounded_and_cycles_named():
    assert render(list(range(100))) == "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, …]"
    assert render((1,)) == "(1,)"
    deep = [[[[["bottom"]]]]]
    assert render(deep) == "[[[<builtins.list at " + hex(id(deep[0][0][0])) + ">]]]"
    loop: list[object] = []
    loop.append(loop)
    assert render(loop) == "[<cycle>]"
    assert len(render("x" * 100_000)) <= saferepr.MAX_VALUE
    assert len(render(dict.fromkeys(range(1000), "y" * 5000))) <= saferepr.MAX_VALUE


def test_secrets_are_masked_by_name_and_in_values():
    assert render({"password": "p", "api_key": "k", "name": "n"}) == (
        f"{{'password': {MASK}, 'api_key': {MASK}, 'name': 'n'}}"
    )
    assert render("Bearer abc.def") == MASK
    assert render("/x/?page=2&access_token=abc") == f"'/x/?page=2&access_token={MASK}'"
    assert render("a=1&password=2") == f"'a=1&password={MASK}'"
    assert render({"QUERY_STRING": "token=1"}) == f"{{'QUERY_STRING': 'token={MASK}'}}"


def test_bytes_get_the_same_redaction_as_text():
    body = b"username=ops&password=CANARY-b1"
    assert render(body) == repr(f"username=ops&password={MASK}".encode())
    assert render(body.decode()) == repr(f"username=ops&password={MASK}")
    assert "CANARY" not in render({"body": b'{"api_key": "CANARY-b2"}'})
    assert render(b"\xff" + b"x=1") == repr(b"\xffx=1")


def test_pairs_with_a_secret_name_lose_their_second_item():
    headers = [
        ("Content-Type", "text/plain"),
        ("Cookie", "sessionid=CANARY-p1"),
        ("X-Api-Key", "CANARY-p2"),
        ["authorization", "Basic CANARY-p3"],
        (b"X-Auth-Token", b"CANARY-p4"),
    ]
    shown = render(headers)
    assert "CANARY" not in shown
    assert shown.startswith(f"[('Content-Type', 'text/plain'), ('Cookie', {MASK}), ")
    assert f"['authorization', {MASK}]" in shown and f"(b'X-Auth-Token', {MASK})" in shown
    assert render(("password", "CANARY-p5")) == f"('password', {MASK})"
    assert render({b"token": b"CANARY-p6"}) == f"{{b'token': {MASK}}}"
    # Not a pair: three items, or a first item that names no secret.
    assert render(("key", "a", "b")) == "('key', 'a', 'b')"
    assert render(("name", "bob")) == "('name', 'bob')"


def test_secrets_in_text_are_masked_whatever_the_variable_is_called():
    assert render("postgres://bob:CANARY-t1@db/app") == f"'postgres://bob:{MASK}@db/app'"
    assert render("theme=dark; sessionid=CANARY-t2") == f"'theme=dark; sessionid={MASK}'"
    assert render('{"password": "CANARY-t3"}') == repr(f'{{"password": "{MASK}"}}')
    assert render({"RAW_URI": "/a/?token=CANARY-t4"}) == f"{{'RAW_URI': '/a/?token={MASK}'}}"
    # The userinfo of a URL cut at the read limit, before its "@".
    cut = " " * (saferepr.READ - 20) + "postgres://bob:CANARY-t5-" + "x" * 40
    assert "CANARY" not in render(cut)


def test_items_past_what_is_shown_are_not_rendered(monkeypatch):
    seen: list[str] = []
    real = saferepr.redact_text

    def counting(text: str, *, cut: bool = False) -> str:
        seen.append(text)
        return real(text, cut=cut)

    monkeypatch.setattr(saferepr, "redact_text", counting)
    long = "y" * 2000
    shown = render([[long] * 10] * 10)
    assert len(shown) == saferepr.MAX_VALUE and shown.endswith("…")
    assert len(seen) == 1  # the first string fills the line; the other 99 are cut unseen
    assert render([long, long]) == saferepr._cut(repr([long, long]))


def test_a_dict_changing_while_it_is_read():
    shared = {i: i for i in range(5)}
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            shared[i % 50 + 5] = i
            shared.pop((i + 25) % 50 + 5, None)
            i += 1

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(200):
            text = render(shared)
            assert text.startswith("{") or text == "<changed during capture>"
    finally:
        stop.set()
        worker.join(5)


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text()
    | st.binary()
    | st.decimals(allow_nan=False)
    | st.builds(Hostile),
    lambda children: (
        st.lists(children, max_size=20)
        | st.dictionaries(st.text(max_size=10), children, max_size=20)
        | st.tuples(children, children)
    ),
    max_leaves=60,
)


@given(values)
def test_render_never_raises_is_bounded_and_deterministic(value):
    Hostile.calls = 0
    text = render(value)
    assert len(text) <= saferepr.MAX_VALUE
    assert render(value) == text
    assert Hostile.calls == 0


@given(
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=8),
    st.sampled_from(
        ["password", "db_password", "Authorization", "csrftoken", "session_key", "apiKey"]
    ),
)
def test_a_planted_secret_never_survives(mapping, secret_name):
    mapping = {**mapping, secret_name: "CANARY-77"}
    assert "CANARY-77" not in render(mapping)
    assert "CANARY-77" not in render([{"nested": mapping}])


def frame_of(function):  # type: ignore[no-untyped-def]
    """Run ``function`` and capture its locals from inside, as a frame."""
    got = {}

    def grab() -> None:
        got["frame"] = sys._getframe(1)

    function(grab)
    return got["frame"]


def test_capture_masks_by_name_and_honours_sensitive_variables():
    def view(grab):  # type: ignore[no-untyped-def]
        user_password = "CANARY-1"
        note = "fine"
        grab()
        return user_password, note

    captured = dict(capture_locals(frame_of(view), time.monotonic() + 1))
    assert captured["user_password"] == MASK and captured["note"] == "'fine'"

    @sensitive_variables()
    def login(grab):  # type: ignore[no-untyped-def]
        anything = "CANARY-2"
        grab()
        return anything

    assert capture_locals(frame_of(login), time.monotonic() + 1) == (
        ("*", "<all locals hidden: sensitive_variables>"),
    )


def test_capture_stops_at_its_budget():
    def view(grab):  # type: ignore[no-untyped-def]
        a, b, c = 1, 2, 3
        grab()
        return a, b, c

    ticks = iter([0.0, 0.0, 1.0, 2.0])
    captured = capture_locals(frame_of(view), 0.5, clock=lambda: next(ticks))
    assert [value for _, value in captured][-2:] == ["<skipped: budget>", "<skipped: budget>"]


@pytest.mark.django_db
def test_locals_of_a_slow_view_evaluate_nothing_and_open_no_connection(settings, collected):
    opened_by: list[str] = []

    def note(sender, connection, **kwargs):  # type: ignore[no-untyped-def]
        opened_by.append(threading.current_thread().name)

    connection_created.connect(note)
    settings.SLOWWATCH = {**settings.SLOWWATCH, "CAPTURE_LOCALS": True}
    try:
        response = Client().get("/with-locals/?s=0.6")
    finally:
        connection_created.disconnect(note)
    assert response.json()["unevaluated"] is True
    assert response.json()["lazy"] is False or "evaluated" not in response.json()
    runtime.flush(5)
    [slow] = [r for r in collected.reports if r.kind == "slow"]
    view = next(f for f in slow.frames if f.function == "with_locals")
    shown = dict(view.locals or ())
    assert shown["content_types"].startswith("<django.db.models.query.QuerySet at 0x")
    assert shown["lazy"].startswith("<django.utils.functional.SimpleLazyObject at 0x")
    assert shown["password"] == MASK and shown["authorization"] == MASK
    assert shown["next_url"] == f"'/next/?access_token={MASK}&page=2'"
    assert shown["count"] == "42"
    written = text(slow)
    assert "canary" not in written.lower()
    assert "content_types = <django.db.models.query.QuerySet" in written
    assert not any(name.startswith("slowwatch") for name in opened_by)
    # Library frames get no locals.
    assert all(f.locals is None for f in slow.frames if "site-packages" in f.filename)
