"""Backup, restore and recovery while agents work; metrics that match the store; crash safety."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pytest_maf import escalation, reservations, tasks
from pytest_maf.cli import main
from pytest_maf.config import load_settings
from pytest_maf.evidence import record_evidence
from pytest_maf.metrics import exposition, metrics_server
from pytest_maf.store import maintenance, open_store, setup_store

WRITER = """
import sys, time
from pytest_maf import tasks
from pytest_maf.evidence import record_evidence
from pytest_maf.store import open_store
db, agent = sys.argv[1], sys.argv[2]
with open_store(db) as store:
    while True:
        task = tasks.add_task(store)
        print(task.id, flush=True)  # printed only once the row is committed
        claim = tasks.claim_task(store, task.id, agent, 60_000)
        tasks.start_task(store, task.id, agent, claim.attempt)
        tasks.begin_verification(store, task.id, agent, claim.attempt)
        record_evidence(store, task.id, claim.attempt, "unit", "PASS", agent_id=agent)
        tasks.finish_task(store, task.id, agent, claim.attempt)
"""


def spawn_writer(db: Path, agent: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), agent], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def task_ids(db: Path) -> set[str]:
    with open_store(db) as store:
        return {task.id for task in tasks.list_tasks(store)}


@pytest.mark.slow
def test_a_backup_taken_while_four_processes_write_is_complete_and_restorable(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    setup_store(db)
    writers = [spawn_writer(db, f"writer-{n}") for n in range(4)]
    try:
        while len(task_ids(db)) < 200:
            time.sleep(0.05)
        committed_before = task_ids(db)
        report = maintenance.backup(db, tmp_path / "backup.db.gz", compress=True)
        time.sleep(0.2)  # the writers go on after the backup too
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()

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

    assert code == 1
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


def test_cleanup_is_a_dry_run_until_applied(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    with open_store(db, create=True, clock=lambda: 1_000) as store:
        tasks.add_task(store, task_id="old")
        tasks.cancel_task(store, "old")
        tasks.add_task(store, task_id="ready")

    dry = maintenance.cleanup(db, older_than_ms=10_000, apply=False)
    applied = maintenance.cleanup(db, older_than_ms=10_000, apply=True)

    assert dry == applied == {"tasks": 1, "events": 2, "evidence": 0}
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
    finally:
        server.shutdown()
        server.server_close()

    assert metric_values(first)[("maf_tasks", (("state", "READY"),))] == 0
    assert metric_values(second)[("maf_db_query_duration_seconds_count", ())] == 2  # one probe per scrape


@pytest.mark.slow
def test_a_writer_killed_mid_transaction_loses_no_committed_row(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    setup_store(db)
    committed: set[str] = set()
    rng = random.Random(7)
    for _ in range(25):
        writer = spawn_writer(db, "victim")
        time.sleep(rng.uniform(0.05, 0.25))
        writer.send_signal(signal.SIGKILL)
        out, _ = writer.communicate()
        committed |= set(out.split())
        assert committed <= task_ids(db)  # every row reported committed survived the kill

    assert len(committed) > 100
    with open_store(db) as store:
        assert store.pragma("integrity_check") == [("ok",)]
        json.dumps(tasks.reclaim_expired_leases(store), default=str)
