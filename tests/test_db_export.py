"""`maf db export`: the evidence (and every other table) as JSON or CSV, exactly as stored, read-only."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pytest_maf import tasks
from pytest_maf.cli import main
from pytest_maf.clock import ManualClock
from pytest_maf.evidence import record_evidence
from pytest_maf.store import open_store, schema

NOTE = 'naïve, "quoted", with a comma\nand a second line'


@pytest.fixture
def known_store(db_path: Path, clock: ManualClock) -> Path:
    """A store with two tasks and three evidence rows (PASS and FAIL), written at known times."""
    with open_store(db_path, create=True, clock=clock) as store:
        for task_id, results in (("build", [("unit", "PASS"), ("lint", "FAIL")]), ("docs", [("spelling", "PASS")])):
            tasks.add_task(store, task_id=task_id)
            claim = tasks.claim_task(store, task_id, "agent-a", 60_000)
            tasks.start_task(store, task_id, "agent-a", claim.attempt)
            tasks.begin_verification(store, task_id, "agent-a", claim.attempt)
            for verifier, result in results:
                clock.advance(1_000)
                record_evidence(store, task_id, claim.attempt, verifier, result, {"note": NOTE}, agent_id="agent-a")
        store.pragma("wal_checkpoint(TRUNCATE)")
    return db_path


def stored_rows(db: Path, table: str) -> list[dict[str, Any]]:
    """The table's rows as SQLite holds them, in rowid order (read apart from the export)."""
    connection = sqlite3.connect(db)
    connection.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in connection.execute(f"SELECT * FROM {table} ORDER BY rowid")]
    finally:
        connection.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(db: Path, *argv: str) -> int:
    return main(["--db", str(db), "db", "export", *argv])


def test_json_round_trips_every_table_exactly(known_store: Path, tmp_path: Path) -> None:
    output = tmp_path / "export" / "store.json"

    assert export(known_store, "--output", str(output)) == 0

    exported = json.loads(output.read_text(encoding="utf-8"))
    assert list(exported) == sorted(exported) and set(exported) >= set(schema.CANONICAL_TABLES)
    for table, rows in exported.items():
        assert rows == stored_rows(known_store, table), table
    evidence = exported["evidence"]
    assert [(row["task_id"], row["verifier"], row["result"]) for row in evidence] == [
        ("build", "unit", "PASS"), ("build", "lint", "FAIL"), ("docs", "spelling", "PASS"),
    ]
    assert {json.loads(row["details_json"])["note"] for row in evidence} == {NOTE}  # JSON columns stay text
    assert [row["ts"] for row in exported["events"] if row["task_id"] == "build"][0] == 1_700_000_000_000  # epoch ms


def test_json_to_standard_output_is_the_same_export(
    known_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export(known_store, "--table", "evidence", "tasks") == 0
    printed = json.loads(capsys.readouterr().out)

    assert list(printed) == ["evidence", "tasks"]
    assert printed["evidence"] == stored_rows(known_store, "evidence")
    assert printed["tasks"] == stored_rows(known_store, "tasks")


def test_csv_of_the_evidence_reads_back_as_the_same_rows(known_store: Path, tmp_path: Path) -> None:
    output = tmp_path / "evidence.csv"

    assert export(known_store, "--format", "csv", "--table", "evidence", "--output", str(output)) == 0

    with open(output, newline="", encoding="utf-8") as handle:
        read_back = list(csv.DictReader(handle))
    stored = stored_rows(known_store, "evidence")
    assert read_back == [{column: "" if value is None else str(value) for column, value in row.items()} for row in stored]
    assert len(read_back) == 3 and json.loads(read_back[0]["details_json"]) == {"note": NOTE}


def test_csv_to_standard_output_keeps_a_null_as_an_empty_cell(
    db_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    open_store(db_path, create=True, clock=clock).close()
    with sqlite3.connect(db_path) as connection:
        connection.execute(
            "INSERT INTO mail_outbox (id, recipient, message_json, created_at, delivered_at)"
            " VALUES ('m1', 'bob', '{}', 5, NULL), ('m2', 'bob', '{}', 6, 7)"
        )

    assert export(db_path, "--format", "csv", "--table", "mail_outbox") == 0

    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [
        ["id", "recipient", "message_json", "created_at", "delivered_at"],
        ["m1", "bob", "{}", "5", ""],
        ["m2", "bob", "{}", "6", "7"],
    ]


def test_an_export_or_stats_leaves_the_database_byte_for_byte_unchanged_and_nothing_beside_it(known_store: Path, tmp_path: Path) -> None:
    before = digest(known_store)
    beside = sorted(path.name for path in known_store.parent.iterdir())

    assert export(known_store, "--output", str(tmp_path / "all.json")) == 0
    assert export(known_store, "--format", "csv", "--table", "tasks", "--output", str(tmp_path / "tasks.csv")) == 0
    assert main(["--db", str(known_store), "db", "stats"]) == 0  # the same read-only snapshot

    assert digest(known_store) == before
    # nothing beside it: a -wal left there made a backup look in use (unlisted, never pruned or restored)
    assert sorted(path.name for path in known_store.parent.iterdir()) == beside


def test_an_older_store_is_exported_as_it_is_never_migrated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "old.db"
    connection = sqlite3.connect(db)
    for migration in schema.MIGRATIONS[:4]:
        connection.executescript(migration)
    connection.execute("INSERT INTO tasks (id, state, payload_json, created_at, updated_at) VALUES ('kept', 'READY', '{}', 1, 2)")
    connection.execute("PRAGMA user_version = 4")
    connection.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    connection.commit()
    connection.close()
    before = digest(db)

    assert export(db) == 0
    exported = json.loads(capsys.readouterr().out)
    assert export(db, "--table", "mail_outbox") == 2  # made by migration 6, which this store has not had
    refused = capsys.readouterr()

    assert exported["tasks"][0]["id"] == "kept"
    assert "mail_outbox" not in exported and "counters" not in exported  # tables of migrations 5 and 6
    assert refused.out == "" and "table mail_outbox is not in this store yet (schema version 4)" in refused.err

    assert digest(db) == before
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (4,)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--table", "nope"], "no table 'nope' in a pytest-maf store; its tables are: agents, counters, escalation_events,"),
        (["--format", "csv"], "a CSV export holds one table: give exactly one --table"),
        (["--format", "csv", "--table", "tasks", "events"], "a CSV export holds one table"),
        (["--output", "{db}"], "which this command must not overwrite"),
        (["--output", "{db}-wal"], "which this command must not overwrite"),
    ],
    ids=["unknown-table", "csv-without-a-table", "csv-of-two-tables", "output-over-the-store", "output-over-the-wal"],
)
def test_a_refused_export_is_one_line_and_touches_nothing(
    known_store: Path, argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted(path.name for path in known_store.parent.iterdir())
    before = digest(known_store)

    code = export(known_store, *(arg.format(db=known_store) for arg in argv))

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == "" and words in captured.err and len(captured.err.splitlines()) == 1
    assert digest(known_store) == before
    assert sorted(path.name for path in known_store.parent.iterdir()) == files  # not even opened


def test_a_store_opened_through_a_symbolic_link_guards_its_real_files(
    known_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = tmp_path / "elsewhere" / "link.db"
    link.parent.mkdir()
    link.symlink_to(known_store)  # SQLite keeps the WAL beside the file the link names, not beside the link

    code = main(["--db", str(link), "db", "export", "--output", f"{known_store}-wal"])

    assert code == 2 and "must not overwrite" in capsys.readouterr().err
    assert not Path(f"{known_store}-wal").exists()


def test_an_export_to_a_pipe_writes_through_it(known_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import threading

    fifo = tmp_path / "export.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()

    code = export(known_store, "--output", str(fifo))
    reader.join(timeout=30)

    assert code == 0 and not reader.is_alive()
    assert fifo.is_fifo()  # written to, not replaced by a regular file
    assert [row["verifier"] for row in json.loads(received[0])["evidence"]] == ["unit", "lint", "spelling"]


def test_a_database_that_is_not_a_store_is_refused_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    before = digest(other)

    assert export(other) == 2

    assert "is not a pytest-maf database" in capsys.readouterr().err
    assert digest(other) == before


@pytest.mark.postgres
def test_a_postgresql_store_is_exported_the_way_the_refusal_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from backends import commands_on_postgres

    with commands_on_postgres(tmp_path, monkeypatch) as (url, scratch):
        with open_store(url, create=True, schema=scratch) as store:
            tasks.add_task(store, task_id="on-the-server", payload={"note": NOTE})

        assert main(["db", "export"]) == 2
        refusal = capsys.readouterr().err
        assert "(maf db copy URL export.db), then export that (maf db export --db export.db)" in refusal
        assert main(["db", "copy", url, "export.db"]) == 0
        monkeypatch.delenv("MAF_DATABASE_URL")
        capsys.readouterr()
        assert main(["db", "export", "--db", "export.db", "--table", "tasks"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert [(row["id"], json.loads(row["payload_json"])) for row in exported["tasks"]] == [("on-the-server", {"note": NOTE})]
