"""How often the monitor may sample: a CPU budget for slowwatch's own work."""

from __future__ import annotations

#: Never sample a request less often than this.
MAX_INTERVAL = 1.0


class CpuBudget:
    """Adapts the sampling interval to keep the monitor under ``share`` of a core.

    The monitor reports the CPU time each round of sampling took; once a
    second the total is compared with the budget: over it, the interval
    doubles; well under it, the interval halves back towards ``base``.
    """

    def __init__(self, share: float, base: float, now: float) -> None:
        self.share = share
        self.base = base
        self.interval = base
        self._start = now
        self._used = 0.0

    def spend(self, now: float, seconds: float) -> bool:
        """Account for ``seconds`` of CPU; True when sampling had to slow down."""
        self._used += seconds
        elapsed = now - self._start
        if elapsed < 1.0:
            return False
        share = self._used / elapsed
        self._start, self._used = now, 0.0
        if share > self.share and self.interval < MAX_INTERVAL:
            self.interval = min(MAX_INTERVAL, self.interval * 2)
            return True
        if share < self.share / 4 and self.interval > self.base:
            self.interval = max(self.base, self.interval / 2)
        return False
