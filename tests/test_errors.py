from __future__ import annotations

import logging

from slowwatch.core.errors import InternalLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_guard_swallows_and_rate_limits_per_place_and_type(caplog):
    caplog.set_level(logging.ERROR, logger="slowwatch.internal")
    clock = FakeClock()
    log = InternalLog(clock=clock)
    for _ in range(5):
        with log.guard("place"):
            raise ValueError("x")
    with log.guard("place"):
        raise KeyError("y")
    with log.guard("elsewhere"):
        raise ValueError("z")
    assert log.flush(5)
    assert len(caplog.records) == 3
    assert log.counts["place"] == 6
    clock.now += 60
    with log.guard("place"):
        raise ValueError("again")
    assert log.flush(5)
    assert len(caplog.records) == 4
    assert "4 more like it" in caplog.records[-1].getMessage()
