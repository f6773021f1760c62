from __future__ import annotations

from urllib.parse import quote_plus

from hypothesis import assume, example, given
from hypothesis import strategies as st

from slowwatch.core.redact import MASK, redact_bytes, redact_query, redact_text, redact_url


def test_sensitive_values_are_masked_and_the_rest_kept_as_sent():
    query = "page=2&access_token=abc123&q=caf%C3%A9&API_KEY=zzz;session_id=s&x"
    assert redact_query(query) == (
        f"page=2&access_token={MASK}&q=caf%C3%A9&API_KEY={MASK};session_id={MASK}&x"
    )


def test_encoded_names_are_matched_too():
    assert redact_query("pass%77ord=hunter2") == f"pass%77ord={MASK}"
    assert redact_query("user+password=x") == f"user+password={MASK}"


def test_redact_url():
    assert redact_url("/a/", "") == "/a/"
    assert redact_url("/a/", "token=1") == f"/a/?token={MASK}"


names = st.text(st.characters(codec="utf-8", exclude_characters="&;="), max_size=12)
values = st.text(st.characters(codec="utf-8", exclude_characters="&;"), max_size=12)


@given(st.lists(st.tuples(names, values), max_size=8))
def test_redaction_is_idempotent_and_never_raises(pairs):
    query = "&".join(f"{quote_plus(n)}={quote_plus(v)}" for n, v in pairs)
    once = redact_query(query)
    assert redact_query(once) == once


@given(
    st.lists(st.tuples(names, values), max_size=6),
    st.sampled_from(
        ["password", "Token", "api_key", "csrfmiddlewaretoken", "X-Auth", "sessionid"]
    ),
    st.integers(min_value=0, max_value=6),
)
def test_a_planted_secret_never_survives(pairs, secret_name, position):
    canary = "CANARY-9f8e7d"
    pairs = list(pairs)
    pairs.insert(min(position, len(pairs)), (secret_name, canary))
    query = "&".join(f"{quote_plus(n)}={quote_plus(v)}" for n, v in pairs)
    assert canary not in redact_query(query)


@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text):
    assert isinstance(redact_query(text), str)


def test_url_userinfo_loses_its_password_and_keeps_its_user():
    assert (
        redact_text("postgres://bob:pw@db.example/app") == f"postgres://bob:{MASK}@db.example/app"
    )
    # The last "@" before the path ends the userinfo (RFC 3986): no tail of the password shows.
    assert redact_text("mysql://bob:p@ss@h/db") == f"mysql://bob:{MASK}@h/db"
    assert redact_text("redis://:pw@h:6379/0") == f"redis://:{MASK}@h:6379/0"
    assert redact_text("DSN is amqp://u:pw@h, fine") == f"DSN is amqp://u:{MASK}@h, fine"
    # No password, or no userinfo at all: nothing to mask.
    assert redact_text("https://bob@example.com/") == "https://bob@example.com/"
    assert redact_text("https://example.com:8443/a?b=1") == "https://example.com:8443/a?b=1"
    # Cut before its "@": only text known to be cut is read that way.
    assert redact_text("x postgres://bob:CANARY", cut=True) == f"x postgres://bob:{MASK}"
    assert redact_text("http://example.com:8080") == "http://example.com:8080"


def test_cookie_strings_and_name_value_text():
    assert redact_text("theme=dark; sessionid=abc; csrftoken=def") == (
        f"theme=dark; sessionid={MASK}; csrftoken={MASK}"
    )
    assert redact_text("sessionid=abc") == f"sessionid={MASK}"
    assert redact_text("sessionid=abc; Path=/; HttpOnly") == f"sessionid={MASK}; Path=/; HttpOnly"
    assert redact_text("dbname=app user=bob password=pw host=h") == (
        f"dbname=app user=bob password={MASK} host=h"
    )
    assert redact_text("Authorization: Bearer abc.def") == f"Authorization: {MASK}"
    assert redact_text("Cookie: a=1; sessionid=xyz") == f"Cookie: {MASK}; sessionid={MASK}"
    assert redact_text("Bearer abc.def") == MASK
    assert redact_text("a=1; theme=dark") == "a=1; theme=dark"
    assert redact_text("at 12:30, x=1") == "at 12:30, x=1"


def test_json_and_reprs_lose_the_values_of_secret_keys():
    assert redact_text('{"user": "bob", "password": "pw", "n": 1}') == (
        f'{{"user": "bob", "password": "{MASK}", "n": 1}}'
    )
    assert redact_text('{"api_key":"k","pin_token":1234}') == (
        f'{{"api_key":"{MASK}","pin_token":{MASK}}}'
    )
    assert redact_text('{"pass\\u0077ord": "pw"}') == f'{{"pass\\u0077ord": "{MASK}"}}'
    assert redact_text('{"say \\"hi\\"": 1, "token": "a\\"b"}') == (
        f'{{"say \\"hi\\"": 1, "token": "{MASK}"}}'
    )
    assert redact_text("{'secret': 'pw', 'ok': True}") == f"{{'secret': '{MASK}', 'ok': True}}"
    # A secret object or array goes whole, names inside it included.
    assert redact_text('{"credentials": {"user": "u", "pw": "x"}, "ok": [1]}') == (
        f'{{"credentials": {MASK}, "ok": [1]}}'
    )
    assert redact_text('{"tokens": ["a", "b]"]}') == f'{{"tokens": {MASK}}}'
    # Text cut inside the value: masked up to the cut.
    assert redact_text('{"password": "CANA') == f'{{"password": {MASK}'
    assert redact_text('{"password": {"a": "CANA') == f'{{"password": {MASK}'
    # Empty values have nothing to hide.
    assert redact_text('{"password": ""}') == '{"password": ""}'


def test_bytes_are_redacted_as_text_and_other_bytes_kept():
    body = b"username=ops&password=CANARY&next=%2F\xff\xfe"
    assert redact_bytes(body) == b"username=ops&password=" + MASK.encode() + b"&next=%2F\xff\xfe"
    assert redact_bytes(b'{"token": "abc"}') == f'{{"token": "{MASK}"}}'.encode()
    assert redact_bytes(b"postgres://bob:pw@h/db") == f"postgres://bob:{MASK}@h/db".encode()
    clean = bytes(range(256))
    assert redact_bytes(clean) is clean


def test_multipart_fields_with_a_secret_name_are_masked():
    body = (
        b'--B\r\nContent-Disposition: form-data; name="username"\r\n\r\nops\r\n'
        b'--B\r\nContent-Disposition: form-data; name="password"\r\n\r\nCANARY-m1\r\n'
        b'--B\r\nContent-Disposition: form-data; name="api_key"; filename="k.pem"\r\n'
        b"Content-Type: application/x-pem-file\r\n\r\n-----BEGIN\r\nCANARY-m2\r\n--B--\r\n"
    )
    redacted = redact_bytes(body)
    assert b"CANARY" not in redacted and b"\r\n\r\nops\r\n" in redacted
    assert redacted.count(MASK.encode()) == 2 and redact_bytes(redacted) == redacted
    # Cut inside the value: masked up to the cut.
    assert b"CANARY" not in redact_bytes(body[: body.index(b"CANARY-m1") + 4], cut=True)


def test_query_values_holding_secrets_are_masked_and_re_encoded():
    assert redact_query("next=postgres%3A%2F%2Fbob%3Apw%40h%2Fdb&page=2") == (
        f"next=postgres://bob:{MASK}@h/db&page=2"
    )
    assert redact_query("data=%7B%22password%22%3A%22pw%22%7D") == (
        f'data={{"password":"{MASK}"}}'
    )
    assert redact_query("next=%2Flogin%3Fa%3D1%26token%3Dabc") == (
        f"next=/login%3Fa%3D1%26token%3D{MASK}"
    )
    # A value without a secret stays byte for byte as it came.
    assert redact_query("q=caf%C3%A9+au+lait&next=%2Fa%2F") == "q=caf%C3%A9+au+lait&next=%2Fa%2F"
    assert redact_url("/a/", "q=Bearer+abc") == f"/a/?q={MASK}"


@given(st.text(max_size=300), st.booleans())
def test_redact_text_never_raises(text, cut):
    assert isinstance(redact_text(text, cut=cut), str)
    assert isinstance(redact_bytes(text.encode("utf-8", "surrogatepass"), cut=cut), bytes)


pieces = st.sampled_from(
    list('"=:;&?/@{}[](), %+ab') + ["password", "token", "Bearer ", "pg://", "bob", ":pw@", "%3D"]
)


@given(st.lists(pieces, max_size=40).map("".join), st.booleans())
# A pair's masked value becomes a userinfo's password only once masked.
@example(text='pg://password:"Bearer "@', cut=False)
def test_redact_text_is_idempotent(text, cut):
    once = redact_text(text, cut=cut)
    assert redact_text(once, cut=cut) == once
    assert redact_query(redact_query(text)) == redact_query(text)


@given(
    st.sampled_from(["password", "Token", "api_key", "sessionid", "X-Auth", "card_number"]),
    st.sampled_from(
        [
            '{{"{name}": "{canary}"}}',
            "a=1; {name}={canary}",
            "{name}: {canary}",
            "--{name}={canary}",
            # A (name, value) tuple, as an ASGI scope's headers are.
            '[(b"{name}", b"Bearer {canary}")]',
        ]
    ),
    st.text(st.characters(codec="ascii", exclude_characters='"\\'), max_size=20),
)
# A stray quote before and after: the pair is inside what reads as a quoted name.
@example(name="password", shape='{{"{name}": "{canary}"}}', noise="'=")
# Names that do not start with a letter, or that decode to another name.
@example(name="password", shape="{name}: {canary}", noise="0")
@example(name="card_number", shape="{name}: {canary}", noise="%")
def test_a_planted_secret_never_survives_in_text(name, shape, noise):
    canary = "CANARY-5b4a"
    assume("CANARY" not in noise)
    planted = shape.format(name=name, canary=canary)
    for text in (
        planted,
        f"{noise} {planted} {noise}",
        f"{noise}{planted}",
        f"[{planted}, {noise!r}]",
    ):
        assert canary not in redact_text(text)
        assert canary.encode() not in redact_bytes(text.encode())


def test_a_views_sensitive_post_parameters_are_secret_while_its_locals_render() -> None:
    from types import SimpleNamespace

    from slowwatch.core.redact import MASK, also_secret, redact_text
    from slowwatch.core.snapshots import sensitive_post_parameters

    with also_secret(["PIN"]):
        assert redact_text("user=ops&pin=1234") == f"user=ops&pin={MASK}"
    assert redact_text("user=ops&pin=1234") == "user=ops&pin=1234"  # only within the block
    request = SimpleNamespace(sensitive_post_parameters=["pin", 7])
    assert sensitive_post_parameters(request) == ["pin"]
    assert sensitive_post_parameters(SimpleNamespace(sensitive_post_parameters="__ALL__")) == (
        "__ALL__"
    )
    assert sensitive_post_parameters(SimpleNamespace()) == []
    assert sensitive_post_parameters(None) == []
