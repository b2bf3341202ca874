"""Several real processes against one store (a SQLite file, a PostgreSQL schema): no double
grant, no lost task, no operation accepted from a stale holder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backends import open_shared_store, shared_store
from pytest_maf import tasks
from pytest_maf.clock import system_clock
from pytest_maf.audit import lease_violations, task_violations
from pytest_maf.records import Event

WORKER = Path(__file__).with_name("task_worker.py")
WORKERS = 8
TASKS = 80
TTL_MS = 200
LINE_DEADLINE_S = 60


def spawn(
    db: str, environment: dict[str, str], agent: str, seed: int, deadline: float, *extra: str, ttl_ms: int = TTL_MS
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), db, agent, str(seed), str(ttl_ms), str(deadline), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **environment, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def read_line(worker: subprocess.Popen[str], deadline_s: float = LINE_DEADLINE_S) -> str:
    """The worker's next line; a worker silent past the deadline is killed, which ends the read (and the test)."""
    assert worker.stdout is not None
    timer = threading.Timer(deadline_s, worker.kill)
    timer.start()
    try:
        line = worker.stdout.readline()
    finally:
        timer.cancel()
    assert line, f"the worker said nothing within {deadline_s} s: {worker.stderr.read() if worker.stderr else ''}"
    return line


def stop_after_claim(worker: subprocess.Popen[str]) -> None:
    """SIGSTOP a stale-first worker as soon as it says it holds a lease."""
    line = read_line(worker)
    os.kill(worker.pid, signal.SIGSTOP)
    assert line.startswith("CLAIMED"), worker.stderr.read() if worker.stderr else line


def resume(worker: subprocess.Popen[str]) -> int:
    resumed_ms = time.time_ns() // 1_000_000
    os.kill(worker.pid, signal.SIGCONT)
    return resumed_ms


def stale_outcomes(worker: subprocess.Popen[str], resumed_ms: int) -> set[str]:
    line = read_line(worker)
    assert line.startswith("STALE "), line
    after_resume = [op for op in json.loads(line[6:]) if op["started_ms"] >= resumed_ms]
    assert len(after_resume) >= 7, line
    return {op["outcome"] for op in after_resume}


@pytest.mark.slow
def test_eight_processes_never_share_a_task_and_paused_workers_are_fenced(backend: str, tmp_path: Path) -> None:
    with shared_store(backend, tmp_path) as (db, environment):
        run_eight_workers(db, environment)


def run_eight_workers(db: str, environment: dict[str, str]) -> None:
    with open_shared_store(db, environment) as store:
        task_ids = [tasks.add_task(store, task_id=f"t{i:03}", max_attempts=4).id for i in range(TASKS)]
    deadline = time.time() + 60

    # Paused alone: its lease expires and nobody reclaims it before it wakes.
    alone = spawn(db, environment, "agent-0", 0, deadline, "--stale-first")
    stop_after_claim(alone)
    time.sleep(2 * TTL_MS / 1000)
    assert stale_outcomes(alone, resume(alone)) == {"LeaseLostError"}

    # Paused among busy workers: its task is reclaimed and leased again meanwhile.
    crowded = spawn(db, environment, "agent-1", 1, deadline, "--stale-first")
    stop_after_claim(crowded)
    others = [spawn(db, environment, f"agent-{n}", n, deadline) for n in range(2, WORKERS)]
    time.sleep(5 * TTL_MS / 1000)
    assert stale_outcomes(crowded, resume(crowded)) == {"LeaseLostError"}

    reports = []
    for process in [alone, crowded, *others]:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))

    assert all(not report["errors"] for report in reports), [r["errors"] for r in reports]
    assert sum(report["lost"] for report in reports) > 0  # leases really expired mid-work

    # Reclaim as if well past every TTL, so a lease left by a stall is counted too.
    with open_shared_store(db, environment, clock=lambda: system_clock() + 10 * TTL_MS, use_client_clock=True) as store:
        tasks.reclaim_expired_leases(store)
        assert task_violations(store.read(lambda tx: tx.events())) == []
        final = tasks.list_tasks(store)
        assert sorted(task.id for task in final) == task_ids  # none lost, none duplicated
        assert {task.state for task in final} <= {"DONE", "DEAD"}
        assert store.integrity_problems() == []
    assert sum(report["finished"] for report in reports) >= TASKS // 2


def test_audit_catches_a_double_grant() -> None:
    """The auditor above must be able to fail: feed it a forged history."""
    forged = [
        Event(1, "t", 0, "add", {"to": "READY"}),
        Event(2, "t", 10, "claim", {"agent": "a", "attempt": 1, "lease_expires_at": 100}),
        Event(3, "t", 20, "claim", {"agent": "b", "attempt": 2, "lease_expires_at": 120}),
        Event(4, "t", 30, "start", {"agent": "a", "attempt": 1}),
    ]
    problems = lease_violations("t", forged)
    assert any("while" in problem for problem in problems)
    assert any("start by a accepted" in problem for problem in problems)
