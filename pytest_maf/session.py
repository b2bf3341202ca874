"""A verification session: one attempt of a task, verified by a run of checks, outside pytest.

Start it for a preflight (its own task, added, claimed and started in one
transaction) or for a task the agent holds RUNNING; record evidence as checks
end; keep the lease alive meanwhile; finish the task from its evidence. The
pytest plugin (:class:`pytest_maf.verification.MafRun`) is a thin adapter over
it, and any other runner can drive it the same way.

Example::

    session = VerificationSession.start_verification(store, "fix-42", "claude-1", ttl_ms=1_800_000)
    session.keep_lease()
    session.record([("unit", "PASS", {"passed": 120})])
    session.finish().final_state  # "DONE"

or, recording and finishing in one transaction::

    verdict, rows = session.complete([("unit", "PASS", {"passed": 120})])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from pytest_maf import tasks
from pytest_maf.clock import iso_utc
from pytest_maf.errors import LeaseLostError, MafError, NotVerifiableError, StoreError
from pytest_maf.evidence import record_evidence_batch
from pytest_maf.keeper import LeaseKeeper
from pytest_maf.leases import require_task_and_lease
from pytest_maf.light_dataclass import dataclass, field
from pytest_maf.records import Evidence, Lease
from pytest_maf.terminal import cut

if TYPE_CHECKING:
    from pytest_maf.store import Store, Transaction

Entry = tuple[str, str, "dict[str, Any] | None"]  # (verifier, PASS or FAIL, details)


@dataclass
class VerificationSession:
    """One attempt under verification: its store, task, agent, attempt and lease keeper."""

    store: Store
    task_id: str
    agent_id: str
    attempt: int
    ttl_ms: int
    preflight: bool
    problems: list[str] = field(default_factory=list)  # what could not be recorded, a lost lease
    keeper: LeaseKeeper | None = None
    unrecorded: list[str] = field(default_factory=list)  # "verifier: why" of each row refused, not yet stood in for
    failure_lost: bool = False  # a refused row that not even the stand-in records: the task must not commit
    lost_lease: str = ""  # why the lease is gone, once the keeper or a write found it so: nothing more is recorded
    not_recorded: int = 0  # results that found the lease gone, and were not recorded

    @classmethod
    def start_preflight(
        cls, store: Store, agent_id: str, ttl_ms: int, payload: dict[str, Any]
    ) -> VerificationSession:
        """A preflight's own task, added, claimed and started at once: no agent's claim can take it."""
        claim = tasks.add_and_claim_task(store, agent_id, ttl_ms, kind="preflight", payload=payload, start=True)
        return cls(store, claim.task_id, agent_id, claim.attempt, ttl_ms, preflight=True)

    @staticmethod
    def held_attempt(store: Store, task_id: str, agent_id: str) -> int:
        """The attempt of ``task_id`` that ``agent_id`` holds RUNNING, read without changing anything; a
        :class:`LeaseLostError` saying what to do when it holds none, a :class:`NotVerifiableError`
        naming the way on when its task is not RUNNING (a run stopped mid-way leaves it VERIFYING)."""
        task, lease = store.read(lambda t: require_task_and_lease(t, task_id))
        if lease is None or lease.agent_id != agent_id:
            holder = f"it is leased to {lease.agent_id!r}" if lease else f"it is {task.state} with no lease"
            raise LeaseLostError(
                f"--maf-task {task_id}: agent {agent_id!r} does not hold it ({holder});"
                " claim and start it first (maf task claim, maf task start)"
            )
        held = f"--agent {agent_id} --attempt {lease.attempt}"
        if task.state == "VERIFYING":
            raise NotVerifiableError(
                f"--maf-task {task_id}: it is VERIFYING already, under attempt {lease.attempt} (a run that was"
                f" stopped before it decided the task, or one still running); `maf task finish {task_id} {held}`"
                f" rolls it back now, else the first `maf task claim` after its lease expires"
                f" ({iso_utc(lease.lease_expires_at, 'seconds')}) does; then claim and start it again"
            )
        if task.state == "LEASED":
            raise NotVerifiableError(
                f"--maf-task {task_id}: it is LEASED, not started; run `maf task start {task_id} {held}` first"
            )
        return lease.attempt

    @classmethod
    def start_verification(cls, store: Store, task_id: str, agent_id: str, ttl_ms: int) -> VerificationSession:
        """Verify ``task_id``, which ``agent_id`` must hold: RUNNING -> VERIFYING, fenced."""
        attempt = cls.held_attempt(store, task_id, agent_id)
        tasks.begin_verification(store, task_id, agent_id, attempt)
        return cls(store, task_id, agent_id, attempt, ttl_ms, preflight=False)

    def keep_lease(self) -> None:
        """Renew the lease in the background until :meth:`finish` or :meth:`close`."""
        if self.keeper is None:
            self.keeper = LeaseKeeper(self.store, self.task_id, self.agent_id, self.attempt, self.ttl_ms).start()

    def record(self, entries: Sequence[Entry]) -> list[Evidence]:
        """Record ``entries`` in one fenced transaction; if that is refused, one by one,
        keeping every row that can be kept and noting each that cannot (:meth:`refuse`).

        A row that cannot be kept (a verifier id too long, details that are not JSON, a
        verifier that already reported), PASS or FAIL, still keeps the task from committing:
        :meth:`finish` first records one FAIL row, ``<preflight|verification>.unrecorded``,
        naming each such verifier and why.
        """
        if not entries:
            return []
        if self.lost_lease:
            self.not_recorded += len(entries)
            return []
        try:
            return record_evidence_batch(self.store, self.task_id, self.attempt, entries, agent_id=self.agent_id)
        except LeaseLostError as error:
            self._lose(str(error), len(entries))  # no row can be kept: said once, not once per row
            return []
        except MafError:
            rows: list[Evidence] = []
            for done, entry in enumerate(entries):
                try:
                    rows += record_evidence_batch(self.store, self.task_id, self.attempt, [entry], agent_id=self.agent_id)
                except LeaseLostError as error:
                    self._lose(str(error), len(entries) - done)
                    break
                except MafError as error:
                    self.refuse(entry[0], str(error))
            return rows

    def _lose(self, why: str, results: int) -> None:
        self.lost_lease = self.lost_lease or why
        self.not_recorded += results

    def lease_lost_error(self) -> LeaseLostError:
        """One error for a lost lease, however many results it kept out: whose the task is now, how many
        results were not recorded, and what to do, for a preflight or a verified task."""
        def read(transaction: Transaction) -> tuple[str, Lease | None, int]:
            task, lease = require_task_and_lease(transaction, self.task_id)
            return task.state, lease, transaction.now

        try:
            state, lease, now = self.store.read(read)
        except MafError:
            return LeaseLostError(f"{self._lost()}: {self.lost_lease}")
        return LeaseLostError(lost_lease_message(
            self._lost(), state, lease, self.agent_id, self.attempt, self.preflight, self.not_recorded, now,
        ))

    def _lost(self) -> str:
        return f"lost the lease on {'preflight task' if self.preflight else 'task'} {self.task_id}, attempt {self.attempt}"

    def refuse(self, verifier: str, reason: str) -> None:
        """Note that ``verifier``'s evidence cannot be recorded (a runner found its details unusable):
        the attempt is then incomplete, and its task must not commit."""
        self.problems.append(f"evidence for {verifier} was not recorded: {reason}")
        self.unrecorded.append(f"{cut(verifier, 200)}: {cut(reason, 300)}")

    def _stand_in(self) -> Entry | None:
        """The FAIL row that stands for the verifiers whose own rows were refused, if any were."""
        if not self.unrecorded:
            return None
        lost = self.unrecorded
        verifier = f"{'preflight' if self.preflight else 'verification'}.unrecorded"
        shown = "; ".join(lost[:5]) + (f"; and {len(lost) - 5} more" if len(lost) > 5 else "")
        details = {
            "severity": "critical", "blocking": True, "outcome": "failed", "tags": [],
            "message": f"the evidence of {len(lost)} verifier(s) could not be recorded: {shown}",
        }
        return verifier, "FAIL", details

    def _record_stand_in(self) -> list[Evidence]:
        """Record :meth:`_stand_in` once; if it is refused too, the task must be left undecided."""
        stand_in = self._stand_in()
        if stand_in is None or self.lost_lease:  # without the lease the task is not this run's to decide
            self.unrecorded = []
            return []
        self.unrecorded = []
        try:
            return record_evidence_batch(self.store, self.task_id, self.attempt, [stand_in], agent_id=self.agent_id)
        except MafError as error:
            self.problems.append(f"evidence for {stand_in[0]} was not recorded: {error}")
            self.failure_lost = True
            return []

    def stop_keeping(self) -> None:
        if self.keeper is not None:
            self.keeper.stop()
            if self.keeper.lost:  # said once, with what it cost, by finish() or complete()
                self.lost_lease = self.lost_lease or self.keeper.lost
            self.keeper = None

    def finish(self) -> tasks.FinishResult:
        """Stop keeping the lease and decide the task from its evidence (raises :class:`MafError`).

        Rows that were refused are stood in for first, by one FAIL row. If even that is refused,
        the task is left undecided (a :class:`StoreError`): it stays VERIFYING, and rolls back when
        its lease runs out, rather than commit without that evidence.
        """
        self.stop_keeping()
        self._record_stand_in()
        if self.lost_lease:
            raise self.lease_lost_error()
        if self.failure_lost:
            raise StoreError(
                f"a failure of task {self.task_id} could not be recorded, so the task was not decided: it rolls"
                " back when its lease runs out (maf task show to see it)"
            )
        try:
            if self.preflight:
                tasks.begin_verification(self.store, self.task_id, self.agent_id, self.attempt)
            return tasks.finish_task(self.store, self.task_id, self.agent_id, self.attempt)
        except LeaseLostError as error:
            self._lose(str(error), 0)
            raise self.lease_lost_error() from None

    def complete(self, entries: Sequence[Entry]) -> tuple[tasks.FinishResult, list[Evidence]]:
        """Record ``entries`` and decide the task, in one fenced transaction (:func:`tasks.complete_task`);
        return the verdict and the rows written.

        If that is refused (a verifier that already reported, details that are
        not JSON, a lost lease), nothing of it is written, and the rows are
        recorded as :meth:`record` does, then the task finished as by :meth:`finish`.
        """
        self.stop_keeping()
        stand_in = self._stand_in()
        try:
            if self.lost_lease:
                raise LeaseLostError(self.lost_lease)  # the keeper found it gone: nothing is written
            written = [*entries, stand_in] if stand_in is not None else entries
            verdict, rows = tasks.complete_task_rows(self.store, self.task_id, self.agent_id, self.attempt, written)
        except LeaseLostError as error:
            self._lose(str(error), len(entries))
            raise self.lease_lost_error() from None
        except MafError:
            rows = self.record(entries)
            rows += self._record_stand_in()
            return self.finish(), rows
        self.unrecorded = []
        return verdict, rows

    def close(self) -> None:
        self.stop_keeping()


def lost_lease_message(
    lost: str, state: str, lease: Lease | None, agent_id: str, attempt: int, preflight: bool, not_recorded: int,
    now_ms: int,
) -> str:
    """``lost (now ...): N results not recorded; what to do`` (pure): whose the task is now, and advice
    that can come true for it (a preflight task is never claimed; a finished task takes no more evidence)."""
    if lease is not None and lease.agent_id != agent_id:
        now, ours = f"now leased to agent {lease.agent_id!r}, {state}", False
    elif lease is not None and lease.attempt != attempt:
        now, ours = f"now its attempt {lease.attempt}, {state}", True
    elif lease is not None and not lease.is_live(now_ms):
        now, ours = f"its lease expired, {state}", True
    else:
        now, ours = f"now {state}{' with no lease' if lease is None else ''}", True
    results = (
        f"{not_recorded} result(s) of this run were not recorded" if not_recorded
        else "its results were recorded, but this run did not decide the task"
    )
    if preflight:
        advice = "run `pytest --maf-preflight` again for a preflight that counts"
    elif not ours:
        advice = f"the task is {lease.agent_id if lease else 'another agent'}'s now; `maf task claim` leases you another"
    elif lease is not None and lease.attempt != attempt:
        advice = f"rerun the tests for attempt {lease.attempt}"
    elif state == "READY":
        advice = "claim and start it again (maf task claim, maf task start), then rerun the tests"
    elif lease is not None:
        advice = "the next `maf task claim` reclaims it (it rolls back); then claim it again"
    else:
        advice = "it takes no more evidence (`maf task show` says how it ended)"
    return f"{lost} ({now}): {results}; {advice}"
