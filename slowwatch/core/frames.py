"""Turn a live frame chain into plain tuples, at once, from the monitor thread.

Nothing here keeps a frame: the caller gets strings and ints and the frame
objects go out of scope when the walk returns. Source lines are *not* read
here (that is file I/O); :func:`slowwatch.report.build_report` adds them
later, on the reporter thread.

This module also holds the one answer to "is this file the project's own
code?" (:func:`frame_kind`), which locals capture, the admin's flame graph
and the mail's folded stack all ask.
"""

from __future__ import annotations

import sys
import sysconfig
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import AsyncGeneratorType, CodeType, CoroutineType, FrameType, GeneratorType
from typing import Generic, NamedTuple, TypeVar

#: Deeper stacks keep their innermost frames: that is where a request is stuck.
MAX_FRAMES = 200


class Frame(NamedTuple):
    """One frame of a captured stack."""

    filename: str
    lineno: int
    function: str
    module: str


Locals = tuple[tuple[str, str], ...]


class Stack(NamedTuple):
    """A captured stack, oldest call first."""

    frames: tuple[Frame, ...]
    #: Frames above the boundary (the server and slowwatch's own middleware), left out.
    hidden: int
    #: Innermost frames beyond :data:`MAX_FRAMES`, left out.
    truncated: int
    #: Rendered locals per frame (same order as ``frames``), when they were captured.
    locals: tuple[Locals | None, ...] = ()


_NAME = "co_qualname" if sys.version_info >= (3, 11) else "co_name"


def _frame(frame: FrameType) -> Frame:
    code = frame.f_code
    # f_globals is a plain dict; .get on it runs no user code.
    module = frame.f_globals.get("__name__")
    return Frame(
        code.co_filename,
        frame.f_lineno or code.co_firstlineno,
        getattr(code, _NAME),
        module if isinstance(module, str) else "",
    )


def walk_frames(
    top: FrameType | None,
    boundary: Collection[CodeType] = (),
    local_values: Callable[[FrameType], Locals | None] | None = None,
) -> Stack:
    """Walk from ``top`` outwards until a frame whose code is in ``boundary``.

    The boundary frame itself and everything above it are counted as hidden.
    ``local_values``, when given, renders a frame's locals (or says None).
    """
    collected: list[Frame] = []
    values: list[Locals | None] = []
    hidden = 0
    frame = top
    while frame is not None:
        if frame.f_code in boundary:
            while frame is not None:
                hidden += 1
                frame = frame.f_back
            break
        collected.append(_frame(frame))
        if local_values is not None and len(values) < MAX_FRAMES:
            values.append(local_values(frame))
        frame = frame.f_back
    truncated = max(0, len(collected) - MAX_FRAMES)
    # Keep the innermost frames; `collected` runs innermost first.
    kept = collected[:MAX_FRAMES]
    kept.reverse()
    values.reverse()
    return Stack(tuple(kept), hidden, truncated, tuple(values))


def sample_key(
    top: FrameType | None, boundary: Collection[CodeType] = ()
) -> tuple[tuple[tuple[str, str, int], ...], tuple[Frame, ...], bool]:
    """The cheap walk behind each profile sample.

    Returns the stack as ``(filename, function, lineno)`` tuples (outermost
    first, the same identity as :func:`slowwatch.core.profile.key_of`), the three
    innermost frames in full (what the thread-state classifier looks at), and
    whether the boundary was reached.
    """
    key: list[tuple[str, str, int]] = []
    inner: list[Frame] = []
    frame = top
    found = False
    while frame is not None:
        code = frame.f_code
        if code in boundary:
            found = True
            break
        if len(inner) < 3:
            inner.append(_frame(frame))
        key.append((code.co_filename, getattr(code, _NAME), frame.f_lineno or code.co_firstlineno))
        frame = frame.f_back
    key.reverse()
    inner.reverse()
    return tuple(key[-MAX_FRAMES:]), tuple(inner), found


def walk_coroutine(coro: object, boundary: Collection[CodeType] = ()) -> Stack:
    """Walk a suspended coroutine's await chain, outermost first.

    Used for asyncio tasks: their frames are on no thread's stack while they
    wait. Only real coroutines, generators and async generators are followed,
    through ``cr_await``/``gi_yieldfrom``/``ag_await``, so no user code runs.
    """
    chain: list[Frame] = []
    hidden = 0
    while (
        isinstance(coro, (CoroutineType, GeneratorType, AsyncGeneratorType))
        and len(chain) < MAX_FRAMES * 2
    ):
        if isinstance(coro, CoroutineType):
            frame, awaited = coro.cr_frame, coro.cr_await
        elif isinstance(coro, AsyncGeneratorType):  # a streaming response's content
            frame, awaited = coro.ag_frame, coro.ag_await
        else:
            frame, awaited = coro.gi_frame, coro.gi_yieldfrom
        if frame is None:
            break
        if frame.f_code in boundary:
            # Everything outside our own middleware is server and framework plumbing.
            hidden += len(chain) + 1
            chain.clear()
        else:
            chain.append(_frame(frame))
        coro = awaited
    truncated = max(0, len(chain) - MAX_FRAMES)
    return Stack(tuple(chain[-MAX_FRAMES:]), hidden, truncated)


_STDLIB = tuple(
    sorted(
        {
            sysconfig.get_paths()[name].replace("\\", "/").rstrip("/") + "/"
            for name in ("stdlib", "platstdlib")
        }
    )
)
_PACKAGES = tuple(
    sorted(
        {
            sysconfig.get_paths()[name].replace("\\", "/").rstrip("/") + "/"
            for name in ("purelib", "platlib")
        }
    )
)


#: slowwatch's own files: never the project's code, wherever slowwatch is installed.
_OWN = str(Path(__file__).resolve().parent.parent).replace("\\", "/") + "/"


def frame_kind(filename: str) -> str:
    """``"app"`` (the project's own code), ``"django"``, ``"lib"`` (another
    installed package, slowwatch itself, or code with no file: ``<string>``)
    or ``"stdlib"``."""
    path = filename.replace("\\", "/")
    if path.startswith(_OWN):
        return "lib"
    if path.startswith("<"):
        return "stdlib" if path.startswith("<frozen ") else "lib"
    # Installed packages first: a system Python's dist-packages may lie under
    # the standard library's directory.
    parts = path.split("/")
    for i, part in enumerate(parts[:-1]):
        if part in ("site-packages", "dist-packages"):
            return "django" if parts[i + 1] == "django" and i + 2 < len(parts) else "lib"
    if path.startswith(_PACKAGES):
        return "lib"
    if path.startswith(_STDLIB):
        return "stdlib"
    return "app"


def is_project_file(filename: str) -> bool:
    """Code of the project, not of the standard library or an installed package."""
    return frame_kind(filename) == "app"


def is_own_file(filename: str) -> bool:
    """A file of slowwatch itself (its query tracker sits inside database stacks)."""
    return filename.replace("\\", "/").startswith(_OWN)


def package_of(filename: str) -> str:
    """The installed package a file belongs to, ``"stdlib"``, or ``""`` (the project)."""
    kind = frame_kind(filename)
    if kind == "app":
        return ""
    if kind == "stdlib":
        return "stdlib"
    parts = filename.replace("\\", "/").split("/")
    for i, part in enumerate(parts[:-1]):
        if part in ("site-packages", "dist-packages"):
            return parts[i + 1].removesuffix(".py")
    return "other"


#: Consecutive frames not of the project are folded from this many on.
FOLD_AT = 3

F = TypeVar("F")


@dataclass(frozen=True)
class Folded(Generic[F]):
    """Frames of the framework and libraries shown as one line; nothing is lost."""

    frames: tuple[F, ...]
    #: Their packages, outermost first, each once: ``("django", "asgiref")``.
    packages: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{len(self.frames)} frames of {', '.join(self.packages)}"


def fold(frames: Sequence[F], filename: Callable[[F], str]) -> list[F | Folded[F]]:
    """A stack as people read it: slowwatch's own frames left out, and each run of
    at least :data:`FOLD_AT` frames that are not the project's folded.

    Of each run, the frame the project called stays visible (what it asked
    for), and so does the innermost frame of the stack (where it is now).
    """
    shown = [frame for frame in frames if not is_own_file(filename(frame))]
    app = [frame_kind(filename(frame)) == "app" for frame in shown]
    out: list[F | Folded[F]] = []
    i, n = 0, len(shown)
    while i < n:
        if app[i]:
            out.append(shown[i])
            i += 1
            continue
        end = i
        while end < n and not app[end]:
            end += 1
        start, stop = i + (1 if i > 0 else 0), end - (1 if end == n else 0)
        out.extend(shown[i:start])
        if stop - start >= FOLD_AT:
            run = tuple(shown[start:stop])
            packages = dict.fromkeys(package_of(filename(frame)) for frame in run)
            out.append(Folded(run, tuple(packages)))
        else:
            out.extend(shown[start:stop])
        out.extend(shown[max(start, stop) : end])
        i = end
    return out


def nested_codes(code: CodeType, names: Collection[str]) -> list[CodeType]:
    """The code objects named in ``names`` nested, at any depth, in ``code``
    (a closure's code, to recognise its frames)."""
    found = []
    for const in code.co_consts:
        if isinstance(const, CodeType):
            if const.co_name in names:
                found.append(const)
            found.extend(nested_codes(const, names))
    return found
