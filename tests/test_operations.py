"""Backup, restore and recovery while agents work; metrics that match the store; crash safety."""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import Callable, Mapping

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends import open_shared_store, shared_store, store_with_damaged_rows
from pytest_maf.audit import task_violations
from pytest_maf import escalation, reservations, tasks
from pytest_maf.cli import main
from pytest_maf.clock import ManualClock, system_clock
from pytest_maf.config import load_settings
from pytest_maf.evidence import record_evidence
from pytest_maf.metrics import exposition, metrics_server
from pytest_maf.store import maintenance, open_store, setup_store

WRITER = """
import sys, time
from pytest_maf import tasks
from pytest_maf.evidence import record_evidence
from backends import open_shared_store
db, agent = sys.argv[1], sys.argv[2]
with open_shared_store(db) as store:  # a SQLite file, or a PostgreSQL URL with the schema in MAF_TEST_SCHEMA
    while True:
        task = tasks.add_task(store)
        print(task.id, flush=True)  # printed only once the row is committed
        claim = tasks.claim_task(store, task.id, agent, 60_000)
        tasks.start_task(store, task.id, agent, claim.attempt)
        tasks.begin_verification(store, task.id, agent, claim.attempt)
        record_evidence(store, task.id, claim.attempt, "unit", "PASS", agent_id=agent)
        tasks.finish_task(store, task.id, agent, claim.attempt)
"""


DEADLINE_S = 60


def spawn_writer(
    db: str | Path, agent: str, *, report: bool = False, environment: Mapping[str, str] = {}
) -> subprocess.Popen[bytes]:
    """A process adding and finishing tasks; with ``report``, it prints each task's id once committed."""
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), agent], stdout=subprocess.PIPE if report else subprocess.DEVNULL,
        stderr=subprocess.PIPE, env={**os.environ, **environment, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def read_reports(writer: subprocess.Popen[bytes], lines: int, deadline_s: float = DEADLINE_S) -> bytes:
    """What the writer printed, read until at least ``lines`` whole lines came (the test fails at the deadline)."""
    assert writer.stdout is not None
    received = b""
    deadline = time.monotonic() + deadline_s
    while received.count(b"\n") < lines:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the writer reported fewer than {lines} commit(s) in {deadline_s} s"
        ready, _, _ = select.select([writer.stdout], [], [], remaining)
        if ready:
            chunk = os.read(writer.stdout.fileno(), 65536)
            assert chunk, f"the writer ended: {writer.stderr.read() if writer.stderr else ''!r}"
            received += chunk
    return received


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {deadline_s} s"
        time.sleep(0.05)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def task_ids(db: str | Path, environment: Mapping[str, str] = {}) -> set[str]:
    with open_shared_store(str(db), environment) as store:
        return {task.id for task in tasks.list_tasks(store)}


@pytest.mark.slow
def test_a_backup_taken_while_four_processes_write_is_complete_and_restorable(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    setup_store(db)
    writers = [spawn_writer(db, f"writer-{n}") for n in range(4)]
    try:
        wait_until(lambda: len(task_ids(db)) >= 200, "200 committed tasks")
        committed_before = task_ids(db)
        report = maintenance.backup(db, tmp_path / "backup.db.gz", compress=True)
        time.sleep(0.2)  # the writers go on after the backup too
    finally:
        for writer in writers:
            writer.kill()
            writer.wait(timeout=DEADLINE_S)

    rows = maintenance.verify_database(report.path)
    restored = tmp_path / "restored.db"
    maintenance.restore(restored, report.path)

    assert committed_before <= task_ids(restored)
    assert rows["tasks"] == len(task_ids(restored)) >= len(committed_before)
    assert len(task_ids(db)) > rows["tasks"]  # the writers really kept writing
    assert maintenance.verify_database(restored)["tasks"] == rows["tasks"]


def test_restoring_a_corrupt_backup_is_refused_and_the_live_database_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAF_DB_PATH", raising=False)
    main(["setup"])
    main(["task", "add", "--id", "keep-me"])
    live = tmp_path / ".maf" / "runtime.db"
    main(["db", "backup", "--output", "good.db"])
    corrupt = tmp_path / "corrupt.db"
    data = bytearray((tmp_path / "good.db").read_bytes())
    data[4096:8192] = random.Random(1).randbytes(4096)
    corrupt.write_bytes(bytes(data))
    before = digest(live)

    code = main(["db", "restore", str(corrupt)])

    assert code == 2  # bad input, refused before anything changed
    assert "is not a sound pytest-maf database" in capsys.readouterr().err
    assert digest(live) == before
    assert not list(live.parent.glob("*.before-restore-*"))
    assert main(["db", "verify-backup", str(corrupt)]) == 1
    assert main(["db", "verify-backup", "good.db"]) == 0


def test_restore_refuses_while_leases_are_live_unless_forced(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    with open_store(db, create=True) as store:
        tasks.add_task(store, task_id="working")
    maintenance.backup(db, tmp_path / "b.db")
    with open_store(db) as store:
        tasks.claim_next_task(store, "agent-a", 600_000)

    with pytest.raises(maintenance.StoreError, match="live lease"):
        maintenance.restore(db, tmp_path / "b.db")
    report = maintenance.restore(db, tmp_path / "b.db", force=True)

    assert report.kept_as.is_file()
    with open_store(db) as store:
        assert tasks.get_task(store, "working").state == "READY"
    with open_store(report.kept_as) as kept:
        assert tasks.get_task(kept, "working").state == "LEASED"


@pytest.mark.parametrize("use_shell", [True, False], ids=["shell-or-salvage", "salvage"])
def test_recover_rebuilds_a_damaged_database_and_reports_losses(tmp_path: Path, use_shell: bool) -> None:
    db = tmp_path / "runtime.db"
    with open_store(db, create=True) as store:
        for n in range(1500):
            tasks.add_task(store, task_id=f"t{n:05}", payload={"note": "x" * 200})
    with open_store(db) as store:
        store.pragma("wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    for number in range(10, len(data) // page - 5, 9):  # clobber every ninth page
        data[number * page : (number + 1) * page] = b"\xde\xad\xbe\xef" * (page // 4)
    db.write_bytes(bytes(data))
    assert maintenance.schema_problems(db)  # really damaged

    report = maintenance.recover(db, tmp_path / "recovered.db", use_shell=use_shell)

    assert report.problems == []  # integrity_check ok, schema as created
    assert 0 < report.recovered["tasks"] < 1500
    assert report.lost()["tasks"] == report.readable_before["tasks"] - report.recovered["tasks"] > 0
    assert report.recovered["task_options"] <= report.recovered["tasks"]  # no option left without its task
    with open_store(tmp_path / "recovered.db") as store:
        assert store.pragma("integrity_check") == [("ok",)]


def test_recover_leaves_another_application_s_database_alone_and_says_so_as_an_error_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = tmp_path / "app.db"
    with closing(sqlite3.connect(app)) as connection, connection:
        connection.execute("CREATE TABLE customers (id INTEGER)")
    text = tmp_path / "text.db"
    text.write_text("hi\n")

    assert main(["db", "recover", "--db", str(app), "--json"]) == 2
    refusal = json.loads(capsys.readouterr().out)
    assert refusal["exit_code"] == 2 and "is not a pytest-maf database" in refusal["error"]
    assert refusal["error"].endswith("nothing was recovered")
    assert main(["db", "recover", "--db", str(text), "--json"]) == 1  # ours or not, nothing in it could be read
    failure = json.loads(capsys.readouterr().out)
    assert failure["exit_code"] == 1 and failure["error"].startswith(f"recovered no row from {text}")
    assert failure["written"] is False and failure["output"] is None
    assert sorted(path.name for path in tmp_path.iterdir()) == ["app.db", "text.db"]


def test_a_store_sqlite_cannot_open_for_want_of_write_permission_is_not_called_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # SQLite writes beside a WAL database even to read it: in a read-only folder a sound store cannot be
    # opened, and recover, export and stats must say so, not send the operator to a restore.
    # (Permissions bind no one if the tests run as root: the user's view of them and SQLite's refusal are faked.)
    from pytest_maf.store import export
    from pytest_maf.store import sqlite as sqlite_store

    db = tmp_path / ".maf" / "runtime.db"
    with open_store(db, create=True) as store:
        tasks.add_task(store, task_id="kept")
    real_access, real_connect = os.access, sqlite3.connect
    monkeypatch.setattr(sqlite_store.os, "access", lambda path, mode: real_access(path, mode) and Path(path) != db.parent)

    def refused(target: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        if str(db) in str(target):
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(export.sqlite3, "connect", refused)
    monkeypatch.setattr(maintenance.sqlite3, "connect", refused)
    for command in (["db", "export"], ["db", "stats"], ["db", "recover", "--output", str(tmp_path / "r.db")]):
        assert main([*command, "--db", str(db)]) == 2, command
        err = capsys.readouterr().err
        assert f"the folder {db.parent} cannot be written by this user" in err, (command, err)
        assert "restore" not in err and "damaged" not in err, (command, err)
    assert not (tmp_path / "r.db").exists()


def test_salvage_of_an_older_store_keeps_the_rows_of_tables_that_gained_columns_since(tmp_path: Path) -> None:
    from pytest_maf.store import schema

    db = tmp_path / "runtime.db"
    connection = sqlite3.connect(db)
    for migration in schema.MIGRATIONS[:3]:  # before task_options gained `kind`
        connection.executescript(migration)
    for n in range(50):
        connection.execute(
            "INSERT INTO tasks (id, state, payload_json, created_at, updated_at) VALUES (?, 'READY', '{}', 1, 1)", (f"t{n:02}",)
        )
        connection.execute("INSERT INTO task_options (task_id, max_attempts) VALUES (?, 7)", (f"t{n:02}",))
    connection.execute("PRAGMA user_version = 3")
    connection.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    connection.commit()
    connection.close()

    report = maintenance.recover(db, tmp_path / "recovered.db", use_shell=False)

    assert report.problems == []
    assert report.recovered["tasks"] == report.recovered["task_options"] == 50  # nothing was damaged: nothing lost
    with sqlite3.connect(tmp_path / "recovered.db") as recovered:
        assert set(recovered.execute("SELECT max_attempts, kind FROM task_options")) == {(7, "work")}


def test_cleanup_is_a_dry_run_until_applied(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    with open_store(db, create=True, clock=lambda: 1_000) as store:
        tasks.add_task(store, task_id="old")
        tasks.cancel_task(store, "old")
        tasks.add_task(store, task_id="ready")

    dry = maintenance.cleanup(db, older_than_ms=10_000, apply=False)
    applied = maintenance.cleanup(db, older_than_ms=10_000, apply=True)

    assert dry == applied == {"tasks": 1, "events": 2, "evidence": 0, "reservation_events": 0, "escalation_events": 0}
    with open_store(db) as store:
        remaining = store.read(lambda t: t.events())
    assert {event.task_id for event in remaining} == {"ready"}


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_metrics_parse_and_equal_the_store(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    settings = load_settings(environ={}, cwd=tmp_path)
    with open_store(settings.db_path, create=True) as store:
        for n in range(5):
            tasks.add_task(store, task_id=f"t{n}")
        claim = tasks.claim_next_task(store, "a", 60_000)
        tasks.start_task(store, claim.task_id, "a", 1)
        tasks.begin_verification(store, claim.task_id, "a", 1)
        record_evidence(store, claim.task_id, 1, "unit", "FAIL", agent_id="a")
        tasks.finish_task(store, claim.task_id, "a", 1)
        tasks.claim_next_task(store, "b", 60_000)
        tasks.cancel_task(store, "t4")
        reservations.acquire(store, ["src/**"], "a", 60_000)
        with pytest.raises(reservations.ReservationConflictError):
            reservations.acquire(store, ["src/x.py"], "b", 60_000)
        escalation.escalate(store, settings, agent_id="a", bead_id="b1", error_context="x", target="codex-senior")
        counts = store.read(lambda t: t.count_tasks_by_state())

    values = metric_values(exposition(settings))

    for state in ("READY", "LEASED", "DEAD"):
        assert values[("maf_tasks", (("state", state),))] == counts.get(state, 0)
    assert values[("maf_leases_active", ())] == 1
    assert values[("maf_reservations_active", ())] == 1
    assert values[("maf_reservation_operations_total", (("op", "acquire"),))] == 1
    assert values[("maf_reservation_conflicts_total", ())] == 1
    assert values[("maf_escalations", (("status", "active"),))] == 1
    assert values[("maf_evidence_total", (("result", "FAIL"),))] == 1
    assert values[("maf_errors_total", (("kind", "task_rollback"),))] == 1
    assert values[("maf_db_query_duration_seconds_count", ())] == 1
    assert 0 < values[("maf_system_health_score", ())] <= 1


@pytest.mark.parametrize(("signum", "code", "said"), [(signal.SIGINT, 130, "maf: interrupted"), (signal.SIGTERM, 143, "maf: terminated")])
def test_metrics_serve_stopped_exits_as_every_command_does(tmp_path: Path, signum: int, code: int, said: str) -> None:
    serving = subprocess.Popen(
        [sys.executable, "-m", "pytest_maf", "--db", str(tmp_path / "maf.db"), "metrics", "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as at a terminal, not as in a background job
    )
    try:
        assert serving.stdout is not None and select.select([serving.stdout], [], [], 30)[0], "it never said it serves"
        assert serving.stdout.readline().startswith("serving http://")
        serving.send_signal(signum)
        _, err = serving.communicate(timeout=30)
    finally:
        serving.kill()
    assert (serving.returncode, err.strip()) == (code, said)  # before: Ctrl-C exited 0 without a word


def test_metrics_are_served_over_http_on_loopback(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    settings = load_settings(environ={}, cwd=tmp_path)
    setup_store(settings.db_path)
    server = metrics_server(settings, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        first = urllib.request.urlopen(url, timeout=5).read().decode()
        second = urllib.request.urlopen(url, timeout=5).read().decode()
        # A scrape that asks for families by name (Prometheus's params: {name[]: [...]}); before, an empty 200
        some = urllib.request.urlopen(f"{url}?name[]=maf_tasks&name[]=maf_claim_duration_seconds_count", timeout=5)
        some = some.read().decode()
    finally:
        server.shutdown()
        server.server_close()

    assert metric_values(first)[("maf_tasks", (("state", "READY"),))] == 0
    assert metric_values(second)[("maf_db_query_duration_seconds_count", ())] == 2  # one probe per scrape
    asked = metric_values(some)
    assert asked[("maf_tasks", (("state", "READY"),))] == 0 and asked[("maf_claim_duration_seconds_count", ())] == 0
    assert {name for name, _ in asked} == {"maf_tasks", "maf_claim_duration_seconds_count"}


@pytest.mark.slow
def test_a_writer_killed_mid_transaction_loses_no_committed_row(backend: str, tmp_path: Path) -> None:
    with shared_store(backend, tmp_path) as (db, environment):
        kill_writers_mid_transaction(db, environment)


def kill_writers_mid_transaction(db: str, environment: Mapping[str, str]) -> None:
    committed: set[str] = set()
    rng = random.Random(7)
    for _ in range(25):
        writer = spawn_writer(db, "victim", report=True, environment=environment)
        try:
            received = read_reports(writer, lines=rng.randint(1, 20))  # it has committed: now kill it mid-work
            time.sleep(rng.uniform(0, 0.01))
        finally:
            writer.send_signal(signal.SIGKILL)
            out, _ = writer.communicate(timeout=DEADLINE_S)
        whole_lines = (received + out).split(b"\n")[:-1]  # a line cut by the kill is not a report
        committed |= {line.decode() for line in whole_lines}
        assert committed <= task_ids(db, environment)  # every row reported committed survived the kill

    assert len(committed) >= 25
    with open_shared_store(db, environment) as store:
        if store.backend == "sqlite":
            assert store.pragma("integrity_check") == [("ok",)]  # type: ignore[attr-defined]
        assert store.integrity_problems() == []
        held = {lease.task_id for lease in store.read(lambda t: t.list_leases())}
    # A task left mid-cycle keeps its lease until it expires, and is then reclaimed like any other.
    later = open_shared_store(db, environment, clock=lambda: system_clock() + 24 * 60 * 60_000, use_client_clock=True)
    with later as store:
        reclaimed = tasks.reclaim_expired_leases(store)
        states = {task.state for task in tasks.list_tasks(store)}
        # No lease granted twice, no operation accepted from a stale holder, no task added or finished twice.
        assert task_violations(store.read(lambda tx: tx.events())) == []
    assert held  # the kills landed mid-cycle, with a lease held
    assert {item.task_id for item in reclaimed} == held
    assert states <= {"READY", "DONE", "DEAD"}


def counter_totals(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {key: value for key, value in metric_values(text).items() if key[0].endswith("_total")}


def test_cleanup_keeps_every_counter_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".git").mkdir()
    settings = load_settings(environ={}, cwd=tmp_path)
    clock = ManualClock(1_700_000_000_000)  # long ago: every finished task is old enough for --days 0
    with open_store(settings.db_path, create=True, clock=clock) as store:
        for task_id, result in (("failed", "FAIL"), ("passed", "PASS")):
            tasks.add_task(store, task_id=task_id, max_attempts=1)
            claim = tasks.claim_task(store, task_id, "a", 60_000)
            tasks.start_task(store, task_id, "a", claim.attempt)
            tasks.begin_verification(store, task_id, "a", claim.attempt)
            record_evidence(store, task_id, claim.attempt, "unit", result, agent_id="a")
            tasks.finish_task(store, task_id, "a", claim.attempt)  # failed: rollback, exhausted, DEAD
        tasks.add_task(store, task_id="expired")
        tasks.claim_task(store, "expired", "b", 60_000)
        clock.advance(24 * 60 * 60_000)
        tasks.reclaim_expired_leases(store)
        tasks.cancel_task(store, "expired")
        reservations.acquire(store, ["src/**"], "a", 60_000)
        with pytest.raises(reservations.ReservationConflictError):
            reservations.acquire(store, ["src/x.py"], "b", 60_000)
        reservations.release(store, ["src/**"], "a")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAF_DB_PATH", raising=False)
    before = counter_totals(exposition(settings))

    assert main(["db", "cleanup", "--days", "0", "--apply", "--json"]) == 0
    deleted = json.loads(capsys.readouterr().out)
    after = counter_totals(exposition(settings))
    assert main(["db", "cleanup", "--days", "0", "--apply"]) == 0  # nothing left to fold twice
    again = counter_totals(exposition(settings))

    assert deleted["tasks"] == 3 and deleted["events"] > 0 and deleted["evidence"] == 2
    for kind in ("task_rollback", "task_expire", "task_exhaust", "reservation_conflict"):
        assert before[("maf_errors_total", (("kind", kind),))] >= 1
    assert before[("maf_evidence_total", (("result", "PASS"),))] == 1
    assert after == again == before  # a counter never goes down: Prometheus would read a reset
    with open_store(settings.db_path) as store:
        assert store.read(lambda t: t.events()) == []  # the rows really are gone


def test_checking_and_restoring_a_backup_leaves_nothing_beside_it(tmp_path: Path) -> None:
    db = tmp_path / "live" / "runtime.db"
    with open_store(db, create=True) as store:
        tasks.add_task(store, task_id="kept")
    backups = tmp_path / "backups"
    maintenance.backup(db, backups / "runtime.db")
    before = digest(backups / "runtime.db")

    maintenance.verify_database(backups / "runtime.db")
    maintenance.restore(db, backups / "runtime.db", force=True)

    assert sorted(path.name for path in backups.iterdir()) == ["runtime.db"]  # no -wal, no -shm
    assert digest(backups / "runtime.db") == before


def test_restore_replaces_a_live_database_too_damaged_to_open(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    with open_store(db, create=True) as store:
        tasks.add_task(store, task_id="kept")
    maintenance.backup(db, tmp_path / "backup.db")
    garbage = random.Random(3).randbytes(40_960)
    db.write_bytes(garbage)

    with pytest.raises(maintenance.UsageError, match="no SQLite database.*add --force"):
        maintenance.restore(db, tmp_path / "backup.db")  # it might be a file named by mistake
    assert db.read_bytes() == garbage and not list(tmp_path.glob("*.before-restore-*"))
    report = maintenance.restore(db, tmp_path / "backup.db", force=True)

    assert report.kept_as is not None and report.kept_as.read_bytes() == garbage
    with open_store(db) as store:
        assert [task.id for task in tasks.list_tasks(store)] == ["kept"]
        assert store.pragma("integrity_check") == [("ok",)]


@pytest.mark.parametrize("force", [False, True])
def test_a_restore_never_replaces_another_application_s_database_or_a_file_that_is_no_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], force: bool
) -> None:
    with open_store(tmp_path / "runtime.db", create=True) as store:
        tasks.add_task(store, task_id="kept")
    maintenance.backup(tmp_path / "runtime.db", tmp_path / "backup.db")
    app = tmp_path / "app.db"
    with sqlite3.connect(app) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER)")
        connection.execute("INSERT INTO customers VALUES (1)")
    connection.close()
    notes = tmp_path / "NOTES.md"
    notes.write_text("# my notes\n")
    before = {path: path.read_bytes() for path in (app, notes)}

    assert main(["db", "restore", str(tmp_path / "backup.db"), "--db", str(app), *["--force"] * force]) == 2
    assert "is not a pytest-maf database (application_id 0x0; tables: customers)" in capsys.readouterr().err
    if not force:  # --force replaces a store damaged past being a SQLite file, never a database of another's
        assert main(["db", "restore", str(tmp_path / "backup.db"), "--db", str(notes), "--json"]) == 2
        refusal = json.loads(capsys.readouterr().out)
        assert "no SQLite database" in refusal["error"] and refusal["exit_code"] == 2

    assert {path: path.read_bytes() for path in (app, notes)} == before
    assert sorted(path.name for path in tmp_path.glob("[aN]*")) == ["NOTES.md", "app.db"]  # nothing kept aside or beside


def test_a_backup_of_an_older_store_verifies_and_restores_at_the_current_schema(tmp_path: Path) -> None:
    from pytest_maf.store import SCHEMA_VERSION, schema

    old = tmp_path / "old.db"
    connection = sqlite3.connect(old)
    for migration in schema.MIGRATIONS[:4]:
        connection.executescript(migration)
    connection.execute("INSERT INTO tasks (id, state, payload_json, created_at, updated_at) VALUES ('kept', 'READY', '{}', 1, 1)")
    connection.execute("PRAGMA user_version = 4")
    connection.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    connection.commit()
    connection.close()
    before = digest(old)

    rows = maintenance.verify_database(old)
    maintenance.restore(tmp_path / "runtime.db", old)

    assert rows["tasks"] == 1
    assert digest(old) == before  # checked in a private copy
    with open_store(tmp_path / "runtime.db") as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert [task.id for task in tasks.list_tasks(store)] == ["kept"]


def test_a_backup_of_a_damaged_store_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    store_with_damaged_rows(db)

    with pytest.raises(maintenance.StoreError, match="is damaged.*maf db recover"):
        maintenance.backup(db, tmp_path / "backups" / "b.db")

    assert list((tmp_path / "backups").iterdir()) == []


def test_a_store_in_a_folder_named_with_uri_characters_is_read_as_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "we#ird?mode=rw"  # in a file: URI these would end the path
    folder.mkdir()
    with open_store(folder / "runtime.db", create=True) as store:
        tasks.add_task(store, task_id="kept")
    maintenance.backup(folder / "runtime.db", folder / "backup.db")
    app = folder / "app.db"
    with closing(sqlite3.connect(app)) as connection, connection:
        connection.execute("CREATE TABLE customers (id INTEGER)")
    capsys.readouterr()

    # Before: the check opened "we" (the name cut at '#'), found nothing foreign, and restored over app.db.
    assert main(["db", "restore", str(folder / "backup.db"), "--db", str(app)]) == 2
    assert "is not a pytest-maf database (application_id 0x0; tables: customers)" in capsys.readouterr().err
    assert main(["db", "export", "--db", str(folder / "runtime.db"), "--table", "tasks"]) == 0
    assert [row["id"] for row in json.loads(capsys.readouterr().out)["tasks"]] == ["kept"]
    assert main(["db", "verify-backup", str(folder / "backup.db")]) == 0


def test_a_restore_over_a_database_another_program_holds_locked_is_refused_not_taken_for_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_store(tmp_path / "runtime.db", create=True) as store:
        tasks.add_task(store, task_id="kept")
    maintenance.backup(tmp_path / "runtime.db", tmp_path / "backup.db")
    app = tmp_path / "app.db"
    holder = sqlite3.connect(app, isolation_level=None)
    try:
        holder.execute("CREATE TABLE orders (item TEXT)")
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("INSERT INTO orders VALUES ('keep me')")  # the other program, at work

        # Before: "database is locked" read as a damaged store, and the program's database restored over.
        assert main(["db", "restore", str(tmp_path / "backup.db"), "--db", str(app)]) == 2
        assert "could not be read to tell whose database it is (database is locked)" in capsys.readouterr().err
        holder.execute("COMMIT")
    finally:
        holder.close()
    with closing(sqlite3.connect(app)) as connection:
        assert connection.execute("SELECT item FROM orders").fetchall() == [("keep me",)]
    assert not list(tmp_path.glob("app.db.before-restore-*"))
