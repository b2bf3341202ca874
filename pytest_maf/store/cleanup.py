"""`maf db cleanup`: delete counted history past a window, its totals kept, on SQLite and PostgreSQL.

What goes (each older than the cut-off):

* ``events`` and ``evidence`` of DONE and DEAD tasks last changed before it;
* ``reservation_events`` written before it;
* ``escalation_events`` written before it, of escalations no longer active
  (an open escalation keeps its whole history).

Before rows are deleted their counts, by the column the metrics count them
by, are added to ``counters`` in the same transaction, so every ``*_total``
counter of ``maf metrics`` keeps its value (see ``metrics_snapshot``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from pytest_maf.errors import StoreError

if TYPE_CHECKING:
    from pytest_maf.store.postgres import PostgresStore

# Rows of DONE/DEAD tasks last changed before the cut-off.
_FINISHED = "task_id IN (SELECT id FROM tasks WHERE state IN ('DONE', 'DEAD') AND updated_at < :cutoff)"
# (table, the column its rows are counted by in the metrics, which of its rows are past the window)
HISTORY: tuple[tuple[str, str, str], ...] = (
    ("events", "kind", _FINISHED),
    ("evidence", "result", _FINISHED),
    ("reservation_events", "kind", "ts < :cutoff"),
    ("escalation_events", "kind",
     "ts < :cutoff AND escalation_id IN (SELECT id FROM escalations WHERE status <> 'active')"),
)

Execute = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def _count_and_delete(execute: Execute, placeholder: str, older_than_ms: int, apply: bool) -> dict[str, int]:
    """Count (and with ``apply`` fold into ``counters`` and delete) the rows past the window, per table."""

    def query(text: str) -> tuple[str, list[int]]:
        return text.replace(":cutoff", placeholder), [older_than_ms] * text.count(":cutoff")

    finished_tasks = "SELECT COUNT(*) FROM tasks WHERE state IN ('DONE', 'DEAD') AND updated_at < :cutoff"
    counts = {"tasks": int(execute(*query(finished_tasks))[0][0])}
    for table, column, past in HISTORY:
        counts[table] = int(execute(*query(f"SELECT COUNT(*) FROM {table} WHERE {past}"))[0][0])
        if apply and counts[table]:
            execute(*query(
                f"INSERT INTO counters (name, label, value) SELECT '{table}', {column}, COUNT(*)"
                f" FROM {table} WHERE {past} GROUP BY {column}"
                " ON CONFLICT (name, label) DO UPDATE SET value = counters.value + excluded.value"
            ))
            execute(*query(f"DELETE FROM {table} WHERE {past}"))
    return counts


def cleanup_sqlite(db_path: Path, older_than_ms: int, apply: bool, busy_timeout_s: float | None = None) -> dict[str, int]:
    """:func:`_count_and_delete` on the SQLite store at ``db_path``, in one write transaction in the
    writers' turn, waited for as every write is (``busy_timeout_s``, the store's default if None), then
    :class:`~pytest_maf.errors.StoreBusyError`."""
    from pytest_maf.store.maintenance import _require_store
    from pytest_maf.store.sqlite import DEFAULT_BUSY_TIMEOUT_S, connect, maintenance_turn

    _require_store(db_path)
    connection = connect(db_path)
    waits = DEFAULT_BUSY_TIMEOUT_S if busy_timeout_s is None else busy_timeout_s

    def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return connection.execute(sql, tuple(params)).fetchall()

    try:
        with maintenance_turn(db_path, connection, waits):
            try:
                connection.execute("BEGIN IMMEDIATE")
                counts = _count_and_delete(execute, "?", older_than_ms, apply)
                connection.execute("COMMIT")
            finally:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
    except sqlite3.Error as error:
        raise StoreError(f"cleanup of {db_path} failed: {error}") from None
    finally:
        connection.close()
    return counts


def cleanup_postgres(store: PostgresStore, older_than_ms: int, apply: bool) -> dict[str, int]:
    """:func:`_count_and_delete` on a PostgreSQL store, in one transaction (retried whole on contention)."""
    store.check_schema_version()

    def body(connection: Any) -> dict[str, int]:
        def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            cursor = connection.execute(sql.encode(), tuple(params))
            return list(cursor.fetchall()) if cursor.description is not None else []

        return _count_and_delete(execute, "%s", older_than_ms, apply)

    return store.run_on_connection(body, writing=True)
