"""Property-based test of tasks and leases: the store against a simple model.

Hypothesis drives add (work and pytest-maf's own kinds), add-and-claim,
claim (and claim-and-start), renew, heartbeat, start, verify, evidence,
finish, complete (verify, evidence and finish at once), release, reclaim,
cancel and clock advances, with honest holders and impostors (wrong agent,
stale attempt). After every step the store must agree with the model, and the
invariants must hold: among them, every fenced operation by the live holder
extends its lease, and a claim without an id never hands out a task
pytest-maf made for itself.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from backends import backend_store
from pytest_maf import tasks
from pytest_maf.clock import ManualClock
from pytest_maf.errors import (
    AlreadyExistsError,
    IllegalTransitionError,
    LeaseLostError,
    MafError,
    NothingToClaimError,
)
from pytest_maf.evidence import record_evidence

AGENTS = ("agent-a", "agent-b", "agent-c")
VERIFIERS = ("lint", "unit")
LEASED = {"LEASED", "RUNNING", "VERIFYING"}
LEASE_TTL = 1_000  # the store's lease length: how far a holder's operation extends its lease


@dataclass
class ModelLease:
    agent: str
    attempt: int
    expires: int


@dataclass
class ModelTask:
    id: str
    priority: int
    created_at: int
    seq: int
    max_attempts: int
    kind: str = "work"
    state: str = "READY"
    attempts: int = 0
    lease: ModelLease | None = None
    evidence: dict[tuple[int, str], str] = field(default_factory=dict)
    changes: int = 0  # state changes so far, each of which must have its event


class Refused(Exception):
    def __init__(self, kind: type[MafError]) -> None:
        self.kind = kind


class TaskModel:
    """The task and lease rules written as plainly as possible, apart from pytest_maf.tasks."""

    def __init__(self) -> None:
        self.tasks: dict[str, ModelTask] = {}

    def _move(self, task: ModelTask, state: str) -> None:
        task.state = state
        task.changes += 1

    def _back_to_ready_or_dead(self, task: ModelTask) -> None:
        if task.attempts >= task.max_attempts:
            self._move(task, "DEAD")

    def reclaim(self, now: int, agent: str | None = None) -> list[str]:
        """End the expired leases (only ``agent``'s, when given); the tasks whose lease ended."""
        ended = []
        for task in self.tasks.values():
            if task.lease is not None and task.lease.expires <= now and agent in (None, task.lease.agent):
                ended.append(task.id)
                task.lease = None
                if task.state == "VERIFYING":
                    self._move(task, "ROLLBACK")
                    self._move(task, "DEAD" if task.attempts >= task.max_attempts else "READY")
                else:
                    self._move(task, "READY")
                    self._back_to_ready_or_dead(task)
        return ended

    def claim(self, agent: str, ttl: int, now: int, start: bool = False) -> ModelTask:
        self.reclaim(now)
        ready = [task for task in self.tasks.values() if task.state == "READY" and task.kind == "work"]
        if not ready:
            raise Refused(NothingToClaimError)
        task = min(ready, key=lambda t: (t.priority, t.created_at, t.seq))
        task.attempts += 1
        task.lease = ModelLease(agent, task.attempts, now + ttl)
        self._move(task, "LEASED")
        if start:
            self._move(task, "RUNNING")
        return task

    def fence(
        self, task: ModelTask, agent: str | None, attempt: int, now: int, extend: bool = True
    ) -> ModelLease:
        lease = task.lease
        if (
            lease is None
            or (agent is not None and lease.agent != agent)
            or lease.attempt != attempt
            or task.attempts != attempt
            or lease.expires <= now
        ):
            raise Refused(LeaseLostError)
        if extend:
            lease.expires = max(lease.expires, now + LEASE_TTL)
        return lease

    def heartbeat(self, agent: str, now: int) -> tuple[list[str], list[str]]:
        """The agent's live leases renewed, and its expired ones ended as their expiry ends them."""
        renewed = []
        for task in self.tasks.values():
            if task.lease is not None and task.lease.agent == agent and task.lease.expires > now:
                task.lease.expires = now + LEASE_TTL
                renewed.append(task.id)
        return renewed, self.reclaim(now, agent)

    def advance(self, task: ModelTask, action: str, agent: str, attempt: int, now: int) -> None:
        lease = self.fence(task, agent, attempt, now, extend=False)
        allowed = {"start": {"LEASED"}, "verify": {"RUNNING"}, "release": {"LEASED", "RUNNING"}}
        if task.state not in allowed[action]:
            raise Refused(IllegalTransitionError)
        if action == "release":
            task.lease = None
            self._move(task, "READY")
            self._back_to_ready_or_dead(task)
        else:
            lease.expires = max(lease.expires, now + LEASE_TTL)
            self._move(task, "RUNNING" if action == "start" else "VERIFYING")

    def finish(self, task: ModelTask, agent: str, attempt: int, now: int) -> str:
        self.fence(task, agent, attempt, now, extend=False)
        if task.state != "VERIFYING":
            raise Refused(IllegalTransitionError)
        results = [r for (a, _), r in task.evidence.items() if a == attempt]
        task.lease = None
        if results and all(r == "PASS" for r in results):
            self._move(task, "COMMITTED")
            self._move(task, "DONE")
        else:
            self._move(task, "ROLLBACK")
            self._move(task, "DEAD" if task.attempts >= task.max_attempts else "READY")
        return task.state


    def complete(
        self, task: ModelTask, agent: str, attempt: int, now: int, entries: list[tuple[str, str]]
    ) -> str:
        """Verify (from RUNNING), record ``entries`` and finish; refused whole, or done whole."""
        self.fence(task, agent, attempt, now, extend=False)
        if task.state not in ("RUNNING", "VERIFYING"):
            raise Refused(IllegalTransitionError)
        verifiers = [verifier for verifier, _ in entries]
        if len(set(verifiers)) < len(verifiers) or any((attempt, v) in task.evidence for v in verifiers):
            raise Refused(AlreadyExistsError)
        if task.state == "RUNNING":
            self._move(task, "VERIFYING")
        for verifier, result in entries:
            task.evidence[(attempt, verifier)] = result
        return self.finish(task, agent, attempt, now)


class TaskLeaseMachine(RuleBasedStateMachine):
    task_ids = Bundle("task_ids")
    backend = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="maf-sm-"))
        self.clock = ManualClock(1_000_000)
        self.opened = contextlib.ExitStack()
        self.store = self.opened.enter_context(
            backend_store(self.backend, self.directory, clock=self.clock, lease_ttl_ms=LEASE_TTL)
        )
        self.model = TaskModel()
        self.final: dict[str, str] = {}

    def teardown(self) -> None:
        self.opened.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _holder(self, task: ModelTask, impostor: bool, agent: str, attempt: int) -> tuple[str, int]:
        if task.lease is not None and not impostor:
            return task.lease.agent, task.lease.attempt
        return agent, attempt

    def _both(self, model_call, store_call):  # type: ignore[no-untyped-def]
        """Run the model and the store; both succeed, or both refuse with the same error."""
        expected = actual = None
        expected_refusal = actual_refusal = None
        try:
            expected = model_call()
        except Refused as refused:
            expected_refusal = refused.kind
        try:
            actual = store_call()
        except MafError as error:
            actual_refusal = type(error)
        assert actual_refusal is expected_refusal
        return expected, actual

    @rule(
        target=task_ids,
        priority=st.sampled_from([1, 5, 100]),
        max_attempts=st.integers(1, 3),
    )
    def add(self, priority: int, max_attempts: int) -> str:
        task_id = f"t{len(self.model.tasks)}"
        tasks.add_task(self.store, task_id=task_id, priority=priority, max_attempts=max_attempts)
        self.model.tasks[task_id] = ModelTask(
            task_id, priority, self.clock(), len(self.model.tasks), max_attempts
        )
        return task_id

    @rule(target=task_ids, kind=st.sampled_from(["preflight", "fixture", "load-test"]))
    def add_own(self, kind: str) -> str:
        """A task pytest-maf makes for itself: READY, but never claimed without its id."""
        task_id = f"t{len(self.model.tasks)}"
        tasks.add_task(self.store, task_id=task_id, priority=0, max_attempts=1, kind=kind)
        self.model.tasks[task_id] = ModelTask(task_id, 0, self.clock(), len(self.model.tasks), 1, kind)
        return task_id

    @rule(target=task_ids, agent=st.sampled_from(AGENTS), ttl=st.sampled_from([1, 500, 5_000]))
    def add_and_claim(self, agent: str, ttl: int) -> str:
        """A preflight run's task: added, claimed and started in one transaction."""
        claim = tasks.add_and_claim_task(self.store, agent, ttl, kind="preflight", start=True)
        now = self.clock()
        self.model.reclaim(now)
        task = ModelTask(claim.task_id, tasks.DEFAULT_PRIORITY, now, len(self.model.tasks), 1, "preflight")
        task.attempts = 1
        task.lease = ModelLease(agent, 1, now + ttl)
        self.model._move(task, "LEASED")
        self.model._move(task, "RUNNING")
        self.model.tasks[claim.task_id] = task
        assert (claim.attempt, claim.lease_expires_at) == (1, now + ttl)
        return claim.task_id

    @rule(agent=st.sampled_from(AGENTS))
    def heartbeat(self, agent: str) -> None:
        expected, lost = self.model.heartbeat(agent, self.clock())
        renewed = tasks.renew_held_leases(self.store, agent)
        assert sorted(lease.task_id for lease in renewed) == sorted(expected)
        assert sorted(lease.task_id for lease in renewed.lost) == sorted(lost)

    @rule(agent=st.sampled_from(AGENTS), ttl=st.sampled_from([1, 500, 5_000]), start=st.booleans())
    def claim(self, agent: str, ttl: int, start: bool) -> None:
        expected, actual = self._both(
            lambda: self.model.claim(agent, ttl, self.clock(), start),
            lambda: tasks.claim_next_task(self.store, agent, ttl, start=start),
        )
        if actual is not None:
            assert (actual.task_id, actual.attempt) == (expected.id, expected.attempts)

    @rule(
        task_id=task_ids,
        impostor=st.booleans(),
        agent=st.sampled_from(AGENTS),
        attempt=st.integers(1, 3),
        ttl=st.sampled_from([1, 500, 5_000]),
    )
    def renew(self, task_id: str, impostor: bool, agent: str, attempt: int, ttl: int) -> None:
        task = self.model.tasks[task_id]
        agent, attempt = self._holder(task, impostor, agent, attempt)

        def model_renew() -> None:
            self.model.fence(task, agent, attempt, self.clock(), extend=False).expires = self.clock() + ttl

        self._both(model_renew, lambda: tasks.renew_lease(self.store, task_id, agent, attempt, ttl))

    @rule(
        task_id=task_ids,
        action=st.sampled_from(["start", "verify", "release"]),
        impostor=st.booleans(),
        agent=st.sampled_from(AGENTS),
        attempt=st.integers(1, 3),
    )
    def move(self, task_id: str, action: str, impostor: bool, agent: str, attempt: int) -> None:
        task = self.model.tasks[task_id]
        agent, attempt = self._holder(task, impostor, agent, attempt)
        operation = {
            "start": tasks.start_task,
            "verify": tasks.begin_verification,
            "release": tasks.release_task,
        }[action]
        self._both(
            lambda: self.model.advance(task, action, agent, attempt, self.clock()),
            lambda: operation(self.store, task_id, agent, attempt),
        )

    @rule(
        task_id=task_ids,
        verifier=st.sampled_from(VERIFIERS),
        result=st.sampled_from(["PASS", "PASS", "FAIL"]),
        impostor=st.booleans(),
        agent=st.sampled_from(AGENTS),
        attempt=st.integers(1, 3),
    )
    def evidence(
        self, task_id: str, verifier: str, result: str, impostor: bool, agent: str, attempt: int
    ) -> None:
        task = self.model.tasks[task_id]
        agent, attempt = self._holder(task, impostor, agent, attempt)

        def model_record() -> None:
            lease = self.model.fence(task, agent, attempt, self.clock(), extend=False)
            if (attempt, verifier) in task.evidence:
                raise Refused(AlreadyExistsError)  # refused whole: the lease is not extended either
            lease.expires = max(lease.expires, self.clock() + LEASE_TTL)
            task.evidence[(attempt, verifier)] = result

        self._both(
            model_record,
            lambda: record_evidence(self.store, task_id, attempt, verifier, result, agent_id=agent),
        )

    @rule(task_id=task_ids, impostor=st.booleans(), agent=st.sampled_from(AGENTS), attempt=st.integers(1, 3))
    def finish(self, task_id: str, impostor: bool, agent: str, attempt: int) -> None:
        task = self.model.tasks[task_id]
        agent, attempt = self._holder(task, impostor, agent, attempt)
        expected, actual = self._both(
            lambda: self.model.finish(task, agent, attempt, self.clock()),
            lambda: tasks.finish_task(self.store, task_id, agent, attempt),
        )
        if actual is not None:
            assert actual.final_state == expected

    @rule(
        task_id=task_ids,
        impostor=st.booleans(),
        agent=st.sampled_from(AGENTS),
        attempt=st.integers(1, 3),
        entries=st.lists(st.tuples(st.sampled_from(VERIFIERS), st.sampled_from(["PASS", "PASS", "FAIL"])), max_size=3),
    )
    def complete(
        self, task_id: str, impostor: bool, agent: str, attempt: int, entries: list[tuple[str, str]]
    ) -> None:
        task = self.model.tasks[task_id]
        agent, attempt = self._holder(task, impostor, agent, attempt)
        expected, actual = self._both(
            lambda: self.model.complete(task, agent, attempt, self.clock(), entries),
            lambda: tasks.complete_task(
                self.store, task_id, agent, attempt, [(verifier, result, None) for verifier, result in entries]
            ),
        )
        if actual is not None:
            assert actual.final_state == expected

    @rule()
    def reclaim(self) -> None:
        self.model.reclaim(self.clock())
        tasks.reclaim_expired_leases(self.store)

    @rule(task_id=task_ids)
    def cancel(self, task_id: str) -> None:
        task = self.model.tasks[task_id]

        def model_cancel() -> None:
            if task.state != "READY":
                raise Refused(IllegalTransitionError)
            self.model._move(task, "DEAD")

        self._both(model_cancel, lambda: tasks.cancel_task(self.store, task_id))

    @rule(ms=st.sampled_from([1, 250, 499, 500, 2_000, 6_000]))
    def advance_clock(self, ms: int) -> None:
        self.clock.advance(ms)

    @invariant()
    def store_agrees_with_model(self) -> None:
        leases = {lease.task_id: lease for lease in self.store.read(lambda tx: tx.list_leases())}
        for task in tasks.list_tasks(self.store, include_internal=True):
            model = self.model.tasks[task.id]
            assert (task.state, task.attempts) == (model.state, model.attempts), task.id
            lease = leases.get(task.id)
            expected = None if model.lease is None else (
                model.lease.agent, model.lease.attempt, model.lease.expires
            )
            actual = None if lease is None else (lease.agent_id, lease.attempt, lease.lease_expires_at)
            assert actual == expected, task.id

    @invariant()
    def lease_rules_hold(self) -> None:
        now = self.clock()
        leases = self.store.read(lambda tx: tx.list_leases())
        by_task = {task.id: task for task in tasks.list_tasks(self.store, include_internal=True)}
        assert len({lease.task_id for lease in leases}) == len(leases)  # at most one per task
        for lease in leases:
            task = by_task[lease.task_id]
            assert task.state in LEASED  # only leased states hold a lease row
            if lease.lease_expires_at > now:
                assert lease.attempt == task.attempts
        leased_ids = {lease.task_id for lease in leases}
        for task in by_task.values():
            assert (task.state in LEASED) == (task.id in leased_ids), task.id

    @invariant()
    def final_states_never_change(self) -> None:
        for task in tasks.list_tasks(self.store, include_internal=True):
            if task.id in self.final:
                assert task.state == self.final[task.id]
            elif task.state in tasks.FINAL_STATES:
                self.final[task.id] = task.state

    @invariant()
    def every_state_change_has_its_event(self) -> None:
        events = self.store.read(lambda tx: tx.events())
        for task_id, model in self.model.tasks.items():
            changes = [e for e in events if e.task_id == task_id and "from" in e.data]
            assert len(changes) == model.changes
            if changes:
                assert changes[-1].data["to"] == model.state
                for before, after in zip(changes, changes[1:]):
                    assert after.data["from"] == before.data["to"]


def test_tasks_and_leases(backend: str) -> None:
    machine = type(f"TaskLeaseMachine_{backend}", (TaskLeaseMachine,), {"backend": backend})
    run_state_machine_as_test(machine, settings=settings(max_examples=60, stateful_step_count=40, deadline=None))
