"""A verification session records its evidence and decides the task in one transaction,
and, when that is refused, keeps every row it can, as recording them one by one would."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from backends import backend_store
from pytest_maf import session as session_module
from pytest_maf import tasks
from pytest_maf.clock import ManualClock
from pytest_maf.errors import LeaseLostError, StoreBusyError, StoreError
from pytest_maf.evidence import list_evidence, record_evidence
from pytest_maf.session import VerificationSession
from pytest_maf.store import Store

TTL = 60_000


class TickingClock:
    """A clock one millisecond later at every reading: each transaction has a time of its own."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        self.now_ms += 1
        return self.now_ms


@pytest.fixture
def ticking_store(backend: str, tmp_path: Path) -> Iterator[Store]:
    with backend_store(backend, tmp_path, clock=TickingClock()) as opened:
        yield opened


def verifying(store: Store, task_id: str = "t1") -> VerificationSession:
    tasks.add_task(store, task_id=task_id)
    claimed = tasks.claim_task(store, task_id, "agent-a", TTL)
    tasks.start_task(store, task_id, "agent-a", claimed.attempt)
    return VerificationSession.start_verification(store, task_id, "agent-a", TTL)


def test_complete_writes_the_evidence_and_the_verdict_in_one_transaction(ticking_store: Store) -> None:
    session = verifying(ticking_store)

    result, rows = session.complete([("lint", "PASS", {"files": 3}), ("unit", "pass", None)])

    assert (result.verdict, result.final_state) == ("COMMITTED", "DONE")
    assert [(row.verifier, row.result, row.details) for row in rows] == [
        ("lint", "PASS", {"files": 3}), ("unit", "PASS", {}),
    ]
    assert sorted(row.verifier for row in list_evidence(ticking_store, "t1")) == ["lint", "unit"]
    events = tasks.describe_task(ticking_store, "t1").events
    assert [event.kind for event in events][-4:] == ["evidence", "evidence", "commit", "done"]
    assert len({event.ts for event in events[-4:]}) == 1  # one transaction: one time for all four
    assert session.problems == []


def test_a_refused_complete_keeps_every_row_it_can_then_finishes(ticking_store: Store) -> None:
    session = verifying(ticking_store)
    record_evidence(ticking_store, "t1", session.attempt, "lint", "PASS", agent_id="agent-a")

    result, rows = session.complete([("lint", "FAIL", {}), ("unit", "PASS", {})])

    # The repeated verifier's FAIL cannot be kept, but it still fails the task, as a row of its own.
    assert [row.verifier for row in rows] == ["unit", "verification.unrecorded"]
    assert len(session.problems) == 1 and "lint" in session.problems[0]
    assert (result.verdict, result.final_state) == ("ROLLBACK", "READY")
    assert {row.verifier: row.result for row in list_evidence(ticking_store, "t1")} == {
        "lint": "PASS", "unit": "PASS", "verification.unrecorded": "FAIL",
    }


def test_a_failure_that_no_row_can_record_leaves_the_task_undecided(
    ticking_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = verifying(ticking_store)
    record_evidence(ticking_store, "t1", session.attempt, "lint", "PASS", agent_id="agent-a")
    batch = session_module.record_evidence_batch

    def refusing_the_stand_in(store: Store, task_id: str, attempt: int, entries: object, **options: object) -> object:
        if any(entry[0].endswith(".unrecorded") for entry in entries):  # type: ignore[attr-defined]
            raise StoreBusyError("the store is busy")
        return batch(store, task_id, attempt, entries, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(session_module, "record_evidence_batch", refusing_the_stand_in)

    with pytest.raises(StoreError, match="could not be recorded, so the task was not decided"):
        session.complete([("lint", "FAIL", {}), ("unit", "PASS", {})])

    assert tasks.get_task(ticking_store, "t1").state == "VERIFYING"


def test_a_pass_whose_row_is_refused_keeps_the_task_from_committing(ticking_store: Store) -> None:
    session = verifying(ticking_store)

    result, rows = session.complete([("lint", "PASS", {"where": Path("/tmp")}), ("unit", "PASS", {})])

    assert [row.verifier for row in rows] == ["unit", "verification.unrecorded"]
    assert (result.verdict, result.final_state) == ("ROLLBACK", "READY")
    assert session.problems == ["evidence for lint was not recorded: evidence details holds a PosixPath, which is not JSON"]


def test_a_row_its_runner_refuses_is_stood_in_for_in_the_deciding_transaction(ticking_store: Store) -> None:
    session = verifying(ticking_store)
    session.refuse("lint", "its details are not JSON")

    result, rows = session.complete([("unit", "PASS", {})])

    assert {row.verifier: row.result for row in rows} == {"unit": "PASS", "verification.unrecorded": "FAIL"}
    assert (result.verdict, result.final_state) == ("ROLLBACK", "READY")
    (stand_in,) = [row for row in rows if row.result == "FAIL"]
    assert "lint: its details are not JSON" in stand_in.details["message"]


def test_a_lost_lease_is_one_error_with_what_was_lost_and_a_way_on(store: Store) -> None:
    session = verifying(store)
    tasks.finish_task(store, "t1", "agent-a", session.attempt)  # another shell of the agent decided it: READY

    with pytest.raises(LeaseLostError) as lost:
        session.complete([("lint", "PASS", {}), ("unit", "PASS", {}), ("docs", "PASS", {})])

    assert str(lost.value) == (
        "lost the lease on task t1, attempt 1 (now READY with no lease): 3 result(s) of this run were not recorded;"
        " claim and start it again (maf task claim, maf task start), then rerun the tests"
    )
    assert session.problems == []  # not one line per row
    assert list_evidence(store, "t1") == []


def test_a_lease_that_ran_out_says_the_next_claim_rolls_it_back(store: Store, clock: ManualClock) -> None:
    session = verifying(store)
    clock.advance(24 * 3_600_000)  # paused past its lease, and nobody has reclaimed it yet

    with pytest.raises(LeaseLostError) as lost:
        session.complete([("unit", "PASS", {})])

    assert "(its lease expired, VERIFYING): 1 result(s) of this run were not recorded" in str(lost.value)
    assert str(lost.value).endswith("the next `maf task claim` reclaims it (it rolls back); then claim it again")
    assert tasks.get_task(store, "t1").state == "VERIFYING"
