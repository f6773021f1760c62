"""Flame graph layout: merging, geometry, pruning, bounds and hostile input."""

from __future__ import annotations

import sysconfig
from itertools import pairwise
from typing import Any

import pytest

from slowwatch.admin.flame import Box, FlameGraph, layout

VIEW = ["/srv/shop/views.py", "report", 48]
SALES = ["/srv/shop/views.py", "sales_figures", 39]
QUERY = ["/srv/shop/db.py", "query", 7]
RENDER = ["/srv/shop/views.py", "render", 60]


def profile(*stacks: tuple[list[Any], Any], interval: float = 0.05) -> dict[str, Any]:
    return {
        "interval": interval,
        "samples": 0,
        "stacks": [{"frames": frames, "count": count} for frames, count in stacks],
        "stacks_left_out": 0,
    }


def by_function(graph: FlameGraph) -> dict[str, Box]:
    return {box.function: box for box in graph.boxes}


def check_geometry(graph: FlameGraph) -> None:
    """Every box lies within its parent's span, and siblings do not overlap."""
    eps = 1e-9
    rows: dict[int, list[Box]] = {}
    for box in graph.boxes:
        assert box.x >= 0 and box.x + box.width <= 100 + eps
        rows.setdefault(box.depth, []).append(box)
    for depth, row in rows.items():
        for left, right in pairwise(row):
            assert left.x + left.width <= right.x + eps
        for box in row:
            if depth:
                parents = [
                    p
                    for p in rows[depth - 1]
                    if p.x - eps <= box.x and box.x + box.width <= p.x + p.width + eps
                ]
                assert len(parents) == 1


def test_common_prefixes_merge_into_one_box():
    graph = layout(profile(([VIEW, SALES, QUERY], 30), ([VIEW, RENDER], 6)))
    assert graph.samples == 36
    assert graph.depth == 3
    assert graph.left_out == 0
    assert [(b.depth, b.function) for b in graph.boxes] == [
        (0, "report"),
        (1, "sales_figures"),
        (1, "render"),
        (2, "query"),
    ]
    boxes = by_function(graph)
    assert boxes["report"].samples == 36
    assert boxes["report"].width == pytest.approx(100)
    assert boxes["report"].share == pytest.approx(1)
    assert boxes["sales_figures"].width == pytest.approx(30 / 36 * 100)
    assert graph.height() == 3 * 18
    assert graph.height(20) == 60
    check_geometry(graph)


def test_same_function_on_another_line_is_another_frame():
    other = ["/srv/shop/views.py", "report", 49]
    graph = layout(profile(([VIEW], 1), ([other], 1)))
    assert [(b.lineno, b.width) for b in graph.boxes] == [(48, 50), (49, 50)]


def test_siblings_widest_first_then_by_name_and_x_adds_up():
    a, b, c = (["/srv/app.py", name, 1] for name in ("a", "b", "c"))
    graph = layout(profile(([VIEW, c], 10), ([VIEW, a], 10), ([VIEW, b], 20), ([VIEW], 10)))
    row = [box for box in graph.boxes if box.depth == 1]
    assert [box.function for box in row] == ["b", "a", "c"]
    assert [box.x for box in row] == pytest.approx([0, 40, 60])
    assert [box.width for box in row] == pytest.approx([40, 20, 20])
    # The parent's own samples (10 of them) leave room on its right.
    assert sum(box.width for box in row) < by_function(graph)["report"].width
    check_geometry(graph)


def test_x_is_relative_to_the_parent():
    right = ["/srv/other.py", "main", 1]
    graph = layout(profile(([VIEW], 30), ([right, SALES], 5), ([right, QUERY], 5)))
    boxes = by_function(graph)
    assert boxes["main"].x == pytest.approx(75)
    # A tie in samples: ordered by function name.
    assert boxes["query"].x == pytest.approx(75)
    assert boxes["sales_figures"].x == pytest.approx(87.5)
    check_geometry(graph)


def test_same_input_same_output_whatever_the_stack_order():
    stacks = [([VIEW, SALES, QUERY], 30), ([VIEW, RENDER], 6), ([QUERY], 6), ([RENDER], 6)]
    first = layout(profile(*stacks))
    assert layout(profile(*reversed(stacks))) == first
    assert layout(profile(*stacks)) == first


def test_narrow_boxes_and_their_children_are_left_out():
    stacks = ([VIEW, SALES], 9991), ([VIEW, RENDER, QUERY], 9)
    graph = layout(profile(*stacks))
    assert [b.function for b in graph.boxes] == ["report", "sales_figures"]
    assert graph.left_out == 2  # render (0.09 % < 0.1 %) and query below it
    graph = layout(profile(*stacks), min_width=0)
    assert len(graph.boxes) == 4
    assert graph.left_out == 0


def test_max_boxes_keeps_the_widest():
    graph = layout(profile(([VIEW, SALES, QUERY], 30), ([VIEW, RENDER], 6)), max_boxes=2)
    assert [b.function for b in graph.boxes] == ["report", "sales_figures"]
    assert graph.left_out == 2
    assert graph.depth == 2


def test_max_depth_cuts_deep_stacks():
    frames = [["/srv/rec.py", "f", n] for n in range(1, 1001)]
    graph = layout(profile((frames, 1)), max_depth=50)
    assert graph.depth == 50
    assert len(graph.boxes) == 50


def test_empty_stacks_still_count_in_the_total():
    graph = layout(profile(([VIEW], 1), ([], 3)))
    assert graph.samples == 4
    assert graph.boxes[0].width == pytest.approx(25)


def test_float_counts():
    graph = layout(profile(([VIEW], 1.5), ([VIEW, SALES], 2.5)))
    boxes = by_function(graph)
    assert graph.samples == 4
    assert boxes["report"].samples == 4
    assert boxes["sales_figures"].share == pytest.approx(2.5 / 4)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {},
        [],
        "x",
        42,
        {"stacks": "x"},
        {"stacks": None},
        {"stacks": [None, "x", 1, []]},
        {"stacks": [{"frames": [VIEW]}]},
        {"stacks": [{"frames": [VIEW], "count": -5}]},
        {"stacks": [{"frames": [VIEW], "count": 0}]},
        {"stacks": [{"frames": [VIEW], "count": "3"}]},
        {"stacks": [{"frames": [VIEW], "count": True}]},
        {"stacks": [{"frames": [VIEW], "count": float("nan")}]},
        {"stacks": [{"frames": [VIEW], "count": float("inf")}]},
        {"stacks": [{"frames": [VIEW], "count": 10**400}]},
        {"stacks": [{"frames": [VIEW], "count": 1e308}, {"frames": [VIEW], "count": 1e308}]},
    ],
)
def test_malformed_profiles_give_an_empty_graph(bad: object):
    graph = layout(bad)
    assert graph == FlameGraph(boxes=(), depth=0, samples=0, left_out=0)
    assert graph.height() == 0


@pytest.mark.parametrize(
    "frame",
    [
        None,
        "x",
        [],
        ["/a.py", "f"],
        ["/a.py", "f", 1, 2],
        [1, "f", 1],
        ["/a.py", None, 1],
        ["/a.py", "f", "1"],
        ["/a.py", "f", 1.0],
        ["/a.py", "f", True],
        ["/a.py", "f", -1],
        ["/a.py", "f", 10**5000],
    ],
)
def test_a_stack_is_drawn_down_to_its_first_invalid_frame(frame: object):
    graph = layout(profile(([VIEW, frame, SALES], 3), ([QUERY], 1)))
    assert [b.function for b in graph.boxes] == ["report", "query"]
    assert graph.samples == 4


def test_invalid_frames_list_counts_as_an_empty_stack():
    graph = layout(
        {"interval": "x", "stacks": [{"frames": "x", "count": 3}, {"frames": [VIEW], "count": 1}]}
    )
    assert graph.samples == 4
    assert graph.boxes[0].width == pytest.approx(25)
    assert graph.boxes[0].title.endswith("(1 sample)")  # no seconds without an interval


def test_labels_and_titles():
    graph = layout(profile(([VIEW, SALES], 12), ([VIEW], 14)))
    box = by_function(graph)["sales_figures"]
    assert box.label == "sales_figures (views.py:39)"
    assert box.title == "sales_figures — /srv/shop/views.py:39 — 46.2 % (12 samples, 0.60 s)"
    windows = layout(profile(([["C:\\srv\\app.py", "f", 1]], 1))).boxes[0]
    assert windows.label == "f (app.py:1)"


def test_kinds():
    stdlib = sysconfig.get_paths()["stdlib"]
    site = "/venv/lib/python3.12/site-packages"
    paths = {
        f"{site}/requests/api.py": "lib",
        "/usr/lib/python3/dist-packages/yaml/__init__.py": "lib",
        f"{site}/django/db/models/query.py": "django",
        f"{site}/django_extensions/x.py": "lib",
        f"{stdlib}/json/decoder.py": "stdlib",
        f"{stdlib}/site-packages/requests/api.py": "lib",
        "<frozen importlib._bootstrap>": "stdlib",
        "/srv/shop/views.py": "app",
        "/srv/django/views.py": "app",
        "": "app",
    }
    stacks = [([[path, "f", 1]], 1) for path in paths]
    graph = layout(profile(*stacks))
    assert {b.filename: b.kind for b in graph.boxes} == paths


def test_hue_is_stable_per_function_and_file():
    first = by_function(layout(profile(([VIEW, SALES], 3))))
    again = by_function(layout(profile(([QUERY], 9), ([["/x.py", "g", 2], VIEW, SALES], 1))))
    assert all(0 <= box.hue < 360 for box in first.values())
    assert again["report"].hue == first["report"].hue
    assert again["sales_figures"].hue == first["sales_figures"].hue
    # Fixed values, not the per-process salted hash(): colours match across workers.
    assert (first["report"].hue, first["sales_figures"].hue) == (22, 122)


def test_hostile_strings_come_back_verbatim():
    script = "<script>alert(1)</script>"
    path = '/srv/"><img src=x onerror=alert(1)>.py'
    graph = layout(profile(([[path, script, 1]], 1)))
    box = graph.boxes[0]
    assert box.function == script
    assert box.filename == path
    assert script in box.label and script in box.title and path in box.title
    surrogate = layout(profile(([["/a.py", "\ud800", 1]], 1))).boxes[0]
    assert surrogate.function == "\ud800"


def test_ten_thousand_distinct_stacks_respect_max_boxes():
    stacks = [([VIEW, ["/srv/gen.py", f"f{n}", n]], 1 + n % 7) for n in range(10_000)]
    graph = layout(profile(*stacks), min_width=0, max_boxes=500)
    assert len(graph.boxes) == 500
    assert graph.left_out == 10_001 - 500
    check_geometry(graph)
    default = layout(profile(*stacks))
    assert [b.function for b in default.boxes] == ["report"]
    assert default.left_out == 10_000


def test_past_the_frame_budget_stacks_only_count_in_the_total(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("slowwatch.admin.flame.MAX_FRAMES", 3)
    graph = layout(profile(([VIEW, SALES], 1), ([RENDER, QUERY], 1), ([QUERY], 2)))
    # RENDER's callee and the whole last stack are past the budget.
    assert [(b.function, b.x, b.width) for b in graph.boxes] == [
        ("render", 0, 25),
        ("report", 25, 25),
        ("sales_figures", 25, 25),
    ]
    assert graph.samples == 4


SITE = "/venv/lib/python3.12/site-packages"
MIDDLEWARE = [[f"{SITE}/django/core/handlers/base.py", f"mw{i}", i] for i in range(1, 13)]
ORM = [[f"{SITE}/django/db/models/sql/compiler.py", f"orm{i}", i] for i in range(1, 6)]
EXECUTE = [f"{SITE}/django/db/backends/sqlite3/base.py", "execute", 357]


def test_framework_runs_fold_into_one_box_and_unfold_on_request():
    stack = [*MIDDLEWARE, VIEW, SALES, ["/venv/q.py", "__iter__", 1], *ORM, EXECUTE]
    graph = layout(profile((stack, 10), ([*MIDDLEWARE, VIEW, RENDER], 5)))
    check_geometry(graph)
    rows = [(b.depth, b.label) for b in graph.boxes]
    # The 12 middleware frames are one box, shared by both stacks.
    assert rows[0] == (0, "12 frames of django")
    assert graph.boxes[0].share == 1.0 and graph.boxes[0].kind == "django"
    assert (1, "report (views.py:48)") in rows and (3, "__iter__ (q.py:1)") in rows
    assert graph.depth == 7  # middleware, view, sales, __iter__, [orm], execute
    assert max(rows)[1] == "execute (base.py:357)"
    every = layout(profile((stack, 10), ([*MIDDLEWARE, VIEW, RENDER], 5)), folded=False)
    assert every.depth == len(stack)
    assert {b.function for b in every.boxes} >= {"mw1", "mw12", "orm3"}
