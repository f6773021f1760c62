"""A slow request's samples, folded by stack.

Once a request is reported slow, the monitor samples its stack every
``SAMPLE_INTERVAL`` until it ends. Each sample is a tuple of frames (file,
function, line); identical stacks cost one counter increment. The frozen
profile tells which frames were hottest and has a JSON form for storage;
:mod:`slowwatch.core.export` writes it for other tools (collapsed stacks,
speedscope).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from slowwatch.core.frames import Frame, is_project_file

#: Most bytes of JSON a stored profile takes (see :meth:`FrozenProfile.to_dict`).
MAX_BYTES = 64 * 1024

#: A sampled stack, outermost call first: ``(filename, function, lineno)`` per frame.
Key = tuple[tuple[str, str, int], ...]


def key_of(frames: Iterable[Frame]) -> Key:
    return tuple((f.filename, f.function, f.lineno) for f in frames)


@dataclass
class Profile:
    """Folded samples of one request. Written by the monitor thread only.

    ``counts`` are in units of ``interval``. Past ``max_samples`` samples, only
    every other sample is kept, each counting double (then every fourth...):
    the profile keeps covering the whole request in bounded memory.
    """

    interval: float
    max_samples: int
    counts: Counter[Key] = field(default_factory=Counter)
    #: Samples by what the thread was doing (see :mod:`slowwatch.core.states`).
    states: Counter[str] = field(default_factory=Counter)
    samples: int = 0
    stride: int = 1
    #: CPU seconds the thread used since the threshold, when its CPU clock is readable.
    cpu_time: float | None = None
    #: The sampling interval had to grow to stay within the CPU budget.
    throttled: bool = False
    _offered: int = 0

    def add(self, key: Key, state: str = "") -> None:
        self._offered += 1
        if self._offered % self.stride:
            return
        # An identical stack is the same dict entry: one counter increment.
        self.counts[key] += self.stride
        if state:
            self.states[state] += self.stride
        self.samples += 1
        if self.samples % self.max_samples == 0:
            self.stride *= 2

    def frozen(self) -> FrozenProfile:
        return FrozenProfile(
            interval=self.interval,
            samples=self.samples,
            stacks=tuple(sorted(self.counts.items(), key=lambda kv: -kv[1])),
            decimated=self.stride > 1,
            throttled=self.throttled,
            states=tuple(self.states.most_common()),
            cpu_time=self.cpu_time,
        )


@dataclass(frozen=True)
class FrozenProfile:
    """An immutable copy, safe to hand to the reporter thread."""

    interval: float
    samples: int
    stacks: tuple[tuple[Key, int], ...]
    decimated: bool = False
    throttled: bool = False
    states: tuple[tuple[str, int], ...] = ()
    cpu_time: float | None = None

    @classmethod
    def from_dict(cls, doc: object) -> FrozenProfile:
        """Back from :meth:`to_dict` (a stored report); what is malformed is skipped."""
        doc = doc if isinstance(doc, dict) else {}
        stacks: list[tuple[Key, int]] = []
        raw_stacks = doc.get("stacks")
        table = doc.get("frames")
        for entry in raw_stacks if isinstance(raw_stacks, list) else ():
            try:
                frames: list[Any] = [frame_of(item, table) for item in entry["frames"]]
                key = tuple((str(f), str(fn), int(no)) for f, fn, no in frames)
                count = int(entry["count"])
            except (TypeError, ValueError, KeyError):
                continue
            if count > 0:
                stacks.append((key, count))
        states = doc.get("states")
        interval = doc.get("interval")
        cpu_time = doc.get("cpu_time")
        return cls(
            interval=float(interval) if isinstance(interval, (int, float)) else 0.0,
            samples=sum(count for _, count in stacks),
            stacks=tuple(stacks),
            decimated=bool(doc.get("decimated")),
            throttled=bool(doc.get("throttled")),
            states=tuple(
                (str(k), int(v))
                for k, v in (states.items() if isinstance(states, dict) else ())
                if isinstance(v, (int, float))
            ),
            cpu_time=float(cpu_time) if isinstance(cpu_time, (int, float)) else None,
        )

    def hottest(self, n: int = 5) -> list[tuple[tuple[str, str, int], float]]:
        """The innermost frames that held most samples, with their share."""
        if not self.samples:
            return []
        leaves: Counter[tuple[str, str, int]] = Counter()
        for key, count in self.stacks:
            if key:
                leaves[key[-1]] += count
        total = sum(leaves.values()) or 1
        return [(frame, count / total) for frame, count in leaves.most_common(n)]

    def hottest_functions(
        self, n: int = 5, where: Callable[[str], bool] = is_project_file
    ) -> list[tuple[tuple[str, str, int], float]]:
        """The functions (of files ``where`` accepts: by default the project's
        own) that were on the stack in most samples, counted inclusively (a
        view that waits in the ORM counts), each with its line seen most."""
        if not self.samples:
            return []
        inclusive: Counter[tuple[str, str]] = Counter()
        lines: dict[tuple[str, str], Counter[int]] = {}
        total = 0
        for key, count in self.stacks:
            total += count
            seen: set[tuple[str, str]] = set()
            for filename, function, lineno in key:
                if not where(filename):
                    continue
                name = (filename, function)
                lines.setdefault(name, Counter())[lineno] += count
                if name not in seen:  # recursion counts once per sample
                    seen.add(name)
                    inclusive[name] += count
        return [
            ((filename, function, lines[(filename, function)].most_common(1)[0][0]), c / total)
            for (filename, function), c in inclusive.most_common(n)
        ]

    def to_dict(self, max_bytes: int = MAX_BYTES) -> dict[str, Any]:
        """The JSON form, at most about ``max_bytes`` of it, covering every sample.

        Each distinct frame is written once, in ``frames``; a stack lists the
        indices of its frames. When that is still too big, the coldest stacks
        are merged into their callers (their innermost frame dropped, their
        samples kept) until it fits: ``samples_merged`` says how many samples
        lost their innermost frames so, ``samples_left_out`` how many could
        not be kept at all (a stack of one frame merges into nothing).
        """
        stacks: dict[Key, int] = dict(self.stacks)
        #: Samples still at their whole depth, by stack.
        intact = dict(stacks)
        left_out = 0
        while True:
            table, encoded = _encode(stacks)
            size = len(json.dumps([table, encoded], separators=(",", ":")))
            if size <= max_bytes or not stacks:
                break
            # The coldest tenth (at least one), the deepest first among equals.
            order = sorted(stacks.items(), key=lambda kv: (kv[1], -len(kv[0])))
            for key, count in order[: max(1, len(order) // 10)]:
                del stacks[key]
                intact.pop(key, None)
                if len(key) > 1:
                    parent = key[:-1]
                    stacks[parent] = stacks.get(parent, 0) + count
                else:
                    left_out += count
        merged = sum(stacks.values()) - sum(intact.get(key, 0) for key in stacks)
        return {
            "interval": self.interval,
            "samples": self.samples,
            "decimated": self.decimated,
            "throttled": self.throttled,
            "states": dict(self.states),
            "cpu_time": self.cpu_time,
            "frames": table,
            "stacks": encoded,
            "samples_merged": merged,
            "samples_left_out": left_out,
        }


def _encode(stacks: dict[Key, int]) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """A frame table and the stacks as indices into it, hottest stack first."""
    index: dict[tuple[str, str, int], int] = {}
    table: list[list[Any]] = []
    encoded = []
    for key, count in sorted(stacks.items(), key=lambda kv: -kv[1]):
        refs = []
        for frame in key:
            found = index.get(frame)
            if found is None:
                found = index[frame] = len(table)
                table.append(list(frame))
            refs.append(found)
        encoded.append({"frames": refs, "count": count})
    return table, encoded


def frame_of(item: object, table: object) -> object:
    """A stored stack's frame: an index into the profile's frame table (schema
    2), or the ``[filename, function, line]`` itself (schema 1)."""
    if type(item) is int and isinstance(table, list) and 0 <= item < len(table):
        return table[item]
    return item
