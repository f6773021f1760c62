"""Folding samples, bounds, and the output formats."""

from __future__ import annotations

import json

from slowwatch.core.export import SPEEDSCOPE_SCHEMA, collapsed, speedscope
from slowwatch.core.profile import Profile

A = (("app/views.py", "view", 10), ("app/db.py", "query", 20))
B = (("app/views.py", "view", 12), ("lib/x.py", "spin", 5))


def test_identical_stacks_share_one_entry():
    profile = Profile(interval=0.05, max_samples=1000)
    for _ in range(30):
        profile.add(A)
    for _ in range(10):
        profile.add(B)
    frozen = profile.frozen()
    assert frozen.samples == 40
    assert frozen.stacks == ((A, 30), (B, 10))
    assert frozen.hottest(2) == [(A[-1], 0.75), (B[-1], 0.25)]


def test_past_the_sample_limit_samples_are_thinned_and_weighted():
    profile = Profile(interval=0.05, max_samples=100)
    for _ in range(400):
        profile.add(A)
    frozen = profile.frozen()
    assert frozen.decimated
    assert frozen.samples < 250
    # Counts stay in units of the interval: the whole request is still covered.
    assert dict(frozen.stacks)[A] == 400


def test_collapsed_text_is_flamegraph_input():
    profile = Profile(interval=0.05, max_samples=1000)
    for _ in range(3):
        profile.add(A)
    profile.add(B)
    text = collapsed(profile.frozen())
    assert text == (
        "view (app/views.py:10);query (app/db.py:20) 3\n"
        "view (app/views.py:12);spin (lib/x.py:5) 1\n"
    )


def test_collapsed_text_has_a_byte_cap():
    profile = Profile(interval=0.05, max_samples=100_000)
    for i in range(2000):
        profile.add(((f"app/module_{i}.py", "function_with_a_long_name", i),))
    text = collapsed(profile.frozen(), max_bytes=4096)
    assert len(text.encode()) <= 4096


def test_speedscope_document():
    profile = Profile(interval=0.05, max_samples=1000)
    for _ in range(3):
        profile.add(A)
    profile.add(B)
    doc = json.loads(json.dumps(speedscope(profile.frozen(), "GET /x")))
    assert doc["$schema"] == SPEEDSCOPE_SCHEMA
    frames = doc["shared"]["frames"]
    assert [f["name"] for f in frames] == ["view", "query", "view", "spin"]
    [sampled] = doc["profiles"]
    assert sampled["type"] == "sampled" and sampled["unit"] == "seconds"
    assert sampled["samples"] == [[0, 1], [2, 3]]
    assert sampled["weights"] == [0.15, 0.05]
    assert sampled["endValue"] == 0.2


def test_the_json_form_has_a_byte_cap():
    profile = Profile(interval=0.05, max_samples=100_000)
    for i in range(3000):
        profile.add(((f"/srv/app/module_{i}.py", "function_with_a_long_name", i),))
    doc = profile.frozen().to_dict()
    assert len(json.dumps(doc["stacks"])) <= 64 * 1024
    assert doc["stacks_left_out"] > 0
    assert len(doc["stacks"]) + doc["stacks_left_out"] == 3000


def test_the_projects_hottest_functions_count_inclusively():
    from slowwatch.core.profile import FrozenProfile

    view = ("/srv/shop/views.py", "report", 70)
    helper = ("/srv/shop/views.py", "sales_figures", 65)
    django = ("/venv/lib/python3.12/site-packages/django/db/utils.py", "execute", 100)
    profile = FrozenProfile(
        interval=0.05,
        samples=10,
        stacks=(((view, helper, django), 6), ((view,), 3), ((django,), 1)),
    )
    # The leaf is Django's; the project's view held 9 of 10 samples.
    assert profile.hottest(1)[0][0] == django
    found = profile.hottest_functions(5)
    assert [(f[1], round(share, 2)) for f, share in found] == [
        ("report", 0.9),
        ("sales_figures", 0.6),
    ]
    assert found[0][0][2] == 70  # the line seen most in that function
