"""Eight processes race for overlapping reservations: no two agents ever hold
overlapping reservations at the same time unless both are shared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_maf.patterns import overlap_witness
from pytest_maf.records import ReservationEvent
from pytest_maf.store import open_store

WORKER = Path(__file__).with_name("reservation_worker.py")


@dataclass
class Holding:
    agent: str
    pattern: str
    exclusive: bool
    start: int
    end: int


def holdings(events: list[ReservationEvent]) -> list[Holding]:
    """Replay grants, renewals, releases and expiries into time intervals of holding."""
    open_: dict[tuple[str, str], Holding] = {}
    closed: list[Holding] = []
    for event in events:
        key = (event.agent_id, event.data.get("pattern", ""))
        previous = open_.pop(key, None)
        if previous is not None:  # whatever comes next ends the holding as it was
            previous.end = min(previous.end, event.ts)
            closed.append(previous)
        if event.kind in ("acquire", "renew"):
            exclusive = event.data.get("exclusive", previous.exclusive if previous else True)
            open_[key] = Holding(event.agent_id, key[1], exclusive, event.ts, event.data["expires_at"])
    return closed + list(open_.values())


def overlapping_holdings(history: list[Holding]) -> list[tuple[Holding, Holding]]:
    clashes = []
    for index, first in enumerate(history):
        for second in history[index + 1 :]:
            if first.agent == second.agent or not (first.exclusive or second.exclusive):
                continue
            if first.start < second.end and second.start < first.end:
                if overlap_witness(first.pattern, second.pattern) is not None:
                    clashes.append((first, second))
    return clashes


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
    assert overlapping_holdings(holdings(events)) == []


def test_the_replay_catches_overlapping_holders() -> None:
    forged = [
        ReservationEvent(1, 0, "acquire", "a", {"pattern": "src/**", "exclusive": True, "expires_at": 100}),
        ReservationEvent(2, 10, "acquire", "b", {"pattern": "src/a.py", "exclusive": True, "expires_at": 100}),
        ReservationEvent(3, 20, "release", "a", {"pattern": "src/**"}),
    ]
    assert len(overlapping_holdings(holdings(forged))) == 1
