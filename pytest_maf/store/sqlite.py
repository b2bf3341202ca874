"""The embedded SQLite backend of the runtime store.

Every SQLite connection pytest-maf opens comes from :func:`connect`. A write
runs in ``BEGIN IMMEDIATE`` so the read-check-write inside it is atomic across
processes; a busy database is waited for with a short busy timeout plus a
bounded, jittered retry of the whole transaction, so callers never see
"database is locked" under ordinary contention. Writers take turns on the
lock file beside the database first, and the WAL is checkpointed after a
write has let go of it (:mod:`pytest_maf.store.writer_lock`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from pytest_maf.config import DEFAULT_MAX_ATTEMPTS
from pytest_maf.clock import Clock, system_clock
from pytest_maf.errors import (
    AlreadyExistsError, DamagedStoreError, NewerStoreError, StoreBusyError, StoreError, evidence_already_recorded,
)
from pytest_maf.records import (
    AgentSeen, AuditRow, DurationBucket, Escalation, Event, Evidence, Lease, Observation, OperationStats, Reservation,
    ReservationEvent, SEEN_REFRESH_MS, Task,
)
from pytest_maf.store import schema, sharing
from pytest_maf.store.writer_lock import CHECKPOINT_FRAMES, RESTART_FRAMES, Checkpointer, WriterLock
from pytest_maf.store.trail import as_object, audit_query, audit_row
from pytest_maf.values import is_utf8

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
    from typing import Any, TypeVar

    from pytest_maf.store.protocol import WaitEvent

    T = TypeVar("T")

BUSY_TIMEOUT_MS = 5
DEFAULT_LEASE_TTL_MS = 30 * 60_000
DEFAULT_BUSY_TIMEOUT_S = 30.0
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
# What a WAL that grew (a long read let no checkpoint reach its end) is cut back to when it starts over:
# room for the frames it holds before it starts over and a checkpoint's more, so the file is reused, not
# regrown, in steady work.
WAL_SIZE_LIMIT_BYTES = (RESTART_FRAMES + CHECKPOINT_FRAMES) * (4096 + 24)


def connect(path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    """Open a connection with the settings every pytest-maf connection uses.

    Autocommit mode (``isolation_level=None``): transactions are begun
    explicitly, so a write is never silently upgraded from a read lock.
    """
    connection = sqlite3.connect(
        str(path), isolation_level=None, timeout=busy_timeout_ms / 1000, check_same_thread=False
    )
    connection.execute("PRAGMA foreign_keys = ON")
    # WAL makes commits durable against process crashes without an fsync each.
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
    return connection


def _file_uri(path: Path | str, query: str) -> str:
    """``path`` as a ``file:`` URI with ``query``, whatever characters its name holds: a '?' or '#' of
    the name would start the query or the fragment (another file opened, or read-write), so the name
    is percent-encoded."""
    return f"{Path(os.path.abspath(path)).as_uri()}?{query}"


def connect_reading_only(path: Path, *, immutable: bool) -> sqlite3.Connection:
    """A connection that only reads the store at ``path``, for a user who may not write it (an auditor,
    a CI artifact, a mounted backup): ``mode=ro`` while a write-ahead log is beside it (a writer is at
    work: its shared memory tells what is committed), else ``immutable``, which needs no
    shared-memory file and leaves none behind (one left read-only stops every later writer). A write
    through it fails, and :func:`unusable` names the files this user may not write."""
    uri = _file_uri(path, "immutable=1" if immutable else "mode=ro")
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


def connect_read_only(path: Path | str) -> sqlite3.Connection:
    """A read-only connection to the database file at ``path`` (:func:`_file_uri`)."""
    return sqlite3.connect(_file_uri(path, "mode=ro"), uri=True)


def unwritable(db_path: Path) -> list[str]:
    """The database's files, and its folder, that exist and that this user may not write: SQLite needs
    to write all of them (the WAL and shared-memory files beside it, even to read)."""
    from pytest_maf.files import store_files  # here: only a store that failed to open asks

    files = [path for path in store_files(db_path) if path.suffix != ".lock"]  # without it, SQLite's locking alone
    found = [str(path) for path in files if path.exists() and not os.access(path, os.W_OK)]
    folder = db_path.parent
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        found.append(f"the folder {folder}")
    return found


def is_damage(error: sqlite3.Error) -> bool:
    """Whether ``error`` says the database file is damaged (not busy, locked or out of reach)."""
    return any(word in str(error) for word in ("not a database", "malformed", "corrupt"))


def unusable(db_path: Path, error: sqlite3.Error) -> StoreError:
    """The error that says why SQLite could not use the store at ``db_path`` and the way out: damaged
    (recover or restore), or files this user may not write (permission), or neither."""
    damaged = is_damage(error)
    blocked = [] if damaged else unwritable(db_path)
    if damaged:
        way_out = "it is damaged: run `maf db recover` to rebuild it into a new file, or `maf db restore BACKUP`"
    elif blocked:  # a -shm left read-only by a read of a read-only store, say: the store itself looks fine
        way_out = f"{' and '.join(blocked)} cannot be written by this user: give them write permission (chmod u+w)"
    else:
        way_out = "check the file, restore a backup, or point MAF_DB_PATH elsewhere"
    failure = DamagedStoreError if damaged else StoreError
    return failure(f"cannot use the runtime database {db_path}: {error}; {way_out}")


def store_busy(db_path: Path, writer_lock: WriterLock, waited_s: float) -> StoreBusyError:
    """The error (exit 5) of a wait for the store at ``db_path`` that passed the busy timeout: who
    holds the writers' lock, where known, and the way out."""
    holder = writer_lock.holder()
    held = f" (pid {holder} holds the writer lock)" if holder else ""
    return StoreBusyError(
        f"the runtime database {db_path} stayed busy for {waited_s:.1f} s{held}; try again,"
        " or raise runtime.busy_timeout_seconds (MAF_BUSY_TIMEOUT)"
    )


def writer_lock_of(db_path: Path, waited_too_long: Callable[[float], BaseException]) -> WriterLock:
    """The writers' lock of the store at ``db_path``: beside the file itself, as SQLite puts its -wal
    and -shm, so a store opened through a symlink takes the same lock as one opened by its own name."""
    return WriterLock(Path(f"{_real_path(db_path)}.lock"), waited_too_long)


@contextmanager
def maintenance_turn(db_path: Path, connection: sqlite3.Connection, busy_timeout_s: float) -> Iterator[None]:
    """Hold the writers' turn for a maintenance step on ``connection`` (``maf db optimize``, ``cleanup``),
    as every write does: the lock and SQLite's waited for up to ``busy_timeout_s`` in all, then
    :class:`StoreBusyError` (exit 5), never "database is locked"."""
    started = time.monotonic()
    deadline = started + busy_timeout_s
    lock = writer_lock_of(db_path, lambda waited: store_busy(db_path, lock, waited))
    try:
        with lock.turn(deadline):
            left_ms = max(1, int((deadline - time.monotonic()) * 1000))
            connection.execute(f"PRAGMA busy_timeout = {left_ms}")  # SQLite's own wait, the rest of the bound
            try:
                yield
            except sqlite3.OperationalError as error:
                if not _is_busy(error):
                    raise
                raise store_busy(db_path, lock, time.monotonic() - started) from None
    finally:
        lock.close()


def is_busy(error: sqlite3.Error) -> bool:
    """Whether ``error`` says another connection holds the database (busy or locked), not damage."""
    return isinstance(error, sqlite3.OperationalError) and _is_busy(error)


def _is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (SQLITE_BUSY, SQLITE_LOCKED)
    message = str(error)
    return "locked" in message or "busy" in message


def _where(conditions: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """A WHERE clause of the conditions whose value is not None, and its parameters."""
    given = [(clause, value) for clause, value in conditions if value is not None]
    if not given:
        return "", []
    return "WHERE " + " AND ".join(clause for clause, _ in given), [value for _, value in given]


def _loads(text: Any, where: str) -> Any:
    """A stored JSON column; a value that does not parse is shown, not fatal for its neighbours."""
    try:
        return (_JSON or _load_json())[0](text)
    except (TypeError, ValueError, RecursionError):
        shown = text[:120] if isinstance(text, str) else repr(text)[:120]
        return {
            "unreadable": f"{where} is not valid JSON; correct or delete that row"
            " (sqlite3 on the database), or restore a backup",
            "stored": shown,
        }


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


# json.loads, then an encoder for each of compact text and compact ASCII, made once (json.dumps with
# options builds a new encoder every call) when first used: the guard reads and writes no JSON.
_JSON: list[Callable[[Any], Any]] = []


def _load_json() -> list[Callable[[Any], Any]]:
    import json
    from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]

    if not _JSON:
        compact, escaped = (
            json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=ascii_only).encode
            for ascii_only in (False, True)
        )
        _JSON.extend([json.loads, _direct_encoder(compact, c_make_encoder, encode_basestring), escaped])
    return _JSON


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _direct_encoder(
    compact: Callable[[Any], str], make_encoder: Any, encode_string: Callable[[str], str]
) -> Callable[[Any], str]:
    """``compact``, by json's C encoder called directly: the same text, without the Python layers
    JSONEncoder puts around it (a third of the cost of a small object's JSON)."""
    if make_encoder is None:  # no C accelerator: json's own path
        return compact

    def encode(value: Any) -> str:
        if isinstance(value, (str, float)):  # json's own path for these
            return compact(value)
        # A new circular-reference table each call, as json makes it: a circular value is refused alike.
        return "".join(make_encoder({}, _not_json, encode_string, None, ":", ",", True, False, True)(value, 0))

    return encode


def _dumps(value: Any) -> str:
    _, compact, escaped = _JSON or _load_json()
    text: str = compact(value)
    if not is_utf8(text):  # a lone surrogate (bytes that were not UTF-8): escaped, it round-trips
        text = escaped(value)
    return text


_TASK_COLUMNS = (
    "t.id, t.state, t.priority, t.payload_json, t.created_at, t.updated_at, t.attempts,"
    " COALESCE(o.max_attempts, ?), COALESCE(o.kind, 'work')"
)
_TASK_FROM = "tasks AS t LEFT JOIN task_options AS o ON o.task_id = t.id"


class SQLiteTransaction:
    """Data access inside one open transaction. ``now`` is read once the lock is held."""

    def __init__(
        self, connection: sqlite3.Connection, now: int, default_max_attempts: int, lease_ttl_ms: int
    ) -> None:
        self.connection = connection
        self.now = now
        self.lease_ttl_ms = lease_ttl_ms
        self._default_max_attempts = default_max_attempts

    def _task(self, row: Sequence[Any]) -> Task:
        return Task(
            id=row[0],
            state=row[1],
            priority=row[2],
            payload=_loads(row[3], f"tasks.payload_json of task {row[0]!r}"),
            created_at=row[4],
            updated_at=row[5],
            attempts=row[6],
            max_attempts=row[7],
            kind=row[8],
        )

    # tasks

    def insert_task(self, task: Task) -> None:
        try:
            self.connection.execute(
                "INSERT INTO tasks (id, state, priority, payload_json, created_at, updated_at,"
                " attempts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    task.id,
                    task.state,
                    task.priority,
                    _dumps(task.payload),
                    task.created_at,
                    task.updated_at,
                    task.attempts,
                ),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExistsError(f"a task with id {task.id!r} already exists") from None
        self.connection.execute(
            "INSERT INTO task_options (task_id, max_attempts, kind) VALUES (?, ?, ?)",
            (task.id, task.max_attempts, task.kind),
        )

    def get_task(self, task_id: str) -> Task | None:
        row = self.connection.execute(
            f"SELECT {_TASK_COLUMNS} FROM {_TASK_FROM} WHERE t.id = ?",
            (self._default_max_attempts, task_id),
        ).fetchone()
        return None if row is None else self._task(row)

    def task_and_lease(self, task_id: str) -> tuple[Task | None, Lease | None]:
        """:meth:`get_task` and :meth:`get_lease` in one statement: what every fenced operation reads first."""
        row = self.connection.execute(
            f"SELECT {_TASK_COLUMNS}, l.agent_id, l.lease_expires_at, l.attempt"
            f" FROM {_TASK_FROM} LEFT JOIN leases AS l ON l.task_id = t.id WHERE t.id = ?",
            (self._default_max_attempts, task_id),
        ).fetchone()
        if row is None:
            return None, None
        return self._task(row), None if row[9] is None else Lease(row[0], row[9], row[10], row[11])

    def next_ready_task(self, kind: str = "work") -> Task | None:
        """The READY task of ``kind`` with the lowest priority, then the oldest, then first inserted."""
        row = self.connection.execute(
            f"SELECT {_TASK_COLUMNS} FROM {_TASK_FROM} WHERE t.state = 'READY'"
            " AND COALESCE(o.kind, 'work') = ? ORDER BY t.priority, t.created_at, t.rowid LIMIT 1",
            (self._default_max_attempts, kind),
        ).fetchone()
        return None if row is None else self._task(row)

    def list_tasks(self, state: str | None = None, kind: str | None = None) -> list[Task]:
        where, params = _where([("t.state = ?", state), ("COALESCE(o.kind, 'work') = ?", kind)])
        rows = self.connection.execute(
            f"SELECT {_TASK_COLUMNS} FROM {_TASK_FROM} {where}"
            " ORDER BY t.priority, t.created_at, t.rowid",
            (self._default_max_attempts, *params),
        ).fetchall()
        return [self._task(row) for row in rows]

    def count_tasks_by_state(self) -> dict[str, int]:
        rows = self.connection.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state")
        return dict(rows.fetchall())

    def write_task_state(self, task_id: str, state: str, attempts: int) -> None:
        """Only :func:`pytest_maf.tasks.apply_transition` calls this."""
        self.connection.execute(
            "UPDATE tasks SET state = ?, attempts = ?, updated_at = ? WHERE id = ?",
            (state, attempts, self.now, task_id),
        )

    # leases

    def get_lease(self, task_id: str) -> Lease | None:
        row = self.connection.execute(
            "SELECT task_id, agent_id, lease_expires_at, attempt FROM leases WHERE task_id = ?",
            (task_id,),
        ).fetchone()
        return None if row is None else Lease(*row)

    def put_lease(self, lease: Lease) -> None:
        # An upsert, not INSERT OR REPLACE: a renewal rewrites one row in place
        # instead of deleting it and its three index entries and adding them back.
        self.connection.execute(
            "INSERT INTO leases (task_id, agent_id, lease_expires_at, attempt) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (task_id) DO UPDATE SET agent_id = excluded.agent_id,"
            " lease_expires_at = excluded.lease_expires_at, attempt = excluded.attempt",
            (lease.task_id, lease.agent_id, lease.lease_expires_at, lease.attempt),
        )

    def extend_lease(self, lease: Lease) -> None:
        """Move the expiry of the lease ``lease`` continues (same task, agent and attempt): only that column is
        written, so the (task_id, attempt) index is left alone. The holder's reservations tied to the task
        last exactly as long."""
        self.connection.execute(
            "UPDATE leases SET lease_expires_at = ? WHERE task_id = ?", (lease.lease_expires_at, lease.task_id)
        )
        self.connection.execute(
            "UPDATE reservations SET expires_at = ? WHERE task_id = ? AND agent_id = ? AND expires_at <> ?",
            (lease.lease_expires_at, lease.task_id, lease.agent_id, lease.lease_expires_at),
        )

    def delete_lease(self, task_id: str) -> None:
        self.connection.execute("DELETE FROM leases WHERE task_id = ?", (task_id,))

    def expired_leases(self) -> list[Lease]:
        rows = self.connection.execute(
            "SELECT task_id, agent_id, lease_expires_at, attempt FROM leases"
            " WHERE lease_expires_at <= ? ORDER BY lease_expires_at, task_id",
            (self.now,),
        ).fetchall()
        return [Lease(*row) for row in rows]

    def list_leases(self, agent_id: str | None = None) -> list[Lease]:
        where, params = _where([("agent_id = ?", agent_id)])
        rows = self.connection.execute(
            f"SELECT task_id, agent_id, lease_expires_at, attempt FROM leases {where} ORDER BY task_id",
            params,
        ).fetchall()
        return [Lease(*row) for row in rows]

    # events

    def insert_event(self, task_id: str, kind: str, data: dict[str, Any]) -> None:
        self.connection.execute(
            "INSERT INTO events (task_id, ts, kind, data_json) VALUES (?, ?, ?, ?)",
            (task_id, self.now, kind, _dumps(data)),
        )

    def events(self, task_id: str | None = None, kind: str | None = None) -> list[Event]:
        where, params = _where([("task_id = ?", task_id or None), ("kind = ?", kind)])
        rows = self.connection.execute(
            f"SELECT id, task_id, ts, kind, data_json FROM events {where} ORDER BY id", params
        ).fetchall()
        return [
            Event(row[0], row[1], row[2], row[3], as_object(_loads(row[4], f"events.data_json of event {row[0]}")))
            for row in rows
        ]

    # evidence

    def insert_evidence(self, evidence: Evidence) -> None:
        try:
            self.connection.execute(
                "INSERT INTO evidence (task_id, attempt, verifier, result, details_json)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    evidence.task_id,
                    evidence.attempt,
                    evidence.verifier,
                    evidence.result,
                    _dumps(evidence.details),
                ),
            )
        except sqlite3.IntegrityError:
            raise evidence_already_recorded(evidence.task_id, evidence.attempt, [evidence.verifier]) from None

    def insert_evidence_batch(self, rows: Sequence[Evidence]) -> None:
        """Insert ``rows`` in one statement, executed for each (:meth:`insert_evidence` for one)."""
        try:
            self.connection.executemany(
                "INSERT INTO evidence (task_id, attempt, verifier, result, details_json) VALUES (?, ?, ?, ?, ?)",
                ((row.task_id, row.attempt, row.verifier, row.result, _dumps(row.details)) for row in rows),
            )
        except sqlite3.IntegrityError:
            raise evidence_already_recorded(rows[0].task_id, rows[0].attempt, [row.verifier for row in rows]) from None

    def insert_events(self, events: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        """Insert ``(task_id, kind, data)`` events in one statement, executed for each."""
        self.connection.executemany(
            "INSERT INTO events (task_id, ts, kind, data_json) VALUES (?, ?, ?, ?)",
            ((task_id, self.now, kind, _dumps(data)) for task_id, kind, data in events),
        )

    def evidence(self, task_id: str | None = None, attempt: int | None = None) -> list[Evidence]:
        where, params = _where([("task_id = ?", task_id), ("attempt = ?", attempt)])
        rows = self.connection.execute(
            "SELECT task_id, attempt, verifier, result, details_json FROM evidence"
            f" {where} ORDER BY task_id, attempt, verifier",
            params,
        ).fetchall()
        return [
            Evidence(
                row[0], row[1], row[2], row[3],
                as_object(_loads(row[4], f"evidence.details_json of {row[0]!r}/{row[1]}/{row[2]!r}")),
            )
            for row in rows
        ]

    # reservations

    _RESERVATION_COLUMNS = "agent_id, pattern, exclusive, reason, created_at, expires_at, task_id"

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
        where, params = _where([
            ("expires_at > ?", self.now if live_only else None),
            # A reservation tied to a task lives only while the task's lease does, reclaimed or not.
            (
                "(task_id IS NULL OR EXISTS (SELECT 1 FROM leases AS l"
                " WHERE l.task_id = reservations.task_id AND l.lease_expires_at > ?))",
                self.now if live_only else None,
            ),
            ("agent_id = ?", agent_id),
            ("pattern = ?", pattern),
            ("task_id = ?", task_id),
        ])
        if anchors is not None:
            where += f"{' AND' if where else 'WHERE'} anchor IN ({', '.join('?' * len(anchors))})"
            params.extend(anchors)
        rows = self.connection.execute(
            f"SELECT {self._RESERVATION_COLUMNS} FROM reservations {where}"
            " ORDER BY pattern, agent_id",
            params,
        ).fetchall()
        return [self._reservation(row) for row in rows]

    def put_reservation(self, reservation: Reservation, anchor: str) -> None:
        self.connection.execute(
            f"INSERT INTO reservations (anchor, {self._RESERVATION_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (agent_id, pattern) DO UPDATE SET exclusive = excluded.exclusive,"
            " reason = excluded.reason, expires_at = excluded.expires_at, task_id = excluded.task_id",
            (
                anchor,
                reservation.agent_id,
                reservation.pattern,
                int(reservation.exclusive),
                reservation.reason,
                reservation.created_at,
                reservation.expires_at,
                reservation.task_id,
            ),
        )

    def delete_reservation(self, agent_id: str, pattern: str) -> None:
        self.connection.execute(
            "DELETE FROM reservations WHERE agent_id = ? AND pattern = ?", (agent_id, pattern)
        )

    def delete_expired_reservations(self) -> list[Reservation]:
        expired = [
            self._reservation(row)
            for row in self.connection.execute(
                f"SELECT {self._RESERVATION_COLUMNS} FROM reservations WHERE expires_at <= ?",
                (self.now,),
            )
        ]
        self.connection.execute("DELETE FROM reservations WHERE expires_at <= ?", (self.now,))
        return expired

    def delete_task_reservations(self, task_id: str) -> list[Reservation]:
        """Delete and return the reservations tied to ``task_id`` (live or not)."""
        tied = self.reservations(task_id=task_id, live_only=False)
        if tied:  # most leases end with none: no second statement for them
            self.connection.execute("DELETE FROM reservations WHERE task_id = ?", (task_id,))
        return tied

    def insert_reservation_event(self, kind: str, agent_id: str, data: dict[str, Any]) -> None:
        self.connection.execute(
            "INSERT INTO reservation_events (ts, kind, agent_id, data_json) VALUES (?, ?, ?, ?)",
            (self.now, kind, agent_id, _dumps(data)),
        )

    def reservation_events(self, kind: str | None = None) -> list[ReservationEvent]:
        where, params = ("WHERE kind = ?", (kind,)) if kind else ("", ())
        rows = self.connection.execute(
            f"SELECT id, ts, kind, agent_id, data_json FROM reservation_events {where} ORDER BY id",
            params,
        ).fetchall()
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
            since=since, kinds=kinds, task_id=task_id, agent_id=agent_id, limit=limit, marker="?",
            contains=lambda column: f"instr({column}, ?) > 0", one_of=lambda n: f"IN ({', '.join('?' * n)})",
        )
        return [audit_row(row, _loads) for row in self.connection.execute(query, params).fetchall()]

    # escalations

    _ESCALATION_COLUMNS = "id, agent_id, bead_id, target, level, status, context, created_at, updated_at"

    def escalations(
        self, *, status: str | None = None, agent_id: str | None = None, bead_id: str | None = None,
        escalation_id: str | None = None,
    ) -> list[Escalation]:
        where, params = _where([
            ("status = ?", status), ("agent_id = ?", agent_id), ("bead_id = ?", bead_id), ("id = ?", escalation_id),
        ])
        rows = self.connection.execute(
            f"SELECT {self._ESCALATION_COLUMNS} FROM escalations {where} ORDER BY created_at, id", params
        ).fetchall()
        return [Escalation(*row) for row in rows]

    def put_escalation(self, escalation: Escalation) -> None:
        self.connection.execute(
            f"INSERT INTO escalations ({self._ESCALATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET target = excluded.target, level = excluded.level,"
            " status = excluded.status, context = excluded.context, updated_at = excluded.updated_at",
            (
                escalation.id, escalation.agent_id, escalation.bead_id, escalation.target, escalation.level,
                escalation.status, escalation.context, escalation.created_at, escalation.updated_at,
            ),
        )

    def insert_escalation_event(self, escalation_id: str, kind: str, data: dict[str, Any]) -> None:
        self.connection.execute(
            "INSERT INTO escalation_events (escalation_id, ts, kind, data_json) VALUES (?, ?, ?, ?)",
            (escalation_id, self.now, kind, _dumps(data)),
        )

    def escalation_events(self, escalation_id: str) -> list[dict[str, Any]]:
        rows = self.connection.execute(
            "SELECT ts, kind, data_json FROM escalation_events WHERE escalation_id = ? ORDER BY id",
            (escalation_id,),
        ).fetchall()
        return [
            {"ts": row[0], "kind": row[1], "data": _loads(row[2], f"escalation_events.data_json of {escalation_id!r}")}
            for row in rows
        ]

    # agent-mail queued by an operation, delivered after its commit

    def enqueue_mail(self, message: dict[str, Any]) -> None:
        """Queue ``message`` (its ``id`` and ``to`` set) for delivery once this transaction commits."""
        self.connection.execute(
            "INSERT INTO mail_outbox (id, recipient, message_json, created_at) VALUES (?, ?, ?, ?)",
            (message["id"], message["to"], _dumps(message), self.now),
        )

    def pending_mail(self, message_ids: Collection[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Queued messages not yet delivered (only ``message_ids``, when given), oldest first: (id, message)."""
        where = ""
        if message_ids is not None:
            where = f" AND id IN ({', '.join('?' * len(message_ids))})"
        rows = self.connection.execute(
            f"SELECT id, message_json FROM mail_outbox WHERE delivered_at IS NULL{where} ORDER BY created_at, id",
            tuple(message_ids or ()),
        ).fetchall()
        return [(row[0], as_object(_loads(row[1], f"mail_outbox.message_json of {row[0]!r}"))) for row in rows]

    def mark_mail_delivered(self, message_ids: Sequence[str]) -> None:
        self.connection.executemany(
            "UPDATE mail_outbox SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL",
            [(self.now, message_id) for message_id in message_ids],
        )


    # metrics

    def metrics_snapshot(self) -> dict[str, dict[str, int]]:
        """Counts for the Prometheus families, all read from the store in one snapshot.

        The counts of history rows (``task_events``, ``evidence``,
        ``reservation_events``) include the totals `maf db cleanup` folded into
        ``counters`` before deleting rows, so they never go down.
        """
        def grouped(sql: str, *params: Any) -> dict[str, int]:
            return {str(key): count for key, count in self.connection.execute(sql, params).fetchall()}

        folded: dict[str, dict[str, int]] = {}
        for name, label, value in self.connection.execute("SELECT name, label, value FROM counters"):
            folded.setdefault(str(name), {})[str(label)] = int(value)

        def with_folded(table: str, live: dict[str, int]) -> dict[str, int]:
            totals = dict(live)
            for label, value in folded.get(table, {}).items():
                totals[label] = totals.get(label, 0) + value
            return totals

        snapshot = {
            "tasks": grouped("SELECT state, COUNT(*) FROM tasks GROUP BY state"),
            "leases": grouped(
                "SELECT CASE WHEN lease_expires_at > ? THEN 'active' ELSE 'expired' END, COUNT(*)"
                " FROM leases GROUP BY 1", self.now,
            ),
            "reservations": grouped(
                "SELECT CASE WHEN expires_at > ? THEN 'active' ELSE 'expired' END, COUNT(*)"
                " FROM reservations GROUP BY 1", self.now,
            ),
            "reservation_events": grouped("SELECT kind, COUNT(*) FROM reservation_events GROUP BY kind"),
            "escalations": grouped("SELECT status, COUNT(*) FROM escalations GROUP BY status"),
            "evidence": grouped("SELECT result, COUNT(*) FROM evidence GROUP BY result"),
            "task_events": grouped(
                "SELECT kind, COUNT(*) FROM events WHERE kind IN ('rollback', 'expire', 'exhaust') GROUP BY kind"
            ),
        }
        snapshot["task_events"] = with_folded("events", snapshot["task_events"])
        snapshot["evidence"] = with_folded("evidence", snapshot["evidence"])
        snapshot["reservation_events"] = with_folded("reservation_events", snapshot["reservation_events"])
        return snapshot

    # agents and the running histograms of operation durations

    def record_activity(self, agent_id: str | None, client: str, observation: Observation | None = None) -> None:
        if agent_id is not None:
            self.connection.execute(
                "INSERT INTO agents (agent_id, client, first_seen, last_seen) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (agent_id) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen),"
                " client = CASE WHEN excluded.client = '' THEN client ELSE excluded.client END"
                " WHERE excluded.last_seen >= last_seen + ? OR excluded.client NOT IN ('', client)",
                (agent_id, client, self.now, self.now, SEEN_REFRESH_MS),
            )
        if observation is not None:
            self.connection.execute(
                "INSERT INTO operation_durations (operation, outcome, le_us, shard, count, sum_us, max_us)"
                " VALUES (?, ?, ?, 0, 1, ?, ?) ON CONFLICT (operation, outcome, le_us, shard) DO UPDATE SET"
                " count = count + 1, sum_us = sum_us + excluded.sum_us, max_us = MAX(max_us, excluded.max_us)",
                (observation.operation, observation.outcome, observation.le_us, observation.duration_us,
                 observation.duration_us),
            )

    def agents(self) -> list[AgentSeen]:
        rows = self.connection.execute(
            "SELECT agent_id, client, first_seen, last_seen FROM agents ORDER BY agent_id"
        ).fetchall()
        return [AgentSeen(*row) for row in rows]

    def delete_agent(self, agent_id: str) -> None:
        self.connection.execute("DELETE FROM agents WHERE agent_id = ?", (agent_id,))

    def duration_buckets(self) -> list[DurationBucket]:
        rows = self.connection.execute(
            "SELECT operation, outcome, le_us, SUM(count), SUM(sum_us), MAX(max_us) FROM operation_durations"
            " GROUP BY operation, outcome, le_us ORDER BY operation, outcome, le_us"
        ).fetchall()
        return [DurationBucket(*row) for row in rows]

    def operation_stats(self) -> list[OperationStats]:
        rows = self.connection.execute(
            "SELECT operation, SUM(count), SUM(sum_us), MAX(max_us) FROM operation_durations"
            " GROUP BY operation ORDER BY MAX(max_us) DESC, operation"
        ).fetchall()
        return [OperationStats(*row) for row in rows]


def _real_path(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: connecting says what is wrong
        return path


class SQLiteStore:
    """The runtime store in one SQLite file. Open it with :func:`pytest_maf.store.open_store`."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock = system_clock,
        default_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        self.path = path
        self.clock = clock
        self.default_max_attempts = default_max_attempts
        self.lease_ttl_ms = lease_ttl_ms
        self.busy_timeout_s = busy_timeout_s
        self._connection: sqlite3.Connection | None = None
        self._immutable = False  # opened as a file nobody writes (connect_reading_only): read anew each time
        self._one_at_a_time = sharing.OneAtATime()
        self._writer_lock = writer_lock_of(path, self._busy)
        self._checkpointer = Checkpointer(_real_path(path), self._writer_lock.path)
        sharing.close_in_children(self)

    def close_inherited(self) -> str | None:
        """In a forked child, close the parent's connection (:mod:`~pytest_maf.store.sharing`); one in a
        write is left as it is, and its database's path returned."""
        connection, self._connection = self._connection, None
        in_use = self._one_at_a_time.inside  # a thread of the parent was in a transaction
        self._one_at_a_time.reset()
        if connection is None:
            return None
        if in_use or connection.in_transaction:
            sharing.set_aside(connection)  # its mutex may be held for good; its rollback would undo the parent's commit
            return str(self._checkpointer.db_path)
        connection.close()
        return None

    @property
    def connection(self) -> sqlite3.Connection:
        """The open connection; opened (and waited for, while busy) on first use, and anew in a forked
        child (:mod:`~pytest_maf.store.sharing`)."""
        if self._connection is None:
            self._retrying_busy(self._open, time.monotonic() + self.busy_timeout_s)
        assert self._connection is not None
        return self._connection

    def _open(self) -> None:
        if sharing.written_at_fork(str(self._checkpointer.db_path)):
            raise StoreError(
                f"this process was forked during a write to {self.path}: SQLite cannot be used safely from"
                " it; fork outside the store's operations, before opening it, or start workers with 'spawn'"
            )
        if self.path.is_file() and not os.access(self.path, os.W_OK):
            self._open_reading_only()  # views still show it; a write says why not
            return
        try:
            self._connection = connect(self.path)
        except sqlite3.OperationalError as error:  # a folder this user may not write: no -shm can be made
            if "readonly" not in str(error) or not unwritable(self.path):
                raise
            self._open_reading_only()

    def _open_reading_only(self) -> None:
        self._immutable = not os.path.exists(f"{self.path}-wal")
        self._connection = connect_reading_only(self.path, immutable=self._immutable)

    backend = "sqlite"

    @property
    def location(self) -> str:
        return str(self.path)

    def reopen(self) -> SQLiteStore:
        return SQLiteStore(
            self.path, clock=self.clock, default_max_attempts=self.default_max_attempts,
            lease_ttl_ms=self.lease_ttl_ms, busy_timeout_s=self.busy_timeout_s,
        )

    def close(self) -> None:
        self._writer_lock.close()
        if self._connection is not None:
            self._connection.close()  # first: the checkpointer may close a descriptor of the WAL-index
            self._connection = None
        self._checkpointer.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unreadable(self, error: sqlite3.Error) -> StoreError:
        return unusable(self.path, error)

    def _busy(self, waited_s: float) -> StoreBusyError:
        return store_busy(self.path, self._writer_lock, waited_s)

    def _retrying_busy(self, attempt: Callable[[], T], deadline: float) -> T:
        """Run ``attempt`` until it is not refused as busy, or ``deadline`` passes."""
        started = time.monotonic()
        retries = 0
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as error:
                if not _is_busy(error):
                    raise self._unreadable(error) from None
                if time.monotonic() >= deadline:
                    raise self._busy(time.monotonic() - started) from None
                retries += 1
                import random  # here: most processes never wait, and the import costs each of them

                # Jittered, capped backoff: contenders spread out instead of
                # waking together and colliding again.
                time.sleep(random.uniform(0, min(0.0001 * (2 ** min(retries, 6)), 0.004)))
            except sqlite3.Error as error:
                raise self._unreadable(error) from None

    def _run(self, begin: str, operation: Callable[[SQLiteTransaction], T], deadline: float | None = None) -> T:
        deadline = time.monotonic() + self.busy_timeout_s if deadline is None else deadline

        def attempt() -> T:
            connection = self.connection
            began_in = sharing.generation()
            try:
                connection.execute(begin)  # in the try: interrupted once it has begun, it is rolled back
                transaction = SQLiteTransaction(
                    connection, self.clock(), self.default_max_attempts, self.lease_ttl_ms
                )
                result = operation(transaction)
                if sharing.generation() != began_in:
                    raise sharing.forked_inside(self.path)
                connection.execute("COMMIT")
                return result
            except BaseException:
                if sharing.generation() == began_in and connection.in_transaction:  # else the parent's to end
                    connection.execute("ROLLBACK")
                raise

        return self._retrying_busy(attempt, deadline)

    def write(self, operation: Callable[[SQLiteTransaction], T]) -> T:
        """Run ``operation`` in one ``BEGIN IMMEDIATE`` transaction; all of it or none. Another thread's
        transaction on this store is waited for (:mod:`~pytest_maf.store.sharing`)."""
        return self._one_at_a_time.run(lambda: self._write(operation))

    def _write(self, operation: Callable[[SQLiteTransaction], T]) -> T:
        deadline = time.monotonic() + self.busy_timeout_s  # one bound for the lock and the transaction
        try:
            self._writer_lock.acquire(deadline)
            result = self._run("BEGIN IMMEDIATE", operation, deadline)
        finally:
            self._writer_lock.release()  # whatever was taken, whatever interrupted
        self._checkpointer.after_write(self.connection)  # the others write on meanwhile
        return result

    def read(self, operation: Callable[[SQLiteTransaction], T]) -> T:
        """Run ``operation`` against one consistent snapshot.

        Text that is not UTF-8 (written by another tool, or damage) fails a read; it is read
        again with each such byte shown as U+FFFD, so one bad row does not hide the store from
        every view. Writes still refuse it.
        """
        return self._one_at_a_time.run(lambda: self._read_anew(operation) if self._immutable else self._read(operation))

    def _read_anew(self, operation: Callable[[SQLiteTransaction], T]) -> T:
        """A read of a store opened as a file nobody writes, which SQLite never looks at again: opened
        anew for each read (a `status --watch` sees what a writer with the rights did since), and read
        once more when it looked damaged (a writer's checkpoint under way while it read)."""
        self._drop_connection()  # the one an earlier read left, which sees the file as it was then
        try:
            return self._read(operation)
        except DamagedStoreError:
            self._drop_connection()
            return self._read(operation)

    def _drop_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _read(self, operation: Callable[[SQLiteTransaction], T]) -> T:
        try:
            return self._run("BEGIN", operation)
        except StoreError as error:
            if "Could not decode to UTF-8" not in str(error):
                raise
        self.connection.text_factory = _lenient_text
        try:
            return self._run("BEGIN", operation)
        finally:
            self.connection.text_factory = str

    # schema

    def _alone(self, body: Callable[[], T]) -> T:
        """``body`` on the connection while no other thread's transaction is under way on it."""
        return self._one_at_a_time.run(body)

    def schema_version(self) -> int:
        return self._alone(self._schema_version)

    def _schema_version(self) -> int:
        return int(self.connection.execute("PRAGMA user_version").fetchone()[0])

    def table_names(self) -> list[str]:
        return self._alone(self._table_names)

    def _table_names(self) -> list[str]:
        from pytest_maf.store.verify import user_tables

        return user_tables(self.connection)

    def check_schema_version(self) -> int:
        """Refuse a database that is not a pytest-maf store (foreign, emptied or
        damaged) or that a newer pytest-maf wrote; return its schema version."""
        return self._alone(self._check_schema_version)

    def _check_schema_version(self) -> int:
        try:
            application_id = int(self.connection.execute("PRAGMA application_id").fetchone()[0])
            version = self._schema_version()
            tables = [] if application_id == schema.APPLICATION_ID else self._table_names()
        except sqlite3.Error as error:
            raise self._unreadable(error) from None
        problem = schema.not_ours(application_id, version, tables)
        if problem:
            raise StoreError(f"the runtime database {self.path} {problem}")
        if version > schema.SCHEMA_VERSION:
            raise NewerStoreError(
                f"the runtime database {self.path} has schema version {version}, newer than"
                f" this pytest-maf knows ({schema.SCHEMA_VERSION}): upgrade pytest-maf"
            )
        return version

    def migrate(self, *, fresh: bool = False) -> list[int]:
        """Apply the migrations this database lacks; return the versions applied.

        ``fresh`` is for a database file just created for a new store, which
        is empty and unmarked until its first migration.
        """
        try:
            self._alone(lambda: self.connection.execute("PRAGMA journal_mode = WAL"))
        except sqlite3.Error as error:
            raise self._unreadable(error) from None

        def apply(transaction: SQLiteTransaction) -> list[int]:
            current = self._schema_version() if fresh else self._check_schema_version()
            applied = []
            for version in range(current + 1, schema.SCHEMA_VERSION + 1):
                for statement in schema.split_statements(schema.MIGRATIONS[version - 1]):
                    transaction.connection.execute(statement)
                applied.append(version)
            if applied:
                transaction.connection.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
            transaction.connection.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
            return applied

        return self.write(apply)

    def wait_for_work(self, timeout_s: float, event: WaitEvent = "ready") -> None:
        """SQLite cannot tell another process that a task became READY or a reservation was released: this only waits."""
        time.sleep(max(0.0, timeout_s))

    def writer_turns(self) -> dict[str, float]:
        """How this process's writes used the writers' turn on this store (its lock file): the turns
        they took, and the seconds they waited for them and held them; all 0 without a lock file."""
        lock = self._writer_lock
        return {"turns": lock.turns, "waited_s": lock.waited_s, "held_s": lock.held_s}

    def integrity_problems(self) -> list[str]:
        """SQLite's ``quick_check``: [] when the file is sound."""
        problems = [str(row[0]) for row in self.pragma("quick_check")]
        return [] if problems == ["ok"] else problems

    def pragma(self, name: str) -> list[tuple[Any, ...]]:
        """Read a PRAGMA (``integrity_check``, ``foreign_keys``, ``journal_mode`` ...)."""
        try:
            return self._alone(lambda: [tuple(row) for row in self.connection.execute(f"PRAGMA {name}")])
        except sqlite3.Error as error:
            raise self._unreadable(error) from None
