"""What `maf report` shows, read from the store in one snapshot as plain records (no HTML here).

:func:`gather_report` reads tasks, their events and evidence, and the
preflight runs of the window; the leases and reservations held now come from
:func:`pytest_maf.status.status_snapshot`, and the overrides and
force-releases are :mod:`pytest_maf.history` entries.
:mod:`pytest_maf.report_html` renders it.

Example::

    data = gather_report(store, since_ms=parse_duration("--since", "7d"))
    [run.pass_rate for run in data.preflight_runs]   # [1.0, 0.75, ...]
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_maf.history import OVERRIDE_KINDS, HistoryEntry, entries
from pytest_maf.records import Event, Evidence, Task
from pytest_maf.status import LeaseView, ReservationView, status_snapshot

if TYPE_CHECKING:
    from pytest_maf.store import Store, Transaction

# Task events that only extend a lease or add an evidence row: not part of a task's timeline.
QUIET_EVENT_KINDS = frozenset({"renew", "evidence"})


@dataclass(frozen=True)
class Attempt:
    """One attempt of a task: its evidence rows, failures first, then by verifier."""

    number: int
    evidence: list[Evidence]

    @property
    def passed(self) -> int:
        return sum(row.result == "PASS" for row in self.evidence)

    @property
    def failed(self) -> int:
        return sum(row.result != "PASS" for row in self.evidence)


@dataclass(frozen=True)
class TaskHistory:
    """A task, its attempts (newest first) and the events that moved it (renewals and evidence rows left out)."""

    task: Task
    attempts: list[Attempt]
    timeline: list[Event]

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
    def passed(self) -> int:
        return sum(row.result == "PASS" for row in self.evidence)

    @property
    def pass_rate(self) -> float | None:
        """The share of its checks that passed; None for a run that recorded no evidence."""
        return self.passed / len(self.evidence) if self.evidence else None

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
    tasks: list[TaskHistory] = field(default_factory=list)  # the most recently changed first
    tasks_in_window: int = 0  # before a limit
    preflight_runs: list[PreflightRun] = field(default_factory=list)
    checks: dict[str, list[CheckResult]] = field(default_factory=dict)
    leases: list[LeaseView] = field(default_factory=list)
    reservations: list[ReservationView] = field(default_factory=list)
    overrides: list[HistoryEntry] = field(default_factory=list)  # newest first


def gather_report(store: Store, since_ms: int | None = None, limit: int | None = None) -> ReportData:
    """The report's contents as of now.

    With ``since_ms`` (a duration), only tasks changed, preflights run and
    overrides made in that window before now, and the tasks leased now
    whenever they changed; leases and reservations are always those held now.
    ``limit`` lists at most that many tasks, the most recently changed; the
    pass rate and the checks still count every preflight of the window.
    """
    held = status_snapshot(store, None)
    return store.read(lambda transaction: _gather(transaction, held.now, since_ms, limit, ReportData(
        location=held.location, backend=held.backend, now=held.now, since=None,
        tasks_by_state=held.tasks_by_state, leases=held.leases, reservations=held.reservations,
    )))


# Up to this many tasks, each one's events and evidence are read by its id (indexed); beyond, in one pass.
READ_BY_TASK_UP_TO = 200


def _gather(transaction: Transaction, now: int, since_ms: int | None, limit: int | None, data: ReportData) -> ReportData:
    cutoff = None if since_ms is None else now - since_ms
    leased = {lease.task_id for lease in data.leases}
    tasks = sorted(
        (task for task in transaction.list_tasks() if cutoff is None or task.updated_at >= cutoff or task.id in leased),
        key=lambda task: (-task.updated_at, task.id),
    )
    listed = tasks if limit is None else tasks[:limit]
    wanted = {task.id: task for task in [*listed, *(task for task in tasks if task.kind == "preflight")]}
    events: dict[str, list[Event]] = defaultdict(list)
    evidence: dict[str, list[Evidence]] = defaultdict(list)
    if len(wanted) <= READ_BY_TASK_UP_TO:
        for task_id in wanted:
            events[task_id] = transaction.events(task_id)
            evidence[task_id] = transaction.evidence(task_id)
    else:
        for event in transaction.events():
            if event.task_id in wanted:
                events[event.task_id].append(event)
        for row in transaction.evidence():
            if row.task_id in wanted:
                evidence[row.task_id].append(row)
    histories = {task_id: _history(task, events[task_id], evidence[task_id]) for task_id, task in wanted.items()}
    data.since = cutoff
    data.tasks = [histories[task.id] for task in listed]
    data.tasks_in_window = len(tasks)
    data.overrides = entries(transaction, transaction.audit_trail(since=cutoff, kinds=OVERRIDE_KINDS))
    data.preflight_runs = _preflight_runs(list(histories.values()))
    data.checks = _check_histories(data.preflight_runs)
    return data


def _history(task: Task, events: list[Event], evidence: list[Evidence]) -> TaskHistory:
    by_attempt: dict[int, list[Evidence]] = defaultdict(list)
    for row in evidence:
        by_attempt[row.attempt].append(row)
    attempts = [
        Attempt(number, sorted(rows, key=lambda row: (row.result == "PASS", row.verifier)))
        for number, rows in sorted(by_attempt.items(), reverse=True)
    ]
    return TaskHistory(task, attempts, [event for event in events if event.kind not in QUIET_EVENT_KINDS])


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
