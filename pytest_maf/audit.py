"""Replaying recorded history to check the concurrency rules held (pure).

Used by `maf load-test` after a run and by the multi-process tests:

* :func:`lease_violations`: from a task's events, no claim while another
  agent held it, no lease reclaimed before it expired, and no fenced operation
  accepted from anyone but the live holder.
* :func:`reservation_clashes`: from reservation events, no two agents held
  overlapping reservations at the same time unless both were shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

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


def task_violations(events: Iterable[Event]) -> list[str]:
    """Lease breaches across every task, and tasks added more than once or finished twice."""
    by_task: dict[str, list[Event]] = {}
    for event in events:
        by_task.setdefault(event.task_id, []).append(event)
    problems = []
    for task_id, task_events in by_task.items():
        problems += lease_violations(task_id, task_events)
        kinds = [event.kind for event in task_events]
        if kinds.count("add") > 1:
            problems.append(f"{task_id}: added {kinds.count('add')} times")
        if kinds.count("done") > 1:
            problems.append(f"{task_id}: finished DONE {kinds.count('done')} times")
    return problems


@dataclass
class Holding:
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


def reservation_clashes(events: Iterable[ReservationEvent]) -> list[tuple[Holding, Holding]]:
    """Pairs of overlapping holdings by different agents at the same time, one of them exclusive."""
    history = holdings(events)
    clashes = []
    for index, first in enumerate(history):
        for second in history[index + 1 :]:
            if first.agent == second.agent or not (first.exclusive or second.exclusive):
                continue
            if first.start < second.end and second.start < first.end:
                if overlap_witness(first.pattern, second.pattern) is not None:
                    clashes.append((first, second))
    return clashes
