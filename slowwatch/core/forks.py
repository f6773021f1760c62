"""Starting afresh in a forked child.

A child of a process that ran slowwatch inherits its locks (possibly held by a
thread that no longer exists there) and the handles of threads it does not
have. Objects that own such state reset it in the child, right after the fork.
"""

from __future__ import annotations

import os
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
