"""What the library needs of a runtime store, whichever database holds it.

:class:`Store` opens transactions; :class:`Transaction` is the data access
inside one. The library (tasks, leases, reservations, evidence, escalation,
mail, metrics) only ever talks to these two Protocols, so each backend
(``sqlite.py``, ``postgres.py``) is one module that implements them and no
caller knows which one it has.

Rules every backend keeps:

* ``write(operation)`` runs ``operation`` in one transaction: all of it or
  none; the read-check-writes inside it are atomic against every other
  process (two claims never both win, two reservations never both pass the
  overlap check). A transaction that meets contention is retried whole, at
  most for ``busy_timeout_s``, then :class:`~pytest_maf.errors.StoreBusyError`.
* ``Transaction.now`` is one time (epoch ms) for the whole operation; every
  time written in it derives from it.
* Errors a user can act on are :class:`~pytest_maf.errors.MafError`; the
  database's own error types never leave the backend.

Adding a transaction method means adding it here and to every backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Literal, Protocol, Sequence, TypeVar

if TYPE_CHECKING:
    from pytest_maf.clock import Clock
    from pytest_maf.records import (
        AgentSeen, AuditRow, DurationBucket, Escalation, Event, Evidence, Lease, Observation, OperationStats, Reservation,
        ReservationEvent, Task,
    )

T = TypeVar("T")
# What a waiter waits for: a task made READY, or a reservation released.
WaitEvent = Literal["ready", "released"]


class Transaction(Protocol):
    """Data access inside one open transaction."""

    @property
    def now(self) -> int:
        """The operation's time in epoch ms, read once."""

    @property
    def lease_ttl_ms(self) -> int:
        """How far a fenced operation by the live holder extends its lease."""

    # tasks
    def insert_task(self, task: Task) -> None: ...
    def get_task(self, task_id: str) -> Task | None: ...
    def next_ready_task(self, kind: str = "work") -> Task | None: ...
    def list_tasks(self, state: str | None = None, kind: str | None = None) -> list[Task]: ...
    def count_tasks_by_state(self) -> dict[str, int]: ...
    def write_task_state(self, task_id: str, state: str, attempts: int) -> None: ...

    # leases
    def get_lease(self, task_id: str) -> Lease | None: ...
    def task_and_lease(self, task_id: str) -> tuple[Task | None, Lease | None]: ...
    def put_lease(self, lease: Lease) -> None: ...
    def extend_lease(self, lease: Lease) -> None: ...
    def delete_lease(self, task_id: str) -> None: ...
    def expired_leases(self) -> list[Lease]: ...
    def list_leases(self, agent_id: str | None = None) -> list[Lease]: ...

    # events and evidence
    def insert_event(self, task_id: str, kind: str, data: dict[str, Any]) -> None: ...
    def events(self, task_id: str | None = None, kind: str | None = None) -> list[Event]: ...
    def insert_evidence(self, evidence: Evidence) -> None: ...
    def insert_evidence_batch(self, rows: Sequence[Evidence]) -> None: ...
    def insert_events(self, events: Iterable[tuple[str, str, dict[str, Any]]]) -> None: ...
    def evidence(self, task_id: str | None = None, attempt: int | None = None) -> list[Evidence]: ...

    # reservations
    def reservations(
        self,
        *,
        agent_id: str | None = None,
        live_only: bool = True,
        pattern: str | None = None,
        anchors: Collection[str] | None = None,
        task_id: str | None = None,
    ) -> list[Reservation]: ...
    def put_reservation(self, reservation: Reservation, anchor: str) -> None: ...
    def delete_reservation(self, agent_id: str, pattern: str) -> None: ...
    def delete_expired_reservations(self) -> list[Reservation]: ...
    def delete_task_reservations(self, task_id: str) -> list[Reservation]: ...
    def insert_reservation_event(self, kind: str, agent_id: str, data: dict[str, Any]) -> None: ...
    def reservation_events(self, kind: str | None = None) -> list[ReservationEvent]: ...

    # escalations
    def escalations(
        self, *, status: str | None = None, agent_id: str | None = None, bead_id: str | None = None,
        escalation_id: str | None = None,
    ) -> list[Escalation]: ...
    def put_escalation(self, escalation: Escalation) -> None: ...
    def insert_escalation_event(self, escalation_id: str, kind: str, data: dict[str, Any]) -> None: ...
    def escalation_events(self, escalation_id: str) -> list[dict[str, Any]]: ...

    # the audit trail: the three histories above, merged
    def audit_trail(
        self, *, since: int | None = None, kinds: Collection[str] | None = None, task_id: str | None = None,
        agent_id: str | None = None, limit: int | None = None,
    ) -> list[AuditRow]:
        """Events, reservation events and escalation events, newest first (at most ``limit``).

        ``since``: at or after this time. ``task_id``: the task's events, the
        reservation events of reservations tied to it, the escalations of that
        bead. ``agent_id``: what the agent did or had done to it (a task event
        naming it, its reservations and those forced from it or overridden,
        escalations it raised or that were sent to it).
        """

    # agent-mail queued by an operation, delivered after its commit
    def enqueue_mail(self, message: dict[str, Any]) -> None: ...
    def pending_mail(self, message_ids: Collection[str] | None = None) -> list[tuple[str, dict[str, Any]]]: ...
    def mark_mail_delivered(self, message_ids: Sequence[str]) -> None: ...

    # metrics
    def metrics_snapshot(self) -> dict[str, dict[str, int]]: ...

    # agents and the running histograms of operation durations
    def record_activity(self, agent_id: str | None, client: str, observation: Observation | None = None) -> None:
        """Mark ``agent_id`` (when given) seen now, through ``client`` ('' keeps the one known), and add
        ``observation`` (when given) to its operation's histogram: one cheap statement each."""
    def agents(self) -> list[AgentSeen]: ...
    def delete_agent(self, agent_id: str) -> None: ...
    def duration_buckets(self) -> list[DurationBucket]:
        """Every operation's histogram, by operation, outcome and bucket (non-cumulative)."""
    def operation_stats(self) -> list[OperationStats]:
        """Per operation: recorded runs, their total and the slowest; slowest first."""


class Store(Protocol):
    """A runtime store. Open one with :func:`pytest_maf.store.open_store`."""

    clock: Clock
    default_max_attempts: int
    lease_ttl_ms: int
    busy_timeout_s: float

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""

    @property
    def location(self) -> str:
        """Where the store is, as shown to people: a file path, or a URL without its password."""

    def write(self, operation: Callable[[Transaction], T]) -> T:
        """Run ``operation`` in one write transaction; all of it or none."""

    def read(self, operation: Callable[[Transaction], T]) -> T:
        """Run ``operation`` against one consistent snapshot."""

    def close(self) -> None: ...
    def __enter__(self) -> Store: ...
    def __exit__(self, *exc_info: object) -> None: ...

    def reopen(self) -> Store:
        """Another handle on the same store with the same settings, on a connection of its own
        (opened on first use, so it may be handed to another thread)."""

    def schema_version(self) -> int: ...
    def table_names(self) -> list[str]: ...
    def check_schema_version(self) -> int:
        """Refuse a store that is not pytest-maf's or that a newer pytest-maf wrote; its version."""

    def migrate(self) -> list[int]:
        """Apply the migrations the store lacks; the versions applied."""

    def integrity_problems(self) -> list[str]:
        """What the database itself reports as damaged; [] when sound."""

    def wait_for_work(self, timeout_s: float, event: WaitEvent = "ready") -> None:
        """Return once ``event`` may have happened (a task became READY, or a
        reservation was released), or after at most ``timeout_s`` seconds.

        PostgreSQL is told (LISTEN/NOTIFY) by every commit that makes a task
        READY or deletes a reservation; SQLite has no such signal and only
        waits. Either may return early, so a caller looks again and waits again.
        """
