"""A PostgreSQL store: chosen by one setting, set up by `maf setup`, refused when it is not ours,
and never showing the URL's password."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from backends import _admin, scratch_schema, server_url
from pytest_maf import tasks
from pytest_maf.cli import main
from pytest_maf.config import load_settings
from pytest_maf.errors import StoreError
from pytest_maf.store import SCHEMA_VERSION, open_store, postgres_schema, schema, setup_store

PASSWORD = "s3cret-pw"
# Nothing listens on port 1: every connection is refused at once.
UNREACHABLE = f"postgresql://maf:{PASSWORD}@127.0.0.1:1/agents"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def postgres(repository: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """MAF_DATABASE_URL and MAF_DATABASE_SCHEMA naming a scratch schema on the test server."""
    url = server_url()
    with scratch_schema(url) as name:
        monkeypatch.setenv("MAF_DATABASE_URL", url)
        monkeypatch.setenv("MAF_DATABASE_SCHEMA", name)
        yield url, name


# Choosing the backend (no server needed)


def test_a_url_moves_the_store_and_the_higher_layer_wins(tmp_path: Path) -> None:
    (tmp_path / "maf-config").mkdir()
    (tmp_path / "maf-config" / "default.json").write_text(json.dumps({"runtime": {"database_url": UNREACHABLE}}))

    configured = load_settings(environ={}, cwd=tmp_path)
    assert configured.store_location == UNREACHABLE and configured.database_schema == "maf"
    assert PASSWORD not in configured.store_shown
    assert load_settings(environ={}, cwd=tmp_path, db_path="other.db").store_location == tmp_path / "other.db"
    assert load_settings(environ={"MAF_DB_PATH": "x.db"}, cwd=tmp_path).database_url is None
    assert load_settings(environ={}, cwd=tmp_path, db_path="postgresql://h/db").store_location == "postgresql://h/db"
    from_env = load_settings(environ={"MAF_DATABASE_URL": "postgres://h/db", "MAF_DATABASE_SCHEMA": "team_a"}, cwd=tmp_path)
    assert (from_env.database_url, from_env.database_schema) == ("postgres://h/db", "team_a")


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("MAF_DATABASE_URL", "mysql://h/db", "expected a URL such as postgresql://"),
        ("MAF_DATABASE_URL", "postgresql://h:notaport/db", "does not parse"),
        ("MAF_DATABASE_SCHEMA", "Maf-Team", "expected a PostgreSQL schema name"),
        ("MAF_DATABASE_SCHEMA", "pg_maf", "reserved by PostgreSQL"),
    ],
)
def test_a_bad_url_or_schema_is_invalid_configuration(
    capsys: pytest.CaptureFixture[str], repository: Path, monkeypatch: pytest.MonkeyPatch,
    variable: str, value: str, problem: str,
) -> None:
    monkeypatch.setenv(variable, value)
    code, _, err = run(capsys, "task", "list")
    assert code == 2 and problem in err


def test_config_show_and_errors_never_show_the_password(
    capsys: pytest.CaptureFixture[str], repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAF_DATABASE_URL", UNREACHABLE)
    code, out, err = run(capsys, "config", "show")
    assert code == 0 and "postgresql://maf:****@127.0.0.1:1/agents" in out
    code, out, err = run(capsys, "--log-format", "json", "task", "list")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cannot reach the PostgreSQL store at postgresql://maf:****@127.0.0.1:1/agents" in err
    code, out, err = run(capsys, "--db", UNREACHABLE, "health-check", "--json")
    assert code == 1
    assert PASSWORD not in out + err + "".join(path.read_text(errors="replace") for path in repository.rglob("*") if path.is_file())


def test_the_guard_fails_closed_when_the_server_cannot_be_reached(
    capsys: pytest.CaptureFixture[str], repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (repository / "a.py").write_text("x\n")
    subprocess.run(["git", "add", "a.py"], cwd=repository, check=True)
    assert run(capsys, "guard")[0] == 0  # no set-up at all: quietly passes
    monkeypatch.setenv("MAF_DATABASE_URL", UNREACHABLE)

    code, _, err = run(capsys, "guard")

    assert code == 2 and "The guard fails closed" in err and PASSWORD not in err


def test_without_psycopg_a_url_says_what_to_install(
    capsys: pytest.CaptureFixture[str], repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in sys.modules if name == "psycopg" or name.startswith(("psycopg.", "pytest_maf.store.postgres"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "pytest_maf.store.postgres_schema", postgres_schema)
    monkeypatch.setenv("MAF_DATABASE_URL", UNREACHABLE)

    code, out, err = run(capsys, "setup")

    assert code == 2 and out == ""
    assert err == "maf: error: a PostgreSQL store needs the psycopg package: pip install 'pytest-maf[postgres]'\n"
    code, out, _ = run(capsys, "health-check", "--json")
    reached = next(check for check in json.loads(out)["checks"] if not check["ok"] and "psycopg" in check["message"])
    assert reached["hint"] == "pip install 'pytest-maf[postgres]'"  # before: run `maf setup` or fix MAF_DATABASE_URL


def test_the_schemas_are_the_same_migration_for_migration() -> None:
    assert postgres_schema.SCHEMA_VERSION == schema.SCHEMA_VERSION == SCHEMA_VERSION
    from pytest_maf.store.verify import current_tables

    assert list(postgres_schema.TABLES) == current_tables()


# Against the server


@pytest.mark.postgres
def test_setup_creates_then_finds_the_store_and_commands_use_it(
    capsys: pytest.CaptureFixture[str], postgres: tuple[str, str], repository: Path
) -> None:
    url, name = postgres
    code, out, _ = run(capsys, "setup")
    assert code == 0 and out.startswith(f"created {url} (schema {name})\n")
    assert f"schema version {SCHEMA_VERSION}\n" in out
    assert run(capsys, "setup")[1].startswith(f"found {url} (schema {name}); nothing to do")
    assert not (repository / ".maf" / "runtime.db").exists()  # nothing went to SQLite

    assert run(capsys, "task", "add", "--id", "t1")[0] == 0
    code, out, _ = run(capsys, "task", "claim", "--agent", "alice")
    assert code == 0 and out.startswith("claimed t1 attempt 1 for alice")
    code, out, _ = run(capsys, "health-check", "--database-only")
    assert code == 0 and "database.schema" in out

    with open_store(url, schema=name) as store:
        assert tasks.get_task(store, "t1").state == "LEASED"


@pytest.mark.postgres
def test_a_store_that_is_missing_newer_or_someone_elses_is_refused_untouched() -> None:
    import psycopg

    url = server_url()
    with scratch_schema(url) as name:
        with pytest.raises(StoreError, match="run `maf setup` first"):
            open_store(url, schema=name)
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {name}")
            connection.execute(f"CREATE TABLE {name}.invoices (id INT)")
        with pytest.raises(StoreError, match=r"not a pytest-maf store \(invoices\); it is left untouched"):
            setup_store(url, schema=name)
        with psycopg.connect(url, autocommit=True) as connection:
            assert connection.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (name,)
            ).fetchone() == (1,)
    with scratch_schema(url) as name:
        setup_store(url, schema=name)
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"INSERT INTO {name}.maf_schema_version VALUES ({SCHEMA_VERSION + 1}, 0)")
        with pytest.raises(StoreError, match="newer than this pytest-maf knows"):
            open_store(url, schema=name)


@pytest.mark.postgres
def test_the_schema_check_names_each_difference() -> None:
    import psycopg

    url = server_url()
    with scratch_schema(url) as name:
        with open_store(url, schema=name, create=True) as store:
            assert store.integrity_problems() == []
            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute(f"DROP INDEX {name}.idx_tasks_state_prio")
                connection.execute(f"ALTER TABLE {name}.evidence ADD COLUMN extra TEXT")
                connection.execute(f"DROP TABLE {name}.counters")
            assert store.integrity_problems() == [
                "table counters is missing",
                "table evidence: columns differ from the canonical schema",
                "table tasks: indexes differ from the canonical schema",
            ]


def test_the_first_operation_after_the_server_ended_the_idle_connection_goes_through() -> None:
    url = server_url()
    with scratch_schema(url) as name, open_store(url, create=True, schema=name) as store:
        tasks.add_task(store, task_id="before")
        backend = store.connection.info.backend_pid
        with _admin(url) as admin:  # as a restart, a failover or idle_session_timeout would
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))

        tasks.add_task(store, task_id="after")  # before: "terminating connection due to administrator command"

        assert store.connection.info.backend_pid != backend
        assert sorted(task.id for task in tasks.list_tasks(store)) == ["after", "before"]
