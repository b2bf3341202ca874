"""The runtime store: one durable home for tasks, leases, events and evidence.

All SQL lives in this package. Callers open a store and hand it to the
library's operations (``pytest_maf.tasks``, ``pytest_maf.evidence``)::

    from pytest_maf.store import open_store
    from pytest_maf import tasks

    with open_store(".maf/runtime.db", create=True) as store:
        task = tasks.add_task(store, payload={"goal": "fix the build"})

The library only knows the :class:`Store` and :class:`Transaction` Protocols
(:mod:`pytest_maf.store.protocol`); a file path opens the SQLite backend, a
``postgresql://`` URL the PostgreSQL one.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from pytest_maf.clock import Clock, system_clock
from pytest_maf.config import DEFAULT_MAX_ATTEMPTS
from pytest_maf.database_url import is_database_url
from pytest_maf.errors import StoreError
from pytest_maf.light_dataclass import dataclass
from pytest_maf.store.postgres_schema import DEFAULT_SCHEMA
from pytest_maf.store.schema import SCHEMA_VERSION
from pytest_maf.store.sqlite import DEFAULT_BUSY_TIMEOUT_S, DEFAULT_LEASE_TTL_MS, SQLiteStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pytest_maf.config import Settings
    from pytest_maf.store.protocol import Store, Transaction

__all__ = ["SCHEMA_VERSION", "SetupReport", "Store", "Transaction", "open_store", "open_store_for", "setup_store"]


def __getattr__(name: str) -> Any:
    # The Protocols are imported when asked for: type checkers and readers need them, no backend
    # does at run time, and `maf guard` need not make their classes.
    if name in ("Store", "Transaction"):
        from pytest_maf.store import protocol

        return getattr(protocol, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(
    path: str | os.PathLike[str],
    *,
    clock: Clock = system_clock,
    create: bool = False,
    default_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    schema: str = DEFAULT_SCHEMA,
    use_client_clock: bool = False,
) -> Store:
    """Open the runtime store at ``path`` (a SQLite file, or a ``postgresql://`` URL), migrating an older schema.

    Without ``create``, a missing database is an error that says to run
    ``maf setup``; with it, a missing one is created whole (no other process
    ever sees it half made). A database that is empty, damaged, another
    application's, or written by a newer pytest-maf is refused untouched.
    ``lease_ttl_ms`` is how far every fenced operation by a lease's holder
    extends the lease (``tasks.lease_ttl_seconds``); ``busy_timeout_s`` bounds
    every wait for another writer (``runtime.busy_timeout_seconds``).

    On PostgreSQL the store lives in ``schema`` (``runtime.database_schema``)
    and time comes from the server: ``clock`` is used only with
    ``use_client_clock``, which is for tests.
    """
    if is_database_url(path):
        return _open_postgres(
            str(path), schema=schema, clock=clock, use_client_clock=use_client_clock, create=create,
            default_max_attempts=default_max_attempts, lease_ttl_ms=lease_ttl_ms, busy_timeout_s=busy_timeout_s,
        )
    db_path = Path(path)
    _refuse_a_companion(db_path)
    if not db_path.exists():
        if not create:
            raise StoreError(f"no runtime database at {db_path}: run `maf setup` first")
        _create_whole(db_path)
    elif not db_path.is_file():
        raise StoreError(f"the runtime database {db_path} is not a file")
    store = SQLiteStore(
        db_path, clock=clock, default_max_attempts=default_max_attempts, lease_ttl_ms=lease_ttl_ms,
        busy_timeout_s=busy_timeout_s,
    )
    try:
        if store.check_schema_version() < SCHEMA_VERSION:
            store.migrate()
    except BaseException:
        store.close()
        raise
    return store


def _refuse_a_companion(db_path: Path) -> None:
    """A new database is never made where SQLite keeps another one's files (``X-journal``, ``X-wal``,
    ``X-shm`` beside a database ``X``, or its writers' lock): SQLite would delete it, or use it as its own."""
    name = db_path.name
    for suffix in ("-wal", "-shm", "-journal", ".lock"):
        if name.endswith(suffix) and len(name) > len(suffix) and db_path.with_name(name[: -len(suffix)]).is_file():
            raise StoreError(
                f"{db_path} is where the database {db_path.with_name(name[: -len(suffix)])} keeps a file of its"
                " own (its WAL, shared memory, journal or writers' lock): a database there would be deleted or"
                " taken over; name another file"
            )


def open_store_for(settings: Settings, *, create: bool = False, clock: Clock = system_clock) -> Store:
    """The store ``settings`` name (``runtime.database_url``, else ``runtime.db_path``), with their
    attempt, lease and busy-timeout settings. What every command, the plugin and the guard open."""
    return open_store(
        settings.store_location, clock=clock, create=create, default_max_attempts=settings.max_attempts,
        lease_ttl_ms=settings.task_lease_ttl_s * 1000, busy_timeout_s=settings.busy_timeout_s,
        schema=settings.database_schema,
    )


def _postgres_backend() -> ModuleType:
    """The PostgreSQL backend, or one line saying what to install."""
    from pytest_maf.extras import import_extra

    return import_extra("pytest_maf.store.postgres", "postgres", "a PostgreSQL store")  # --db, MAF_DATABASE_URL or the configuration


def _open_postgres(url: str, *, create: bool, **options: Any) -> Store:
    store: Store = _postgres_backend().PostgresStore(url, **options)
    try:
        if create or store.check_schema_version() < SCHEMA_VERSION:
            store.migrate()
    except BaseException:
        store.close()
        raise
    return store


def _create_whole(db_path: Path) -> bool:
    """Create a store at ``db_path`` unless another process does first; True if this call did.

    The schema is laid in a scratch file that is then linked into place, so a
    store at ``db_path`` is never seen empty: an empty one was damaged.
    """
    _refuse_a_companion(db_path)
    if db_path.is_symlink():  # a link to nothing: creating through it would make an empty file there
        raise StoreError(
            f"the runtime database {db_path} is a symbolic link to {os.readlink(db_path)}, which does not"
            " exist; remove the link or restore what it pointed to"
        )
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(f"cannot create the runtime database's folder {db_path.parent}: {error.strerror}") from None
    scratch = db_path.with_name(f".{db_path.name}.{os.getpid()}-{os.urandom(4).hex()}.new")
    try:
        with SQLiteStore(scratch) as fresh:
            fresh.migrate(fresh=True)
        try:
            os.link(scratch, db_path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if db_path.exists():
                return False
            os.replace(scratch, db_path)
        return True
    finally:
        for suffix in ("", "-wal", "-shm", ".lock"):
            Path(f"{scratch}{suffix}").unlink(missing_ok=True)


@dataclass(frozen=True)
class SetupReport:
    path: Path | str  # a file, or a PostgreSQL URL without its password and the schema
    created_file: bool  # the file, or the schema's tables, did not exist before
    applied_versions: tuple[int, ...]
    schema_version: int
    tables: tuple[str, ...]
    journal_mode: str  # SQLite's; "" on PostgreSQL
    backend: str = "sqlite"


def setup_store(
    path: str | os.PathLike[str], *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, schema: str = DEFAULT_SCHEMA
) -> SetupReport:
    """Create the runtime store at ``path`` (a file or a ``postgresql://`` URL) or bring it to the
    current schema. Idempotent.

    A present but empty, damaged or foreign database is refused, never re-created.
    """
    if is_database_url(path):
        return _setup_postgres(str(path), busy_timeout_s=busy_timeout_s, schema=schema)
    db_path = Path(path)
    created = not db_path.exists() and _create_whole(db_path)
    if db_path.exists() and not db_path.is_file():
        raise StoreError(f"the runtime database {db_path} is not a file")
    with SQLiteStore(db_path, busy_timeout_s=busy_timeout_s) as store:
        store.check_schema_version()
        problems = store.integrity_problems()
        if problems:
            raise StoreError(
                f"the runtime database {db_path} is damaged ({'; '.join(problems[:3])}): run `maf db recover`"
                " to rebuild it into a new file, or `maf db restore BACKUP`"
            )
        applied = store.migrate()
        return SetupReport(
            path=db_path,
            created_file=created,
            applied_versions=tuple(range(1, SCHEMA_VERSION + 1)) if created else tuple(applied),
            schema_version=store.schema_version(),
            tables=tuple(store.table_names()),
            journal_mode=str(store.pragma("journal_mode")[0][0]),
        )


def _setup_postgres(url: str, *, busy_timeout_s: float, schema: str) -> SetupReport:
    with _postgres_backend().PostgresStore(url, schema=schema, busy_timeout_s=busy_timeout_s) as store:
        applied = store.migrate()
        return SetupReport(
            path=store.location,
            created_file=applied[:1] == [1],
            applied_versions=tuple(applied),
            schema_version=store.schema_version(),
            tables=tuple(store.table_names()),
            journal_mode="",
            backend=store.backend,
        )
