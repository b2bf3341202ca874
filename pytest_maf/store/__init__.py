"""The runtime store: one durable home for tasks, leases, events and evidence.

All SQL lives in this package. Callers open a store and hand it to the
library's operations (``pytest_maf.tasks``, ``pytest_maf.evidence``)::

    from pytest_maf.store import open_store
    from pytest_maf import tasks

    with open_store(".maf/runtime.db", create=True) as store:
        task = tasks.add_task(store, payload={"goal": "fix the build"})
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pytest_maf.clock import Clock, system_clock
from pytest_maf.config import DEFAULT_MAX_ATTEMPTS
from pytest_maf.errors import StoreError
from pytest_maf.store.schema import SCHEMA_VERSION
from pytest_maf.store.sqlite import DEFAULT_LEASE_TTL_MS, SQLiteStore, SQLiteTransaction

Store = SQLiteStore
Transaction = SQLiteTransaction

__all__ = ["SCHEMA_VERSION", "SetupReport", "Store", "Transaction", "open_store", "setup_store"]


def open_store(
    path: str | os.PathLike[str],
    *,
    clock: Clock = system_clock,
    create: bool = False,
    default_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS,
) -> Store:
    """Open the runtime store at ``path``, migrating an older schema.

    Without ``create``, a missing database is an error that says to run
    ``maf setup``. A database written by a newer pytest-maf is refused.
    ``lease_ttl_ms`` is how far every fenced operation by a lease's holder
    extends the lease (``tasks.lease_ttl_seconds``).
    """
    db_path = Path(path)
    if not create and not db_path.is_file():
        raise StoreError(f"no runtime database at {db_path}: run `maf setup` first")
    if create:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    store = SQLiteStore(
        db_path, clock=clock, default_max_attempts=default_max_attempts, lease_ttl_ms=lease_ttl_ms
    )
    try:
        if store.check_schema_version() < SCHEMA_VERSION:
            store.migrate()
    except BaseException:
        store.close()
        raise
    return store


@dataclass(frozen=True)
class SetupReport:
    path: Path
    created_file: bool
    applied_versions: tuple[int, ...]
    schema_version: int
    tables: tuple[str, ...]
    journal_mode: str


def setup_store(path: str | os.PathLike[str]) -> SetupReport:
    """Create the runtime store at ``path`` or bring it to the current schema. Idempotent."""
    db_path = Path(path)
    existed = db_path.is_file()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with SQLiteStore(db_path) as store:
        applied = store.migrate()
        return SetupReport(
            path=db_path,
            created_file=not existed,
            applied_versions=tuple(applied),
            schema_version=store.schema_version(),
            tables=tuple(store.table_names()),
            journal_mode=str(store.pragma("journal_mode")[0][0]),
        )
