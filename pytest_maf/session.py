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
from pytest_maf.errors import LeaseLostError, MafError, StoreError
from pytest_maf.evidence import record_evidence_batch
from pytest_maf.keeper import LeaseKeeper
from pytest_maf.leases import require_task_and_lease
from pytest_maf.light_dataclass import dataclass, field
from pytest_maf.records import Evidence
from pytest_maf.terminal import cut

if TYPE_CHECKING:
    from pytest_maf.store import Store

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
    failure_lost: bool = False  # a FAIL that no row records, not even the stand-in: the task must not commit

    @classmethod
    def start_preflight(
        cls, store: Store, agent_id: str, ttl_ms: int, payload: dict[str, Any]
    ) -> VerificationSession:
        """A preflight's own task, added, claimed and started at once: no agent's claim can take it."""
        claim = tasks.add_and_claim_task(store, agent_id, ttl_ms, kind="preflight", payload=payload, start=True)
        return cls(store, claim.task_id, agent_id, claim.attempt, ttl_ms, preflight=True)

    @classmethod
    def start_verification(cls, store: Store, task_id: str, agent_id: str, ttl_ms: int) -> VerificationSession:
        """Verify ``task_id``, which ``agent_id`` must hold: RUNNING -> VERIFYING, fenced."""
        task, lease = store.read(lambda t: require_task_and_lease(t, task_id))
        if lease is None or lease.agent_id != agent_id:
            holder = f"it is leased to {lease.agent_id!r}" if lease else f"it is {task.state} with no lease"
            raise LeaseLostError(
                f"--maf-task {task_id}: agent {agent_id!r} does not hold it ({holder});"
                " claim and start it first (maf task claim, maf task start)"
            )
        tasks.begin_verification(store, task_id, agent_id, lease.attempt)
        return cls(store, task_id, agent_id, lease.attempt, ttl_ms, preflight=False)

    def keep_lease(self) -> None:
        """Renew the lease in the background until :meth:`finish` or :meth:`close`."""
        if self.keeper is None:
            self.keeper = LeaseKeeper(self.store, self.task_id, self.agent_id, self.attempt, self.ttl_ms).start()

    def record(self, entries: Sequence[Entry]) -> list[Evidence]:
        """Record ``entries`` in one fenced transaction; if that is refused, one by one,
        keeping every row that can be kept and noting in :attr:`problems` each that cannot.

        A FAIL that cannot be kept (a verifier id too long, details that are not JSON, a
        verifier that already reported) still fails the task: one FAIL row,
        ``<preflight|verification>.unrecorded``, names each such verifier and why.
        """
        if not entries:
            return []
        try:
            return record_evidence_batch(self.store, self.task_id, self.attempt, entries, agent_id=self.agent_id)
        except MafError:
            rows: list[Evidence] = []
            lost: list[str] = []
            for entry in entries:
                try:
                    rows += record_evidence_batch(self.store, self.task_id, self.attempt, [entry], agent_id=self.agent_id)
                except MafError as error:
                    self.problems.append(f"evidence for {entry[0]} was not recorded: {error}")
                    if entry[1] == "FAIL":
                        lost.append(f"{cut(entry[0], 200)}: {cut(str(error), 300)}")
            if lost:
                rows += self._record_lost_failures(lost)
            return rows

    def _record_lost_failures(self, lost: list[str]) -> list[Evidence]:
        """The FAIL row that stands for failures whose own rows were refused; [] if it is refused too."""
        verifier = f"{'preflight' if self.preflight else 'verification'}.unrecorded"
        shown = "; ".join(lost[:5]) + (f"; and {len(lost) - 5} more" if len(lost) > 5 else "")
        details = {
            "severity": "critical", "blocking": True, "outcome": "failed", "tags": [],
            "message": f"{len(lost)} failure(s) could not be recorded as evidence: {shown}",
        }
        try:
            return record_evidence_batch(
                self.store, self.task_id, self.attempt, [(verifier, "FAIL", details)], agent_id=self.agent_id
            )
        except MafError as error:
            self.problems.append(f"evidence for {verifier} was not recorded: {error}")
            self.failure_lost = True
            return []

    def stop_keeping(self) -> None:
        if self.keeper is not None:
            self.keeper.stop()
            if self.keeper.lost:
                self.problems.append(self.keeper.lost)
            self.keeper = None

    def finish(self) -> tasks.FinishResult:
        """Stop keeping the lease and decide the task from its evidence (raises :class:`MafError`).

        A FAIL that no row could record leaves the task undecided (a :class:`StoreError`): it stays
        VERIFYING, and rolls back when its lease runs out, rather than commit without that failure.
        """
        self.stop_keeping()
        if self.failure_lost:
            raise StoreError(
                f"a failure of task {self.task_id} could not be recorded, so the task was not decided: it rolls"
                " back when its lease runs out (maf task show to see it)"
            )
        if self.preflight:
            tasks.begin_verification(self.store, self.task_id, self.agent_id, self.attempt)
        return tasks.finish_task(self.store, self.task_id, self.agent_id, self.attempt)

    def complete(self, entries: Sequence[Entry]) -> tuple[tasks.FinishResult, list[Evidence]]:
        """Record ``entries`` and decide the task, in one fenced transaction (:func:`tasks.complete_task`);
        return the verdict and the rows written.

        If that is refused (a verifier that already reported, details that are
        not JSON, a lost lease), nothing of it is written, and the rows are
        recorded as :meth:`record` does, then the task finished as by :meth:`finish`.
        """
        self.stop_keeping()
        try:
            return tasks.complete_task_rows(self.store, self.task_id, self.agent_id, self.attempt, entries)
        except MafError:
            rows = self.record(entries)
            return self.finish(), rows

    def close(self) -> None:
        self.stop_keeping()
