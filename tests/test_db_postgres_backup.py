"""`maf db backup`, `verify-backup` and `restore` on a PostgreSQL store: pg_dump and pg_restore."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

from backends import commands_on_postgres, server_url
from pytest_maf import tasks
from pytest_maf.cli import main
from pytest_maf.store import Store, open_store, postgres_backup
from tools import required_tool

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_tools() -> None:
    """PostgreSQL's own tools, which a PostgreSQL backup and restore run: skipped without them, failed under CI."""
    for tool in ("pg_dump", "pg_restore", "psql"):
        required_tool(tool, "postgresql-client", "back up and restore a PostgreSQL store")


needs_tools = pytest.mark.usefixtures("postgres_tools")


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A PostgreSQL store in a scratch schema that `maf` commands run in ``tmp_path`` use."""
    with commands_on_postgres(tmp_path, monkeypatch) as (url, schema):
        with open_store(url, create=True, schema=schema) as store:
            tasks.add_task(store, task_id="kept", payload={"note": "maf.tasks, 'quoted'\ttab"})
            yield store
        with open_store(url, create=True, schema=schema) as store:
            kept = [name for name in _schemas(store) if name.startswith(f"{schema}_before_restore_")]
        for name in kept:  # what a restore kept aside
            _drop(url, name)


def _schemas(store: Store) -> list[str]:
    return store.run_on_connection(  # type: ignore[attr-defined, no-any-return]
        lambda connection: [row[0] for row in connection.execute("SELECT nspname FROM pg_namespace")], writing=False
    )


def _drop(url: str, schema: str) -> None:
    from pytest_maf.store.postgres import drop_schema

    drop_schema(url, schema)


@needs_tools
def test_a_backup_verifies_and_restores_the_store_as_it_was(
    configured: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    backup = tmp_path / "store.dump"
    assert main(["db", "backup", "--output", str(backup)]) == 0
    assert "with pg_dump" in capsys.readouterr().out
    assert backup.read_bytes()[:5] == b"PGDMP"
    # This verification's scratch schema by name: other tests may be verifying backups on the server meanwhile.
    ours = uuid.uuid4()
    monkeypatch.setattr(postgres_backup, "uuid", SimpleNamespace(uuid4=lambda: ours))
    restored_into: list[str] = []
    restore_script = postgres_backup._restore_script

    def recording(url: str, path: Path, source: str, schema: str) -> str:
        restored_into.append(schema)
        return restore_script(url, path, source, schema)

    monkeypatch.setattr(postgres_backup, "_restore_script", recording)

    assert main(["db", "verify-backup", str(backup)]) == 0
    assert "tasks 1" in capsys.readouterr().out
    assert restored_into == [f"maf_verify_{ours.hex[:12]}"]
    assert restored_into[0] not in _schemas(configured)  # the scratch schema is gone

    tasks.add_task(configured, task_id="after-the-backup")
    assert main(["db", "restore", str(backup)]) == 0
    out = capsys.readouterr().out
    kept_schema = out.rsplit(" ", 1)[-1].strip()
    with configured.reopen() as restored:
        assert [task.id for task in tasks.list_tasks(restored)] == ["kept"]
        assert tasks.get_task(restored, "kept").payload == {"note": "maf.tasks, 'quoted'\ttab"}
        assert restored.integrity_problems() == []
        tasks.add_task(restored, task_id="new-after-restore")  # its identity sequences work
    with open_store(configured.url, schema=kept_schema) as before:  # type: ignore[attr-defined]
        assert {task.id for task in tasks.list_tasks(before)} == {"kept", "after-the-backup"}


@needs_tools
def test_a_restore_is_refused_while_agents_hold_leases_unless_forced(
    configured: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = tmp_path / "store.dump"
    assert main(["db", "backup", "--output", str(backup)]) == 0
    tasks.claim_task(configured, "kept", "agent-a", 60_000)
    assert main(["db", "restore", str(backup)]) == 2
    assert "live lease" in capsys.readouterr().err
    assert tasks.get_task(configured, "kept").state == "LEASED"
    assert main(["db", "restore", str(backup), "--force"]) == 0
    assert tasks.get_task(configured.reopen(), "kept").state == "READY"


@needs_tools
def test_a_restore_of_a_bad_backup_is_bad_input_as_on_sqlite(
    configured: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "text.dump"
    text.write_text("hi\n")
    assert main(["db", "restore", str(text), "--force", "--json"]) == 2
    refusal = json.loads(capsys.readouterr().out)
    assert refusal["exit_code"] == 2 and refusal["error"].endswith("; nothing was restored")
    assert [task.id for task in tasks.list_tasks(configured)] == ["kept"]


def test_a_restore_to_a_server_that_is_not_there_says_so_not_that_the_backup_is_bad(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAF_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/test")  # nothing listens on port 1
    (tmp_path / "store.dump").write_bytes(b"PGDMP, or so it says")

    assert main(["db", "restore", "store.dump", "--force"]) == 2
    # Before: "cannot drop the schema maf_verify_...", a scratch schema the restore had meant to verify into.
    assert "cannot reach the PostgreSQL store at postgresql://postgres@127.0.0.1:1/test" in capsys.readouterr().err


@needs_tools
def test_restores_of_one_second_keep_each_replaced_store_under_a_name_of_its_own(
    configured: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = tmp_path / "store.dump"
    assert main(["db", "backup", "--output", str(backup)]) == 0
    monkeypatch.setattr(postgres_backup, "_stamp", lambda: "20261129170000")
    kept = []
    for task_id in ("first", "second", "third"):
        tasks.add_task(configured, task_id=task_id)
        capsys.readouterr()
        assert main(["db", "restore", str(backup), "--json"]) == 0, capsys.readouterr().err
        kept.append(json.loads(capsys.readouterr().out)["kept_as"])
    schema = configured.schema  # type: ignore[attr-defined]
    assert kept == [f"{schema}_before_restore_20261129170000{suffix}" for suffix in ("", "_2", "_3")]
    for name, task_id in zip(kept, ("first", "second", "third")):
        with open_store(configured.url, schema=name) as before:  # type: ignore[attr-defined]
            assert {task.id for task in tasks.list_tasks(before)} == {"kept", task_id}


@pytest.mark.slow  # two restores at once, each verifying its backup
@needs_tools
def test_two_restores_at_once_both_restore_and_keep_what_each_replaced(configured: Store, tmp_path: Path) -> None:
    backup = tmp_path / "store.dump"
    assert main(["db", "backup", "--output", str(backup)]) == 0
    command = [sys.executable, "-c", "import sys; from pytest_maf.cli import main; sys.exit(main(sys.argv[1:]))",
               "db", "restore", str(backup), "--json"]
    restores = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    outcomes = [restore.communicate(timeout=120) for restore in restores]

    assert [restore.returncode for restore in restores] == [0, 0], outcomes
    kept = {json.loads(out)["kept_as"] for out, _ in outcomes}
    assert len(kept) == 2 and all(name in _schemas(configured) for name in kept)
    assert [task.id for task in tasks.list_tasks(configured.reopen())] == ["kept"]


@needs_tools
def test_a_damaged_backup_fails_verification(configured: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backup = tmp_path / "store.dump"
    assert main(["db", "backup", "--output", str(backup)]) == 0
    damaged = tmp_path / "damaged.dump"
    damaged.write_bytes(backup.read_bytes()[: len(backup.read_bytes()) // 2])
    capsys.readouterr()
    assert main(["db", "verify-backup", str(damaged)]) == 1
    assert "damaged.dump: BAD" in capsys.readouterr().err


def test_without_pg_dump_on_path_the_backup_says_so(
    configured: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    assert main(["db", "backup", "--output", str(tmp_path / "store.dump")]) == 2
    assert "pg_dump is not installed (not on PATH)" in capsys.readouterr().err
    assert not (tmp_path / "store.dump").exists()


def test_the_password_goes_to_the_tools_by_environment_never_the_command_line() -> None:
    from pytest_maf.store.postgres_backup import _connection

    conninfo, environment = _connection("postgresql://maf:s3cret@db.internal:5433/agents")
    assert "s3cret" not in conninfo and "db.internal" in conninfo and "5433" in conninfo
    assert environment["PGPASSWORD"] == "s3cret"


@needs_tools
def test_a_postgresql_backup_is_verified_only_with_a_server_named(
    configured: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = tmp_path / "store.dump"
    assert main(["db", "backup", "--output", str(backup)]) == 0
    monkeypatch.delenv("MAF_DATABASE_URL")
    capsys.readouterr()
    assert main(["db", "verify-backup", str(backup)]) == 2
    assert "name the server with MAF_DATABASE_URL" in capsys.readouterr().err


@needs_tools
def test_a_backup_of_the_other_backend_is_refused_saying_which_way_it_goes(
    configured: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "store.dump"
    assert main(["db", "backup", "--output", str(dump)]) == 0
    sqlite_store = tmp_path / "files" / "runtime.db"
    with open_store(sqlite_store, create=True) as store:
        tasks.add_task(store, task_id="in-the-file")
    sqlite_backup = tmp_path / "files.db.gz"
    assert main(["db", "backup", "--db", str(sqlite_store), "--output", str(sqlite_backup), "--gzip"]) == 0
    capsys.readouterr()

    assert main(["db", "restore", str(sqlite_backup), "--force"]) == 2  # into the PostgreSQL store
    assert "is a backup of a SQLite store, and this store is PostgreSQL" in capsys.readouterr().err
    monkeypatch.delenv("MAF_DATABASE_URL")
    assert main(["db", "restore", str(dump), "--db", str(sqlite_store), "--force"]) == 2  # into the SQLite file
    assert "is a backup of a PostgreSQL store (pg_dump)" in capsys.readouterr().err

    with open_store(sqlite_store) as store:
        assert [task.id for task in tasks.list_tasks(store)] == ["in-the-file"]
    with open_store(server_url(), schema=configured.schema) as store:  # type: ignore[attr-defined]
        assert [task.id for task in tasks.list_tasks(store)] == ["kept"]


def test_the_kept_schema_of_a_long_schema_name_keeps_its_time_and_is_never_the_schema_itself() -> None:
    longest = "s" * 63
    names = {postgres_backup.kept_schema_name(schema, stamp)
             for schema in (longest, "s" * 62 + "t", "maf_test") for stamp in ("20261129170000", "20261129170001")}

    assert len(names) == 6 and all(len(name) <= 63 for name in names)
    assert all(name.endswith(("_before_restore_20261129170000", "_before_restore_20261129170001")) for name in names)
    assert postgres_backup.kept_schema_name("maf_test", "20261129170000") == "maf_test_before_restore_20261129170000"


@needs_tools
def test_a_store_under_the_longest_schema_name_restores_again_and_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server_url()
    schema = f"maf_test_{uuid.uuid4().hex}".ljust(63, "x")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAF_DB_PATH", raising=False)
    monkeypatch.setenv("MAF_DATABASE_URL", url)
    monkeypatch.setenv("MAF_DATABASE_SCHEMA", schema)
    kept: list[str] = []
    try:
        with open_store(url, create=True, schema=schema) as store:
            tasks.add_task(store, task_id="kept")
        backup = tmp_path / "store.dump"
        assert main(["db", "backup", "--output", str(backup)]) == 0
        for stamp in ("20261129170000", "20261129170001"):
            monkeypatch.setattr(postgres_backup, "_stamp", lambda stamp=stamp: stamp)
            capsys.readouterr()
            assert main(["db", "restore", str(backup)]) == 0, capsys.readouterr().err
            kept.append(capsys.readouterr().out.rsplit(" ", 1)[-1].strip())
        with open_store(url, schema=schema) as restored:
            assert [task.id for task in tasks.list_tasks(restored)] == ["kept"]
        assert len(set(kept)) == 2 and schema not in kept
    finally:
        for name in [*kept, schema]:
            _drop(url, name)
