"""Stores with known contents for the `maf report` tests, written through the library as agents would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_maf import reservations, tasks
from pytest_maf.clock import ManualClock
from pytest_maf.evidence import record_evidence_batch
from pytest_maf.guard import record_override
from pytest_maf.reservations import Block
from pytest_maf.session import VerificationSession
from pytest_maf.store import Store

TTL = 600_000
MINUTE = 60_000
HOSTILE_ID = "<img src=x onerror=alert(1)>"  # a valid task id: ids only forbid '/', '\' and control characters
HOSTILE_MESSAGE = "schema is 3, expected 4 <script>document.title='pwned'</script>"
LINT_MESSAGE = "lint: 2 errors in app/models.py"
OVERRIDE_REASON = "hotfix for <b>prod</b> outage"
FORCE_REASON = "agent-a went quiet & left docs locked"
# The preflight runs the known store holds, oldest first: each check's result.
PREFLIGHT_RUNS: list[dict[str, str]] = [
    {"env.python": "PASS", "store.schema": "PASS", "git.clean": "PASS"},
    {"env.python": "PASS", "store.schema": "FAIL", "git.clean": "PASS"},
    {"env.python": "PASS", "store.schema": "PASS", "git.clean": "FAIL"},
    {"env.python": "PASS", "store.schema": "PASS", "git.clean": "PASS"},
]


def preflight(store: Store, clock: ManualClock, results: dict[str, str], messages: dict[str, str]) -> str:
    """One preflight run, as `pytest --maf-preflight` records it; its task id."""
    session = VerificationSession.start_preflight(store, "agent-ci", TTL, {"checks": sorted(results)})
    clock.advance(1_000)
    session.record([
        (check, result, {"severity": "critical", "blocking": True, "message": messages.get(check, "") if result == "FAIL" else ""})
        for check, result in results.items()
    ])
    session.finish()
    return session.task_id


def verify(store: Store, clock: ManualClock, task_id: str, agent: str, results: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Claim, start and verify ``task_id`` as ``agent``, record ``results`` and finish it."""
    claim = tasks.claim_task(store, task_id, agent, TTL)
    tasks.start_task(store, task_id, agent, claim.attempt)
    clock.advance(5 * MINUTE)
    tasks.begin_verification(store, task_id, agent, claim.attempt)
    record_evidence_batch(store, task_id, claim.attempt, results, agent_id=agent)
    tasks.finish_task(store, task_id, agent, claim.attempt)


def build_known_store(store: Store, clock: ManualClock, mail_root: Path) -> None:
    """Four preflight runs (the second and third fail a check), a task that failed once then passed,
    a task still leased under a hostile id, a live reservation, an override and a force-release."""
    for results in PREFLIGHT_RUNS:
        preflight(store, clock, results, {"store.schema": HOSTILE_MESSAGE, "git.clean": "2 files are not committed"})
        clock.advance(30 * MINUTE)
    tasks.add_task(store, task_id="fix-login", max_attempts=3)
    verify(store, clock, "fix-login", "agent-a", [
        ("unit", "PASS", {}), ("lint", "FAIL", {"message": LINT_MESSAGE, "severity": "critical"}),
    ])
    clock.advance(MINUTE)
    verify(store, clock, "fix-login", "agent-a", [("unit", "PASS", {}), ("lint", "PASS", {})])
    tasks.add_task(store, task_id=HOSTILE_ID)
    tasks.claim_task(store, HOSTILE_ID, "agent-b", TTL)
    held = reservations.acquire(store, ["app/**"], "agent-b", TTL, reason="refactor <models>")
    reservations.acquire(store, ["docs/**"], "agent-a", TTL, reason="docs")
    clock.advance(MINUTE)
    record_override(store, "agent-c", [Block("app/models.py", held[0])], OVERRIDE_REASON, None)
    reservations.force_release(store, ["docs/**"], "agent-lead", FORCE_REASON, mail_root)
    clock.advance(MINUTE)


def build_many_tasks(store: Store, clock: ManualClock, count: int) -> None:
    """``count`` work tasks, each verified by three verifiers; every tenth fails one with a long message."""
    for number in range(count):
        task_id = f"task-{number:04}"
        tasks.add_task(store, task_id=task_id)
        failing = number % 10 == 0
        verify(store, clock, task_id, f"agent-{number % 5}", [
            ("unit", "PASS", {"duration_s": 1.5}),
            ("lint", "PASS", {}),
            ("integration", "FAIL" if failing else "PASS",
             {"message": "AssertionError: expected 200, got 500\n" + "  at handler line 42\n" * 10} if failing else {}),
        ])
        clock.advance(1_000)
