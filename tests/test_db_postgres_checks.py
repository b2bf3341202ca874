"""A PostgreSQL store's checks say what really went wrong: a server that cannot be reached, a lock held
past the busy timeout, a dump holding more than one store's schema; and they leave nothing behind."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from backends import commands_on_postgres, scratch_schema
from pytest_maf import tasks
from pytest_maf.cli import main
from pytest_maf.store import Store, open_store
from tools import required_tool

pytestmark = pytest.mark.postgres

NOBODY_LISTENS = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1


@pytest.fixture
def postgres_tools() -> None:
    for tool in ("pg_dump", "pg_restore", "psql"):
        required_tool(tool, "postgresql-client", "back up and restore a PostgreSQL store")


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_tools: None) -> Iterator[Store]:
    """A PostgreSQL store with one task, in a scratch schema that `maf` commands run in ``tmp_path`` use."""
    with commands_on_postgres(tmp_path, monkeypatch) as (url, schema):
        with open_store(url, create=True, schema=schema) as store:
            tasks.add_task(store, task_id="kept")
            yield store
        with _admin(url) as connection:  # what a restore kept aside
            for (name,) in connection.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{schema}_before_restore_%",)
            ).fetchall():
                connection.execute(f'DROP SCHEMA "{name}" CASCADE')


def _admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def _schemas(url: str) -> set[str]:
    with _admin(url) as connection:
        return {row[0] for row in connection.execute("SELECT nspname FROM pg_namespace")}


def _pg_dump(url: str, output: Path, *schemas: str) -> None:
    from pytest_maf.store.postgres_backup import _connection

    conninfo, environment = _connection(url)
    command = ["pg_dump", "-Fc", *(f"--schema={schema}" for schema in schemas), "-f", str(output), "-d", conninfo]
    subprocess.run(command, env=environment, check=True, timeout=60)


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# B3: a server that cannot be reached is said as such, never as a bad backup.


@pytest.mark.timeout(120)
def test_with_the_server_unreachable_a_good_backup_is_not_called_bad(
    configured: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "backups"
    assert main(["db", "backup", "--output", str(folder / "store.dump")]) == 0
    monkeypatch.setenv("MAF_DATABASE_URL", NOBODY_LISTENS)

    code, _, err = _run(capsys, "db", "verify-backup", str(folder / "store.dump"))
    # Before: "cannot drop the schema maf_verify_...", the cleanup's failure in place of the cause.
    assert code == 2 and "cannot reach the PostgreSQL store at postgresql://postgres@127.0.0.1:1/test" in err
    assert "maf_verify" not in err and "\\n" not in err

    code, out, _ = _run(capsys, "db", "backups", "--dir", str(folder), "--json")
    (state,) = json.loads(out)["backups"]
    assert code == 0 and state["verified"] is None and "cannot reach the PostgreSQL store" in state["problem"]

    code, _, err = _run(capsys, "db", "restore", "latest", "--dir", str(folder), "--force")
    assert code == 2 and "cannot reach the PostgreSQL store" in err and "passes verification" not in err


# B5: a verification restores one store's schema, and nothing else, and leaves nothing behind.


@pytest.mark.timeout(120)
def test_a_dump_of_a_second_schema_is_refused_and_leaves_nothing_on_the_server(
    configured: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, schema = configured.url, configured.schema  # type: ignore[attr-defined]
    dump = tmp_path / "backups" / "two.dump"
    dump.parent.mkdir()
    with scratch_schema(url) as planted:
        with _admin(url) as connection:
            connection.execute(f"CREATE SCHEMA {planted}")
            connection.execute(f"CREATE TABLE {planted}.planted (note text)")
            connection.execute(f"INSERT INTO {planted}.planted VALUES ('from the dump')")
        _pg_dump(url, dump, schema, planted)
        with _admin(url) as connection:
            connection.execute(f"DROP SCHEMA {planted} CASCADE")

        code, _, err = _run(capsys, "db", "verify-backup", str(dump))
        assert code == 1 and "holds 2 schemas" in err
        code, out, _ = _run(capsys, "db", "backups", "--dir", str(dump.parent), "--json")
        assert [state["verified"] for state in json.loads(out)["backups"]] == [False]
        code, _, err = _run(capsys, "db", "restore", str(dump), "--force")
        assert code == 2 and "nothing was restored" in err

        # Before: each of them re-created the second schema, with its rows, for good.
        assert planted not in _schemas(url)
        assert not any(name.startswith("maf_verify_") and name in err for name in _schemas(url))
    assert [task.id for task in tasks.list_tasks(configured)] == ["kept"]


@pytest.mark.timeout(120)
def test_a_dump_with_a_table_that_is_not_pytest_maf_s_fails_the_canonical_check(
    configured: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, schema = configured.url, configured.schema  # type: ignore[attr-defined]
    with _admin(url) as connection:
        connection.execute(f"CREATE TABLE {schema}.extra (note text)")
    dump = tmp_path / "extra.dump"
    _pg_dump(url, dump, schema)

    code, _, err = _run(capsys, "db", "verify-backup", str(dump))

    # Before: "ok (integrity, schema version, canonical schema)".
    assert code == 1 and "table extra is not part of the pytest-maf schema" in err


@pytest.mark.timeout(120)
def test_a_dump_of_a_newer_store_names_the_file_and_the_upgrade_not_a_scratch_schema(
    configured: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, schema = configured.url, configured.schema  # type: ignore[attr-defined]
    with _admin(url) as connection:
        connection.execute(f"INSERT INTO {schema}.maf_schema_version (version, applied_at) VALUES (99, 0)")
    dump = tmp_path / "newer.dump"
    _pg_dump(url, dump, schema)

    code, _, err = _run(capsys, "db", "verify-backup", str(dump))

    # Before: "the runtime store ... (schema maf_verify_...) has schema version 99 ...".
    assert code == 1 and "newer.dump: BAD" in err and "upgrade pytest-maf" in err
    assert "maf_verify_" not in err


# B4: a read or a pg_dump waits for a lock no longer than the busy timeout.


@contextlib.contextmanager
def _tables_locked(url: str, schema: str) -> Iterator[None]:
    """The store's tasks and leases locked by another session (as a REINDEX or VACUUM FULL locks them),
    which the server ends by itself after a minute should the test not."""
    with _admin(url) as connection:
        connection.execute("SET idle_in_transaction_session_timeout = '60s'")
        connection.execute("BEGIN")
        connection.execute(f"LOCK TABLE {schema}.tasks, {schema}.leases IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")


LOCKED_COMMANDS = {
    "db-backup": ["db", "backup", "--output", "locked.dump"],
    "db-copy": ["db", "copy", "SOURCE", "copied.db", "--source-schema", "SCHEMA"],
    "db-restore": ["db", "restore", "store.dump", "--force"],
    "db-stats": ["db", "stats"],
    "status": ["status"],
    "task-list": ["task", "list"],
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", sorted(LOCKED_COMMANDS))
def test_a_command_behind_a_table_lock_exits_5_after_the_busy_timeout(
    configured: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    url, schema = configured.url, configured.schema  # type: ignore[attr-defined]
    assert main(["db", "backup", "--output", "store.dump"]) == 0
    monkeypatch.setenv("MAF_BUSY_TIMEOUT", "1")
    args = [{"SOURCE": url, "SCHEMA": schema}.get(arg, arg) for arg in LOCKED_COMMANDS[command]]

    with _tables_locked(url, schema):
        code, _, err = _run(capsys, *args)

    # Before: it waited for as long as the lock was held.
    assert code == 5, err
    assert "stayed busy" in err and "MAF_BUSY_TIMEOUT" in err
    assert not (tmp_path / "locked.dump").exists() and not (tmp_path / "copied.db").exists()
    assert [task.id for task in tasks.list_tasks(configured)] == ["kept"]


@pytest.mark.timeout(120)
def test_a_health_check_behind_a_table_lock_reports_it_and_what_to_do(
    configured: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAF_BUSY_TIMEOUT", "1")
    with _tables_locked(configured.url, configured.schema):  # type: ignore[attr-defined]
        code, out, _ = _run(capsys, "health-check", "--database-only", "--json")

    (reachable,) = [check for check in json.loads(out)["checks"] if check["name"] == "database.reachable"]
    assert code == 1 and not reachable["ok"] and "stayed busy" in reachable["message"]
    assert "MAF_BUSY_TIMEOUT" in reachable["hint"] and "maf setup" not in reachable["hint"]
