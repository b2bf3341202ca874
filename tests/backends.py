"""The store backends the suite runs on: SQLite always, PostgreSQL when MAF_TEST_DATABASE_URL names a server.

Each PostgreSQL case gets a schema of its own (a random name), dropped
afterwards, so cases and xdist workers never see each other's rows. Without
the variable the PostgreSQL cases are skipped, saying how to run them; with
it, a server that cannot be reached fails them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest

from pytest_maf.database_url import redact_url
from pytest_maf.store import Store, open_store

TEST_DATABASE_VARIABLE = "MAF_TEST_DATABASE_URL"
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
SKIP_REASON = f"PostgreSQL cases need a server: run with {TEST_DATABASE_VARIABLE}={LOCAL_SERVER}"
BACKENDS = ("sqlite", "postgres")


def server_url() -> str:
    """The PostgreSQL server the suite may use; skips the calling test when none is named."""
    url = os.environ.get(TEST_DATABASE_VARIABLE, "").strip()
    if not url:
        pytest.skip(SKIP_REASON)
    return url


def _admin(url: str) -> Any:
    import psycopg

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as error:
        pytest.fail(
            f"{TEST_DATABASE_VARIABLE} is set but {redact_url(url)} cannot be reached: {str(error).strip()}",
            pytrace=False,
        )


@contextlib.contextmanager
def scratch_schema(url: str) -> Iterator[str]:
    """A schema name no other test uses; the schema (if anything created it) is dropped afterwards."""
    from psycopg import sql

    schema = f"maf_test_{uuid.uuid4().hex[:12]}"
    with _admin(url) as connection:
        try:
            yield schema
        finally:
            connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextlib.contextmanager
def commands_on_postgres(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """`maf` commands run in ``directory`` use a scratch schema of the test server: its URL and schema."""
    url = server_url()
    monkeypatch.chdir(directory)
    monkeypatch.delenv("MAF_DB_PATH", raising=False)
    with scratch_schema(url) as schema:
        monkeypatch.setenv("MAF_DATABASE_URL", url)
        monkeypatch.setenv("MAF_DATABASE_SCHEMA", schema)
        yield url, schema


@contextlib.contextmanager
def backend_store(backend: str, directory: Path, **options: Any) -> Iterator[Store]:
    """A fresh store on ``backend``: a file under ``directory``, or a scratch PostgreSQL schema.

    A ``clock`` given in ``options`` is the store's time on both backends (the
    PostgreSQL store is asked to use the client clock, as only tests do).
    """
    if backend == "sqlite":
        with open_store(directory / ".maf" / "runtime.db", create=True, **options) as store:
            yield store
        return
    url = server_url()
    with scratch_schema(url) as schema:
        with open_store(url, create=True, schema=schema, use_client_clock="clock" in options, **options) as store:
            yield store


@contextlib.contextmanager
def shared_store(backend: str, directory: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """Where several processes share one new store: its location (a file, or the server's URL) and the
    environment a worker process opens it with (:func:`open_shared_store`)."""
    if backend == "sqlite":
        location = str(directory / "runtime.db")
        open_store(location, create=True).close()
        yield location, {}
        return
    url = server_url()
    with scratch_schema(url) as schema:
        open_store(url, create=True, schema=schema).close()
        yield url, {SCHEMA_VARIABLE: schema}


SCHEMA_VARIABLE = "MAF_TEST_SCHEMA"


def open_shared_store(location: str, environment: Mapping[str, str] | None = None, **options: Any) -> Store:
    """The store :func:`shared_store` made, its schema read from ``environment`` (a worker's own, by default)."""
    schema = (os.environ if environment is None else environment).get(SCHEMA_VARIABLE)
    return open_store(location, **options, **({"schema": schema} if schema else {}))


DATABASE_VARIABLES = ("MAF_DATABASE_URL", "MAF_DATABASE_SCHEMA")


@contextlib.contextmanager
def environment_store(backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The store a pytest or maf run here uses by default: ``.maf/runtime.db`` on SQLite; on PostgreSQL
    a scratch schema that MAF_DATABASE_URL and MAF_DATABASE_SCHEMA name (in this process's environment,
    which in-process and subprocess runs alike read), dropped afterwards. Open it with :func:`open_environment_store`."""
    for name in DATABASE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if backend == "sqlite":
        yield
        return
    url = server_url()
    with scratch_schema(url) as schema:
        monkeypatch.setenv("MAF_DATABASE_URL", url)
        monkeypatch.setenv("MAF_DATABASE_SCHEMA", schema)
        yield


def open_environment_store(directory: Path, **options: Any) -> Store:
    """The store :func:`environment_store` chose, for a run in ``directory``."""
    url = os.environ.get("MAF_DATABASE_URL", "").strip()
    if url:
        return open_store(url, schema=os.environ["MAF_DATABASE_SCHEMA"], **options)
    return open_store(directory / ".maf" / "runtime.db", **options)


def backend_param(backend: str) -> Any:
    """A pytest param for ``backend``, marked so ``-m postgres`` selects the PostgreSQL cases."""
    return pytest.param(backend, id=backend, marks=[pytest.mark.postgres] if backend == "postgres" else [])


def store_rows(store: Store) -> list[str]:
    """Every row of every table of ``store``, as text: equal before and after means nothing was written."""
    if store.backend == "sqlite":
        import sqlite3

        with contextlib.closing(sqlite3.connect(store.location)) as connection:
            return list(connection.iterdump())
    from psycopg import sql

    url, schema = store.url, store.schema  # type: ignore[attr-defined]
    with _admin(url) as connection:
        rows = []
        for table in store.table_names():
            query = sql.SQL("SELECT * FROM {}.{} ORDER BY 1").format(sql.Identifier(schema), sql.Identifier(table))
            rows += [f"{table}: {row!r}" for row in connection.execute(query)]
        return rows


def store_with_damaged_rows(path: Path, tasks_count: int = 1500) -> None:
    """A SQLite store at ``path`` whose row pages (not its schema pages) are overwritten with garbage."""
    from pytest_maf import tasks

    with open_store(path, create=True) as store:
        for n in range(tasks_count):
            tasks.add_task(store, task_id=f"t{n:05}", payload={"note": "x" * 200})
        store.pragma("wal_checkpoint(TRUNCATE)")  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[-20 * 4096 : -10 * 4096] = b"\xde\xad\xbe\xef" * (10 * 1024)
    path.write_bytes(bytes(data))


def store_of_env(env: Mapping[str, str], directory: Path) -> Store:
    """The store that ``maf`` run in ``directory`` with ``env`` (the ``store_env`` fixture's) uses."""
    if env.get("MAF_DATABASE_URL"):
        return open_store(env["MAF_DATABASE_URL"], schema=env["MAF_DATABASE_SCHEMA"])
    return open_store(directory / ".maf" / "runtime.db")


def maf_on_store(root: Path, store: Store, *args: str) -> Any:
    """The installed ``maf`` run in ``root`` on ``store`` (a SQLite file, or a PostgreSQL schema), with an
    environment of its own; the completed process."""
    import subprocess

    from workspace import isolated_env, maf_command

    if store.backend == "sqlite":
        env = {"MAF_DB_PATH": store.location}
    else:
        env = {"MAF_DATABASE_URL": store.url, "MAF_DATABASE_SCHEMA": store.schema}  # type: ignore[attr-defined]
    (root / "home").mkdir(exist_ok=True)
    return subprocess.run(
        [*maf_command(), *args], cwd=root, env=isolated_env(root / "home", env), capture_output=True, text=True,
        timeout=120,
    )
