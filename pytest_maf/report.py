"""What `maf report` shows, read from the store in one snapshot as plain records (no HTML here).

:func:`gather_report` reads tasks, their events and evidence, the preflight
runs, the leases and reservations held now, and the overrides and
force-releases of the window; :mod:`pytest_maf.report_html` renders it.

Example::

    data = gather_report(store, since_ms=parse_duration("7d"))
    [run.pass_rate for run in data.preflight_runs]   # [1.0, 0.75, ...]
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_maf.errors import UsageError
from pytest_maf.records import Event, Evidence, Lease, Reservation, ReservationEvent, Task

if TYPE_CHECKING:
    from pytest_maf.store import Store, Transaction

DURATION_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
MAX_DURATION_MS = 100 * 365 * 86_400_000  # a hundred years: any longer window shows nothing more
# Reservation events that record someone acting on another agent's reservation.
OVERRIDE_KINDS = ("override", "force_release")
# Task events that only extend a lease or add a row: counted, not listed, in a task's timeline.
QUIET_EVENT_KINDS = frozenset({"renew", "evidence"})


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``24h``, ``7d`` or ``2w`` in milliseconds (pure); anything else is a UsageError."""
    match = re.fullmatch(r"\s*(\d{1,12})\s*([smhdw])\s*", text.lower())
    if match is None:
        raise UsageError(f"unknown duration {text!r}; give a number and a unit, such as 90s, 30m, 24h, 7d or 2w")
    value = int(match.group(1)) * DURATION_UNITS_MS[match.group(2)]
    if value == 0 or value > MAX_DURATION_MS:
        raise UsageError(f"a duration must be above 0 and at most 100 years, got {text!r}")
    return value


@dataclass(frozen=True)
class Attempt:
    """One attempt of a task: its evidence rows, by verifier."""

    number: int
    evidence: list[Evidence]
    recorded_at: dict[str, int]  # verifier -> when its row was written (its evidence event)

    @property
    def passed(self) -> int:
        return sum(row.result == "PASS" for row in self.evidence)

    @property
    def failed(self) -> int:
        return sum(row.result != "PASS" for row in self.evidence)


@dataclass(frozen=True)
class TaskHistory:
    """A task, its attempts and the events that moved it (renewals and evidence rows only counted)."""

    task: Task
    attempts: list[Attempt]
    timeline: list[Event]
    quiet_events: int

    @property
    def has_failure(self) -> bool:
        return any(attempt.failed for attempt in self.attempts) or self.task.state in ("ROLLBACK", "DEAD")


@dataclass(frozen=True)
class PreflightRun:
    """One preflight (a task of kind ``preflight``): when it ended, and its checks' results."""

    task_id: str
    at: int
    state: str
    evidence: list[Evidence]

    @property
    def pass_rate(self) -> float | None:
        """The share of its checks that passed; None for a run that recorded no evidence."""
        if not self.evidence:
            return None
        return sum(row.result == "PASS" for row in self.evidence) / len(self.evidence)

    @property
    def succeeded(self) -> bool:
        return self.state in ("COMMITTED", "DONE")


@dataclass(frozen=True)
class CheckResult:
    run: str
    at: int
    evidence: Evidence


@dataclass
class ReportData:
    """Everything the report shows, as of ``now`` (epoch ms), for the window from ``since`` on."""

    location: str
    backend: str
    now: int
    since: int | None
    tasks_by_state: dict[str, int]
    tasks: list[TaskHistory] = field(default_factory=list)
    preflight_runs: list[PreflightRun] = field(default_factory=list)
    checks: dict[str, list[CheckResult]] = field(default_factory=dict)
    leases: list[tuple[Lease, str]] = field(default_factory=list)  # with its task's state
    reservations: list[Reservation] = field(default_factory=list)
    overrides: list[ReservationEvent] = field(default_factory=list)


def gather_report(store: Store, since_ms: int | None = None) -> ReportData:
    """The report's contents from one consistent snapshot of ``store``.

    With ``since_ms`` (a duration), only tasks changed, preflights run and
    overrides made in that window before now; leases and reservations are
    always those held now.
    """
    return store.read(lambda transaction: _gather(transaction, store, since_ms))


def _gather(transaction: Transaction, store: Store, since_ms: int | None) -> ReportData:
    now = transaction.now
    cutoff = None if since_ms is None else now - since_ms
    leases = transaction.list_leases()
    leased = {lease.task_id for lease in leases}
    tasks = [
        task for task in transaction.list_tasks()
        if cutoff is None or task.updated_at >= cutoff or task.id in leased
    ]
    wanted = {task.id for task in tasks}
    events: dict[str, list[Event]] = defaultdict(list)
    for event in transaction.events():
        if event.task_id in wanted:
            events[event.task_id].append(event)
    evidence: dict[str, list[Evidence]] = defaultdict(list)
    for row in transaction.evidence():
        if row.task_id in wanted:
            evidence[row.task_id].append(row)
    histories = [_history(task, events[task.id], evidence[task.id]) for task in tasks]
    histories.sort(key=lambda history: (-history.task.updated_at, history.task.id))
    states = {task.id: task.state for task in tasks}
    data = ReportData(
        location=store.location,
        backend=store.backend,
        now=now,
        since=cutoff,
        tasks_by_state=transaction.count_tasks_by_state(),
        tasks=histories,
        leases=sorted(
            ((lease, states.get(lease.task_id, "")) for lease in leases),
            key=lambda pair: (pair[0].lease_expires_at, pair[0].task_id),
        ),
        reservations=sorted(
            transaction.reservations(), key=lambda reservation: (reservation.expires_at, reservation.pattern)
        ),
        overrides=sorted(
            (
                event for kind in OVERRIDE_KINDS for event in transaction.reservation_events(kind)
                if cutoff is None or event.ts >= cutoff
            ),
            key=lambda event: (-event.ts, -event.id),
        ),
    )
    data.preflight_runs = _preflight_runs(histories)
    data.checks = _check_histories(data.preflight_runs)
    return data


def _history(task: Task, events: list[Event], evidence: list[Evidence]) -> TaskHistory:
    recorded: dict[tuple[int, str], int] = {}
    for event in events:
        if event.kind == "evidence":
            recorded[(int(event.data.get("attempt", 0)), str(event.data.get("verifier", "")))] = event.ts
    by_attempt: dict[int, list[Evidence]] = defaultdict(list)
    for row in evidence:
        by_attempt[row.attempt].append(row)
    attempts = [
        Attempt(
            number,
            sorted(rows, key=lambda row: (row.result == "PASS", row.verifier)),
            {row.verifier: recorded[(number, row.verifier)] for row in rows if (number, row.verifier) in recorded},
        )
        for number, rows in sorted(by_attempt.items(), reverse=True)
    ]
    timeline = [event for event in events if event.kind not in QUIET_EVENT_KINDS]
    return TaskHistory(task, attempts, timeline, len(events) - len(timeline))


def _preflight_runs(histories: list[TaskHistory]) -> list[PreflightRun]:
    """Each preflight task's latest attempt, oldest run first, dated by its last event."""
    runs = []
    for history in histories:
        if history.task.kind != "preflight":
            continue
        ended = max((event.ts for event in history.timeline), default=history.task.updated_at)
        latest = history.attempts[0].evidence if history.attempts else []
        runs.append(PreflightRun(history.task.id, ended, history.task.state, latest))
    runs.sort(key=lambda run: (run.at, run.task_id))
    return runs


def _check_histories(runs: list[PreflightRun]) -> dict[str, list[CheckResult]]:
    """Each check's results across the runs, oldest first, the checks in name order."""
    checks: dict[str, list[CheckResult]] = defaultdict(list)
    for run in runs:
        for row in run.evidence:
            checks[row.verifier].append(CheckResult(run.task_id, run.at, row))
    return dict(sorted(checks.items()))
