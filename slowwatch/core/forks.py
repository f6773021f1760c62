"""Starting afresh in a forked child.

A child of a process that ran slowwatch inherits its locks (possibly held by a
thread that no longer exists there) and the handles of threads it does not
have. Objects that own such state reset it in the child, right after the fork.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable


def reset_in_child(method: Callable[[], object]) -> None:
    """Call the bound ``method`` in every forked child, without keeping its object alive."""
    ref = weakref.WeakMethod(method)

    def after_fork() -> None:
        found = ref()
        if found is not None:
            found()

    os.register_at_fork(after_in_child=after_fork)


class Adoption:
    """Starting afresh on first use in a child whose fork ran no hooks.

    uWSGI forks its workers in C, so Python's at-fork hooks do not run there:
    an object notices the new pid on first use instead. Several threads of the
    new worker may notice it at once; exactly one of them resets, and the
    others wait for it (at most ``wait`` seconds) rather than reset again and
    throw away what the first ones filed meanwhile.
    """

    def __init__(self, wait: float = 1.0) -> None:
        self.wait = wait
        #: pid -> the thread that resets in that process.
        self._claims: dict[int, int] = {}

    def run(self, reset: Callable[[], object], done: Callable[[], bool]) -> None:
        """``reset`` once in this process; ``done`` tells the others it has."""
        me = threading.get_ident()
        if self._claims.setdefault(os.getpid(), me) == me:
            reset()
            return
        deadline = time.monotonic() + self.wait
        while not done() and time.monotonic() < deadline:
            time.sleep(0.0005)
