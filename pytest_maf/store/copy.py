"""`maf db copy`: a whole store from one backend to another (SQLite file <-> PostgreSQL), rows as they are.

Every table is copied row for row in the order of its foreign keys, with its
ids and times as stored: a task's rowid order on SQLite (its claim's last
tie-breaker) becomes ``task_options.seq`` order on PostgreSQL and back. The
source is read in one snapshot; the destination is written in one
transaction, so it holds the whole copy or nothing. A destination that
already holds rows is refused unless ``force`` (then its rows are replaced in
that same transaction). Afterwards the destination's row count per table is
compared with the source's, and its schema is checked.

The SQL of each backend stays here: both speak the same column lists, only
their placeholders differ.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pytest_maf.database_url import is_database_url
from pytest_maf.errors import StoreError, UsageError
from pytest_maf.store.sqlite import DEFAULT_BUSY_TIMEOUT_S

if TYPE_CHECKING:
    from pytest_maf.store.protocol import Store

# Foreign-key order: a row's parent is always copied before it.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "tasks": ("id", "state", "priority", "payload_json", "created_at", "updated_at", "attempts", "token_budget",
              "cost_budget_cents", "policy_label"),
    "task_options": ("task_id", "max_attempts", "kind"),
    "leases": ("task_id", "agent_id", "lease_expires_at", "attempt"),
    "events": ("id", "task_id", "ts", "kind", "data_json"),
    "evidence": ("task_id", "attempt", "verifier", "result", "details_json"),
    "reservations": ("id", "agent_id", "pattern", "anchor", "exclusive", "reason", "created_at", "expires_at",
                     "task_id"),
    "reservation_events": ("id", "ts", "kind", "agent_id", "data_json"),
    "escalations": ("id", "agent_id", "bead_id", "target", "level", "status", "context", "created_at", "updated_at"),
    "escalation_events": ("id", "escalation_id", "ts", "kind", "data_json"),
    "counters": ("name", "label", "value"),
    "mail_outbox": ("id", "recipient", "message_json", "created_at", "delivered_at"),
    "agents": ("agent_id", "client", "first_seen", "last_seen"),
    "operation_durations": ("operation", "outcome", "le_us", "shard", "count", "sum_us", "max_us"),
}
# Tables whose integer id PostgreSQL generates: its sequence is moved past the copied ids.
IDENTITY_TABLES = ("events", "reservations", "reservation_events", "escalation_events")

# The order rows are read in, per backend: insertion order, which the destination then keeps.
_SQLITE_ORDER = {table: "rowid" for table in TABLE_COLUMNS}
_POSTGRES_ORDER = {
    **{table: "1" for table in TABLE_COLUMNS},
    **{table: "id" for table in IDENTITY_TABLES},
    "tasks": "(SELECT o.seq FROM task_options AS o WHERE o.task_id = tasks.id) NULLS FIRST, created_at, id",
    "task_options": "seq",
    "leases": "task_id",
    "evidence": "task_id, attempt, verifier",
    "counters": "name, label",
    "mail_outbox": "created_at, id",
    "escalations": "created_at, id",
    "agents": "agent_id",
    "operation_durations": "operation, outcome, le_us, shard",
}

Rows = dict[str, list[tuple[Any, ...]]]


@dataclass(frozen=True)
class CopyReport:
    source: str  # as shown to people: a path, or a URL without its password
    destination: str
    rows: dict[str, int]  # per table, equal on both sides
    replaced: int  # rows the destination held before (only with force)


def _same_location(source: str, destination: str, source_schema: str, destination_schema: str) -> bool:
    if is_database_url(source) != is_database_url(destination):
        return False
    if not is_database_url(source):
        if os.path.realpath(source) == os.path.realpath(destination):
            return True
        try:
            return os.path.samefile(source, destination)
        except OSError:
            return False
    from psycopg.conninfo import conninfo_to_dict

    def where(url: str, schema: str) -> tuple[str, str, str, str]:
        try:
            info = conninfo_to_dict(url.strip())
        except Exception:  # an unparsable URL: the open that follows says why
            return (url, "", "", schema)
        host = str(info.get("host") or "localhost")
        return (host, str(info.get("port") or "5432"), str(info.get("dbname") or info.get("user") or ""), schema)

    return where(source, source_schema) == where(destination, destination_schema)


def _in_transaction(store: Store, body: Callable[[Any], Any], *, writing: bool) -> Any:
    """``body(connection)`` in one transaction of ``store``'s backend (a snapshot when only reading)."""
    if store.backend == "sqlite":
        run = store.write if writing else store.read
        return run(lambda transaction: body(transaction.connection))  # type: ignore[attr-defined]
    return store.run_on_connection(body, writing=writing)  # type: ignore[attr-defined]


def _placeholders(store: Store, count: int) -> str:
    return ", ".join(["?" if store.backend == "sqlite" else "%s"] * count)


def read_rows(store: Store) -> Rows:
    """Every row of every table of ``store``, in insertion order, read in one snapshot."""
    order = _SQLITE_ORDER if store.backend == "sqlite" else _POSTGRES_ORDER

    def body(connection: Any) -> Rows:
        return {
            table: [tuple(row) for row in connection.execute(
                f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order[table]}"
            ).fetchall()]
            for table, columns in TABLE_COLUMNS.items()
        }

    result: Rows = _in_transaction(store, body, writing=False)
    return result


def count_rows(store: Store) -> dict[str, int]:
    def body(connection: Any) -> dict[str, int]:
        return {table: int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]) for table in TABLE_COLUMNS}

    result: dict[str, int] = _in_transaction(store, body, writing=False)
    return result


def write_rows(store: Store, rows: Rows, *, force: bool) -> int:
    """Write ``rows`` into ``store`` in one transaction; the rows it held before (refused unless ``force``)."""

    def body(connection: Any) -> int:
        held = {table: int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]) for table in TABLE_COLUMNS}
        replaced = sum(held.values())
        if replaced and not force:
            listed = ", ".join(f"{table} {count}" for table, count in held.items() if count)
            raise UsageError(
                f"the destination {store.location} already holds rows ({listed}); nothing was written:"
                " copy into a new store, or add --force to replace its rows"
            )
        for table in reversed(TABLE_COLUMNS):
            connection.execute(f"DELETE FROM {table}")
        for table, columns in TABLE_COLUMNS.items():
            if rows[table]:
                statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({_placeholders(store, len(columns))})"
                cursor = connection.cursor()
                cursor.executemany(statement, rows[table])
        if store.backend != "sqlite":
            for table in IDENTITY_TABLES:
                connection.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 1), MAX(id) IS NOT NULL)"
                    f" FROM {table}"
                )
        return replaced

    result: int = _in_transaction(store, body, writing=True)
    return result


def schema_problems_of(store: Store) -> list[str]:
    """How ``store``'s schema differs from the current one; [] when sound."""
    if store.backend == "sqlite":
        from pytest_maf.store.verify import schema_problems

        return schema_problems(Path(store.location))
    return store.integrity_problems()


def copy_store(
    source: str, destination: str, *, force: bool = False, source_schema: str | None = None,
    destination_schema: str | None = None, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
) -> CopyReport:
    """Copy the whole store at ``source`` into ``destination`` (each a file path or a ``postgresql://`` URL).

    A missing destination is created. Refuses a destination that holds rows
    (unless ``force``) and copying a store onto itself, writing nothing. A lock
    held on either store past ``busy_timeout_s`` is a
    :class:`~pytest_maf.errors.StoreBusyError`.
    Example::

        copy_store(".maf/runtime.db", "postgresql://maf@db/agents")
    """
    from pytest_maf.store import open_store
    from pytest_maf.store.postgres_schema import DEFAULT_SCHEMA

    source_schema = source_schema or DEFAULT_SCHEMA
    destination_schema = destination_schema or DEFAULT_SCHEMA
    if _same_location(source, destination, source_schema, destination_schema):
        raise UsageError("the source and the destination are the same store: copy into another file, database or schema")
    if not is_database_url(destination) and Path(destination).is_dir():
        raise UsageError(f"{destination} is a directory; give a database file name for the destination")
    if not is_database_url(destination) and os.path.lexists(destination):
        from pytest_maf.files import SQLITE_HEADER, regular_file_head

        if regular_file_head(Path(destination), len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise UsageError(
                f"{destination} exists and is no database; nothing was written: copy into a new file,"
                " or into a store (with --force to replace its rows)"
            )
    with open_store(source, schema=source_schema, busy_timeout_s=busy_timeout_s) as source_store:
        rows = read_rows(source_store)
        made = not _destination_exists(destination, destination_schema)
        try:
            return _copy_into(source_store, rows, destination, destination_schema, force, busy_timeout_s)
        except BaseException:
            if made:  # a copy that failed leaves no new store behind (a schema of empty tables, a file)
                _remove_new_store(destination, destination_schema, busy_timeout_s)
            raise


def _copy_into(
    source_store: Store, rows: Rows, destination: str, schema: str, force: bool, busy_timeout_s: float
) -> CopyReport:
    """Write ``rows`` into the store at ``destination`` (made if missing), then check its row counts and schema."""
    from pytest_maf.store import open_store

    with open_store(destination, create=True, schema=schema, busy_timeout_s=busy_timeout_s) as destination_store:
        replaced = write_rows(destination_store, rows, force=force)
        expected = {table: len(found) for table, found in rows.items()}
        counted = count_rows(destination_store)
        if counted != expected:
            differ = ", ".join(
                f"{table} {counted[table]} (source {expected[table]})" for table in expected
                if counted[table] != expected[table]
            )
            raise StoreError(f"the copy in {destination_store.location} has other row counts than the source: {differ}")
        problems = schema_problems_of(destination_store)
        if problems:
            raise StoreError(f"the copy in {destination_store.location} fails the schema check: {'; '.join(problems)}")
        return CopyReport(source_store.location, destination_store.location, counted, replaced)


def _destination_exists(destination: str, schema: str) -> bool:
    """Whether the destination file or PostgreSQL schema exists (when that cannot be told: yes, so it is kept)."""
    if not is_database_url(destination):
        return os.path.lexists(destination)
    import psycopg

    try:
        with psycopg.connect(destination, autocommit=True, connect_timeout=10) as connection:
            return connection.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is not None
    except psycopg.Error:
        return True


def _remove_new_store(destination: str, schema: str, busy_timeout_s: float) -> None:
    """Remove the store this copy made at ``destination``, unless it holds rows by now (a copy into
    the same new place begun beside this one, that succeeded); what cannot be removed is left as it is."""
    from pytest_maf.errors import MafError
    from pytest_maf.store import open_store

    try:
        with open_store(destination, schema=schema, busy_timeout_s=busy_timeout_s) as made:
            if any(count_rows(made).values()):
                return
    except MafError:
        pass  # made only in part (no tables yet): nothing in it to keep
    if not is_database_url(destination):
        from pytest_maf.files import store_files

        for path in store_files(Path(destination)):
            with contextlib.suppress(OSError):
                path.unlink()
        return
    from pytest_maf.store.postgres import drop_schema

    with contextlib.suppress(MafError):
        drop_schema(destination, schema)

