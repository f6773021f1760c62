"""Folding samples, bounds, and the output formats."""

from __future__ import annotations

import json

from slowwatch.core.export import SPEEDSCOPE_SCHEMA, collapsed, speedscope
from slowwatch.core.profile import FrozenProfile, Profile

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
    assert len(json.dumps([doc["frames"], doc["stacks"]])) <= 64 * 1024
    # Stacks of one frame have no caller to merge into: they are left out, and said so.
    assert doc["samples_left_out"] > 0
    kept = sum(stack["count"] for stack in doc["stacks"])
    assert kept + doc["samples_left_out"] == doc["samples"] == 3000


def test_deep_stacks_keep_every_sample_within_the_cap():
    """Like a real application's: ~90 frames deep, the outer 80 shared."""
    profile = Profile(interval=0.05, max_samples=100_000)
    outer = [(f"/venv/site-packages/framework/layer_{d}.py", f"handler_{d}", d) for d in range(80)]
    for i in range(600):
        inner = [(f"/srv/app/views_{i % 50}.py", f"step_{i}_{d}", 10 + d) for d in range(9)]
        profile.add(tuple(outer + inner))
    frozen = profile.frozen()
    doc = frozen.to_dict()
    # As stored: without spaces (the database reporter's encoding).
    assert len(json.dumps(doc, separators=(",", ":"))) <= 65 * 1024
    assert doc["samples_left_out"] == 0
    assert 0 < doc["samples_merged"] <= 600
    assert sum(stack["count"] for stack in doc["stacks"]) == doc["samples"] == 600
    back = FrozenProfile.from_dict(doc)
    assert back.samples == 600
    # The frames the stacks share still hold every sample.
    [(frame, share)] = back.hottest_functions(1, where=lambda name: "framework" in name)
    assert frame[1] == "handler_0" and share == 1.0


def test_a_stored_profile_of_schema_1_still_reads():
    old = {"interval": 0.05, "stacks": [{"frames": [["/srv/a.py", "f", 1]], "count": 3}]}
    assert FrozenProfile.from_dict(old).stacks == (((("/srv/a.py", "f", 1),), 3),)


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
