"""Replaying recorded history to check the concurrency rules held (pure).

Used by `maf load-test` after a run and by the multi-process tests:

* :func:`lease_violations`: from a task's events, no claim while another
  agent held it, no lease reclaimed before it expired, and no fenced operation
  accepted from anyone but the live holder.
* :func:`reservation_clashes`: from reservation events, no two agents held
  overlapping reservations at the same time unless both were shared.

Both run in time linear in the events (plus a sort of the holdings), so a
long load test's history of millions of events is audited in seconds:
:func:`task_violations_by_task` takes one task's events at a time, and the
clash check compares a holding only with those held at the same moment.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator

from pytest_maf.patterns import overlap_witness
from pytest_maf.records import Event, ReservationEvent

FENCED_KINDS = {"renew", "start", "verify", "evidence", "commit", "rollback", "release"}
ENDING_KINDS = {"commit", "rollback", "release"}


def lease_violations(task_id: str, events: Iterable[Event]) -> list[str]:
    """Every breach of the lease rules in one task's events, in order."""
    problems = []
    holder: dict[str, object] | None = None
    attempts = 0
    for event in events:
        data, kind = event.data, event.kind
        if kind == "claim":
            if holder is not None:
                problems.append(f"{task_id}: claimed by {data['agent']} while {holder['agent']} held it")
            attempts += 1
            if data["attempt"] != attempts:
                problems.append(f"{task_id}: claim attempt {data['attempt']}, expected {attempts}")
            holder = {"agent": data["agent"], "attempt": data["attempt"], "expires": data["lease_expires_at"]}
        elif kind == "expire":
            if holder is None or event.ts < int(holder["expires"]):  # type: ignore[call-overload]
                problems.append(f"{task_id}: lease reclaimed at {event.ts} before it expired")
            holder = None
        elif kind in FENCED_KINDS:
            live = (
                holder is not None
                and data.get("agent") == holder["agent"]
                and data.get("attempt") == holder["attempt"]
                and event.ts < int(holder["expires"])  # type: ignore[call-overload]
            )
            if not live:
                problems.append(f"{task_id}: {kind} by {data.get('agent')} accepted without a live lease")
                continue
            if "lease_expires_at" in data:
                holder["expires"] = data["lease_expires_at"]  # type: ignore[index]
            if kind in ENDING_KINDS:
                holder = None
    return problems


def task_violations_by_task(histories: Iterable[tuple[str, Iterable[Event]]]) -> list[str]:
    """Lease breaches, and tasks added more than once or finished twice, one task's history at a time.

    ``histories`` yields each task's id with its events in order; only one
    task's events are held in memory at once.
    """
    problems = []
    for task_id, task_events in histories:
        kinds: Counter[str] = Counter()

        def counted(events: Iterable[Event]) -> Iterator[Event]:
            for event in events:
                kinds[event.kind] += 1
                yield event

        problems += lease_violations(task_id, counted(task_events))
        if kinds["add"] > 1:
            problems.append(f"{task_id}: added {kinds['add']} times")
        if kinds["done"] > 1:
            problems.append(f"{task_id}: finished DONE {kinds['done']} times")
    return problems


def task_violations(events: Iterable[Event]) -> list[str]:
    """:func:`task_violations_by_task` for events in any order (grouped by task in memory)."""
    by_task: dict[str, list[Event]] = {}
    for event in events:
        by_task.setdefault(event.task_id, []).append(event)
    return task_violations_by_task(by_task.items())


@dataclass
class Holding:
    __slots__ = ("agent", "pattern", "exclusive", "start", "end")  # a long run has hundreds of thousands

    agent: str
    pattern: str
    exclusive: bool
    start: int
    end: int


def holdings(events: Iterable[ReservationEvent]) -> list[Holding]:
    """Replay grants, renewals, releases and expiries into intervals of holding."""
    open_: dict[tuple[str, str], Holding] = {}
    closed: list[Holding] = []
    for event in events:
        if event.kind == "force_release":
            key = (event.data["holder"], event.data["pattern"])
        else:
            key = (event.agent_id, event.data.get("pattern", ""))
        previous = open_.pop(key, None)
        if previous is not None:  # whatever comes next ends the holding as it was
            previous.end = min(previous.end, event.ts)
            closed.append(previous)
        if event.kind in ("acquire", "renew"):
            exclusive = event.data.get("exclusive", previous.exclusive if previous else True)
            open_[key] = Holding(event.agent_id, key[1], exclusive, event.ts, event.data["expires_at"])
    return closed + list(open_.values())


class _OverlapCache:
    """Whether two patterns can cover a common path, decided once per pair of patterns."""

    def __init__(self) -> None:
        self.known: dict[tuple[str, str], bool] = {}

    def __call__(self, left: str, right: str) -> bool:
        key = (left, right) if left <= right else (right, left)
        found = self.known.get(key)
        if found is None:
            found = self.known[key] = overlap_witness(left, right) is not None
        return found


def clash(first: Holding, second: Holding, overlaps: _OverlapCache) -> bool:
    """Two holdings by different agents, at least one exclusive, at the same time, over a common path."""
    if first.agent == second.agent or not (first.exclusive or second.exclusive):
        return False
    if not (first.start < second.end and second.start < first.end):
        return False
    return overlaps(first.pattern, second.pattern)


def reservation_clashes(events: Iterable[ReservationEvent]) -> list[tuple[Holding, Holding]]:
    """Pairs of overlapping holdings by different agents at the same time, one of them exclusive.

    A sweep over the holdings in order of their start: each is compared only
    with the holdings not yet ended when it starts, so the work grows with the
    number of holdings times how many are held at once, not with its square.
    """
    ordered = sorted(holdings(events), key=lambda holding: holding.start)
    overlaps = _OverlapCache()
    held: list[tuple[int, int, Holding]] = []  # a heap by end: (end, order, holding)
    clashes = []
    for order, holding in enumerate(ordered):
        while held and held[0][0] <= holding.start:  # ended before this one starts: cannot meet it or any later
            heapq.heappop(held)
        for _, _, other in held:
            if clash(other, holding, overlaps):
                clashes.append((other, holding))
        heapq.heappush(held, (holding.end, order, holding))
    return clashes
