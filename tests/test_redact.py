from __future__ import annotations

from urllib.parse import quote_plus

from hypothesis import given
from hypothesis import strategies as st

from slowwatch.core.redact import MASK, redact_query, redact_url


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
