"""Evidence: one PASS or FAIL row per verifier and task attempt, and the verdict they give.

Example::

    record_evidence(store, "task-1", 1, "unit-tests", "PASS", {"duration_s": 1.2})
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

from pytest_maf.errors import UsageError
from pytest_maf.leases import fenced_lease, validate_id
from pytest_maf.records import EVIDENCE_RESULTS, Evidence
from pytest_maf.values import check_json

if TYPE_CHECKING:
    from pytest_maf.store import Store, Transaction


def is_blocking_failure(row: Evidence) -> bool:
    """A FAIL row blocks unless it was recorded as non-blocking (a warning check)."""
    return row.result != "PASS" and row.details.get("blocking", True) is not False


def evidence_verdict(rows: Iterable[Evidence]) -> tuple[bool, str]:
    """Whether an attempt's evidence lets its task commit, and why (pure).

    It commits only when there is evidence and no blocking FAIL row; a FAIL
    recorded as a warning (``"blocking": false`` in its details) is reported
    but does not block.
    """
    rows = list(rows)
    if not rows:
        return False, "no evidence was recorded for this attempt"
    failed = sorted(row.verifier for row in rows if is_blocking_failure(row))
    warned = sorted(row.verifier for row in rows if row.result != "PASS" and not is_blocking_failure(row))
    if failed:
        return False, f"{len(failed)} of {len(rows)} verifiers failed: {', '.join(failed)}"
    if warned:
        return True, f"no blocking failure; {len(warned)} warning(s): {', '.join(warned)}"
    return True, f"all {len(rows)} verifiers passed"


def parse_result(text: str) -> str:
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
    agent_id: str | None = None,
) -> Evidence:
    """Record one verifier's result for the live attempt of a task.

    The attempt must hold a live lease; with ``agent_id`` the lease must be
    that agent's (fenced). A verifier reports once per attempt.
    """
    (row,) = record_evidence_batch(store, task_id, attempt, [(verifier, result, details)], agent_id=agent_id)
    return row


def record_evidence_batch(
    store: Store,
    task_id: str,
    attempt: int,
    entries: Sequence[tuple[str, str, dict[str, Any] | None]],
    *,
    agent_id: str | None = None,
) -> list[Evidence]:
    """Record several ``(verifier, result, details)`` in one fenced transaction: all or none."""
    rows = []
    for verifier, result, details in entries:
        validate_id("verifier", verifier)
        if details is not None and not isinstance(details, dict):
            raise UsageError("evidence details must be a JSON object, such as {\"log\": \"...\"}")
        check_json("evidence details", details)
        rows.append(Evidence(task_id, attempt, verifier, parse_result(result), details or {}))

    def record(transaction: Transaction) -> list[Evidence]:
        _, lease = fenced_lease(transaction, task_id, agent_id, attempt)
        for evidence in rows:
            transaction.insert_evidence(evidence)
            transaction.insert_event(
                task_id,
                "evidence",
                {
                    "agent": agent_id, "attempt": attempt, "verifier": evidence.verifier,
                    "result": evidence.result, "lease_expires_at": lease.lease_expires_at,
                },
            )
        return rows

    return store.write(record)


def list_evidence(store: Store, task_id: str | None = None) -> list[Evidence]:
    return store.read(lambda transaction: transaction.evidence(task_id))
