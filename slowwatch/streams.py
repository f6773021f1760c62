"""A streaming response's content, wrapped so that its request stays watched until it is sent.

Under WSGI the server iterates the response after the view returned, on the
request's own thread or greenlet; under ASGI Django sends it from the
request's task. Either way the stream is still the request: its watch ends
when the stream is closed, and until then the monitor's reports show the
stream's generator, right under :meth:`Stream.__next__`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from slowwatch import runtime

__all__ = ["AsyncStream", "Stream"]


#: Called once when the stream ends, with what its content raised (or None).
End = Callable[[BaseException | None], object]


class _Watched:
    """What both wrappers share: the watch's end, called once, on ``close``."""

    __slots__ = ("_end", "_error")

    def __init__(self, end: End) -> None:
        self._end: End | None = end
        #: What the content raised, if it did: the request's outcome.
        self._error: BaseException | None = None

    def close(self) -> None:
        # Whoever closes it (the server, Django's ASGI handler inside an
        # exception handler of its own) says nothing of how the request went.
        end, self._end = self._end, None
        if end is not None:
            with runtime.errors.guard("ending a stream's watch"):
                end(self._error)


class Stream(_Watched):
    """A streaming response's content, watched to its end.

    While the server sends the stream, :meth:`__next__` is where the report's
    stack begins, with the view's generator right under it. Its ``close`` ends
    the watch: Django calls it when the server closes the response, whether
    or not the stream was sent (a generator's ``finally`` would not run if
    it never started).
    """

    __slots__ = ("_content",)

    def __init__(self, content: Iterator[Any], end: End) -> None:
        super().__init__(end)
        self._content = iter(content)

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._content)
        except StopIteration:
            pass
        except BaseException as exc:
            self._error = exc
            raise
        self.close()
        raise StopIteration


class AsyncStream(_Watched):
    """An async streaming response's content, watched to its end (as :class:`Stream`)."""

    __slots__ = ("_content",)

    def __init__(self, content: AsyncIterator[Any], end: End) -> None:
        super().__init__(end)
        self._content = aiter(content)

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await anext(self._content)
        except StopAsyncIteration:
            pass
        except BaseException as exc:
            self._error = exc
            raise
        self.close()
        raise StopAsyncIteration
