"""`maf db optimize`: refresh the planner's statistics, and on request rebuild indexes and compact, step by
step, each step measured before and after.

* SQLite: ``ANALYZE``, ``PRAGMA optimize``, ``REINDEX`` (``--reindex``),
  ``VACUUM`` (``--vacuum``) and a ``wal_checkpoint(TRUNCATE)``; measured in
  pages, free pages, and the bytes of the file and of its write-ahead log.
* PostgreSQL: ``ANALYZE`` of each of the store's tables, ``REINDEX TABLE``
  of each (``--reindex``) and ``VACUUM`` of each (``--vacuum``); measured in
  the bytes of the schema's tables and of its indexes.

Example::

    for step in optimize_sqlite(Path(".maf/runtime.db"), reindex=True):
        print(step.name, step.before, step.after)
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pytest_maf.errors import StoreBusyError, StoreError

if TYPE_CHECKING:
    from pytest_maf.store.postgres import PostgresStore


@dataclass(frozen=True)
class Step:
    """One optimisation step: what it ran, and the store's measures before and after it."""

    name: str
    before: dict[str, int]
    after: dict[str, int]
    seconds: float

    def changed(self) -> dict[str, int]:
        """Each measure's change (after minus before)."""
        return {key: self.after[key] - self.before[key] for key in self.before}


def _run_steps(
    steps: list[tuple[str, Callable[[], object]]], measure: Callable[[], dict[str, int]], shown: str
) -> list[Step]:
    done: list[Step] = []
    for name, run in steps:
        before = measure()
        started = time.perf_counter()
        try:
            run()
        except StoreBusyError as error:  # exit 5, as every write waited for past the busy timeout
            raise StoreBusyError(
                f"optimising {shown} stopped at {name}, after {', '.join(step.name for step in done) or 'nothing'}:"
                f" {error}"
            ) from None
        except (sqlite3.Error, StoreError) as error:
            raise StoreError(
                f"optimising {shown} stopped at {name}, after {', '.join(step.name for step in done) or 'nothing'}:"
                f" {error}"
            ) from None
        done.append(Step(name, before, measure(), round(time.perf_counter() - started, 3)))
    return done


def optimize_sqlite(
    db_path: Path, *, reindex: bool = False, vacuum: bool = False, busy_timeout_s: float | None = None
) -> list[Step]:
    """Optimise the SQLite store at ``db_path``; each step with pages, free pages and bytes before and after.

    Each step runs in the writers' turn, waited for as every write is (``busy_timeout_s``, the
    store's default if None), then :class:`~pytest_maf.errors.StoreBusyError`.
    """
    from pytest_maf.store.maintenance import _require_store
    from pytest_maf.store.sqlite import DEFAULT_BUSY_TIMEOUT_S, connect, maintenance_turn

    _require_store(db_path)
    connection = connect(db_path)
    waits = DEFAULT_BUSY_TIMEOUT_S if busy_timeout_s is None else busy_timeout_s

    def measure() -> dict[str, int]:
        pages, free = (int(connection.execute(f"PRAGMA {name}").fetchone()[0]) for name in ("page_count", "freelist_count"))
        wal = Path(f"{db_path}-wal")
        return {"pages": pages, "free_pages": free, "file_bytes": db_path.stat().st_size,
                "wal_bytes": wal.stat().st_size if wal.is_file() else 0}

    def run(statement: str) -> Callable[[], object]:
        def step() -> None:
            with maintenance_turn(db_path, connection, waits):
                connection.execute(statement).fetchall()

        return step

    steps = [("ANALYZE", run("ANALYZE")), ("PRAGMA optimize", run("PRAGMA optimize"))]
    if reindex:
        steps.append(("REINDEX", run("REINDEX")))
    if vacuum:
        steps.append(("VACUUM", run("VACUUM")))
    steps.append(("wal_checkpoint(TRUNCATE)", run("PRAGMA wal_checkpoint(TRUNCATE)")))
    try:
        return _run_steps(steps, measure, str(db_path))
    finally:
        connection.close()


def optimize_postgres(store: PostgresStore, *, reindex: bool = False, vacuum: bool = False) -> list[Step]:
    """Optimise a PostgreSQL store's tables; each step with the bytes of the tables and indexes before and after.

    VACUUM cannot run inside a transaction: each statement runs on its own, on
    the store's autocommit connection.
    """
    import psycopg
    from psycopg import sql

    store.check_schema_version()
    tables = store.table_names()
    connection = store.connection

    def measure() -> dict[str, int]:
        row = connection.execute(
            "SELECT COALESCE(SUM(pg_table_size(c.oid)), 0), COALESCE(SUM(pg_indexes_size(c.oid)), 0)"
            " FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
            (store.schema,),
        ).fetchone()
        assert row is not None
        return {"table_bytes": int(row[0]), "index_bytes": int(row[1])}

    def each(command: str) -> Callable[[], object]:
        def run() -> None:
            try:
                for table in tables:
                    connection.execute(sql.SQL(command).format(sql.Identifier(store.schema, table)))
            except psycopg.Error as error:
                raise StoreError(str(error).strip().splitlines()[0]) from None

        return run

    steps: list[tuple[str, Callable[[], Any]]] = [("ANALYZE", each("ANALYZE {}"))]
    if reindex:
        steps.append(("REINDEX", each("REINDEX TABLE {}")))
    if vacuum:
        steps.append(("VACUUM", each("VACUUM {}")))
    return _run_steps(steps, measure, store.location)
