"""A frozen profile written for other tools: collapsed stacks and speedscope.

Collapsed stacks (one ``frame;frame;frame count`` line per stack) are what
``flamegraph.pl`` and speedscope's import read; speedscope's own JSON keeps
the weights in seconds. Both are made from the whole profile: the cap on the
stored JSON (:meth:`~slowwatch.core.profile.FrozenProfile.to_dict`) does not
apply to them unless a caller asks for one.
"""

from __future__ import annotations

from typing import Any

from slowwatch.core.profile import FrozenProfile

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def collapsed(profile: FrozenProfile, max_bytes: int = 64 * 1024) -> str:
    """``function (dir/file.py:line);... count`` lines, hottest first, up to ``max_bytes``."""
    lines: list[str] = []
    size = 0
    for key, count in profile.stacks:
        line = ";".join(f"{fn} ({_short(path)}:{no})" for path, fn, no in key)
        line = f"{line} {count}"
        size += len(line.encode()) + 1
        if size > max_bytes:
            break
        lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


def speedscope(profile: FrozenProfile, name: str) -> dict[str, Any]:
    """speedscope's file format: one "sampled" profile, weights in seconds."""
    index: dict[tuple[str, str, int], int] = {}
    frames: list[dict[str, Any]] = []
    samples: list[list[int]] = []
    weights: list[float] = []
    for key, count in profile.stacks:
        stack = []
        for frame in key:
            if frame not in index:
                index[frame] = len(frames)
                path, fn, line = frame
                frames.append({"name": fn, "file": path, "line": line})
            stack.append(index[frame])
        samples.append(stack)
        weights.append(round(count * profile.interval, 6))
    return {
        "$schema": SPEEDSCOPE_SCHEMA,
        "shared": {"frames": frames},
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": "seconds",
                "startValue": 0,
                "endValue": round(sum(weights), 6),
                "samples": samples,
                "weights": weights,
            }
        ],
        "name": name,
        "exporter": "slowwatch",
    }


def _short(path: str) -> str:
    # Collapsed stacks read better with the last two path parts.
    parts = path.replace("\\", "/").rsplit("/", 2)
    return "/".join(parts[-2:])
