"""Evidence: one PASS or FAIL row per verifier and task attempt, and the verdict they give.

Example::

    record_evidence(store, "task-1", 1, "unit-tests", "PASS", {"duration_s": 1.2}, agent_id="claude-1")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

from pytest_maf import ids
from pytest_maf.agents import seen
from pytest_maf.errors import UsageError, evidence_already_recorded
from pytest_maf.leases import fenced_lease
from pytest_maf.light_dataclass import dataclass
from pytest_maf.records import EVIDENCE_RESULTS, Evidence
from pytest_maf.values import check_json

if TYPE_CHECKING:
    from pytest_maf.store import Store, Transaction


def is_blocking_failure(row: Evidence) -> bool:
    """A FAIL row blocks unless it was recorded as non-blocking (a warning check)."""
    return row.result != "PASS" and row.details.get("blocking", True) is not False


def is_acknowledged(row: Evidence) -> bool:
    """A non-blocking FAIL of a warning check someone accepted in preflight.acknowledged_warnings."""
    return not is_blocking_failure(row) and row.result != "PASS" and bool(row.details.get("acknowledged"))


def evidence_verdict(rows: Iterable[Evidence]) -> tuple[bool, str]:
    """Whether an attempt's evidence lets its task commit, and why (pure).

    It commits only when there is evidence and no blocking FAIL row; a FAIL
    recorded as a warning (``"blocking": false`` in its details) is reported
    but does not block. A verifier that was skipped, xfailed or deselected
    records no row, so an attempt whose verifiers all did that decides nothing
    and does not commit.
    """
    rows = list(rows)
    if not rows:
        return False, NO_EVIDENCE_REASON
    failed, acknowledged, warned = [], [], []
    for row in rows:
        if row.result == "PASS":
            continue  # neither a failure nor a warning: most rows, looked at once
        if is_blocking_failure(row):
            failed.append(row.verifier)
        elif is_acknowledged(row):
            acknowledged.append(row.verifier)
        else:
            warned.append(row.verifier)
    failed.sort()
    acknowledged.sort()
    warned.sort()
    if failed:
        return False, f"{len(failed)} of {len(rows)} verifiers failed: {', '.join(failed)}"
    notes = [f"{len(warned)} warning(s): {', '.join(warned)}"] if warned else []
    notes += [f"{len(acknowledged)} acknowledged: {', '.join(acknowledged)}"] if acknowledged else []
    if notes:
        return True, f"no blocking failure; {'; '.join(notes)}"
    return True, f"all {len(rows)} verifiers passed"


NO_EVIDENCE_REASON = (
    "no verifier passed or failed in this attempt"
    " (skipped, xfailed and deselected verifiers record no evidence)"
)


def parse_result(text: str) -> str:
    if text in EVIDENCE_RESULTS:  # spelled as stored: what every runner passes
        return text
    result = text.upper()
    if result not in EVIDENCE_RESULTS:
        raise UsageError(f"unknown result {text!r}; use PASS or FAIL")
    return result


def record_evidence(
    store: Store,
    task_id: str,
    attempt: int,
    verifier: str,
    result: str,
    details: dict[str, Any] | None = None,
    *,
    agent_id: str,
) -> Evidence:
    """Record one verifier's result for the live attempt of a task.

    Fenced like every leased operation: ``agent_id`` must hold ``attempt`` of
    the task live, and the lease is extended. A verifier reports once per
    attempt.
    """
    (row,) = record_evidence_batch(store, task_id, attempt, [(verifier, result, details)], agent_id=agent_id)
    return row


def record_evidence_batch(
    store: Store,
    task_id: str,
    attempt: int,
    entries: Sequence[tuple[str, str, dict[str, Any] | None]],
    *,
    agent_id: str,
) -> list[Evidence]:
    """Record several ``(verifier, result, details)`` in one fenced transaction: all or none."""
    rows = evidence_rows(task_id, attempt, entries)

    def record(transaction: Transaction) -> list[Evidence]:
        _, lease = fenced_lease(transaction, task_id, agent_id, attempt)
        insert_evidence_rows(transaction, task_id, attempt, rows, agent_id, lease.lease_expires_at)
        seen(transaction, agent_id)
        return rows

    return store.write(record)


def evidence_rows(
    task_id: str, attempt: int, entries: Sequence[tuple[str, str, dict[str, Any] | None]]
) -> list[Evidence]:
    """The rows ``entries`` ask for, each checked (verifier id, PASS or FAIL, JSON details), before any transaction."""
    rows: list[Evidence] = []
    append = rows.append
    for verifier, result, details in entries:
        ids.validate_id("verifier", verifier)
        if details is not None and not isinstance(details, dict):
            raise UsageError("evidence details must be a JSON object, such as {\"log\": \"...\"}")
        check_json("evidence details", details)
        append(Evidence(task_id, attempt, verifier, parse_result(result), details or {}))
    return rows


def evidence_events(
    rows: Sequence[Evidence], agent_id: str, attempt: int, lease_expires_at: int
) -> list[tuple[str, dict[str, Any]]]:
    """The 'evidence' event of each row, in order."""
    return [
        (
            "evidence",
            {
                "agent": agent_id, "attempt": attempt, "verifier": evidence.verifier,
                "result": evidence.result, "lease_expires_at": lease_expires_at,
            },
        )
        for evidence in rows
    ]


def insert_evidence_rows(
    transaction: Transaction, task_id: str, attempt: int, rows: Sequence[Evidence], agent_id: str,
    lease_expires_at: int, *, events: bool = True,
) -> list[Evidence]:
    """Write ``rows`` of ``attempt`` and an 'evidence' event for each, inside a transaction whose caller
    checked the lease: one statement for the rows and one for their events, however many there are.
    With ``events=False`` the caller writes the events (:func:`evidence_events`) with others.

    Returns every row of the attempt, those recorded before first: what the attempt's verdict is
    decided from. A verifier that already reported refuses the whole call (:class:`AlreadyExistsError`).
    """
    before = transaction.evidence(task_id, attempt)
    reported = {row.verifier for row in before}
    for evidence in rows:
        if evidence.verifier in reported:
            raise evidence_already_recorded(task_id, attempt, [evidence.verifier])
        reported.add(evidence.verifier)
    if not rows:
        return before
    transaction.insert_evidence_batch(rows)
    if events:
        transaction.insert_events(
            (task_id, kind, data) for kind, data in evidence_events(rows, agent_id, attempt, lease_expires_at)
        )
    return [*before, *rows]


def list_evidence(store: Store, task_id: str | None = None) -> list[Evidence]:
    return store.read(lambda transaction: transaction.evidence(task_id))


@dataclass(frozen=True)
class RecordedEvidence:
    """An evidence row and when it was recorded (epoch ms; None if its event was cleaned away)."""

    evidence: Evidence
    recorded_at: int | None


def list_recorded_evidence(store: Store, task_id: str | None = None, limit: int | None = None) -> list[RecordedEvidence]:
    """Evidence newest first (at most ``limit`` rows), each with the time it was recorded.

    The evidence table keeps no time of its own: the time is that of the
    ``evidence`` event written in the same transaction, for the same task,
    attempt and verifier.
    """

    def read(transaction: Transaction) -> tuple[list[Evidence], dict[tuple[str, Any, Any], int]]:
        times = {
            (event.task_id, event.data.get("attempt"), event.data.get("verifier")): event.ts
            for event in transaction.events(task_id, kind="evidence")  # in id order: the last one wins
        }
        return transaction.evidence(task_id), times

    rows, times = store.read(read)
    recorded = [RecordedEvidence(row, times.get((row.task_id, row.attempt, row.verifier))) for row in rows]
    # Newest first; a row without a time after every timed one; ties in the table's order.
    recorded.sort(key=lambda item: -1 if item.recorded_at is None else item.recorded_at, reverse=True)
    return recorded if limit is None else recorded[:limit]
