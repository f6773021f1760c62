"""A sampled profile laid out as an icicle flame graph, as plain data for a template.

Reports keep their profile as JSON (see :meth:`slowwatch.core.profile.FrozenProfile.to_dict`),
possibly read back from a database column. :func:`layout` merges its stacks into a
tree and places one box per call site, in percent of the total width, root row on
top. It writes no markup: the template draws the SVG and autoescapes every string,
so file and function names (which may be anything) come back verbatim. The input
is untrusted: whatever is malformed is skipped, never raised on.
"""

from __future__ import annotations

import heapq
import itertools
import math
import zlib
from dataclasses import dataclass, field

from slowwatch.core.frames import Folded, fold, frame_kind
from slowwatch.core.profile import frame_of

#: Frames merged into the tree at most; the stacks past it still count in the total.
MAX_FRAMES = 500_000

_Frame = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Box:
    depth: int  # 0 = the outermost frames' row
    x: float  # left edge, percent of the total width
    width: float  # percent of the total width
    function: str
    filename: str
    lineno: int
    label: str  # "function (file.py:line)"
    title: str  # "function — /full/path.py:line — 45.0 % (12 samples, 0.60 s)"
    share: float  # 0..1 of all samples
    samples: int
    kind: str  # "app", "lib", "stdlib" or "django"
    hue: int  # 0..359, stable per function and file


@dataclass(frozen=True, slots=True)
class FlameGraph:
    boxes: tuple[Box, ...]
    depth: int  # rows
    samples: int
    left_out: int  # call sites not drawn: too narrow, or past max_boxes

    def height(self, row: int = 18) -> int:
        return self.depth * row


@dataclass(slots=True)
class _Node:
    samples: float = 0.0
    children: dict[_Frame, _Node] = field(default_factory=dict)


def layout(
    profile: object,
    *,
    min_width: float = 0.1,
    max_boxes: int = 2000,
    max_depth: int = 200,
    folded: bool = True,
) -> FlameGraph:
    """Boxes of ``profile`` (its JSON form), widest kept first, sorted by row then x.

    ``folded``: each run of framework frames is one box (see
    :func:`slowwatch.core.frames.fold`); runs that are the same merge.
    """
    data = profile if isinstance(profile, dict) else {}
    stacks = data.get("stacks")
    table = data.get("frames")
    root, total, nodes, budget = _Node(), 0.0, 0, MAX_FRAMES
    for stack in stacks if isinstance(stacks, list) else ():
        count = _count(stack.get("count")) if isinstance(stack, dict) else 0.0
        total += count
        frames = stack.get("frames") if count else None
        node = root
        # A stack is drawn down to its first invalid frame (the outer ones still hold).
        valid: list[_Frame] = []
        for item in frames[: max(0, min(max_depth, budget))] if isinstance(frames, list) else ():
            frame = _frame(frame_of(item, table))
            if frame is None:
                break
            valid.append(frame)
        for frame in _folded(valid) if folded else valid:
            budget -= 1
            child = node.children.get(frame)
            if child is None:
                child = node.children[frame] = _Node()
                nodes += 1
            child.samples += count
            node = child
    if not math.isfinite(total) or total <= 0:
        return FlameGraph(boxes=(), depth=0, samples=0, left_out=0)

    boxes: list[Box] = []
    heap: list[tuple[float, int, int, float, _Frame, _Node]] = []
    seq = itertools.count()  # ties in the heap: first pushed, first drawn

    def push(parent: _Node, depth: int, start: float) -> None:
        for frame, child in sorted(parent.children.items(), key=_order):
            if child.samples / total * 100 >= min_width:
                heapq.heappush(heap, (-child.samples, next(seq), depth, start, frame, child))
            start += child.samples

    push(root, 0, 0.0)
    seconds = _count(data.get("interval")) or None
    while heap and len(boxes) < max_boxes:
        _, _, depth, start, frame, node = heapq.heappop(heap)
        boxes.append(_box(frame, node.samples, depth, start, total, seconds))
        push(node, depth + 1, start)
    boxes.sort(key=lambda b: (b.depth, b.x))
    return FlameGraph(
        boxes=tuple(boxes),
        depth=max((b.depth + 1 for b in boxes), default=0),
        samples=round(total),
        left_out=nodes - len(boxes),
    )


def _count(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return 0.0
    # The bounds also keep out NaN, infinities and ints too big for a float.
    return float(raw) if 0 < raw < 1e300 else 0.0


def _frame(raw: object) -> _Frame | None:
    if not isinstance(raw, (list, tuple)) or len(raw) != 3:
        return None
    filename, function, lineno = raw
    # lineno is bounded: a huge int would not even convert to text.
    if isinstance(filename, str) and isinstance(function, str) and type(lineno) is int:
        return (filename, function, lineno) if 0 <= lineno < 2**31 else None
    return None


#: The file name of a box that stands for folded frames (no real file starts so).
FOLDED = "<folded>"


def _folded(frames: list[_Frame]) -> list[_Frame]:
    """Each run of framework frames as one frame; the same run, the same frame."""
    out: list[_Frame] = []
    for item in fold(frames, lambda frame: frame[0]):
        if isinstance(item, Folded):
            key = "\0".join(f"{f}\0{name}\0{line}" for f, name, line in item.frames)
            run = zlib.crc32(key.encode("utf-8", "surrogatepass")) & 0x7FFFFFFF
            out.append((f"{FOLDED} {', '.join(item.packages)}", item.label, run))
        else:
            out.append(item)
    return out


def _order(item: tuple[_Frame, _Node]) -> tuple[float, str, str, int]:
    (filename, function, lineno), node = item
    return (-node.samples, function, filename, lineno)


def _box(
    frame: _Frame, samples: float, depth: int, start: float, total: float, interval: float | None
) -> Box:
    filename, function, lineno = frame
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    share, count = samples / total, round(samples)
    detail = f"{count} sample{'' if count == 1 else 's'}"
    if interval is not None and math.isfinite(samples * interval):
        detail += f", {samples * interval:.2f} s"
    key = f"{filename}\0{function}".encode("utf-8", "surrogatepass")
    if filename.startswith(f"{FOLDED} "):
        packages = filename.removeprefix(f"{FOLDED} ")
        return Box(
            depth=depth,
            x=start / total * 100,
            width=share * 100,
            function=function,
            filename="",
            lineno=0,
            label=function,
            title=f"{function}, folded — {share * 100:.1f} % ({detail})",
            share=share,
            samples=count,
            kind="django" if packages == "django" else "lib",
            hue=zlib.crc32(key) % 360,
        )
    return Box(
        depth=depth,
        x=start / total * 100,
        width=share * 100,
        function=function,
        filename=filename,
        lineno=lineno,
        label=f"{function} ({base}:{lineno})",
        title=f"{function} — {filename}:{lineno} — {share * 100:.1f} % ({detail})",
        share=share,
        samples=count,
        kind=frame_kind(filename),
        hue=zlib.crc32(key) % 360,
    )
