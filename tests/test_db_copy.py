"""`maf db copy`: a whole store from SQLite to PostgreSQL and back, row for row."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends import scratch_schema, server_url, store_rows
from pytest_maf import reservations, tasks
from pytest_maf.cli import main
from pytest_maf.clock import ManualClock
from pytest_maf.evidence import record_evidence
from pytest_maf.records import Escalation
from pytest_maf.store import open_store
from pytest_maf.store.copy import read_rows

MINUTE_MS = 60_000


def fill_store(path: Path, clock: ManualClock, mail_root: Path) -> None:
    """Tasks in several states (with leases and evidence), reservations (one tied to a task),
    an escalation with its event, and queued agent-mail."""
    with open_store(path, create=True, clock=clock) as store:
        for number in range(6):
            tasks.add_task(store, task_id=f"task-{number}", priority=100 - number % 2, payload={"goal": f"ü {number}"})
            clock.advance(10)
        leased = tasks.claim_task(store, "task-0", "agent-a", 30 * MINUTE_MS)
        running = tasks.claim_task(store, "task-1", "agent-b", 30 * MINUTE_MS)
        tasks.start_task(store, "task-1", "agent-b", running.attempt)
        done = tasks.claim_task(store, "task-2", "agent-a", 30 * MINUTE_MS)
        tasks.start_task(store, "task-2", "agent-a", done.attempt)
        tasks.begin_verification(store, "task-2", "agent-a", done.attempt)
        record_evidence(store, "task-2", done.attempt, "unit", "PASS", {"ran": 3}, agent_id="agent-a")
        tasks.finish_task(store, "task-2", "agent-a", done.attempt)
        failed = tasks.claim_task(store, "task-3", "agent-b", 30 * MINUTE_MS)
        tasks.start_task(store, "task-3", "agent-b", failed.attempt)
        tasks.begin_verification(store, "task-3", "agent-b", failed.attempt)
        record_evidence(store, "task-3", failed.attempt, "lint", "FAIL", {"why": "E501"}, agent_id="agent-b")
        tasks.cancel_task(store, "task-5")
        reservations.acquire(store, ["src/**"], "agent-a", 30 * MINUTE_MS, reason="refactor", task_id=leased.task_id)
        reservations.acquire(store, ["docs/*.md"], "agent-b", 30 * MINUTE_MS, exclusive=False)
        reservations.acquire(store, ["/README.md"], "agent-c", 30 * MINUTE_MS)
        reservations.force_release(store, ["/README.md"], "agent-a", "urgent fix", mail_root)

        def escalate(transaction: tasks.Transaction) -> None:
            transaction.put_escalation(Escalation(
                "esc-1", "agent-b", "task-3", "lead", 1, "active", "stuck on lint", transaction.now, transaction.now,
            ))
            transaction.insert_escalation_event("esc-1", "raised", {"level": 1})
            transaction.enqueue_mail({"id": "mail-queued", "to": "lead", "subject": "stuck"})

        store.write(escalate)


@pytest.fixture
def original(tmp_path: Path, clock: ManualClock) -> Path:
    path = tmp_path / "original.db"
    fill_store(path, clock, tmp_path / "mail")
    return path


def test_a_store_copied_to_postgresql_and_back_has_the_same_rows(
    original: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server_url()
    returned = tmp_path / "returned.db"
    with scratch_schema(url) as schema:
        assert main(["db", "copy", str(original), url, "--dest-schema", schema]) == 0
        assert "row counts and schema verified" in capsys.readouterr().out
        with open_store(url, schema=schema) as on_postgres:
            assert [task.id for task in tasks.list_tasks(on_postgres)] == [
                task.id for task in tasks.list_tasks(open_store(original))
            ]
        assert main(["db", "copy", url, str(returned), "--source-schema", schema, "--json"]) == 0
    with open_store(original) as before, open_store(returned) as after:
        rows_before, rows_after = read_rows(before), read_rows(after)
    assert all(rows_before[table] for table in ("tasks", "leases", "events", "evidence", "reservations",
                                                 "reservation_events", "escalations", "escalation_events", "mail_outbox"))
    assert any(row[-1] == "task-0" for row in rows_before["reservations"])  # tied to a task
    assert rows_after["tasks"] == rows_before["tasks"]  # in insertion order too: the claim's last tie-breaker
    for table in rows_before:  # PostgreSQL keeps no insertion order for rows keyed by text (mail_outbox)
        assert sorted(rows_after[table], key=repr) == sorted(rows_before[table], key=repr), table


def test_a_copy_between_two_files_keeps_every_row(original: Path, tmp_path: Path) -> None:
    copied = tmp_path / "copied.db"
    assert main(["db", "copy", str(original), str(copied)]) == 0
    with open_store(original) as before, open_store(copied) as after:
        assert read_rows(after) == read_rows(before)


def test_a_destination_with_rows_is_refused_untouched_unless_forced(
    original: Path, tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    occupied = tmp_path / "occupied.db"
    with open_store(occupied, create=True, clock=clock) as store:
        tasks.add_task(store, task_id="already-here")
        rows = store_rows(store)
    assert main(["db", "copy", str(original), str(occupied)]) == 2
    assert "already holds rows" in capsys.readouterr().err
    with open_store(occupied) as store:
        assert store_rows(store) == rows

    assert main(["db", "copy", str(original), str(occupied), "--force"]) == 0
    assert "replacing 3 row(s)" in capsys.readouterr().out  # the task, its options and its event
    with open_store(original) as before, open_store(occupied) as after:
        assert read_rows(after) == read_rows(before)


def test_a_postgresql_destination_with_rows_is_refused_untouched(original: Path, clock: ManualClock) -> None:
    url = server_url()
    with scratch_schema(url) as schema:
        with open_store(url, create=True, schema=schema, clock=clock, use_client_clock=True) as store:
            tasks.add_task(store, task_id="already-here")
            rows = store_rows(store)
            assert main(["db", "copy", str(original), url, "--dest-schema", schema]) == 2
            assert store_rows(store) == rows


def test_a_store_is_not_copied_onto_itself(original: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "copy", str(original), str(original), "--force"]) == 2
    assert "the same store" in capsys.readouterr().err


def test_a_url_password_is_never_shown(original: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "copy", str(original), "postgresql://maf:s3cret@127.0.0.1:1/none"]) == 2
    captured = capsys.readouterr()
    assert "s3cret" not in captured.out + captured.err and "****" in captured.err


def test_a_postgresql_store_is_not_copied_onto_itself(capsys: pytest.CaptureFixture[str]) -> None:
    url = server_url()
    spelled_otherwise = url.replace("127.0.0.1:5432", "127.0.0.1")  # the default port, left out
    assert main(["db", "copy", url, spelled_otherwise, "--source-schema", "one", "--dest-schema", "one"]) == 2
    assert "the same store" in capsys.readouterr().err


def test_a_copy_that_fails_leaves_no_new_schema_behind(original: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    with sqlite3.connect(original) as connection:  # a reason kept before NUL was refused: PostgreSQL cannot hold it
        connection.execute("UPDATE reservations SET reason = 'a' || char(0) || 'b'")
    url = server_url()
    with scratch_schema(url) as schema:
        assert main(["db", "copy", str(original), url, "--dest-schema", schema]) == 2
        assert "NUL" in capsys.readouterr().err
        import psycopg

        with psycopg.connect(url) as connection:  # before: the schema's 14 empty tables were left
            assert connection.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None
