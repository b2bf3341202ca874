"""Eight processes race for overlapping reservations: no two agents ever hold
overlapping reservations at the same time unless both are shared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backends import open_shared_store, shared_store
from pytest_maf.audit import reservation_clashes
from pytest_maf.records import ReservationEvent

WORKER = Path(__file__).with_name("reservation_worker.py")


@pytest.mark.slow
def test_eight_processes_never_hold_overlapping_exclusive_reservations(backend: str, tmp_path: Path) -> None:
    with shared_store(backend, tmp_path) as (db, environment):
        race_eight_workers(db, environment)


def race_eight_workers(db: str, environment: dict[str, str]) -> None:
    env = {**os.environ, **environment, "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), db, f"agent-{n}", str(n), "150"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for n in range(8)
    ]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=180)
        assert worker.returncode == 0, err
        reports.append(json.loads(out))

    assert all(not report["errors"] for report in reports)
    assert sum(report["grants"] for report in reports) > 100
    assert sum(report["conflicts"] for report in reports) > 100  # they really raced
    with open_shared_store(db, environment) as store:
        events = store.read(lambda t: t.reservation_events())
        assert store.integrity_problems() == []
    assert reservation_clashes(events) == []


def test_the_replay_catches_overlapping_holders() -> None:
    forged = [
        ReservationEvent(1, 0, "acquire", "a", {"pattern": "src/**", "exclusive": True, "expires_at": 100}),
        ReservationEvent(2, 10, "acquire", "b", {"pattern": "src/a.py", "exclusive": True, "expires_at": 100}),
        ReservationEvent(3, 20, "release", "a", {"pattern": "src/**"}),
    ]
    assert len(reservation_clashes(forged)) == 1
