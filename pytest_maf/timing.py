"""Timing for `maf bench`, `maf load-test` and benchmarks/: one home for how time is measured and summed up.

Example::

    with stopwatch() as elapsed:
        do_the_work()
    elapsed.ms                                        # milliseconds it took
    percentiles([1.0, 2.0, 9.0])                      # {"p50": 2.0, "p95": 9.0, "p99": 9.0, "max": 9.0}
    per_operation_ms(lambda n: work(n), repeat=100)   # the median over rounds of the mean per call
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

ROUNDS = 5


@dataclass
class Elapsed:
    started: float
    ms: float = 0.0


@contextlib.contextmanager
def stopwatch() -> Iterator[Elapsed]:
    """Measure the block's wall time with ``perf_counter``; ``.ms`` is set when it ends, even on error."""
    elapsed = Elapsed(time.perf_counter())
    try:
        yield elapsed
    finally:
        elapsed.ms = (time.perf_counter() - elapsed.started) * 1000


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max of ``samples`` (nearest rank), rounded to 3 places; {} for none."""
    if not samples:
        return {}
    ordered = sorted(samples)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 3)

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 3)}


def per_operation_ms(operation: Callable[[int], object], repeat: int, rounds: int = ROUNDS) -> float:
    """The median, over ``rounds``, of the mean milliseconds per call of ``operation(n)``."""
    means = []
    for round_number in range(rounds):
        with stopwatch() as elapsed:
            for n in range(repeat):
                operation(round_number * repeat + n)
        means.append(elapsed.ms / repeat)
    return round(statistics.median(means), 4)
