"""Bounded queues, each with the one thread that delivers its items.

slowwatch uses one for the raw records (producers: the monitor thread, and a
request thread finishing a reported request; its thread, ``slowwatch-reporter``,
builds each report) and one per reporter (``slowwatch-sink-<Reporter>``), so
that a sink that is slow, hangs or raises holds up only its own queue.

:meth:`Dispatcher.submit` never blocks: when the queue is full the item is
dropped and counted, and ``on_drop`` may turn it into a small notice that is
delivered as soon as there is room (so that a reporter learns a report is
missing rather than never hearing of it). Whenever the queue runs empty,
``on_idle`` lets the consumer release what it holds (a database connection).
The thread starts on the first submit in each process, and again if it ever
died; whatever ``deliver`` raises is counted as ``failed`` and recorded in the
internal error log (:mod:`slowwatch.core.errors`).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Generic, TypeVar

from slowwatch.core import native
from slowwatch.core.errors import InternalLog
from slowwatch.core.errors import errors as process_errors
from slowwatch.core.forks import Adoption, reset_in_child

T = TypeVar("T")


class Dispatcher(Generic[T]):
    """A bounded queue and the thread that delivers its items, one by one.

    :param name: the thread's name.
    :param label: where its failures are counted (default: ``name``).
    :param exit_timeout: seconds pending items get at interpreter exit; None
        when the owner stops the dispatcher itself.
    :param idle_every: also call ``on_idle`` after this many seconds without
        an item (None: only as the queue runs empty).
    """

    def __init__(
        self,
        deliver: Callable[[T], object],
        *,
        name: str = "slowwatch-reporter",
        label: str = "",
        maxsize: int = 100,
        errors: InternalLog | None = None,
        exit_timeout: float | None = 2.0,
        on_drop: Callable[[T], T | None] | None = None,
        on_idle: Callable[[], object] | None = None,
        on_exit: Callable[[], object] | None = None,
        idle_every: float | None = None,
    ) -> None:
        self.name = name
        #: Run on the thread as it ends: what it holds (a database connection
        #: is the thread's own) is released by the thread itself.
        self._on_exit = on_exit
        self.label = label or name
        self._deliver = deliver
        self._on_drop = on_drop
        self._on_idle = on_idle
        self.idle_every = idle_every
        self.maxsize = maxsize
        self.exit_timeout = exit_timeout
        self._errors = errors or process_errors
        #: submitted (queued), delivered, failed (``deliver`` raised) and
        #: dropped:<reason>; every item offered is one of submitted or
        #: dropped, and every submitted one ends delivered, failed, or
        #: dropped:shutdown. ``restarted``: the thread had died.
        self.counts: Counter[str] = Counter()
        self._atexit_registered = False
        self._adoption = Adoption()
        self._reset()
        reset_in_child(self._reset)

    def _reset(self) -> None:
        # Real locks and a real thread even under gevent: a greenlet that never
        # yields must not keep the reports from going out.
        self._cond = native.Condition()
        self._items: deque[T] = deque()
        #: Notices of dropped items, delivered first; bounded, overflow only counted.
        self._lost: deque[T] = deque(maxlen=self.maxsize)
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | native.NativeThread | None = None
        # Last: other threads of a child forked without hooks wait for this.
        self._pid = os.getpid()

    def submit(self, item: T) -> bool:
        """Queue an item for delivery; False (and counted) when it was dropped."""
        if self._pid != os.getpid():
            # Forked without hooks (uWSGI): one thread starts afresh, none
            # clears what another queued since.
            pid = os.getpid()
            self._adoption.run(self._reset, lambda: self._pid == pid)
        with self._cond:
            if self._stopping:
                dropped = "shutdown"
            elif len(self._items) >= self.maxsize:
                dropped = "queue_full"
            else:
                dropped = ""
                self._items.append(item)
                self.counts["submitted"] += 1
                self._cond.notify()
            if dropped:
                self.counts[f"dropped:{dropped}"] += 1
                notice = self._on_drop(item) if self._on_drop is not None else None
                if notice is not None and dropped == "queue_full":
                    self._lost.append(notice)
        if dropped:
            self._warn_drop(dropped, 1)
            return False
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._start()
        return True

    def count_drop(self, reason: str) -> None:
        """Count an item lost before it could be offered (and say so, at most
        once a minute): ``dropped:<reason>``, as the queue's own drops."""
        with self._cond:
            self.counts[f"dropped:{reason}"] += 1
        self._warn_drop(reason, 1)

    def _warn_drop(self, reason: str, n: int) -> None:
        self._errors.warning(
            f"{self.label}: drop:{reason}",
            "slowwatch: %d report(s) dropped by %s (%s); %d dropped for this reason so far",
            n,
            self.name,
            reason,
            self.counts[f"dropped:{reason}"],
        )

    def _start(self) -> None:
        with self._cond:
            if self._thread is not None:
                if self._thread.is_alive():
                    return
                # Whatever killed it got past every guard: count it, start anew.
                self.counts["restarted"] += 1
                self._errors.note(f"{self.label}: thread died", "slowwatch: %s died", self.name)
                self._busy = False
            # The thread learns which it is from `box`, filed before it can
            # take the lock we hold.
            box: list[threading.Thread | native.NativeThread] = []
            try:
                thread = native.start(lambda: self._run(box), self.name)
            except RuntimeError as exc:  # interpreter shutting down
                self._errors.error("starting the reporter thread", exc)
                return
            box.append(thread)
            self._thread = thread
        if not self._atexit_registered and self.exit_timeout is not None:
            self._atexit_registered = True
            atexit.register(self._at_exit)

    def _run(self, box: list[threading.Thread | native.NativeThread]) -> None:
        cond = self._cond
        with cond:
            me = box[0]
        while True:
            with cond:
                waited = True
                while (
                    waited
                    and not self._items
                    and not self._lost
                    and not self._stopping
                    and self._thread is me
                ):
                    waited = cond.wait(self.idle_every)
                # stop() let go of this thread (it did not wait for it to end):
                # it takes nothing more, whoever delivers next.
                retired = self._thread is not me
                queue = None if retired else (self._lost or self._items)
                found = bool(queue)
                if queue:
                    item = queue.popleft()
                    self._busy = True
                stopping = self._stopping or retired
            if not found and not stopping:  # idle_every passed without an item
                if self._on_idle is not None:
                    with self._errors.guard(f"{self.label} going idle"):
                        self._on_idle()
                continue
            if not found:  # stopping, and nothing left
                if self._on_exit is not None:
                    with self._errors.guard(f"{self.label} stopping"):
                        self._on_exit()
                return
            outcome = "delivered"
            try:
                self._deliver(item)
            except Exception as exc:
                outcome = "failed"
                self._errors.error(self.label, exc)
            finally:
                with cond:
                    idle = not self._items and not self._lost
                    if not idle or self._on_idle is None:
                        self._busy = False
                        self.counts[outcome] += 1
                        cond.notify_all()
            if idle and self._on_idle is not None:
                # Still busy for flush(): what reporters hold is released first.
                with self._errors.guard(f"{self.label} going idle"):
                    self._on_idle()
                with cond:
                    self._busy = False
                    self.counts[outcome] += 1
                    cond.notify_all()
            # Let a waiting monitor thread have the GIL now rather than at the
            # next switch interval: it may have deadlines to meet.
            native.sleep(0)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def pending(self) -> int:
        with self._cond:
            return len(self._items) + len(self._lost) + int(self._busy)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued was delivered; False on timeout."""
        if self._thread is None:
            return not self._items
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._items and not self._lost and not self._busy, timeout
            )

    def close(self) -> None:
        """Take nothing more (counted ``dropped:shutdown``); what is queued is
        still delivered."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def stop(self, timeout: float = 2.0) -> None:
        """Deliver what is queued within ``timeout``, drop the rest, end the thread."""
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            left = len(self._items)
            self._items.clear()
            self._lost.clear()
            self.counts["dropped:shutdown"] += left
            self._cond.notify_all()
        if left:
            self._warn_drop("shutdown", left)
        thread = self._thread
        if thread is not None and not native.is_current(thread):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._thread = None
        self._stopping = False

    def _at_exit(self) -> None:
        if self._pid == os.getpid() and self._thread is not None and self.exit_timeout:
            self.stop(self.exit_timeout)
