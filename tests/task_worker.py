"""A worker process for the multi-process tests: claims and drives tasks until none are left.

Usage: python task_worker.py DB AGENT SEED TTL_MS DEADLINE_EPOCH_S [--stale-first] [--steady]
       [--clock-offset-ms MS] [--client-clock]

DB is a SQLite file or a PostgreSQL URL (the schema in MAF_TEST_SCHEMA).
With --stale-first the worker claims one task, prints ``CLAIMED`` and waits,
so the test can pause it (SIGSTOP) past its TTL; then it tries every lease
operation on that stale lease and prints ``STALE`` with each outcome, before
working normally. --steady leaves out the stalls past the TTL. The store is
given a clock --clock-offset-ms off the machine's, as on a machine whose clock
is wrong; on PostgreSQL it is used only with --client-clock. Prints one JSON
report on stdout at the end.
"""

from __future__ import annotations

import json
import random
import sys
import time

from backends import open_shared_store
from pytest_maf import tasks
from pytest_maf.clock import system_clock
from pytest_maf.errors import LeaseLostError, MafError, NothingToClaimError
from pytest_maf.evidence import record_evidence


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def main() -> int:
    db, agent, seed, ttl_ms, deadline = sys.argv[1:6]
    stale_first = "--stale-first" in sys.argv
    steady = "--steady" in sys.argv
    offset_ms = int(sys.argv[sys.argv.index("--clock-offset-ms") + 1]) if "--clock-offset-ms" in sys.argv else 0
    rng = random.Random(int(seed))
    ttl = int(ttl_ms)
    store = open_shared_store(
        db, clock=lambda: system_clock() + offset_ms,
        **({"use_client_clock": True} if "--client-clock" in sys.argv else {}),
    )
    report: dict[str, object] = {"agent": agent, "finished": 0, "lost": 0, "errors": []}

    def lease_ops(claim: tasks.Claim):  # type: ignore[no-untyped-def]
        task_id, attempt = claim.task_id, claim.attempt
        yield "renew", lambda: tasks.renew_lease(store, task_id, agent, attempt, ttl)
        yield "start", lambda: tasks.start_task(store, task_id, agent, attempt)
        yield "renew", lambda: tasks.renew_lease(store, task_id, agent, attempt, ttl)
        yield "verify", lambda: tasks.begin_verification(store, task_id, agent, attempt)
        for verifier in ("lint", "unit"):
            result = "PASS" if rng.random() < 0.85 else "FAIL"
            yield "evidence", lambda v=verifier, r=result: record_evidence(
                store, task_id, attempt, v, r, agent_id=agent
            )
        yield "finish", lambda: tasks.finish_task(store, task_id, agent, attempt)
        yield "release", lambda: tasks.release_task(store, task_id, agent, attempt)

    if stale_first:
        stale_ops: list[dict[str, object]] = []
        claim = tasks.claim_next_task(store, agent, ttl)
        print(f"CLAIMED {claim.task_id} {claim.attempt}", flush=True)
        time.sleep(0.3)  # the test stops this process here, past the lease's TTL
        for name, operation in lease_ops(claim):
            started = now_ms()
            try:
                operation()
                outcome = "accepted"
            except MafError as error:
                outcome = type(error).__name__
            stale_ops.append({"op": name, "started_ms": started, "outcome": outcome})
        print("STALE " + json.dumps(stale_ops), flush=True)

    while time.time() < float(deadline):
        try:
            claim = tasks.claim_next_task(store, agent, ttl)
        except NothingToClaimError:
            if not tasks.list_tasks(store, "LEASED") + tasks.list_tasks(store, "RUNNING") + tasks.list_tasks(store, "VERIFYING"):
                break
            time.sleep(0.01)
            continue
        try:
            for name, operation in lease_ops(claim):
                if name == "release":
                    break
                # Mostly brisk work; now and then a stall past the TTL.
                time.sleep(ttl * 1.5 / 1000 if not steady and rng.random() < 0.03 else rng.uniform(0, 0.01))
                operation()
            report["finished"] += 1  # type: ignore[operator]
        except LeaseLostError:
            report["lost"] += 1  # type: ignore[operator]
        except MafError as error:
            report["errors"].append(f"{type(error).__name__}: {error}")  # type: ignore[union-attr]
    store.close()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
