from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator

import pytest

from slowwatch.core.frames import Stack, walk_coroutine, walk_frames


def level_two(ready: threading.Event, release: threading.Event) -> None:
    ready.set()
    release.wait(10)


def level_one(ready: threading.Event, release: threading.Event) -> None:
    level_two(ready, release)


@pytest.fixture
def parked() -> Iterator[threading.Thread]:
    ready, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=level_one, args=(ready, release))
    thread.start()
    assert ready.wait(5)
    yield thread
    release.set()
    thread.join(5)


def short(name: str) -> str:
    """Function names are qualified on 3.11+ (``Event.wait``), bare on 3.10."""
    return name.rsplit(".", 1)[-1]


def test_known_stack_is_captured_as_plain_tuples(parked):
    stack = walk_frames(sys._current_frames()[parked.ident])
    names = [short(f.function) for f in stack.frames]
    i = names.index("level_one")
    assert names[i : i + 3] == ["level_one", "level_two", "wait"]
    two = stack.frames[i + 1]
    assert two.filename == __file__
    assert two.lineno == level_two.__code__.co_firstlineno + 2
    assert two.module == __name__
    assert stack.hidden == 0 and stack.truncated == 0
    for frame in stack.frames:
        assert all(isinstance(v, (str, int)) for v in frame)


def test_frames_above_the_boundary_are_hidden_and_counted(parked):
    stack = walk_frames(sys._current_frames()[parked.ident], {level_one.__code__})
    assert [short(f.function) for f in stack.frames][:2] == ["level_two", "wait"]
    # level_one itself, Thread.run, Thread._bootstrap_inner, Thread._bootstrap
    assert stack.hidden >= 4


def test_deep_stacks_keep_their_innermost_frames(monkeypatch):
    monkeypatch.setattr("slowwatch.core.frames.MAX_FRAMES", 10)

    def down(n: int) -> Stack:
        if n:
            return down(n - 1)
        return walk_frames(sys._getframe())

    stack = down(30)
    assert len(stack.frames) == 10
    assert stack.truncated > 20
    assert stack.frames[-1].function.endswith("down")


def test_a_suspended_coroutine_is_walked_through_its_await_chain():
    async def inner() -> None:
        await asyncio.sleep(10)

    async def outer() -> None:
        await inner()

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(outer())
        loop.run_until_complete(asyncio.sleep(0.01))
        stack = walk_coroutine(task.get_coro())
        names = [short(f.function) for f in stack.frames]
        assert names[:3] == ["outer", "inner", "sleep"]
        hidden = walk_coroutine(task.get_coro(), {outer.__code__})
        assert [short(f.function) for f in hidden.frames][:2] == ["inner", "sleep"]
        assert hidden.hidden == 1
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    finally:
        loop.close()


def test_no_frame_means_an_empty_stack():
    assert walk_frames(None) == Stack((), 0, 0)


def test_fold_keeps_the_project_the_call_it_made_and_the_innermost_frame() -> None:
    import django.core.handlers.base as handlers
    import django.db.models.query as query

    import slowwatch.core.frames as own
    from slowwatch.core.frames import FOLD_AT, Folded, fold, package_of

    app, dj, std = __file__, handlers.__file__, threading.__file__
    stack = [dj] * 12 + [app, app, query.__file__] + [dj] * 5 + [own.__file__, dj, std]
    shown = fold(stack, str)
    [middleware, orm] = [item for item in shown if isinstance(item, Folded)]
    # The middleware chain before the project's first frame: all of it folded.
    assert shown[0] is middleware and len(middleware.frames) == 12
    assert middleware.label == "12 frames of django"
    # The project's frames, then the frame it called (the queryset), then a
    # folded run, then the innermost frame where the thread is now.
    assert shown[1:4] == [app, app, query.__file__]
    assert shown[4] is orm and orm.packages == ("django",) and len(orm.frames) == 6
    assert shown[5:] == [std]
    assert own.__file__ not in str(shown)  # slowwatch's own frames are left out
    assert package_of(std) == "stdlib" and package_of(app) == "" and package_of(dj) == "django"
    # The frame the project called stays; a shorter rest than FOLD_AT too.
    assert fold([app, *[dj] * FOLD_AT, app], str) == [app, *[dj] * FOLD_AT, app]
    assert fold([app, *[dj] * (FOLD_AT + 1), app], str) == [
        app,
        dj,
        Folded((dj,) * FOLD_AT, ("django",)),
        app,
    ]
    assert fold([], str) == []
