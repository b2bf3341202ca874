"""One snapshot of who holds what: what `maf status` shows, as plain data.

:func:`status_snapshot` reads, in one consistent read of the store: the
tasks by state, every lease (with the task's state and how long it has
left), every live reservation, the open escalations, the last preflight run
and its failures, and the overrides and force-releases of the last day; then
the unread agent-mail of every inbox. Nothing is written: queued mail is
counted, not delivered. Example::

    snapshot = status_snapshot(store, settings.mail_root)
    for lease in snapshot.leases:
        print(lease.task_id, lease.agent_id, relative_time(lease.expires_in_ms))
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_maf import mail
from pytest_maf.errors import MafError
from pytest_maf.clock import iso_utc, span
from pytest_maf.history import OVERRIDE_KINDS, HistoryEntry, entries
from pytest_maf.records import TASK_STATES

if TYPE_CHECKING:
    from pytest_maf.records import Escalation, Evidence
    from pytest_maf.store import Store, Transaction

DAY_MS = 86_400_000
# How far back `maf status` shows overrides and force-releases.
OVERRIDES_WINDOW_MS = DAY_MS


@dataclass(frozen=True)
class LeaseView:
    """A lease with its task's state and kind; ``expires_in_ms`` is negative once it has expired."""

    task_id: str
    agent_id: str
    attempt: int
    state: str
    kind: str
    expires_at: int
    expires_in_ms: int


@dataclass(frozen=True)
class ReservationView:
    """A live reservation; ``task_id`` is the task it is tied to, if any."""

    pattern: str
    agent_id: str
    exclusive: bool
    reason: str
    task_id: str | None
    expires_at: int
    expires_in_ms: int


@dataclass(frozen=True)
class MailCount:
    """An agent's inbox: messages not yet read, and messages queued in the store but not yet delivered.
    ``problem`` says why the inbox could not be read (its counts are then 0)."""

    agent: str
    unread: int
    queued: int
    problem: str | None = None


@dataclass(frozen=True)
class PreflightRun:
    """The newest preflight task: who ran it, its state, and its evidence counted, failures kept."""

    task_id: str
    state: str
    agent: str | None
    started_at: int
    updated_at: int
    attempt: int
    passed: int
    failed: int
    failures: list[Evidence] = field(default_factory=list)


@dataclass(frozen=True)
class StatusSnapshot:
    """Everything `maf status` shows, read at ``now`` (the store's time, epoch ms)."""

    now: int
    backend: str
    location: str
    tasks_by_state: dict[str, int]
    leases: list[LeaseView]
    reservations: list[ReservationView]
    escalations: list[Escalation]
    mail: list[MailCount]
    mail_problem: str | None
    preflight: PreflightRun | None
    overrides: list[HistoryEntry]
    # The preflight runs among ``tasks_by_state`` (each run is a task of its own), by state.
    preflight_by_state: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The snapshot for ``--json``: times in epoch ms, with ISO-8601 UTC beside the main ones."""
        plain = asdict(self)
        plain["now_iso"] = iso_utc(self.now)
        plain["overrides"] = [entry.to_json() for entry in self.overrides]
        for lease in plain["leases"]:
            lease["expires_at_iso"] = iso_utc(lease["expires_at"])
        for reservation in plain["reservations"]:
            reservation["expires_at_iso"] = iso_utc(reservation["expires_at"])
        return plain

def _recipient(message: dict[str, Any]) -> str:
    """Whom a queued message is for; '?' for a row of another shape (damage, a hand edit)."""
    recipient = message.get("to")
    return recipient if isinstance(recipient, str) else "?"


def status_snapshot(store: Store, mail_root: Path | None) -> StatusSnapshot:
    """Read the snapshot (see the module's notes); ``mail_root`` None leaves the mail counts out."""

    def read(transaction: Transaction) -> StatusSnapshot:
        now = transaction.now
        counts = transaction.count_tasks_by_state()
        leases = []
        for lease in transaction.list_leases():
            task = transaction.get_task(lease.task_id)
            leases.append(LeaseView(
                lease.task_id, lease.agent_id, lease.attempt, task.state if task else "?", task.kind if task else "?",
                lease.lease_expires_at, lease.lease_expires_at - now,
            ))
        reservations = [
            ReservationView(r.pattern, r.agent_id, r.exclusive, r.reason, r.task_id, r.expires_at, r.expires_at - now)
            for r in transaction.reservations(live_only=True)
        ]
        queued = Counter(_recipient(message) for _, message in transaction.pending_mail())
        overrides = entries(
            transaction, transaction.audit_trail(since=now - OVERRIDES_WINDOW_MS, kinds=OVERRIDE_KINDS)
        )
        return StatusSnapshot(
            now=now, backend=store.backend, location=store.location,
            tasks_by_state={state: counts.get(state, 0) for state in TASK_STATES},
            leases=sorted(leases, key=lambda view: (view.expires_at, view.task_id)),
            reservations=sorted(reservations, key=lambda view: (view.expires_at, view.pattern, view.agent_id)),
            escalations=sorted(transaction.escalations(status="active"), key=lambda e: (-e.level, e.updated_at)),
            mail=[MailCount(str(agent), 0, count) for agent, count in sorted(queued.items())],
            mail_problem=None, overrides=overrides, **_preflights(transaction),
        )

    snapshot = store.read(read)
    if mail_root is None:
        return snapshot
    return _with_mail(snapshot, mail_root)


def _preflights(transaction: Transaction) -> dict[str, Any]:
    """The newest preflight run (``preflight``) and the runs counted by state (``preflight_by_state``)."""
    runs = transaction.list_tasks(kind="preflight")
    by_state = Counter(run.state for run in runs)
    if not runs:
        return {"preflight": None, "preflight_by_state": {}}
    task = max(runs, key=lambda run: (run.created_at, run.id))
    rows = transaction.evidence(task.id, task.attempts)
    payload = task.payload if isinstance(task.payload, dict) else {}
    agent = payload.get("agent")
    last = PreflightRun(
        task.id, task.state, agent if isinstance(agent, str) else None, task.created_at, task.updated_at,
        task.attempts, sum(row.result == "PASS" for row in rows), sum(row.result == "FAIL" for row in rows),
        [row for row in rows if row.result == "FAIL"],
    )
    return {"preflight": last, "preflight_by_state": {state: by_state[state] for state in TASK_STATES if by_state[state]}}


def _with_mail(snapshot: StatusSnapshot, mail_root: Path) -> StatusSnapshot:
    """The snapshot with each inbox's unread count; an inbox that cannot be read says why."""
    queued = {count.agent: count.queued for count in snapshot.mail}
    try:
        agents = mail.inbox_agents(mail_root)
    except (MafError, OSError) as error:
        return replace(snapshot, mail_problem=f"the mail root cannot be read: {error}")
    counts = []
    for agent in sorted(set(agents) | set(queued)):
        unreadable: list[str] = []  # stray files: the messages beside them are counted all the same
        try:
            unread = len(mail.list_messages(mail_root, agent, True, unreadable)) if agent in agents else 0
        except (MafError, OSError) as error:
            counts.append(MailCount(agent, 0, queued.get(agent, 0), str(error)))
        else:
            counts.append(MailCount(agent, unread, queued.get(agent, 0), "; ".join(unreadable) or None))
    return replace(snapshot, mail=counts)


def relative_time(delta_ms: int) -> str:
    """How far off a time is, for people: ``in 4m 12s``, ``expired`` (at or before now).

    Example: ``relative_time(252_000)`` is ``"in 4m 12s"``; ``relative_time(-1)`` is ``"expired"``.
    """
    if delta_ms <= 0:
        return "expired"
    return f"in {span(-(-delta_ms // 1000) * 1000)}"  # rounded up: "in 0s" would read as expired
