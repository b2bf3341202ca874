"""Data access inside one PostgreSQL transaction: what each read locks, and where ``now`` comes from.

In a write transaction (READ COMMITTED) a task and its lease are read
``FOR NO KEY UPDATE``, the task's row first, so a fencing check and the write
it allows see one state; a claim takes the first READY task no other
transaction holds (``FOR UPDATE SKIP LOCKED``) and a reclaim skips the leases
another transaction is working on. The first reservation read or write takes
the store's reservation lock (``pg_advisory_xact_lock``), the first
escalation read or write its escalation lock, for the rest of the transaction.

``now`` is the server's ``clock_timestamp()`` in epoch ms, read when the
operation first needs it; once a lock is taken after that, it is read again,
so no time written under a lock is older than what its last holder wrote. A
commit that makes a task READY tells waiting claimers (``pg_notify``).
"""

from __future__ import annotations

import json
from typing import Any, Collection, Iterable, Sequence

import psycopg
from psycopg import errors as pg_errors

from pytest_maf.clock import Clock
from pytest_maf.errors import AlreadyExistsError, evidence_already_recorded
from pytest_maf.records import (
    AgentSeen, AuditRow, DurationBucket, Escalation, Event, Evidence, Lease, Observation, OperationStats, Reservation,
    ReservationEvent, SEEN_REFRESH_MS, Task,
)
from pytest_maf.store.sqlite import _dumps
from pytest_maf.store.trail import as_object, audit_query, audit_row

# The store's advisory locks: (a key of its schema, one of these).
MIGRATION_LOCK, RESERVATION_LOCK, ESCALATION_LOCK = 0, 1, 2
# Rows each histogram bucket is spread over, so concurrent writers seldom wait for one another.
DURATION_SHARDS = 16
NOW_MS = "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
# Text is ordered byte by byte, as SQLite orders it, whatever the database's collation.
C = 'COLLATE "C"'


def _loads(text: Any, where: str) -> Any:
    """A stored JSON column; a value that does not parse is shown, not fatal for its neighbours."""
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        shown = text[:120] if isinstance(text, str) else repr(text)[:120]
        return {"unreadable": f"{where} is not valid JSON; correct or delete that row (psql)", "stored": shown}


def _where(conditions: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """A WHERE clause of the conditions whose value is not None, and its parameters."""
    given = [(clause, value) for clause, value in conditions if value is not None]
    if not given:
        return "", []
    return "WHERE " + " AND ".join(clause for clause, _ in given), [value for _, value in given]


_TASK_COLUMNS = (
    "t.id, t.state, t.priority, t.payload_json, t.created_at, t.updated_at, t.attempts,"
    " COALESCE(o.max_attempts, %s), COALESCE(o.kind, 'work')"
)
_TASK_FROM = "tasks AS t LEFT JOIN task_options AS o ON o.task_id = t.id"
_TASK_ORDER = "ORDER BY t.priority, t.created_at, o.seq"
_LEASE_COLUMNS = "l.task_id, l.agent_id, l.lease_expires_at, l.attempt"
_RESERVATION_COLUMNS = "agent_id, pattern, exclusive, reason, created_at, expires_at, task_id"
_ESCALATION_COLUMNS = "id, agent_id, bead_id, target, level, status, context, created_at, updated_at"


class PostgresTransaction:
    """Data access inside one open transaction; see the module's notes on locks and time."""

    def __init__(
        self, connection: psycopg.Connection[Any], *, writing: bool, store_key: int, clock: Clock | None,
        default_max_attempts: int, lease_ttl_ms: int, ready_channel: str, released_channel: str,
    ) -> None:
        self._connection = connection
        self._ready_channel = ready_channel
        self._released_channel = released_channel
        self._told_ready = False
        self._told_released = False
        self._writing = writing
        self._store_key = store_key
        self._clock = clock
        self._default_max_attempts = default_max_attempts
        self.lease_ttl_ms = lease_ttl_ms
        self._now: int | None = None
        self._held: set[int] = set()

    @property
    def now(self) -> int:
        if self._now is None:
            self._now = self._read_clock()
        return self._now

    def _read_clock(self) -> int:
        if self._clock is not None:
            return self._clock()
        return int(self._one(NOW_MS)[0])

    def _lock(self, which: int) -> None:
        """Take one of the store's advisory locks for the rest of a write transaction."""
        if not self._writing or which in self._held:
            return
        self._execute("SELECT pg_advisory_xact_lock(%s::int4, %s::int4)", (self._store_key, which))
        self._held.add(which)
        if self._now is not None and self._clock is None:
            # Read before the wait, `now` may be older than what the lock's last holder wrote.
            self._now = max(self._now, self._read_clock())

    def _tell_ready(self) -> None:
        """Wake the claimers waiting in :meth:`PostgresStore.wait_for_work` when this transaction commits."""
        if not self._told_ready:
            self._execute("SELECT pg_notify(%s, '')", (self._ready_channel,))
            self._told_ready = True

    def _tell_released(self) -> None:
        """Wake the acquirers waiting for a release (``wait_for_work(..., "released")``) when this commits."""
        if not self._told_released:
            self._execute("SELECT pg_notify(%s, '')", (self._released_channel,))
            self._told_released = True

    def _locking(self, clause: str) -> str:
        return f" {clause}" if self._writing else ""

    def _execute(self, query: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self._connection.execute(query.encode(), params)

    def _one(self, query: str, params: Sequence[Any] = ()) -> Any:
        return self._execute(query, params).fetchone()

    def _all(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._execute(query, params).fetchall()

    def _task(self, row: Sequence[Any]) -> Task:
        return Task(
            id=row[0], state=row[1], priority=row[2],
            payload=_loads(row[3], f"tasks.payload_json of task {row[0]!r}"),
            created_at=row[4], updated_at=row[5], attempts=row[6], max_attempts=row[7], kind=row[8],
        )

    # tasks

    def insert_task(self, task: Task) -> None:
        try:
            self._execute(
                "INSERT INTO tasks (id, state, priority, payload_json, created_at, updated_at, attempts)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (task.id, task.state, task.priority, _dumps(task.payload), task.created_at, task.updated_at,
                 task.attempts),
            )
        except pg_errors.UniqueViolation:
            raise AlreadyExistsError(f"a task with id {task.id!r} already exists") from None
        self._execute(
            "INSERT INTO task_options (task_id, max_attempts, kind) VALUES (%s, %s, %s)",
            (task.id, task.max_attempts, task.kind),
        )
        if task.state == "READY":
            self._tell_ready()

    def get_task(self, task_id: str) -> Task | None:
        row = self._one(
            f"SELECT {_TASK_COLUMNS} FROM {_TASK_FROM} WHERE t.id = %s{self._locking('FOR NO KEY UPDATE OF t')}",
            (self._default_max_attempts, task_id),
        )
        return None if row is None else self._task(row)

    def next_ready_task(self, kind: str = "work") -> Task | None:
        """The READY task of ``kind`` with the lowest priority, then the oldest, then first inserted,
        among those no other transaction holds."""
        row = self._one(
            f"SELECT {_TASK_COLUMNS} FROM {_TASK_FROM} WHERE t.state = 'READY' AND COALESCE(o.kind, 'work') = %s"
            f" {_TASK_ORDER} LIMIT 1{self._locking('FOR NO KEY UPDATE OF t SKIP LOCKED')}",
            (self._default_max_attempts, kind),
        )
        return None if row is None else self._task(row)

    def list_tasks(self, state: str | None = None, kind: str | None = None) -> list[Task]:
        where, params = _where([("t.state = %s", state), ("COALESCE(o.kind, 'work') = %s", kind)])
        rows = self._all(
            f"SELECT {_TASK_COLUMNS} FROM {_TASK_FROM} {where} {_TASK_ORDER}", (self._default_max_attempts, *params)
        )
        return [self._task(row) for row in rows]

    def count_tasks_by_state(self) -> dict[str, int]:
        return {state: count for state, count in self._all("SELECT state, COUNT(*) FROM tasks GROUP BY state")}

    def write_task_state(self, task_id: str, state: str, attempts: int) -> None:
        """Only :func:`pytest_maf.tasks.apply_transition` calls this."""
        self._execute(
            "UPDATE tasks SET state = %s, attempts = %s, updated_at = %s WHERE id = %s",
            (state, attempts, self.now, task_id),
        )
        if state == "READY":
            self._tell_ready()

    # leases

    def task_and_lease(self, task_id: str) -> tuple[Task | None, Lease | None]:
        """:meth:`get_task` then :meth:`get_lease`, each row locked (no lock reaches a LEFT JOIN's nullable side)."""
        return self.get_task(task_id), self.get_lease(task_id)

    def get_lease(self, task_id: str) -> Lease | None:
        row = self._one(
            f"SELECT {_LEASE_COLUMNS} FROM leases AS l WHERE l.task_id = %s{self._locking('FOR NO KEY UPDATE')}",
            (task_id,),
        )
        return None if row is None else Lease(*row)

    def put_lease(self, lease: Lease) -> None:
        self._execute(
            "INSERT INTO leases (task_id, agent_id, lease_expires_at, attempt) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (task_id) DO UPDATE SET agent_id = EXCLUDED.agent_id,"
            " lease_expires_at = EXCLUDED.lease_expires_at, attempt = EXCLUDED.attempt",
            (lease.task_id, lease.agent_id, lease.lease_expires_at, lease.attempt),
        )

    def extend_lease(self, lease: Lease) -> None:
        """Move the lease's expiry; the holder's reservations tied to the task last exactly as long."""
        self._execute(
            "UPDATE leases SET lease_expires_at = %s WHERE task_id = %s", (lease.lease_expires_at, lease.task_id)
        )
        self._execute(
            "UPDATE reservations SET expires_at = %s WHERE task_id = %s AND agent_id = %s AND expires_at <> %s",
            (lease.lease_expires_at, lease.task_id, lease.agent_id, lease.lease_expires_at),
        )

    def delete_lease(self, task_id: str) -> None:
        self._execute("DELETE FROM leases WHERE task_id = %s", (task_id,))

    def expired_leases(self) -> list[Lease]:
        """Expired leases; in a write, only those no other transaction is working on, locked with their tasks."""
        rows = self._all(
            f"SELECT {_LEASE_COLUMNS} FROM tasks AS t JOIN leases AS l ON l.task_id = t.id"
            f" WHERE l.lease_expires_at <= %s ORDER BY l.lease_expires_at, l.task_id {C}"
            f"{self._locking('FOR NO KEY UPDATE OF t, l SKIP LOCKED')}",
            (self.now,),
        )
        return [Lease(*row) for row in rows]

    def list_leases(self, agent_id: str | None = None) -> list[Lease]:
        where, params = _where([("l.agent_id = %s", agent_id)])
        rows = self._all(
            f"SELECT {_LEASE_COLUMNS} FROM tasks AS t JOIN leases AS l ON l.task_id = t.id {where}"
            f" ORDER BY l.task_id {C}{self._locking('FOR NO KEY UPDATE OF t, l')}",
            params,
        )
        return [Lease(*row) for row in rows]

    # events

    def insert_event(self, task_id: str, kind: str, data: dict[str, Any]) -> None:
        self._execute(
            "INSERT INTO events (task_id, ts, kind, data_json) VALUES (%s, %s, %s, %s)",
            (task_id, self.now, kind, _dumps(data)),
        )

    def events(self, task_id: str | None = None, kind: str | None = None) -> list[Event]:
        where, params = _where([("task_id = %s", task_id or None), ("kind = %s", kind)])
        rows = self._all(f"SELECT id, task_id, ts, kind, data_json FROM events {where} ORDER BY id", params)
        return [
            Event(row[0], row[1], row[2], row[3], as_object(_loads(row[4], f"events.data_json of event {row[0]}")))
            for row in rows
        ]

    # evidence

    def insert_evidence(self, evidence: Evidence) -> None:
        try:
            self._execute(
                "INSERT INTO evidence (task_id, attempt, verifier, result, details_json) VALUES (%s, %s, %s, %s, %s)",
                (evidence.task_id, evidence.attempt, evidence.verifier, evidence.result, _dumps(evidence.details)),
            )
        except pg_errors.UniqueViolation:
            raise evidence_already_recorded(evidence.task_id, evidence.attempt, [evidence.verifier]) from None

    def insert_evidence_batch(self, rows: Sequence[Evidence]) -> None:
        """Insert ``rows`` in one statement, executed for each in a pipeline (:meth:`insert_evidence` for one)."""
        try:
            self._connection.cursor().executemany(
                b"INSERT INTO evidence (task_id, attempt, verifier, result, details_json) VALUES (%s, %s, %s, %s, %s)",
                [(row.task_id, row.attempt, row.verifier, row.result, _dumps(row.details)) for row in rows],
            )
        except pg_errors.UniqueViolation:
            raise evidence_already_recorded(rows[0].task_id, rows[0].attempt, [row.verifier for row in rows]) from None

    def insert_events(self, events: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        """Insert ``(task_id, kind, data)`` events in one statement, executed for each in a pipeline."""
        self._connection.cursor().executemany(
            b"INSERT INTO events (task_id, ts, kind, data_json) VALUES (%s, %s, %s, %s)",
            [(task_id, self.now, kind, _dumps(data)) for task_id, kind, data in events],
        )

    def evidence(self, task_id: str | None = None, attempt: int | None = None) -> list[Evidence]:
        where, params = _where([("task_id = %s", task_id), ("attempt = %s", attempt)])
        rows = self._all(
            f"SELECT task_id, attempt, verifier, result, details_json FROM evidence {where}"
            f" ORDER BY task_id {C}, attempt, verifier {C}",
            params,
        )
        return [
            Evidence(
                row[0], row[1], row[2], row[3],
                as_object(_loads(row[4], f"evidence.details_json of {row[0]!r}/{row[1]}/{row[2]!r}")),
            )
            for row in rows
        ]

    # reservations: every one of these takes the reservation lock first in a write

    def _reservation(self, row: Sequence[Any]) -> Reservation:
        return Reservation(row[0], row[1], bool(row[2]), row[3], row[4], row[5], row[6])

    def reservations(
        self,
        *,
        agent_id: str | None = None,
        live_only: bool = True,
        pattern: str | None = None,
        anchors: Collection[str] | None = None,
        task_id: str | None = None,
    ) -> list[Reservation]:
        """Reservations, optionally only those whose anchor is one of ``anchors``."""
        self._lock(RESERVATION_LOCK)
        where, params = _where([
            ("expires_at > %s", self.now if live_only else None),
            # A reservation tied to a task lives only while the task's lease does, reclaimed or not.
            (
                "(task_id IS NULL OR EXISTS (SELECT 1 FROM leases AS l"
                " WHERE l.task_id = reservations.task_id AND l.lease_expires_at > %s))",
                self.now if live_only else None,
            ),
            ("agent_id = %s", agent_id),
            ("pattern = %s", pattern),
            ("task_id = %s", task_id),
            ("anchor = ANY(%s)", None if anchors is None else list(anchors)),
        ])
        rows = self._all(
            f"SELECT {_RESERVATION_COLUMNS} FROM reservations {where} ORDER BY pattern {C}, agent_id {C}", params
        )
        return [self._reservation(row) for row in rows]

    def put_reservation(self, reservation: Reservation, anchor: str) -> None:
        self._lock(RESERVATION_LOCK)
        self._execute(
            f"INSERT INTO reservations (anchor, {_RESERVATION_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (agent_id, pattern) DO UPDATE SET exclusive = EXCLUDED.exclusive,"
            " reason = EXCLUDED.reason, expires_at = EXCLUDED.expires_at, task_id = EXCLUDED.task_id",
            (
                anchor, reservation.agent_id, reservation.pattern, int(reservation.exclusive), reservation.reason,
                reservation.created_at, reservation.expires_at, reservation.task_id,
            ),
        )

    def delete_reservation(self, agent_id: str, pattern: str) -> None:
        self._lock(RESERVATION_LOCK)
        self._execute("DELETE FROM reservations WHERE agent_id = %s AND pattern = %s", (agent_id, pattern))
        self._tell_released()

    def _delete_reservations(self, condition: str, value: Any, order: str) -> list[Reservation]:
        self._lock(RESERVATION_LOCK)
        rows = self._all(
            f"WITH gone AS (DELETE FROM reservations WHERE {condition} RETURNING id, {_RESERVATION_COLUMNS})"
            f" SELECT {_RESERVATION_COLUMNS} FROM gone ORDER BY {order}",
            (value,),
        )
        if rows:
            self._tell_released()
        return [self._reservation(row) for row in rows]

    def delete_expired_reservations(self) -> list[Reservation]:
        self._lock(RESERVATION_LOCK)
        return self._delete_reservations("expires_at <= %s", self.now, "id")

    def delete_task_reservations(self, task_id: str) -> list[Reservation]:
        """Delete and return the reservations tied to ``task_id`` (live or not)."""
        return self._delete_reservations("task_id = %s", task_id, f"pattern {C}, agent_id {C}")

    def insert_reservation_event(self, kind: str, agent_id: str, data: dict[str, Any]) -> None:
        self._lock(RESERVATION_LOCK)
        self._execute(
            "INSERT INTO reservation_events (ts, kind, agent_id, data_json) VALUES (%s, %s, %s, %s)",
            (self.now, kind, agent_id, _dumps(data)),
        )

    def reservation_events(self, kind: str | None = None) -> list[ReservationEvent]:
        self._lock(RESERVATION_LOCK)
        where, params = _where([("kind = %s", kind or None)])
        rows = self._all(f"SELECT id, ts, kind, agent_id, data_json FROM reservation_events {where} ORDER BY id", params)
        return [
            ReservationEvent(row[0], row[1], row[2], row[3], _loads(row[4], f"reservation_events.data_json of event {row[0]}"))
            for row in rows
        ]

    def audit_trail(
        self, *, since: int | None = None, kinds: Collection[str] | None = None, task_id: str | None = None,
        agent_id: str | None = None, limit: int | None = None,
    ) -> list[AuditRow]:
        """See :meth:`pytest_maf.store.protocol.Transaction.audit_trail`."""
        query, params = audit_query(
            since=since, kinds=kinds, task_id=task_id, agent_id=agent_id, limit=limit, marker="%s",
            contains=lambda column: f"strpos({column}, %s) > 0",
            one_of=lambda n: f"IN ({', '.join(['%s'] * n)})",
        )
        return [audit_row(row, _loads) for row in self._all(query, params)]

    # escalations: one active escalation per agent and bead, decided under the escalation lock

    def escalations(
        self, *, status: str | None = None, agent_id: str | None = None, bead_id: str | None = None,
        escalation_id: str | None = None,
    ) -> list[Escalation]:
        self._lock(ESCALATION_LOCK)
        where, params = _where([
            ("status = %s", status), ("agent_id = %s", agent_id), ("bead_id = %s", bead_id), ("id = %s", escalation_id),
        ])
        rows = self._all(f"SELECT {_ESCALATION_COLUMNS} FROM escalations {where} ORDER BY created_at, id {C}", params)
        return [Escalation(*row) for row in rows]

    def put_escalation(self, escalation: Escalation) -> None:
        self._lock(ESCALATION_LOCK)
        self._execute(
            f"INSERT INTO escalations ({_ESCALATION_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET target = EXCLUDED.target, level = EXCLUDED.level,"
            " status = EXCLUDED.status, context = EXCLUDED.context, updated_at = EXCLUDED.updated_at",
            (
                escalation.id, escalation.agent_id, escalation.bead_id, escalation.target, escalation.level,
                escalation.status, escalation.context, escalation.created_at, escalation.updated_at,
            ),
        )

    def insert_escalation_event(self, escalation_id: str, kind: str, data: dict[str, Any]) -> None:
        self._lock(ESCALATION_LOCK)
        self._execute(
            "INSERT INTO escalation_events (escalation_id, ts, kind, data_json) VALUES (%s, %s, %s, %s)",
            (escalation_id, self.now, kind, _dumps(data)),
        )

    def escalation_events(self, escalation_id: str) -> list[dict[str, Any]]:
        rows = self._all(
            "SELECT ts, kind, data_json FROM escalation_events WHERE escalation_id = %s ORDER BY id", (escalation_id,)
        )
        return [
            {"ts": row[0], "kind": row[1], "data": _loads(row[2], f"escalation_events.data_json of {escalation_id!r}")}
            for row in rows
        ]

    # agent-mail queued by an operation, delivered after its commit

    def enqueue_mail(self, message: dict[str, Any]) -> None:
        """Queue ``message`` (its ``id`` and ``to`` set) for delivery once this transaction commits."""
        self._execute(
            "INSERT INTO mail_outbox (id, recipient, message_json, created_at) VALUES (%s, %s, %s, %s)",
            (message["id"], message["to"], _dumps(message), self.now),
        )

    def pending_mail(self, message_ids: Collection[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Queued messages not yet delivered (only ``message_ids``, when given), oldest first: (id, message)."""
        only = "" if message_ids is None else " AND id = ANY(%s)"
        rows = self._all(
            f"SELECT id, message_json FROM mail_outbox WHERE delivered_at IS NULL{only} ORDER BY created_at, id {C}",
            () if message_ids is None else (list(message_ids),),
        )
        return [(row[0], as_object(_loads(row[1], f"mail_outbox.message_json of {row[0]!r}"))) for row in rows]

    def mark_mail_delivered(self, message_ids: Sequence[str]) -> None:
        self._execute(
            "UPDATE mail_outbox SET delivered_at = %s WHERE id = ANY(%s) AND delivered_at IS NULL",
            (self.now, list(message_ids)),
        )

    # metrics

    def metrics_snapshot(self) -> dict[str, dict[str, int]]:
        """Counts for the Prometheus families, all read in one snapshot, with the totals
        `maf db cleanup` folded into ``counters`` (as on SQLite)."""

        def grouped(query: str, *params: Any) -> dict[str, int]:
            return {str(key): int(count) for key, count in self._all(query, params)}

        folded: dict[str, dict[str, int]] = {}
        for name, label, value in self._all("SELECT name, label, value FROM counters"):
            folded.setdefault(str(name), {})[str(label)] = int(value)

        def with_folded(table: str, live: dict[str, int]) -> dict[str, int]:
            totals = dict(live)
            for label, value in folded.get(table, {}).items():
                totals[label] = totals.get(label, 0) + value
            return totals

        return {
            "tasks": grouped("SELECT state, COUNT(*) FROM tasks GROUP BY state"),
            "leases": grouped(
                "SELECT CASE WHEN lease_expires_at > %s THEN 'active' ELSE 'expired' END, COUNT(*)"
                " FROM leases GROUP BY 1", self.now,
            ),
            "reservations": grouped(
                "SELECT CASE WHEN expires_at > %s THEN 'active' ELSE 'expired' END, COUNT(*)"
                " FROM reservations GROUP BY 1", self.now,
            ),
            "reservation_events": with_folded(
                "reservation_events", grouped("SELECT kind, COUNT(*) FROM reservation_events GROUP BY kind")
            ),
            "escalations": grouped("SELECT status, COUNT(*) FROM escalations GROUP BY status"),
            "evidence": with_folded("evidence", grouped("SELECT result, COUNT(*) FROM evidence GROUP BY result")),
            "task_events": with_folded("events", grouped(
                "SELECT kind, COUNT(*) FROM events WHERE kind IN ('rollback', 'expire', 'exhaust') GROUP BY kind"
            )),
        }

    # agents and the running histograms of operation durations

    def record_activity(self, agent_id: str | None, client: str, observation: Observation | None = None) -> None:
        """One statement either way, at the end of its transaction: the agent's row, then (on a row of the
        bucket's shard for this connection, so concurrent claims do not queue on one row) the histogram's."""
        seen = (
            "INSERT INTO agents (agent_id, client, first_seen, last_seen) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (agent_id) DO UPDATE SET last_seen = GREATEST(agents.last_seen, EXCLUDED.last_seen),"
            " client = CASE WHEN EXCLUDED.client = '' THEN agents.client ELSE EXCLUDED.client END"
            f" WHERE EXCLUDED.last_seen >= agents.last_seen + {SEEN_REFRESH_MS}"
            " OR EXCLUDED.client NOT IN ('', agents.client)"
        )
        observed = (
            "INSERT INTO operation_durations (operation, outcome, le_us, shard, count, sum_us, max_us)"
            f" VALUES (%s, %s, %s, pg_backend_pid() %% {DURATION_SHARDS}, 1, %s, %s)"
            " ON CONFLICT (operation, outcome, le_us, shard) DO UPDATE SET count = operation_durations.count + 1,"
            " sum_us = operation_durations.sum_us + EXCLUDED.sum_us,"
            " max_us = GREATEST(operation_durations.max_us, EXCLUDED.max_us)"
        )
        agent_params = (agent_id, client, self.now, self.now)
        observation_params = () if observation is None else (
            observation.operation, observation.outcome, observation.le_us, observation.duration_us,
            observation.duration_us,
        )
        if agent_id is not None and observation is not None:
            self._execute(f"WITH seen AS ({seen} RETURNING 1) {observed}", (*agent_params, *observation_params))
        elif agent_id is not None:
            self._execute(seen, agent_params)
        elif observation is not None:
            self._execute(observed, observation_params)

    def agents(self) -> list[AgentSeen]:
        rows = self._all(f"SELECT agent_id, client, first_seen, last_seen FROM agents ORDER BY agent_id {C}")
        return [AgentSeen(*row) for row in rows]

    def delete_agent(self, agent_id: str) -> None:
        self._execute("DELETE FROM agents WHERE agent_id = %s", (agent_id,))

    def duration_buckets(self) -> list[DurationBucket]:
        rows = self._all(
            "SELECT operation, outcome, le_us, SUM(count), SUM(sum_us), MAX(max_us) FROM operation_durations"
            f" GROUP BY operation, outcome, le_us ORDER BY operation {C}, outcome {C}, le_us"
        )
        return [DurationBucket(row[0], row[1], int(row[2]), int(row[3]), int(row[4]), int(row[5])) for row in rows]

    def operation_stats(self) -> list[OperationStats]:
        rows = self._all(
            "SELECT operation, SUM(count), SUM(sum_us), MAX(max_us) FROM operation_durations"
            f" GROUP BY operation ORDER BY MAX(max_us) DESC, operation {C}"
        )
        return [OperationStats(row[0], int(row[1]), int(row[2]), int(row[3])) for row in rows]
