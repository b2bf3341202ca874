"""On PostgreSQL every lease is timed by the database server, so agents on machines whose clocks
disagree by minutes still share tasks: no double grant, and no lease taken before it expired."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from backends import open_shared_store, scratch_schema, shared_store, server_url
from pytest_maf import tasks
from pytest_maf.audit import task_violations
from pytest_maf.clock import system_clock
from pytest_maf.errors import LeaseLostError, NothingToClaimError
from pytest_maf.store import open_store
from test_concurrency import spawn

pytestmark = pytest.mark.postgres

SKEW_MS = 5 * 60_000  # each machine's clock is five minutes off the next one's
TTL_MS = 10_000  # far above one step of a steady worker: only a wrong clock can expire a lease
TASKS = 240  # enough work that a worker starting late still finds some


@pytest.mark.slow
def test_processes_with_clocks_minutes_apart_share_leases(tmp_path: Path) -> None:
    with shared_store("postgres", tmp_path) as (url, environment):
        with open_shared_store(url, environment) as store:
            task_ids = [tasks.add_task(store, task_id=f"t{i:03}", max_attempts=4).id for i in range(TASKS)]
        deadline = time.time() + 60
        workers = [
            spawn(url, environment, f"agent-{n}", n, deadline, "--steady", "--clock-offset-ms", str(offset),
                  ttl_ms=TTL_MS)
            for n, offset in enumerate((-SKEW_MS, 0, SKEW_MS))
        ]
        reports = []
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))

        assert [report["errors"] for report in reports] == [[], [], []]
        assert [report["lost"] for report in reports] == [0, 0, 0]  # no lease expired early
        assert all(report["finished"] > 0 for report in reports)  # all three really shared the work
        with open_shared_store(url, environment) as store:
            assert task_violations(store.read(lambda transaction: transaction.events())) == []
            final = tasks.list_tasks(store)
    assert sorted(task.id for task in final) == task_ids
    assert {task.state for task in final} <= {"DONE", "DEAD"}


def test_a_clock_minutes_ahead_cannot_take_a_live_lease() -> None:
    url = server_url()
    with scratch_schema(url) as schema:
        with open_store(url, create=True, schema=schema, clock=system_clock) as behind, open_store(
            url, schema=schema, clock=lambda: system_clock() + SKEW_MS
        ) as ahead:
            tasks.add_task(behind, task_id="t1")
            claim = tasks.claim_next_task(behind, "agent-behind", TTL_MS)

            with pytest.raises(NothingToClaimError):
                tasks.claim_next_task(ahead, "agent-ahead", TTL_MS)
            tasks.renew_lease(behind, "t1", "agent-behind", claim.attempt, TTL_MS)

            # The same skew with the client's clock (what the server's time prevents) takes the lease early.
            with open_store(
                url, schema=schema, clock=lambda: system_clock() + SKEW_MS, use_client_clock=True
            ) as ahead_by_its_own_clock:
                assert tasks.claim_next_task(ahead_by_its_own_clock, "agent-ahead", TTL_MS).task_id == "t1"
            with pytest.raises(LeaseLostError):
                tasks.renew_lease(behind, "t1", "agent-behind", claim.attempt, TTL_MS)
