"""Eight processes race for overlapping reservations: no two agents ever hold
overlapping reservations at the same time unless both are shared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_maf.audit import reservation_clashes
from pytest_maf.records import ReservationEvent
from pytest_maf.store import open_store

WORKER = Path(__file__).with_name("reservation_worker.py")


@pytest.mark.slow
def test_eight_processes_never_hold_overlapping_exclusive_reservations(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    open_store(db, create=True).close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(db), f"agent-{n}", str(n), "150"],
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
    with open_store(db) as store:
        events = store.read(lambda t: t.reservation_events())
        assert store.pragma("integrity_check") == [("ok",)]
    assert reservation_clashes(events) == []


def test_the_replay_catches_overlapping_holders() -> None:
    forged = [
        ReservationEvent(1, 0, "acquire", "a", {"pattern": "src/**", "exclusive": True, "expires_at": 100}),
        ReservationEvent(2, 10, "acquire", "b", {"pattern": "src/a.py", "exclusive": True, "expires_at": 100}),
        ReservationEvent(3, 20, "release", "a", {"pattern": "src/**"}),
    ]
    assert len(reservation_clashes(forged)) == 1
