"""Key performance indicators from real traffic: running histograms of operation durations in the store.

Each claim, guard run, preflight run and escalation resolution adds one
observation to its operation's histogram, in the transaction the operation
already writes (a guard run, which only reads, writes one small transaction
of its own). The store keeps, per operation, outcome and bucket, the count,
sum and largest duration; `maf metrics` turns them into Prometheus histograms
and `maf db stats` into the slowest recorded operations::

    observation("claim", 0.0007)           # -> Observation("claim", "", 1000, 700)
    histograms(transaction.duration_buckets())[("claim", "")].count
"""

from __future__ import annotations

import time

from pytest_maf.light_dataclass import dataclass
from pytest_maf.records import UNBOUNDED_US, DurationBucket, Observation

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from pytest_maf.records import Task

# Each operation's bucket upper bounds in seconds, around the guide's KPI thresholds
# (lease acquisition < 5 ms, preflight < 2 s, escalation resolution < 5 min).
OPERATION_BUCKETS: dict[str, tuple[float, ...]] = {
    "claim": (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    "guard": (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    "preflight": (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
    "escalation_resolution": (60.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0, 86400.0),
}
# The outcomes an operation is recorded with ('' for none): each is a label value of its histogram.
OPERATION_OUTCOMES: dict[str, tuple[str, ...]] = {
    "claim": ("",),
    "guard": ("passed", "blocked", "overridden"),
    "preflight": ("pass", "fail"),
    "escalation_resolution": ("",),
}


def _us(seconds: float) -> int:
    return max(0, round(seconds * 1_000_000))


def observation(operation: str, seconds: float, outcome: str = "") -> Observation:
    """``operation`` took ``seconds``: the observation, in the first bucket whose bound it does not pass."""
    duration_us = _us(seconds)
    bounds = (_us(bound) for bound in OPERATION_BUCKETS[operation])
    le_us = next((bound for bound in bounds if duration_us <= bound), UNBOUNDED_US)
    return Observation(operation, outcome, le_us, duration_us)


def since(started: float, operation: str, outcome: str = "") -> Observation:
    """The observation of ``operation`` begun at ``started`` (``time.perf_counter()``) and ending now."""
    return observation(operation, time.perf_counter() - started, outcome)


def preflight_run(task: Task, now_ms: int, passed: bool) -> Observation | None:
    """A preflight task's run, from its creation to ``now_ms``; None for any other kind of task."""
    if task.kind != "preflight":
        return None
    return observation("preflight", (now_ms - task.created_at) / 1000, "pass" if passed else "fail")


@dataclass(frozen=True)
class Histogram:
    """One operation and outcome's histogram: cumulative counts per upper bound (seconds; inf last)."""

    operation: str
    outcome: str
    buckets: tuple[tuple[float, int], ...]
    count: int
    sum_s: float
    max_s: float


def histograms(rows: Iterable[DurationBucket]) -> dict[tuple[str, str], Histogram]:
    """Every known operation and outcome's histogram (empty ones too), from the store's bucket rows (pure).

    A row whose bound is not among the current bounds (they changed) counts in the
    first current bucket that holds it, so no observation is lost or counted below its bound.
    """
    per_bucket: dict[tuple[str, str], dict[float, int]] = {}
    totals: dict[tuple[str, str], tuple[int, int, int]] = {}
    for operation, outcomes in OPERATION_OUTCOMES.items():
        for outcome in outcomes:
            per_bucket[(operation, outcome)] = {bound: 0 for bound in (*OPERATION_BUCKETS[operation], float("inf"))}
            totals[(operation, outcome)] = (0, 0, 0)
    for row in rows:
        key = (row.operation, row.outcome)
        if key not in per_bucket:
            continue  # an operation this version does not know
        bound = next(b for b in per_bucket[key] if b == float("inf") or row.le_us <= _us(b))
        per_bucket[key][bound] += row.count
        count, sum_us, max_us = totals[key]
        totals[key] = (count + row.count, sum_us + row.sum_us, max(max_us, row.max_us))
    found = {}
    for key, counts in per_bucket.items():
        cumulative, running = [], 0
        for bound, count in counts.items():
            running += count
            cumulative.append((bound, running))
        count, sum_us, max_us = totals[key]
        found[key] = Histogram(key[0], key[1], tuple(cumulative), count, sum_us / 1e6, max_us / 1e6)
    return found
