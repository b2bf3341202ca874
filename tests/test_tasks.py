"""The task state machine and lease rules, driven through the Python API."""

from __future__ import annotations

import pytest

from pytest_maf import tasks
from pytest_maf.clock import ManualClock
from pytest_maf.errors import (
    AlreadyExistsError,
    IllegalTransitionError,
    LeaseLostError,
    NothingToClaimError,
    NotFoundError,
    UsageError,
)
from pytest_maf.evidence import list_evidence, record_evidence, record_evidence_batch
from pytest_maf.store import Store
from pytest_maf.values import MAX_JSON_BYTES

TTL = 30_000


def claim(store: Store, agent: str = "agent-a", ttl: int = TTL) -> tasks.Claim:
    return tasks.claim_next_task(store, agent, ttl)


def to_verifying(store: Store, agent: str = "agent-a") -> tasks.Claim:
    claimed = claim(store, agent)
    tasks.start_task(store, claimed.task_id, agent, claimed.attempt)
    tasks.begin_verification(store, claimed.task_id, agent, claimed.attempt)
    return claimed


def state_of(store: Store, task_id: str) -> str:
    return tasks.get_task(store, task_id).state


def test_claim_takes_lowest_priority_then_oldest(store: Store, clock: ManualClock) -> None:
    tasks.add_task(store, task_id="late-urgent", priority=10)
    clock.advance(1)
    tasks.add_task(store, task_id="old-normal", priority=100)
    clock.advance(1)
    tasks.add_task(store, task_id="new-urgent", priority=10)
    tasks.add_task(store, task_id="same-ms-urgent", priority=10)

    order = [claim(store).task_id for _ in range(4)]

    assert order == ["late-urgent", "new-urgent", "same-ms-urgent", "old-normal"]


def test_claim_leases_with_the_next_attempt(store: Store, clock: ManualClock) -> None:
    tasks.add_task(store, task_id="t1")

    claimed = claim(store, "agent-a", ttl=5_000)

    assert claimed == tasks.Claim("t1", 1, "agent-a", clock() + 5_000)
    detail = tasks.describe_task(store, "t1")
    assert detail.task.state == "LEASED"
    assert detail.task.attempts == 1
    assert detail.lease is not None and detail.lease.agent_id == "agent-a"


def test_claim_with_nothing_ready_raises(store: Store) -> None:
    with pytest.raises(NothingToClaimError):
        claim(store)


def test_passing_evidence_commits_and_finishes_done(store: Store) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = to_verifying(store)
    record_evidence(store, "t1", claimed.attempt, "lint", "PASS", agent_id="agent-a")
    record_evidence(store, "t1", claimed.attempt, "unit", "PASS", agent_id="agent-a")

    result = tasks.finish_task(store, "t1", "agent-a", claimed.attempt)

    assert (result.verdict, result.final_state) == ("COMMITTED", "DONE")
    detail = tasks.describe_task(store, "t1")
    assert detail.lease is None
    assert [e.kind for e in detail.events][-2:] == ["commit", "done"]


@pytest.mark.parametrize("results", [["PASS", "FAIL"], []], ids=["one-fail", "no-evidence"])
def test_failing_or_missing_evidence_rolls_back_to_ready(store: Store, results: list[str]) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = to_verifying(store)
    for index, result in enumerate(results):
        record_evidence(store, "t1", claimed.attempt, f"check-{index}", result, agent_id="agent-a")

    result = tasks.finish_task(store, "t1", "agent-a", claimed.attempt)

    assert (result.verdict, result.final_state) == ("ROLLBACK", "READY")
    assert [e.kind for e in tasks.describe_task(store, "t1").events][-2:] == ["rollback", "retry"]
    assert claim(store, "agent-b").attempt == 2


def test_last_attempt_failing_buries_the_task(store: Store) -> None:
    tasks.add_task(store, task_id="t1", max_attempts=2)
    for _ in range(2):
        claimed = to_verifying(store)
        record_evidence(store, "t1", claimed.attempt, "unit", "FAIL", agent_id="agent-a")
        result = tasks.finish_task(store, "t1", "agent-a", claimed.attempt)

    assert result.final_state == "DEAD"
    with pytest.raises(NothingToClaimError):
        claim(store)


def test_operations_from_a_stale_holder_are_refused(store: Store, clock: ManualClock) -> None:
    tasks.add_task(store, task_id="t1")
    first = claim(store, "slow-agent", ttl=1_000)
    clock.advance(1_000)  # the lease has just expired
    second = claim(store, "fast-agent")  # reclaims and re-leases as attempt 2

    assert (second.task_id, second.attempt) == ("t1", 2)
    for operation in (tasks.start_task, tasks.release_task, tasks.finish_task):
        with pytest.raises(LeaseLostError):
            operation(store, "t1", "slow-agent", first.attempt)
    with pytest.raises(LeaseLostError):
        tasks.renew_lease(store, "t1", "slow-agent", first.attempt, TTL)
    with pytest.raises(LeaseLostError):
        record_evidence(store, "t1", first.attempt, "unit", "PASS", agent_id="slow-agent")
    # Same agent name, old attempt: still stale.
    with pytest.raises(LeaseLostError, match="stale"):
        tasks.start_task(store, "t1", "fast-agent", first.attempt)
    # An attempt the task has not reached is no stale one: the error says which it is.
    with pytest.raises(LeaseLostError, match="attempt 3 of task 't1' is not one it has had: the current attempt is 2"):
        tasks.start_task(store, "t1", "fast-agent", 3)
    assert state_of(store, "t1") == "LEASED"


def test_expired_but_unreclaimed_lease_is_refused(store: Store, clock: ManualClock) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = claim(store, ttl=1_000)
    clock.advance(1_001)

    with pytest.raises(LeaseLostError, match="expired"):
        tasks.renew_lease(store, "t1", "agent-a", claimed.attempt, TTL)


def test_renew_keeps_a_lease_alive(store: Store, clock: ManualClock) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = claim(store, ttl=1_000)
    clock.advance(900)
    tasks.renew_lease(store, "t1", "agent-a", claimed.attempt, 1_000)
    clock.advance(900)

    assert tasks.reclaim_expired_leases(store) == []
    tasks.start_task(store, "t1", "agent-a", claimed.attempt)
    assert state_of(store, "t1") == "RUNNING"


def test_another_agent_cannot_drive_my_task(store: Store) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = claim(store, "agent-a")

    with pytest.raises(LeaseLostError, match="leased to agent 'agent-a'"):
        tasks.start_task(store, "t1", "agent-b", claimed.attempt)


@pytest.mark.parametrize(
    ("steps", "from_state", "expected"),
    [
        ([], "LEASED", "READY"),
        (["start"], "RUNNING", "READY"),
        (["start", "verify"], "VERIFYING", "READY"),  # through ROLLBACK
    ],
)
def test_reclaim_moves_expired_leases(
    store: Store, clock: ManualClock, steps: list[str], from_state: str, expected: str
) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = claim(store, ttl=1_000)
    for step in steps:
        operation = tasks.start_task if step == "start" else tasks.begin_verification
        operation(store, "t1", "agent-a", claimed.attempt)
    clock.advance(store.lease_ttl_ms)  # each step extended the lease to the store's lease length

    reclaimed = tasks.reclaim_expired_leases(store)

    assert reclaimed == [tasks.Reclaimed("t1", "agent-a", 1, from_state, expected)]
    detail = tasks.describe_task(store, "t1")
    assert detail.lease is None and detail.task.state == expected
    assert "expire" in [e.kind for e in detail.events]


def test_expiry_on_the_last_attempt_buries_the_task(store: Store, clock: ManualClock) -> None:
    tasks.add_task(store, task_id="t1", max_attempts=1)
    claim(store, ttl=1_000)
    clock.advance(5_000)

    (reclaimed,) = tasks.reclaim_expired_leases(store)

    assert reclaimed.final_state == "DEAD"
    kinds = [e.kind for e in tasks.describe_task(store, "t1").events]
    assert kinds[-2:] == ["expire", "exhaust"]


def test_release_returns_the_task_and_counts_the_attempt(store: Store) -> None:
    tasks.add_task(store, task_id="t1", max_attempts=2)
    first = claim(store)
    assert tasks.release_task(store, "t1", "agent-a", first.attempt).state == "READY"
    second = claim(store)
    assert tasks.release_task(store, "t1", "agent-a", second.attempt).state == "DEAD"


def test_illegal_transition_names_task_and_states(store: Store) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = claim(store)

    with pytest.raises(IllegalTransitionError) as raised:
        tasks.begin_verification(store, "t1", "agent-a", claimed.attempt)

    message = str(raised.value)
    assert "'t1'" in message and "LEASED" in message and "RUNNING -> VERIFYING" in message


def test_a_refused_operation_writes_nothing(store: Store) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = claim(store)
    before = tasks.describe_task(store, "t1")

    with pytest.raises(IllegalTransitionError):
        tasks.finish_task(store, "t1", "agent-a", claimed.attempt)
    with pytest.raises(IllegalTransitionError):
        tasks.cancel_task(store, "t1")

    assert tasks.describe_task(store, "t1") == before


def test_cancel_only_from_ready(store: Store) -> None:
    tasks.add_task(store, task_id="t1")
    assert tasks.cancel_task(store, "t1").state == "DEAD"
    with pytest.raises(IllegalTransitionError):
        tasks.cancel_task(store, "t1")


def test_every_state_change_has_its_event(store: Store) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = to_verifying(store)
    record_evidence(store, "t1", claimed.attempt, "unit", "PASS", agent_id="agent-a")
    tasks.finish_task(store, "t1", "agent-a", claimed.attempt)

    changes = [
        (e.data["from"], e.data["to"], e.data["agent"], e.data["attempt"])
        for e in tasks.describe_task(store, "t1").events
        if "from" in e.data
    ]
    assert changes == [
        ("READY", "LEASED", "agent-a", 1),
        ("LEASED", "RUNNING", "agent-a", 1),
        ("RUNNING", "VERIFYING", "agent-a", 1),
        ("VERIFYING", "COMMITTED", "agent-a", 1),
        ("COMMITTED", "DONE", "agent-a", 1),
    ]


def test_duplicate_and_unknown_ids(store: Store) -> None:
    tasks.add_task(store, task_id="t1")
    with pytest.raises(AlreadyExistsError):
        tasks.add_task(store, task_id="t1")
    with pytest.raises(NotFoundError):
        tasks.describe_task(store, "missing")


def test_evidence_is_once_per_verifier_and_attempt(store: Store) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = to_verifying(store)
    record_evidence(store, "t1", claimed.attempt, "unit", "FAIL", {"log": "1 failed"}, agent_id="agent-a")

    with pytest.raises(AlreadyExistsError):
        record_evidence(store, "t1", claimed.attempt, "unit", "PASS", agent_id="agent-a")
    with pytest.raises(UsageError):
        record_evidence(store, "t1", claimed.attempt, "other", "MAYBE", agent_id="agent-a")
    with pytest.raises(UsageError):
        record_evidence(store, "t1", claimed.attempt, "other", "PASS", ["not", "an", "object"], agent_id="agent-a")  # type: ignore[arg-type]

    (row,) = tasks.describe_task(store, "t1").evidence
    assert (row.result, row.details) == ("FAIL", {"log": "1 failed"})


@pytest.mark.parametrize("ttl", [0, -5])
def test_non_positive_ttl_is_refused(store: Store, ttl: int) -> None:
    tasks.add_task(store, task_id="t1")
    with pytest.raises(UsageError):
        claim(store, ttl=ttl)
    assert state_of(store, "t1") == "READY"


@pytest.mark.parametrize("agent", ["", " padded", "x" * 129, "tab\there"])
def test_bad_agent_ids_are_refused(store: Store, agent: str) -> None:
    tasks.add_task(store, task_id="t1")
    with pytest.raises(UsageError):
        claim(store, agent)


def test_transition_table_is_closed() -> None:
    """Every target of the table is a state, DONE and DEAD have no way out, every
    move that ends a lease starts from a leased state, and every follow-up move
    exists from where its move leads."""
    from typing import get_args

    from pytest_maf.records import TASK_STATES

    assert set(get_args(tasks.TaskState)) == set(TASK_STATES)
    assert {move.target for move in tasks.TRANSITIONS.values()} <= set(TASK_STATES)
    assert not [key for key in tasks.TRANSITIONS if key[0] in tasks.FINAL_STATES]
    for (source, action), move in tasks.TRANSITIONS.items():
        assert not move.ends_lease or source in tasks.LEASED_STATES, (source, action)
        assert move.new_attempt == (action == "claim")
        if move.then == "done":
            assert (move.target, "done") in tasks.TRANSITIONS
        if move.then == "settle":
            assert (move.target, "exhaust") in tasks.TRANSITIONS


def test_a_non_blocking_failure_is_reported_but_commits(store: Store) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = to_verifying(store)
    record_evidence(store, "t1", claimed.attempt, "unit", "PASS", agent_id="agent-a")
    record_evidence(store, "t1", claimed.attempt, "sqlite-wal-reset", "FAIL", {"severity": "warning", "blocking": False}, agent_id="agent-a")

    result = tasks.finish_task(store, "t1", "agent-a", claimed.attempt)

    assert result.final_state == "DONE"
    assert "1 warning(s): sqlite-wal-reset" in result.reason


def test_claim_task_takes_the_named_task(store: Store) -> None:
    tasks.add_task(store, task_id="urgent", priority=1)
    tasks.add_task(store, task_id="mine", priority=500)

    claimed = tasks.claim_task(store, "mine", "preflight-dev", TTL)

    assert (claimed.task_id, claimed.attempt) == ("mine", 1)
    assert state_of(store, "urgent") == "READY"
    with pytest.raises(IllegalTransitionError):
        tasks.claim_task(store, "mine", "other", TTL)


def test_every_operation_by_the_holder_extends_the_lease(store: Store, clock: ManualClock) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = claim(store, ttl=10_000)
    for operation in (tasks.start_task, tasks.begin_verification):
        clock.advance(9_000)  # each pause is longer than what was left of the claim's lease
        operation(store, "t1", "agent-a", claimed.attempt)
        lease = tasks.describe_task(store, "t1").lease
        assert lease is not None and lease.lease_expires_at == clock() + store.lease_ttl_ms
    clock.advance(store.lease_ttl_ms - 1)
    record_evidence(store, "t1", claimed.attempt, "unit", "PASS", agent_id="agent-a")
    clock.advance(store.lease_ttl_ms - 1)

    assert tasks.finish_task(store, "t1", "agent-a", claimed.attempt).final_state == "DONE"


def test_an_operation_never_shortens_a_longer_lease(store: Store, clock: ManualClock) -> None:
    tasks.add_task(store, task_id="t1")
    long_ttl = store.lease_ttl_ms * 3
    claimed = claim(store, ttl=long_ttl)
    tasks.start_task(store, "t1", "agent-a", claimed.attempt)
    lease = tasks.describe_task(store, "t1").lease
    assert lease is not None and lease.lease_expires_at == claimed.lease_expires_at


def test_a_stale_holder_does_not_extend_anything(store: Store, clock: ManualClock) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = claim(store, ttl=1_000)
    clock.advance(1_000)
    with pytest.raises(LeaseLostError, match="expired"):
        tasks.start_task(store, "t1", "agent-a", claimed.attempt)
    lease = tasks.describe_task(store, "t1").lease
    assert lease is not None and lease.lease_expires_at == claimed.lease_expires_at


def test_heartbeat_renews_every_live_lease_of_the_agent_and_no_other(store: Store, clock: ManualClock) -> None:
    for task_id in ("t1", "t2", "t3"):
        tasks.add_task(store, task_id=task_id)
    mine = [claim(store, "agent-a", ttl=1_000), claim(store, "agent-a", ttl=5_000)]
    theirs = claim(store, "agent-b", ttl=1_000)
    clock.advance(500)

    renewed = tasks.renew_held_leases(store, "agent-a")

    assert sorted(lease.task_id for lease in renewed) == sorted(c.task_id for c in mine)
    assert all(lease.lease_expires_at == clock() + store.lease_ttl_ms for lease in renewed)
    other = tasks.describe_task(store, theirs.task_id).lease
    assert other is not None and other.lease_expires_at == theirs.lease_expires_at


def test_heartbeat_names_the_leases_of_the_agent_it_found_expired_and_revives_none(store: Store, clock: ManualClock) -> None:
    for task_id in ("t1", "t2"):
        tasks.add_task(store, task_id=task_id)
    lost, kept = claim(store, "agent-a", ttl=1_000), claim(store, "agent-a", ttl=5_000)
    clock.advance(2_000)

    renewed = tasks.renew_held_leases(store, "agent-a")

    assert [lease.task_id for lease in renewed] == [kept.task_id]
    assert [(lease.task_id, lease.lease_expires_at) for lease in renewed.lost] == [(lost.task_id, lost.lease_expires_at)]
    given_back = tasks.describe_task(store, lost.task_id)  # as its expiry gives it back: once told, not again
    assert (given_back.task.state, given_back.lease) == ("READY", None)
    assert tasks.renew_held_leases(store, "agent-a").lost == []


def test_heartbeat_of_a_named_task_the_agent_lost_is_refused(store: Store, clock: ManualClock) -> None:
    tasks.add_task(store, task_id="t1")
    claim(store, "agent-a", ttl=1_000)
    clock.advance(1_000)
    with pytest.raises(LeaseLostError, match="holds no live lease on task 't1'.*expired"):
        tasks.renew_held_leases(store, "agent-a", task_id="t1")


@pytest.mark.parametrize("kind", ["preflight", "fixture", "load-test"])
def test_a_claim_without_an_id_never_hands_out_pytest_mafs_own_tasks(store: Store, kind: str) -> None:
    tasks.add_task(store, task_id="own", priority=0, kind=kind)
    tasks.add_task(store, task_id="work", priority=100)

    assert claim(store).task_id == "work"
    with pytest.raises(NothingToClaimError):
        claim(store)
    assert [t.id for t in tasks.list_tasks(store, "READY")] == []
    assert [t.id for t in tasks.list_tasks(store, "READY", include_internal=True)] == ["own"]
    assert tasks.claim_next_task(store, "agent-a", TTL, kind=kind).task_id == "own"


def test_a_preflight_task_is_added_claimed_and_started_at_once(store: Store) -> None:
    claimed = tasks.add_and_claim_task(store, "agent-a", TTL, kind="preflight", payload={"kind": "preflight"}, start=True)

    detail = tasks.describe_task(store, claimed.task_id)
    assert (detail.task.state, detail.task.kind, detail.task.attempts) == ("RUNNING", "preflight", 1)
    assert [event.kind for event in detail.events] == ["add", "claim", "start"]
    with pytest.raises(NothingToClaimError):
        claim(store, "agent-b")


def test_an_unknown_kind_is_refused(store: Store) -> None:
    with pytest.raises(UsageError, match="unknown task kind 'chore'"):
        tasks.add_task(store, kind="chore")


def test_reservations_tied_to_a_task_end_with_its_lease(store: Store, clock: ManualClock) -> None:
    from pytest_maf import reservations

    def reserved() -> list[str]:
        return [r.pattern for r in reservations.list_reservations(store)]

    for ending in ("finish", "release", "expiry"):
        tasks.add_task(store, task_id=ending)
        claimed = tasks.claim_task(store, ending, "agent-a", TTL)
        reservations.acquire(store, [f"{ending}/**"], "agent-a", 60 * TTL, task_id=ending)
        reservations.acquire(store, [f"{ending}-untied/**"], "agent-a", 60 * TTL)
        assert f"{ending}/**" in reserved()
        if ending == "finish":
            tasks.start_task(store, ending, "agent-a", claimed.attempt)
            tasks.begin_verification(store, ending, "agent-a", claimed.attempt)
            record_evidence(store, ending, claimed.attempt, "unit", "PASS", agent_id="agent-a")
            tasks.finish_task(store, ending, "agent-a", claimed.attempt)
        elif ending == "release":
            tasks.release_task(store, ending, "agent-a", claimed.attempt)
        else:
            clock.advance(TTL)
            tasks.reclaim_expired_leases(store)

        assert f"{ending}/**" not in reserved()  # released in the same transaction as the lease ended
        assert f"{ending}-untied/**" in reserved()  # a reservation not tied to the task stays
    released = [
        e for e in store.read(lambda t: t.reservation_events("release")) if e.data.get("task")
    ]
    assert [e.data["task"] for e in released] == ["finish", "release", "expiry"]


def test_a_reservation_can_be_tied_only_to_a_task_whose_lease_you_hold(store: Store) -> None:
    from pytest_maf import reservations

    tasks.add_task(store, task_id="t1")
    tasks.claim_task(store, "t1", "agent-a", TTL)

    # Before, every such refusal said "claim it first with `maf task claim`", which claims no named task.
    with pytest.raises(LeaseLostError, match="agent 'agent-b' does not hold task 't1' .it is leased to 'agent-a'.; it is"
                       " theirs until they finish or release it, or it expires$"):
        reservations.acquire(store, ["src/**"], "agent-b", TTL, task_id="t1")
    with pytest.raises(NotFoundError):
        reservations.acquire(store, ["src/**"], "agent-a", TTL, task_id="nope")
    assert reservations.list_reservations(store) == []


def test_a_reservation_tied_to_a_lease_that_expired_blocks_nobody_even_before_reclaim(
    store: Store, clock: ManualClock
) -> None:
    from pytest_maf import reservations

    tasks.add_task(store, task_id="t1")
    tasks.claim_task(store, "t1", "agent-a", 1_000)
    reservations.acquire(store, ["lib/**"], "agent-a", 60 * TTL, task_id="t1")
    assert reservations.check_paths(store, ["lib/x.py"], "agent-b")

    clock.advance(1_000)  # the lease has expired; nobody has reclaimed it yet

    assert reservations.check_paths(store, ["lib/x.py"], "agent-b") == []
    reservations.acquire(store, ["lib/**"], "agent-b", TTL)  # granted without a conflict


def test_a_verification_session_outside_pytest(store: Store) -> None:
    from pytest_maf.session import VerificationSession

    tasks.add_task(store, task_id="t1")
    claimed = claim(store)
    tasks.start_task(store, "t1", "agent-a", claimed.attempt)
    session = VerificationSession.start_verification(store, "t1", "agent-a", TTL)

    kept = session.record([("lint", "PASS", {}), ("unit", "MAYBE", {}), ("types", "PASS", None)])
    with pytest.raises(LeaseLostError, match="does not hold it"):
        VerificationSession.start_verification(store, "t1", "agent-b", TTL)
    result = session.finish()

    assert [row.verifier for row in kept] == ["lint", "types"]  # a refused row costs no other row
    assert len(session.problems) == 1 and "unit" in session.problems[0]
    # ... but the attempt is incomplete without it: one FAIL stands in for it, and the task does not commit
    assert (result.verdict, result.final_state) == ("ROLLBACK", "READY")
    stand_in = [row for row in list_evidence(store, "t1") if row.verifier == "verification.unrecorded"]
    assert [row.result for row in stand_in] == ["FAIL"] and "unit" in stand_in[0].details["message"]


def test_claim_and_start_then_complete_write_what_the_steps_write(store: Store) -> None:
    """Three transactions instead of six, and the history cannot tell them apart."""
    tasks.add_task(store, task_id="steps")
    tasks.add_task(store, task_id="at-once")
    stepwise = to_verifying(store)
    record_evidence(store, "steps", stepwise.attempt, "unit", "PASS", {"n": 1}, agent_id="agent-a")
    tasks.finish_task(store, "steps", "agent-a", stepwise.attempt)

    claimed = tasks.claim_next_task(store, "agent-a", TTL, start=True)
    assert (claimed.task_id, state_of(store, "at-once")) == ("at-once", "RUNNING")
    result = tasks.complete_task(store, "at-once", "agent-a", claimed.attempt, [("unit", "PASS", {"n": 1})])

    assert (result.verdict, result.final_state) == ("COMMITTED", "DONE")
    steps, at_once = tasks.describe_task(store, "steps"), tasks.describe_task(store, "at-once")
    assert [(e.kind, e.data.get("from"), e.data.get("to")) for e in at_once.events] == [
        (e.kind, e.data.get("from"), e.data.get("to")) for e in steps.events
    ]
    assert [e.kind for e in at_once.events] == ["add", "claim", "start", "verify", "evidence", "commit", "done"]
    assert [(r.verifier, r.result, r.details) for r in at_once.evidence] == [("unit", "PASS", {"n": 1})]
    assert at_once.lease is None


def test_complete_is_refused_whole(store: Store) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = tasks.claim_next_task(store, "agent-a", TTL, start=True)
    record_evidence(store, "t1", claimed.attempt, "unit", "PASS", agent_id="agent-a")
    before = tasks.describe_task(store, "t1")

    with pytest.raises(AlreadyExistsError):  # "lint" would be new; "unit" reported already
        tasks.complete_task(store, "t1", "agent-a", claimed.attempt, [("lint", "PASS", None), ("unit", "FAIL", None)])
    with pytest.raises(LeaseLostError):
        tasks.complete_task(store, "t1", "agent-b", claimed.attempt, [("lint", "PASS", None)])

    after = tasks.describe_task(store, "t1")
    assert (after.task.state, len(after.events), len(after.evidence)) == ("RUNNING", len(before.events), 1)
    tasks.add_task(store, task_id="leased")
    leased = claim(store)  # not started: nothing to verify yet
    with pytest.raises(IllegalTransitionError, match="LEASED"):
        tasks.complete_task(store, "leased", "agent-a", leased.attempt, [("unit", "PASS", None)])
    assert state_of(store, "leased") == "LEASED"


def test_a_verifier_twice_in_one_batch_is_refused_whole(store: Store) -> None:
    """Rows and events are written one statement per table: a batch with a verifier twice writes nothing."""
    tasks.add_task(store, task_id="t1")
    claimed = tasks.claim_next_task(store, "agent-a", TTL, start=True)
    before = tasks.describe_task(store, "t1")

    twice = [("unit", "PASS", None), ("lint", "PASS", None), ("unit", "FAIL", None)]
    with pytest.raises(AlreadyExistsError, match="verifier 'unit' is already recorded for task 't1' attempt 1"):
        record_evidence_batch(store, "t1", claimed.attempt, twice, agent_id="agent-a")
    with pytest.raises(AlreadyExistsError, match="verifier 'unit'"):
        tasks.complete_task(store, "t1", "agent-a", claimed.attempt, twice)

    after = tasks.describe_task(store, "t1")
    assert (after.task.state, len(after.events), after.evidence) == ("RUNNING", len(before.events), [])


def test_complete_decides_from_the_rows_recorded_before_it_too(store: Store) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = tasks.claim_next_task(store, "agent-a", TTL, start=True)
    record_evidence(store, "t1", claimed.attempt, "unit", "FAIL", {"log": "1 failed"}, agent_id="agent-a")

    result = tasks.complete_task(store, "t1", "agent-a", claimed.attempt, [("lint", "PASS", {"n": 1})])

    assert (result.verdict, result.reason) == ("ROLLBACK", "1 of 2 verifiers failed: unit")
    detail = tasks.describe_task(store, "t1")
    assert [(row.verifier, row.result) for row in detail.evidence] == [("lint", "PASS"), ("unit", "FAIL")]
    assert [event.data["verifier"] for event in detail.events if event.kind == "evidence"] == ["unit", "lint"]


@pytest.mark.parametrize("details", [
    {"log": "x" * MAX_JSON_BYTES},  # flat, as the plugin's details are
    {"log": ["x" * (MAX_JSON_BYTES // 2), "y" * (MAX_JSON_BYTES // 2)]},
    {"nested": {"log": "x" * MAX_JSON_BYTES}},
])
def test_evidence_details_over_the_json_limit_are_refused(store: Store, details: dict[str, object]) -> None:
    tasks.add_task(store, task_id="t1")
    claimed = tasks.claim_next_task(store, "agent-a", TTL, start=True)

    with pytest.raises(UsageError, match=f"characters of JSON; the limit is {MAX_JSON_BYTES}"):
        record_evidence(store, "t1", claimed.attempt, "unit", "PASS", details, agent_id="agent-a")
    just_under = {"log": "x" * (MAX_JSON_BYTES - len('{"log": ""}'))}
    record_evidence(store, "t1", claimed.attempt, "unit", "PASS", just_under, agent_id="agent-a")
    (row,) = tasks.describe_task(store, "t1").evidence
    assert row.details == just_under


def test_a_payload_as_deep_as_the_limit_is_taken_and_one_level_deeper_is_not(store: Store) -> None:
    from pytest_maf.values import MAX_JSON_DEPTH

    def nested(levels: int) -> object:
        value: object = 1
        for _ in range(levels):
            value = {"a": value}
        return value

    task = tasks.add_task(store, task_id="deepest", payload=nested(MAX_JSON_DEPTH))
    assert tasks.get_task(store, "deepest").payload == task.payload == nested(MAX_JSON_DEPTH)
    with pytest.raises(UsageError, match=f"nested more than {MAX_JSON_DEPTH} levels deep"):
        tasks.add_task(store, task_id="deeper", payload=nested(MAX_JSON_DEPTH + 1))
    with pytest.raises(UsageError, match=f"nested more than {MAX_JSON_DEPTH} levels deep"):
        tasks.add_task(store, task_id="deeper", payload=[[]] * 2 + [nested(MAX_JSON_DEPTH)])  # inside an array: 65
