"""Clocks in integer epoch milliseconds, the unit of every time in the store.

Library code takes a clock instead of reading the time itself, so tests move
time forward instead of sleeping until a lease expires::

    clock = ManualClock(1_000)
    clock.advance(30_000)
    assert clock() == 31_000
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

Clock = Callable[[], int]


def system_clock() -> int:
    """Return the wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when told to; for tests and simulations."""

    def __init__(self, start_ms: int = 0) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError("a clock does not run backwards")
        self.now_ms += ms


def iso_utc(epoch_ms: int, timespec: str = "milliseconds") -> str:
    """``epoch_ms`` as ISO-8601 UTC (``2026-11-27T16:30:00.250Z``); a time no calendar can show is
    written as its milliseconds."""
    try:
        moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"{epoch_ms} ms since 1970"
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def span(ms: int, units: int = 2) -> str:
    """A length of time in its ``units`` largest units, each whole: ``42s``, ``4m 12s``, ``2h 5m``,
    ``3d 4h``; with ``units=1``, ``4m``."""
    seconds = max(0, ms) // 1000
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    return " ".join(f"{amount}{unit}" for amount, unit in parts[:units] if amount or unit == parts[0][1])
