"""The created database matches the operations guide's canonical schema."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from pytest_maf.errors import StoreError
from pytest_maf.store import SCHEMA_VERSION, open_store, setup_store

# Copied from the operations guide, "Canonical Schema Reference": the contract
# the store is checked against, kept apart from the package's own DDL.
GUIDE_DDL = """
CREATE TABLE tasks (
  id TEXT PRIMARY KEY,
  state TEXT NOT NULL CHECK (state IN ('READY','LEASED','RUNNING','VERIFYING','COMMITTED','ROLLBACK','DONE','DEAD')),
  priority INTEGER NOT NULL DEFAULT 100,
  payload_json TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  token_budget INTEGER NOT NULL DEFAULT 0,
  cost_budget_cents INTEGER NOT NULL DEFAULT 0,
  policy_label TEXT NOT NULL DEFAULT 'private'
);
CREATE INDEX idx_tasks_state_prio ON tasks(state, priority, created_at);
CREATE TABLE leases (
  task_id TEXT PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
  agent_id TEXT NOT NULL,
  lease_expires_at INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  UNIQUE(task_id),
  UNIQUE(task_id, attempt)
);
CREATE TABLE events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  ts INTEGER NOT NULL,
  kind TEXT NOT NULL,
  data_json TEXT NOT NULL
);
CREATE TABLE evidence (
  task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  attempt INTEGER NOT NULL,
  verifier TEXT NOT NULL,
  result TEXT NOT NULL CHECK (result IN ('PASS','FAIL')),
  details_json TEXT NOT NULL,
  PRIMARY KEY (task_id, attempt, verifier)
);
"""
CANONICAL = ("tasks", "leases", "events", "evidence")
# Indexes pytest-maf adds beside the canonical ones (never changing a column).
EXTRA_INDEXES = {"events": {"idx_events_task", "idx_events_ts"}, "leases": {"idx_leases_expiry"}}


def describe(connection: sqlite3.Connection, table: str) -> dict[str, object]:
    """Columns, keys, foreign keys, indexes and the CREATE text (for CHECKs) of a table."""
    indexes = {}
    for row in connection.execute(f"PRAGMA index_list({table})"):
        name, unique, origin = row[1], row[2], row[3]
        columns = [info[2] for info in connection.execute(f"PRAGMA index_info('{name}')")]
        key = name if origin == "c" else f"{origin}:{','.join(columns)}"
        indexes[key] = (bool(unique), columns)
    (sql,) = connection.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return {
        "columns": connection.execute(f"PRAGMA table_info({table})").fetchall(),
        "foreign_keys": connection.execute(f"PRAGMA foreign_key_list({table})").fetchall(),
        "indexes": indexes,
        "sql": " ".join(sql.split()),
    }


def test_setup_creates_the_canonical_schema(db_path: Path) -> None:
    setup_store(db_path)
    reference = sqlite3.connect(":memory:")
    reference.executescript(GUIDE_DDL)
    created = sqlite3.connect(db_path)

    for table in CANONICAL:
        ours = describe(created, table)
        extras = EXTRA_INDEXES.get(table, set())
        assert extras <= set(ours["indexes"])  # type: ignore[operator]
        ours["indexes"] = {k: v for k, v in ours["indexes"].items() if k not in extras}  # type: ignore[attr-defined]
        assert ours == describe(reference, table), table


def test_store_connections_use_wal_and_foreign_keys(db_path: Path) -> None:
    report = setup_store(db_path)
    assert report.journal_mode == "wal"
    assert report.schema_version == SCHEMA_VERSION
    with open_store(db_path) as store:
        assert store.pragma("foreign_keys") == [(1,)]
        assert store.pragma("integrity_check") == [("ok",)]


def test_setup_is_idempotent(db_path: Path) -> None:
    first = setup_store(db_path)
    second = setup_store(db_path)

    assert first.created_file and first.applied_versions == tuple(range(1, SCHEMA_VERSION + 1))
    assert not second.created_file and second.applied_versions == ()
    assert second.tables == first.tables


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    setup_store(db_path)
    with sqlite3.connect(db_path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(StoreError, match="newer than this pytest-maf knows"):
        open_store(db_path)
    with pytest.raises(StoreError, match="upgrade pytest-maf"):
        setup_store(db_path)


def test_a_backup_from_a_newer_pytest_maf_fails_verification_saying_to_upgrade(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_maf.cli import main

    setup_store(db_path)
    with closing(sqlite3.connect(db_path)) as connection, connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    assert main(["db", "verify-backup", str(db_path)]) == 1
    err = capsys.readouterr().err
    assert f"schema version is {SCHEMA_VERSION + 1}, current is {SCHEMA_VERSION} (a newer pytest-maf wrote it:" in err
    assert "maf setup" not in err  # which cannot take a schema back


def test_missing_database_says_to_run_setup(db_path: Path) -> None:
    with pytest.raises(StoreError, match="maf setup"):
        open_store(db_path)
    assert not db_path.exists()


def test_a_file_that_is_not_a_database_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not an sqlite database, just some text" * 100)

    with pytest.raises(StoreError, match="cannot use the runtime database"):
        open_store(db_path)


def test_claim_query_uses_the_state_priority_index(db_path: Path) -> None:
    setup_store(db_path)
    connection = sqlite3.connect(db_path)
    plan = connection.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE state = 'READY'"
        " ORDER BY priority, created_at, rowid LIMIT 1"
    ).fetchall()
    details = " ".join(row[-1] for row in plan)
    assert "idx_tasks_state_prio" in details
    assert "TEMP B-TREE" not in details


def test_reclaiming_expired_leases_reads_only_the_expired_ones(db_path: Path) -> None:
    """Every claim reclaims expired leases first: a search on the expiry index, not a scan of every lease."""
    setup_store(db_path)
    plans: list[str] = []
    with open_store(db_path) as store:
        store.read(lambda tx: tx.expired_leases())  # warm: the statement below is the store's own
        store.connection.set_trace_callback(plans.append)
        store.read(lambda tx: tx.expired_leases())
        (query,) = [sql for sql in plans if "FROM leases" in sql]
        plan = " ".join(row[-1] for row in store.connection.execute(f"EXPLAIN QUERY PLAN {query}"))
    assert "USING INDEX idx_leases_expiry (lease_expires_at<?)" in plan.replace("COVERING ", "")
    assert "SCAN leases" not in plan


def test_the_newest_history_is_read_along_the_time_indexes(db_path: Path) -> None:
    """`maf history` and `maf status` read the newest events: a walk back along each history's time index."""
    setup_store(db_path)
    plans: list[str] = []
    with open_store(db_path) as store:
        store.connection.set_trace_callback(plans.append)
        store.read(lambda tx: tx.audit_trail(limit=100))
        (query,) = [sql for sql in plans if "FROM events" in sql]
        plan = " ".join(row[-1] for row in store.connection.execute(f"EXPLAIN QUERY PLAN {query}"))
    for index in ("idx_events_ts", "idx_reservation_events_ts", "idx_escalation_events_ts"):
        assert f"USING INDEX {index}" in plan.replace("COVERING ", ""), plan


def test_an_older_database_is_migrated_in_place(db_path: Path) -> None:
    """A version-1 store (tasks only) gains the reservation tables and keeps its rows."""
    from pytest_maf.store import schema

    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as connection:
        connection.executescript(schema.MIGRATIONS[0])
        connection.execute(
            "INSERT INTO tasks (id, state, payload_json, created_at, updated_at)"
            " VALUES ('old', 'READY', '{}', 1, 1)"
        )
        connection.execute("PRAGMA user_version = 1")

    report = setup_store(db_path)

    assert report.applied_versions == tuple(range(2, SCHEMA_VERSION + 1))
    assert "reservations" in report.tables
    with sqlite3.connect(db_path) as connection:
        assert connection.execute("SELECT id FROM tasks").fetchall() == [("old",)]


def test_the_verifier_accepts_a_fresh_store_and_names_each_problem(db_path: Path) -> None:
    from pytest_maf.store.verify import schema_problems

    setup_store(db_path)
    assert schema_problems(db_path) == []

    with sqlite3.connect(db_path) as connection:
        connection.execute("DROP INDEX idx_tasks_state_prio")
        connection.execute("ALTER TABLE evidence ADD COLUMN extra TEXT")
        connection.execute("DROP TABLE task_options")
    problems = schema_problems(db_path)

    assert problems == [
        "table tasks: index idx_tasks_state_prio is missing"
        " (CREATE INDEX idx_tasks_state_prio ON tasks(state, priority, created_at))",
        "table evidence: column extra is not in the canonical schema (TEXT NULL)",
        "table task_options is missing",
    ]


def test_the_verifier_names_a_missing_column_a_wrong_foreign_key_a_changed_check_and_a_stranger(
    db_path: Path,
) -> None:
    from pytest_maf.store import schema
    from pytest_maf.store.verify import schema_problems

    setup_store(db_path)
    with sqlite3.connect(db_path) as connection:
        connection.execute("DROP INDEX idx_mail_outbox_queued")  # it names the column dropped next
        connection.execute("ALTER TABLE mail_outbox DROP COLUMN delivered_at")
        connection.execute("DROP TABLE leases")
        connection.execute(
            "CREATE TABLE leases (task_id TEXT PRIMARY KEY REFERENCES escalations(id), agent_id TEXT NOT NULL,"
            " lease_expires_at INTEGER NOT NULL, attempt INTEGER NOT NULL, UNIQUE(task_id), UNIQUE(task_id, attempt))"
        )
        connection.execute(schema.LEASE_EXPIRY_DDL_V7)  # the index went with the table
        connection.execute("DROP TABLE counters")
        connection.execute(schema.COUNTERS_DDL_V5.replace("CHECK (value >= 0)", ""))
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.execute("CREATE TRIGGER forget AFTER INSERT ON events BEGIN DELETE FROM events; END")
    problems = schema_problems(db_path)

    assert "table mail_outbox: column delivered_at is missing (INTEGER NULL)" in problems
    wrong_key = "table leases: foreign key task_id differs from the canonical schema: REFERENCES escalations(id),"
    assert [problem for problem in problems if problem.startswith(wrong_key)]  # the expected key's actions need sqlite-utils 4
    assert "table counters: CHECK constraints or definition differ from the canonical schema" in problems
    assert "table notes is not part of the pytest-maf schema: drop it, or keep it in a database of its own" in problems
    assert (
        "table events: trigger forget is not in the canonical schema"
        " (CREATE TRIGGER forget AFTER INSERT ON events BEGIN DELETE FROM events; END)"
    ) in problems
    assert len(problems) == 6  # the index that went with the column, and nothing else


def test_the_verifier_notices_a_foreign_key_that_lost_its_cascade(db_path: Path) -> None:
    from pytest_maf.store import schema
    from pytest_maf.store.verify import schema_problems

    setup_store(db_path)
    with sqlite3.connect(db_path) as connection:
        connection.execute("DROP TABLE evidence")
        evidence = schema.CANONICAL_DDL[schema.CANONICAL_DDL.index("CREATE TABLE evidence") :].rstrip().rstrip(";")
        connection.execute(evidence.replace(" ON DELETE CASCADE", ""))

    problems = schema_problems(db_path)

    assert len(problems) == 1 and problems[0].startswith("table evidence: "), problems


def test_the_verifier_accepts_the_rows_a_recovery_could_not_place(db_path: Path) -> None:
    from pytest_maf.store.verify import LOST_AND_FOUND, schema_problems

    setup_store(db_path)
    with sqlite3.connect(db_path) as connection:
        connection.execute("ANALYZE")  # SQLite's own sqlite_stat1 is no stranger either
        connection.execute(f"CREATE TABLE {LOST_AND_FOUND} (rootpgno INTEGER, pgno INTEGER, nfield INTEGER, id INTEGER)")

    assert schema_problems(db_path) == []
