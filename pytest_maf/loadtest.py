"""`maf load-test`: several processes drive one database, then the history is audited.

Each process loops for the given time: add a task, claim it, renew, start,
verify, record evidence, finish, then reserve and release a file pattern
(some patterns shared between processes, so conflicts happen). Afterwards the
recorded events are replayed to check that no task was held by two agents at
once, no fenced operation was accepted from a stale holder, no two agents held
overlapping exclusive reservations, no task was lost, and the database passes
its integrity check.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pytest_maf import audit, reservations, tasks
from pytest_maf.errors import LeaseLostError, MafError, NothingToClaimError, StoreError, UsageError
from pytest_maf.evidence import record_evidence
from pytest_maf.store import open_store

OPERATIONS = ("add", "claim", "renew", "start", "verify", "evidence", "finish", "reserve", "release")
TASK_TTL_MS = 30_000
# Load-test tasks are never handed to an agent's `maf task claim`.
KIND = "load-test"
RESERVATION_TTL_MS = 60_000


def _worker(db: str, agent: str, seed: int, duration_s: float, start_at: float, results: Any) -> None:
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {name: [] for name in OPERATIONS}
    errors: Counter[str] = Counter()
    conflicts = 0

    def timed(name: str, operation: Any) -> Any:
        started = time.perf_counter()
        try:
            return operation()
        finally:
            samples[name].append((time.perf_counter() - started) * 1000)

    time.sleep(max(0.0, start_at - time.time()))
    with open_store(db) as store:
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            try:
                timed("add", lambda: tasks.add_task(store, kind=KIND))
                claim = timed("claim", lambda: tasks.claim_next_task(store, agent, TASK_TTL_MS, kind=KIND))
                task_id, attempt = claim.task_id, claim.attempt
                timed("renew", lambda: tasks.renew_lease(store, task_id, agent, attempt, TASK_TTL_MS))
                timed("start", lambda: tasks.start_task(store, task_id, agent, attempt))
                timed("verify", lambda: tasks.begin_verification(store, task_id, agent, attempt))
                result = "PASS" if rng.random() < 0.9 else "FAIL"
                timed("evidence", lambda: record_evidence(store, task_id, attempt, "load", result, agent_id=agent))
                timed("finish", lambda: tasks.finish_task(store, task_id, agent, attempt))
                pattern = f"shared/module{rng.randrange(8)}/**" if rng.random() < 0.5 else f"own/{agent}/**"
                try:
                    timed("reserve", lambda: reservations.acquire(store, [pattern], agent, RESERVATION_TTL_MS))
                except reservations.ReservationConflictError:
                    conflicts += 1
                    continue
                timed("release", lambda: reservations.release(store, [pattern], agent))
            except NothingToClaimError:
                continue  # another process took the task this one added
            except LeaseLostError:
                errors["lease lost"] += 1
            except StoreError as error:
                errors["store: " + str(error).split(":")[0]] += 1
            except MafError as error:
                errors[type(error).__name__] += 1
    results.put({"samples": samples, "errors": dict(errors), "conflicts": conflicts})


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 3)

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 3)}


def refuse_real_work(db_path: Path) -> None:
    """Refuse a database that holds agents' work: a load test's rows must not mix with it."""
    if not db_path.exists():
        return
    with open_store(db_path) as store:
        work = tasks.list_tasks(store)
        held = reservations.list_reservations(store)
    if work or held:
        raise UsageError(
            f"{db_path} holds {len(work)} task(s) and {len(held)} live reservation(s) of real work;"
            " a load test would leave its own rows beside them: give --database a new or scratch file"
        )


def run_load_test(db_path: Path, concurrent: int, duration_s: float) -> dict[str, Any]:
    refuse_real_work(db_path)
    open_store(db_path, create=True).close()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 1.0  # every process imported and connected before the clock starts
    processes = [
        context.Process(target=_worker, args=(str(db_path), f"load-{n}", n, duration_s, start_at, results))
        for n in range(concurrent)
    ]
    for process in processes:
        process.start()
    reports = [results.get(timeout=duration_s + 120) for _ in processes]
    for process in processes:
        process.join()

    operations: dict[str, Any] = {}
    for name in OPERATIONS:
        samples = [sample for report in reports for sample in report["samples"][name]]
        operations[name] = {"count": len(samples), "per_s": round(len(samples) / duration_s, 1), **percentiles(samples)}
    errors: Counter[str] = Counter()
    for report in reports:
        errors.update(report["errors"])
    return {
        "concurrent": concurrent,
        "duration_s": duration_s,
        "cycles_per_s": operations["finish"]["per_s"],
        "operations": operations,
        "reservation_conflicts": sum(report["conflicts"] for report in reports),
        "errors": dict(errors),
        "invariants": check_invariants(db_path),
    }


def check_invariants(db_path: Path) -> dict[str, Any]:
    with open_store(db_path) as store:
        events = store.read(lambda transaction: transaction.events())
        reservation_events = store.read(lambda transaction: transaction.reservation_events())
        task_ids = {task.id for task in tasks.list_tasks(store, include_internal=True)}
        integrity = [row[0] for row in store.pragma("integrity_check")]
    added = {event.task_id for event in events if event.kind == "add"}
    violations = audit.task_violations(events)
    clashes = audit.reservation_clashes(reservation_events)
    checks = {
        "no_double_grant_or_stale_operation": {"ok": not violations, "problems": violations[:10]},
        "no_overlapping_exclusive_reservations": {"ok": not clashes, "problems": [
            f"{a.agent}:{a.pattern} and {b.agent}:{b.pattern}" for a, b in clashes[:10]
        ]},
        "no_lost_task": {"ok": added == task_ids, "problems": sorted(added ^ task_ids)[:10]},
        "integrity": {"ok": integrity == ["ok"], "problems": integrity[:5] if integrity != ["ok"] else []},
    }
    return {"ok": all(check["ok"] for check in checks.values()), **checks}
