"""What the detail page of a slow request shows, computed from its stored row.

Only numbers and plain strings leave here: the template escapes every string,
and the numbers placed into SVG attributes are formatted without localisation.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from django.http import HttpResponse
from django.utils.text import slugify

from slowwatch.admin.flame import Box, layout
from slowwatch.core.export import collapsed, speedscope
from slowwatch.core.frames import Folded, fold
from slowwatch.core.profile import FrozenProfile
from slowwatch.core.states import label
from slowwatch.models import SlowRequest

#: Pixel height of a flame graph row.
ROW = 18
#: Colours of the verdict bar, by state; anything else counts as "waiting".
SHARE_KEYS = ("cpu", "db", "io", "sleep", "lock", "gil", "runnable")


def _fill(box: Box) -> str:
    # Your code warm, Django green, other libraries blue, the standard library grey.
    if box.kind == "app":
        return f"hsl({box.hue % 50},85%,{62 + box.hue % 10}%)"
    if box.kind == "django":
        return f"hsl({120 + box.hue % 40},45%,{62 + box.hue % 10}%)"
    if box.kind == "lib":
        return f"hsl({195 + box.hue % 40},55%,{68 + box.hue % 10}%)"
    return f"hsl(0,0%,{72 + box.hue % 12}%)"


def flame(obj: SlowRequest, every_frame: bool = False) -> dict[str, Any]:
    graph = layout(obj.profile, folded=not every_frame)
    boxes = [
        {
            "box": box,
            "x": f"{box.x:.4f}",
            "width": f"{box.width:.4f}",
            "y": box.depth * ROW,
            "fill": _fill(box),
        }
        for box in graph.boxes
    ]
    profile = obj.profile if isinstance(obj.profile, dict) else {}
    interval = profile.get("interval")
    merged, left_out = profile.get("samples_merged"), profile.get("samples_left_out")
    return {
        # What the stored profile had to give up to fit its cap, if anything.
        "samples_merged": merged if isinstance(merged, int) and merged > 0 else 0,
        "samples_left_out": left_out if isinstance(left_out, int) and left_out > 0 else 0,
        "flame": graph,
        "flame_boxes": boxes,
        "flame_height": graph.height(ROW),
        "interval_ms": f"{interval * 1000:g}" if isinstance(interval, (int, float)) else "",
    }


def hottest(obj: SlowRequest, n: int = 10) -> list[dict[str, Any]]:
    profile = FrozenProfile.from_dict(obj.profile)
    return [
        {"filename": f, "function": fn, "lineno": no, "percent": f"{share:.0%}"}
        for (f, fn, no), share in profile.hottest(n)
    ]


def hottest_functions(obj: SlowRequest, n: int = 10) -> list[dict[str, Any]]:
    """The project's own functions on the stack in most samples (inclusive)."""
    profile = FrozenProfile.from_dict(obj.profile)
    return [
        {"filename": f, "function": fn, "lineno": no, "percent": f"{share:.0%}"}
        for (f, fn, no), share in profile.hottest_functions(n)
    ]


def share_bars(obj: SlowRequest) -> list[dict[str, Any]]:
    """The verdict as a bar: one segment per state, largest first."""
    states = obj.states if isinstance(obj.states, dict) else {}
    counts = {k: float(v) for k, v in states.items() if isinstance(v, (int, float)) and v > 0}
    total = sum(counts.values())
    bars: list[dict[str, Any]] = []
    x = 0.0
    for key, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        share = count / total
        bars.append(
            {
                "key": key if key in SHARE_KEYS else "other",
                "label": label(key),
                "percent": f"{share:.0%}",
                "x": f"{x * 100:.4f}",
                "width": f"{share * 100:.4f}",
            }
        )
        x += share
    return bars


def timeline(obj: SlowRequest) -> list[dict[str, Any]]:
    entries = []
    for entry in obj.timeline if isinstance(obj.timeline, list) else ():
        if not isinstance(entry, dict):
            continue
        at = entry.get("at")
        elapsed = entry.get("elapsed")
        entries.append(
            {
                "kind": str(entry.get("kind", "")),
                "at": datetime.fromtimestamp(at, tz=timezone.utc)
                if isinstance(at, (int, float))
                else None,
                "elapsed": elapsed if isinstance(elapsed, (int, float)) else None,
            }
        )
    return entries


#: (key, label, how to show it) of the process figures, in this order.
FIGURES: tuple[tuple[str, str, Any], ...] = (
    ("rss", "Memory (RSS)", lambda v: f"{v / 1e6:.1f} MB"),
    ("threads", "Threads", str),
    ("open_fds", "Open files", str),
    ("cpu_seconds", "CPU used by the process", lambda v: f"{v:.2f} s"),
    ("cpu_percent", "Process CPU since the previous report", lambda v: f"{v:.0f} %"),
    (
        "ctx_switches",
        "Context switches",
        lambda v: f"{v['voluntary']} voluntary, {v['involuntary']} involuntary",
    ),
    ("load", "System load (1, 5, 15 min)", lambda v: " · ".join(str(x) for x in v)),
)


def process_figures(obj: SlowRequest) -> list[tuple[str, str]]:
    figures = obj.process if isinstance(obj.process, dict) else {}
    shown = []
    for key, name, render in FIGURES:
        value = figures.get(key)
        if value is None:
            continue
        try:
            shown.append((name, render(value)))
        except (TypeError, ValueError, KeyError):  # a stored row we do not understand
            shown.append((name, str(value)))
    return shown


def stack_items(frames: list[dict[str, Any]], every_frame: bool) -> list[dict[str, Any]]:
    """The stack as the page shows it: items ``{"frame": ...}``, or
    ``{"folded": [...], "label": ...}`` for a run of framework frames."""
    if every_frame:
        return [{"frame": frame} for frame in frames]
    items: list[dict[str, Any]] = []
    for item in fold(frames, lambda frame: str(frame.get("filename", ""))):
        if isinstance(item, Folded):
            items.append({"folded": list(item.frames), "label": item.label})
        else:
            items.append({"frame": item})
    return items


def context(obj: SlowRequest, every_frame: bool = False) -> dict[str, Any]:
    stack = obj.stack if isinstance(obj.stack, dict) else {}
    frames = stack.get("frames")
    valid = [f for f in frames if isinstance(f, dict)] if isinstance(frames, list) else []
    return {
        **flame(obj, every_frame),
        "every_frame": every_frame,
        "stack_items": stack_items(valid, every_frame),
        "hottest": hottest(obj),
        "hottest_functions": hottest_functions(obj),
        "share_bars": share_bars(obj),
        "frames": valid,
        "hidden": stack.get("hidden") or 0,
        "truncated": stack.get("truncated") or 0,
        "sql": obj.sql if isinstance(obj.sql, dict) else {},
        "process": process_figures(obj),
        "timeline": timeline(obj),
    }


def download(obj: SlowRequest, fmt: str) -> HttpResponse:
    """The profile as a file: speedscope JSON, or collapsed stacks (``flamegraph.pl``)."""
    profile = FrozenProfile.from_dict(obj.profile)
    name = f"slowwatch-{slugify(obj.endpoint)[:40] or 'request'}-{obj.request_id[:8]}"
    if fmt == "speedscope":
        body = json.dumps(speedscope(profile, f"{obj.method} {obj.path[:200]}"))
        response = HttpResponse(body, content_type="application/json")
        filename = f"{name}.speedscope.json"
    else:
        response = HttpResponse(collapsed(profile, max_bytes=1 << 24), content_type="text/plain")
        filename = f"{name}.collapsed.txt"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
