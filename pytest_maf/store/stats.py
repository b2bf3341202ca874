"""`maf db stats`: each table's rows and size, its indexes and their use, and the slowest recorded operations.

* SQLite: sizes from the ``dbstat`` virtual table when SQLite was built with
  it, else only the file's page count; SQLite counts no index use, so an
  index shows its size alone. The store is opened read-only.
* PostgreSQL: sizes from ``pg_total_relation_size`` and ``pg_relation_size``,
  scans from ``pg_stat_user_tables`` and ``pg_stat_user_indexes`` (since the
  server's statistics were last reset).

Row counts are exact (``COUNT(*)``) on both. The slowest operations are read
from the durations the store records as operations happen
(``operation_durations``: count, total and maximum per operation); a store
without that table shows none, with a note.

Example::

    report = sqlite_stats(Path(".maf/runtime.db"))
    [(table.name, table.rows) for table in report.tables]
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from pytest_maf.store.postgres import PostgresStore

DURATIONS_TABLE = "operation_durations"
NO_DURATIONS = (
    f"this store records no operation durations (no {DURATIONS_TABLE} table): a pytest-maf that records them"
    " brings it with `maf setup`"
)
SLOWEST_SHOWN = 10


@dataclass(frozen=True)
class IndexStats:
    name: str
    table: str
    bytes: int | None  # None: the backend cannot tell
    scans: int | None  # None: the backend counts no index use (SQLite)


@dataclass(frozen=True)
class TableStats:
    name: str
    rows: int
    bytes: int | None  # with its indexes; None: the backend cannot tell
    sequential_scans: int | None = None
    index_scans: int | None = None


@dataclass(frozen=True)
class OperationStats:
    operation: str
    outcome: str
    count: int
    mean_ms: float
    max_ms: float


@dataclass
class StoreStats:
    backend: str
    location: str
    bytes: int  # the whole store: the file(s), or the schema's relations
    tables: list[TableStats]
    indexes: list[IndexStats]
    slowest: list[OperationStats]
    notes: list[str] = field(default_factory=list)


Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


DURATION_COLUMNS = frozenset({"operation", "outcome", "count", "sum_us", "max_us"})


def _slowest(
    query: Query, placeholder: str, tables: Sequence[str], columns: set[str]
) -> tuple[list[OperationStats], list[str]]:
    """The operations with the longest recorded maximum, from the durations table if the store has one."""
    if DURATIONS_TABLE not in tables:
        return [], [NO_DURATIONS]
    if not DURATION_COLUMNS <= columns:
        return [], [f"{DURATIONS_TABLE} lacks the columns {', '.join(sorted(DURATION_COLUMNS - columns))}: not read"]
    rows = query(
        f"SELECT operation, outcome, SUM(count), SUM(sum_us), MAX(max_us) FROM {DURATIONS_TABLE}"
        f" GROUP BY operation, outcome HAVING SUM(count) > 0 ORDER BY MAX(max_us) DESC, operation, outcome"
        f" LIMIT {placeholder}",
        [SLOWEST_SHOWN],
    )
    found = [
        OperationStats(str(operation), str(outcome), int(count), round(int(total) / int(count) / 1000, 3),
                       round(int(longest) / 1000, 3))
        for operation, outcome, count, total, longest in rows
    ]
    return found, ([] if found else ["no operation has been recorded yet"])


def sqlite_stats(db_path: Path) -> StoreStats:
    """The statistics of the SQLite store at ``db_path``, read in one read-only snapshot."""
    from pytest_maf.store.export import read_only
    from pytest_maf.store.verify import user_tables

    with read_only(db_path) as db:
        connection: sqlite3.Connection = db.conn

        def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            return connection.execute(sql, tuple(params)).fetchall()

        tables = user_tables(connection)
        notes: list[str] = []
        try:
            sizes: dict[str, int] | None = {str(name): int(size) for name, size in query(
                "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name", []
            )}
        except sqlite3.Error:  # SQLite built without the dbstat table
            sizes = None
            notes.append("this SQLite has no dbstat table: sizes per table and index are unknown, the file's is shown")
        page_size, page_count = (int(query(f"PRAGMA {name}", [])[0][0]) for name in ("page_size", "page_count"))
        indexes = [
            IndexStats(str(name), str(table), None if sizes is None else sizes.get(str(name), 0), None)
            for name, table in query(
                "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND tbl_name NOT LIKE 'sqlite_%'"
                " ORDER BY tbl_name, name", []
            )
        ]
        notes.append("SQLite counts no index use: each index shows its size")
        found = []
        for table in tables:
            rows = int(query(f'SELECT COUNT(*) FROM "{table}"', [])[0][0])
            size = None if sizes is None else sizes.get(table, 0) + sum(
                index.bytes or 0 for index in indexes if index.table == table
            )
            found.append(TableStats(table, rows, size))
        columns = {str(row[1]) for row in query(f"PRAGMA table_info({DURATIONS_TABLE})", [])}
        slowest, slow_notes = _slowest(query, "?", tables, columns)
    total = page_size * page_count
    wal = Path(f"{db_path}-wal")
    if wal.is_file():
        total += wal.stat().st_size
    return StoreStats("sqlite", str(db_path), total, found, indexes, slowest, notes + slow_notes)


def postgres_stats(store: PostgresStore) -> StoreStats:
    """The statistics of a PostgreSQL store's schema, in one read-only snapshot."""
    store.check_schema_version()
    schema = store.schema

    def read(connection: Any) -> StoreStats:
        def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            return list(connection.execute(sql.encode(), tuple(params)).fetchall())

        from pytest_maf.store.postgres_schema import VERSION_TABLE

        relations = query(
            "SELECT c.relname, pg_total_relation_size(c.oid), s.seq_scan, s.idx_scan"
            " FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            " LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname COLLATE \"C\"",
            [schema],
        )
        tables = [str(row[0]) for row in relations if row[0] != VERSION_TABLE]
        found = []
        for name, size, sequential, indexed in relations:
            if name == VERSION_TABLE:
                continue
            rows = int(query(f'SELECT COUNT(*) FROM "{name}"', [])[0][0])  # the connection's search_path is the schema
            found.append(TableStats(str(name), rows, int(size), _int(sequential), _int(indexed)))
        indexes = [
            IndexStats(str(name), str(table), int(size), _int(scans))
            for table, name, scans, size in query(
                "SELECT relname, indexrelname, idx_scan, pg_relation_size(indexrelid) FROM pg_stat_user_indexes"
                " WHERE schemaname = %s AND relname <> %s ORDER BY relname COLLATE \"C\", indexrelname COLLATE \"C\"",
                [schema, VERSION_TABLE],
            )
        ]
        total = sum(int(row[1]) for row in relations)
        columns = {str(row[0]) for row in query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            [schema, DURATIONS_TABLE],
        )}
        slowest, notes = _slowest(query, "%s", tables, columns)
        notes.insert(0, "scans are counted since the server's statistics were last reset")
        return StoreStats("postgresql", store.location, total, found, indexes, slowest, notes)

    return store.run_on_connection(read, writing=False)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
