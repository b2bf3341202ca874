"""The PostgreSQL backend of the runtime store (psycopg 3): one store for agents on many machines.

The same tables and the same rules as the SQLite backend, in a schema of the
store's own (``maf`` unless ``runtime.database_schema`` says otherwise):

* **Time comes from the database server.** A transaction's ``now`` is read
  once, from ``clock_timestamp()``, when the operation first needs it, so
  machines whose clocks disagree still agree on every lease. The client's
  clock is used only when a test asks for it (``use_client_clock``).
* **Writes run at READ COMMITTED with row locks on what they decide by.** In
  a write transaction the task and lease an operation checks are read
  ``FOR NO KEY UPDATE`` (a task's row before its lease's), so its fencing
  check and its write see one state; a claim takes the first READY task with
  ``FOR UPDATE SKIP LOCKED``, and a reclaim skips leases another transaction
  is working on.
* **Reservation writes are serialized per store.** The first reservation
  read or write of a write transaction takes a transaction-level advisory
  lock (``pg_advisory_xact_lock``), so overlapping requests are decided one
  after the other and glob overlap stays exact; its ``now`` is read (again)
  once the lock is held. Escalations have a lock of their own.
* **Contention is waited out, within the busy timeout.** A serialization
  failure, a deadlock or a lock wait past the deadline retries the whole
  transaction with jittered backoff; past ``busy_timeout_s`` it is
  :class:`~pytest_maf.errors.StoreBusyError`.
* The URL's password is never shown: every message names the store by
  :func:`~pytest_maf.database_url.redact_url`.
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from pytest_maf.config import DEFAULT_MAX_ATTEMPTS
from pytest_maf.clock import Clock, system_clock
from pytest_maf.database_url import hide_password, redact_url, refuse_unusable_url, schema_problem
from pytest_maf.errors import NewerStoreError, StoreBusyError, StoreError, StoreUnreachableError, UsageError
from pytest_maf.store import postgres_schema, sharing
from pytest_maf.store.postgres_schema import DEFAULT_SCHEMA, VERSION_TABLE
from pytest_maf.store.postgres_transaction import MIGRATION_LOCK, NOW_MS, PostgresTransaction
from pytest_maf.store.schema import split_statements
from pytest_maf.store.sqlite import DEFAULT_BUSY_TIMEOUT_S, DEFAULT_LEASE_TTL_MS

if TYPE_CHECKING:
    from pytest_maf.store.protocol import WaitEvent
    from pytest_maf.store.protocol import Store

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10
# Whole-transaction retries: another transaction won a row, a lock, or the race.
RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected, pg_errors.LockNotAvailable)


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"pytest-maf:{schema}".encode(), digest_size=4).digest(), "big", signed=True)


class PostgresStore:
    """The runtime store in a PostgreSQL schema. Open it with :func:`pytest_maf.store.open_store`."""

    backend = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        clock: Clock = system_clock,
        use_client_clock: bool = False,
        default_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        problem = schema_problem(schema)
        if problem:
            raise UsageError(f"runtime.database_schema: {problem}")
        refuse_unusable_url(url)
        self.url = url.strip()
        self.schema = schema
        self.clock = clock
        self.use_client_clock = use_client_clock  # tests only: time from `clock`, not the server
        self.default_max_attempts = default_max_attempts
        self.lease_ttl_ms = lease_ttl_ms
        self.busy_timeout_s = busy_timeout_s
        self._key = _lock_key(schema)
        self._ready_channel = f"maf_ready_{schema}"[:63]
        self._released_channel = f"maf_released_{schema}"[:63]
        self._listening: set[str] = set()
        self._connection: psycopg.Connection[Any] | None = None
        self._opened_in = 0  # the fork generation (sharing.generation()) the connection was opened in
        self._one_at_a_time = sharing.OneAtATime()
        sharing.close_in_children(self)

    def close_inherited(self) -> None:
        """In a forked child: its turn among threads starts free (the parent's connection is set aside
        on first use, :attr:`connection`)."""
        self._one_at_a_time.reset()

    @property
    def location(self) -> str:
        return f"{redact_url(self.url)} (schema {self.schema})"

    def reopen(self) -> PostgresStore:
        return PostgresStore(
            self.url, schema=self.schema, clock=self.clock, use_client_clock=self.use_client_clock,
            default_max_attempts=self.default_max_attempts, lease_ttl_ms=self.lease_ttl_ms,
            busy_timeout_s=self.busy_timeout_s,
        )

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The open connection (autocommit: transactions are begun explicitly); opened on first use."""
        if self._connection is not None and self._opened_in != sharing.generation():
            sharing.let_go(self._connection, self._opened_in)  # a parent's, in a forked child: its socket is the parent's
            self._connection, self._listening = None, set()
        if self._connection is None or self._connection.closed:
            try:
                connection = psycopg.connect(
                    self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="pytest-maf",
                )
            except psycopg.Error as error:
                raise StoreUnreachableError(
                    f"cannot reach the PostgreSQL store at {redact_url(self.url)}: {self._said(error)}; check"
                    " MAF_DATABASE_URL (runtime.database_url) and that the server is running"
                ) from None
            connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            self._connection, self._opened_in = connection, sharing.generation()
        return self._connection

    @property
    def server_version(self) -> str:
        """The server's PostgreSQL version, such as ``15.20`` (the connection is opened if need be)."""
        number = self.connection.info.server_version  # 150020 for 15.20
        return f"{number // 10000}.{number % 10000}"

    def close(self) -> None:
        if self._connection is not None:
            sharing.let_go(self._connection, self._opened_in)
            self._connection = None
        self._listening = set()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # errors

    def _said(self, error: BaseException) -> str:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return hide_password(lines[0] if lines else type(error).__name__, self.url)

    def _busy(self, waited_s: float) -> StoreBusyError:
        return StoreBusyError(
            f"the runtime store {self.location} stayed busy for {waited_s:.1f} s (other transactions held"
            " what this one needed); try again, or raise runtime.busy_timeout_seconds (MAF_BUSY_TIMEOUT)"
        )

    def _unusable(self, error: psycopg.Error) -> StoreError:
        if isinstance(error, pg_errors.UndefinedTable):
            return StoreError(f"the runtime store {self.location} is missing a table ({self._said(error)}): run `maf setup`")
        if isinstance(error, pg_errors.InsufficientPrivilege):
            return StoreError(
                f"the runtime store {self.location} refused access ({self._said(error)}): grant the user the"
                " privileges on the schema, or use another runtime.database_schema"
            )
        return StoreError(f"cannot use the runtime store {self.location}: {self._said(error)}")

    # transactions

    def _rollback(self) -> None:
        connection = self._connection
        if connection is None or connection.closed or self._opened_in != sharing.generation():
            return  # none, or the parent's (in a forked child): its socket is the parent's
        if connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return
        try:
            connection.execute("ROLLBACK")
        except psycopg.Error:  # the connection is gone: the server rolled back
            self.close()

    def _transaction(self, begin: str, body: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``body`` in one transaction, retried whole on contention until the busy timeout; another
        thread's transaction on this store is waited for (:mod:`~pytest_maf.store.sharing`)."""
        return self._one_at_a_time.run(lambda: self._retried(begin, body, time.monotonic()))

    def _retried(self, begin: str, body: Callable[[psycopg.Connection[Any]], T], started: float) -> T:
        deadline = started + self.busy_timeout_s
        retries = 0
        reopened = False
        while True:
            connection = self.connection
            try:
                connection.execute(begin.encode())
            except psycopg.OperationalError as error:
                # Nothing of the operation was sent: the server ended the connection while it was idle
                # (a restart, a failover, idle_session_timeout). Once more, on a new connection.
                self.close()
                if reopened:
                    raise self._unusable(error) from None
                reopened = True
                continue
            except BaseException:  # Ctrl-C, say, once the server may have begun it
                self._rollback()
                raise
            try:
                # A lock wait ends at the deadline, as a busy timeout: reads too, which a REINDEX,
                # VACUUM FULL or migration holding a table would otherwise keep waiting for good.
                remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
                connection.execute(f"SET LOCAL lock_timeout = {remaining_ms}".encode())
                result = body(connection)
                if self._opened_in != sharing.generation():  # forked inside the operation
                    raise sharing.forked_inside(self.location)
                connection.execute("COMMIT")
                return result
            except RETRYABLE:
                self._rollback()
                if time.monotonic() >= deadline:
                    raise self._busy(time.monotonic() - started) from None
                retries += 1
                # Jittered, capped backoff: contenders spread out instead of colliding again.
                time.sleep(random.uniform(0, min(0.001 * (2 ** min(retries, 7)), 0.1)))
            except psycopg.DataError as error:
                self._rollback()
                raise UsageError(f"a value cannot be stored in PostgreSQL: {self._said(error)}") from None
            except psycopg.OperationalError as error:
                self.close()  # the connection may be broken: the next use opens a new one
                raise self._unusable(error) from None
            except psycopg.Error as error:
                self._rollback()
                raise self._unusable(error) from None
            except BaseException:
                self._rollback()
                raise

    def _run(self, operation: Callable[[PostgresTransaction], T], writing: bool) -> T:
        def body(connection: psycopg.Connection[Any]) -> T:
            return operation(PostgresTransaction(
                connection, writing=writing, store_key=self._key,
                clock=self.clock if self.use_client_clock else None,
                default_max_attempts=self.default_max_attempts, lease_ttl_ms=self.lease_ttl_ms,
                ready_channel=self._ready_channel, released_channel=self._released_channel,
            ))

        begin = "BEGIN ISOLATION LEVEL READ COMMITTED" if writing else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        return self._transaction(begin, body)

    def write(self, operation: Callable[[PostgresTransaction], T]) -> T:
        """Run ``operation`` in one READ COMMITTED transaction with row and advisory locks; all of it or none."""
        return self._run(operation, writing=True)

    def read(self, operation: Callable[[PostgresTransaction], T]) -> T:
        """Run ``operation`` against one consistent snapshot (REPEATABLE READ, read only)."""
        return self._run(operation, writing=False)

    def run_on_connection(self, body: Callable[[psycopg.Connection[Any]], T], *, writing: bool) -> T:
        """``body(connection)`` in one transaction (READ COMMITTED, or a read-only snapshot), retried whole
        on contention: for whole-store tools (``maf db copy``) that read or write every table."""
        begin = "BEGIN ISOLATION LEVEL READ COMMITTED" if writing else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        return self._transaction(begin, body)

    # schema

    def _tables(self, connection: psycopg.Connection[Any]) -> list[str]:
        rows = connection.execute(
            "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname COLLATE \"C\"",
            (self.schema,),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def _version(self, connection: psycopg.Connection[Any], tables: list[str]) -> int | None:
        if VERSION_TABLE not in tables:
            return None
        row = connection.execute(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}".encode()).fetchone()
        return int(row[0]) if row else 0

    def _checked_version(self, connection: psycopg.Connection[Any], *, missing_ok: bool) -> int:
        tables = self._tables(connection)
        version = self._version(connection, tables)
        if version is None:
            if tables:
                listed = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
                raise StoreError(
                    f"the PostgreSQL schema {self.schema} at {redact_url(self.url)} holds tables that are not a"
                    f" pytest-maf store ({listed}); it is left untouched: set runtime.database_schema"
                    " (MAF_DATABASE_SCHEMA) to a schema of pytest-maf's own"
                )
            if not missing_ok:
                raise StoreError(f"no runtime store at {self.location}: run `maf setup` first")
            return 0
        if version > postgres_schema.SCHEMA_VERSION:
            raise NewerStoreError(
                f"the runtime store {self.location} has schema version {version}, newer than this pytest-maf"
                f" knows ({postgres_schema.SCHEMA_VERSION}): upgrade pytest-maf"
            )
        return version

    def _reading(self, body: Callable[[psycopg.Connection[Any]], T]) -> T:
        return self._transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", body)

    def schema_version(self) -> int:
        return self._reading(lambda connection: self._version(connection, self._tables(connection)) or 0)

    def table_names(self) -> list[str]:
        return [name for name in self._reading(self._tables) if name != VERSION_TABLE]

    def check_schema_version(self) -> int:
        """Refuse a schema that is not a pytest-maf store, or that a newer pytest-maf wrote; its version."""
        return self._reading(lambda connection: self._checked_version(connection, missing_ok=False))

    def migrate(self) -> list[int]:
        """Create the schema if needed and apply the migrations it lacks, in order; the versions applied.

        Concurrent set-ups wait for each other on the store's migration lock.
        """

        def apply(connection: psycopg.Connection[Any]) -> list[int]:
            connection.execute("SELECT pg_advisory_xact_lock(%s::int4, %s::int4)", (self._key, MIGRATION_LOCK))
            connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            current = self._checked_version(connection, missing_ok=True)
            connection.execute(postgres_schema.VERSION_TABLE_DDL.encode())
            applied = []
            for version in range(current + 1, postgres_schema.SCHEMA_VERSION + 1):
                for statement in split_statements(postgres_schema.MIGRATIONS[version - 1]):
                    connection.execute(statement.encode())
                connection.execute(
                    f"INSERT INTO {VERSION_TABLE} (version, applied_at) VALUES (%s, ({NOW_MS}))".encode(), (version,)
                )
                applied.append(version)
            return applied

        return self._transaction("BEGIN ISOLATION LEVEL READ COMMITTED", apply)

    def wait_for_work(self, timeout_s: float, event: WaitEvent = "ready") -> None:
        """Return when a commit made a task READY or released a reservation (NOTIFY), or after ``timeout_s``.

        The first call for an event only starts listening and returns at once,
        so the caller's next look is made while listening: no notice falls between.
        """
        channel = self._ready_channel if event == "ready" else self._released_channel
        try:
            connection = self.connection
            if channel not in self._listening:
                connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                self._listening.add(channel)
                return
            for _ in connection.notifies(timeout=max(0.0, timeout_s), stop_after=1):
                pass
        except psycopg.OperationalError as error:
            self.close()
            raise self._unusable(error) from None
        except psycopg.Error as error:
            raise self._unusable(error) from None

    def integrity_problems(self) -> list[str]:
        """Every way the store's tables differ from the current schema (columns, CHECKs, keys, indexes,
        a table it does not have); [] when sound. PostgreSQL checks its own pages: what can go wrong is a changed schema.

        The reference is built from the same migrations in a scratch schema that is rolled back
        (to a savepoint) before the transaction ends, so nothing of it remains.
        """
        reference = f"maf_reference_{random.getrandbits(48):012x}"

        def compare(connection: psycopg.Connection[Any]) -> list[str]:
            version = self._version(connection, self._tables(connection)) or 0
            current = postgres_schema.SCHEMA_VERSION
            way_out = "a newer pytest-maf wrote it: upgrade pytest-maf" if version > current else "run `maf setup`"
            problems = [] if version == current else [f"schema version is {version}, current is {current} ({way_out})"]
            actual = _describe(connection, self.schema)
            connection.execute("SAVEPOINT reference")
            connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(reference)))
            connection.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(reference)))
            for migration in postgres_schema.MIGRATIONS:
                for statement in split_statements(migration):
                    connection.execute(statement.encode())
            canonical = _describe(connection, reference)
            for table, expected in canonical.items():
                found = actual.get(table)
                if found is None:
                    problems.append(f"table {table} is missing")
                    continue
                problems += [
                    f"table {table}: {aspect} differ from the canonical schema"
                    for aspect, value in expected.items() if found[aspect] != value
                ]
            problems += [  # as the SQLite check says it
                f"table {table} is not part of the pytest-maf schema: drop it, or keep it in a schema of its own"
                for table in sorted(actual) if table not in canonical
            ]
            connection.execute("ROLLBACK TO SAVEPOINT reference")  # the reference schema goes with it
            return problems

        return self._transaction("BEGIN ISOLATION LEVEL READ COMMITTED", compare)


def _one_line(error: BaseException, url: str) -> str:
    """psycopg's message on one line (it holds newlines and tabs), without the URL's password."""
    return hide_password(" ".join(str(error).split()), url)


def drop_schema(url: str, schema: str) -> None:
    """Drop ``schema`` and everything in it, on a connection of its own (a scratch or half-made store)."""
    refuse_unusable_url(url)
    try:
        connection = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="pytest-maf")
    except psycopg.Error as error:
        raise StoreUnreachableError(
            f"cannot reach the PostgreSQL store at {redact_url(url)}: {_one_line(error, url)}; check MAF_DATABASE_URL"
            " (runtime.database_url) and that the server is running"
        ) from None
    try:
        with connection:
            connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    except psycopg.Error as error:
        raise StoreError(f"cannot drop the schema {schema} at {redact_url(url)}: {_one_line(error, url)}") from None


def _describe(connection: psycopg.Connection[Any], schema: str) -> dict[str, dict[str, Any]]:
    """Each table of ``schema``: its columns, constraints and indexes, with the schema's name left out."""
    tables: dict[str, dict[str, Any]] = {}

    def table(name: str) -> dict[str, Any]:
        return tables.setdefault(name, {"columns": [], "CHECK constraints and keys": set(), "indexes": set()})

    def unqualified(text: str) -> str:
        return text.replace(f'"{schema}".', "").replace(f"{schema}.", "")

    for name, *column in connection.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity"
        " FROM information_schema.columns WHERE table_schema = %s ORDER BY table_name, ordinal_position",
        (schema,),
    ):
        if name != VERSION_TABLE:
            table(name)["columns"].append(tuple(column))
    for name, definition in connection.execute(
        "SELECT r.relname, pg_get_constraintdef(c.oid) FROM pg_constraint AS c"
        " JOIN pg_class AS r ON r.oid = c.conrelid JOIN pg_namespace AS n ON n.oid = r.relnamespace"
        " WHERE n.nspname = %s",
        (schema,),
    ):
        if name != VERSION_TABLE:
            table(name)["CHECK constraints and keys"].add(unqualified(definition))
    for name, definition in connection.execute(
        "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)
    ):
        if name != VERSION_TABLE:
            table(name)["indexes"].add(unqualified(definition))
    return tables



if TYPE_CHECKING:  # mypy holds this backend to the store Protocols

    def _is_a_store(store: PostgresStore) -> Store:
        return store
