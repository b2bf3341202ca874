"""Claim throughput and latency of the runtime store (SQLite, or PostgreSQL with --db).

Run:  python benchmarks/claims.py [--duration 5] [--processes 8] [--done-rows 1000000]
      python benchmarks/claims.py --db postgresql://postgres@127.0.0.1:5432/test [--duration 5]

With --db (PostgreSQL; every run in a scratch schema, dropped afterwards) it
prints JSON with, for 1 and 8 processes: claims per second (claim only),
claim-to-finish cycles per second, claim latency percentiles, and the same
for a floor measured in the same run (a bare UPDATE ... WHERE id = (SELECT
... FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING loop on a scratch table of the
same server), with each figure's ratio to the floor.

Without --db:

Prints JSON with:
  single_process   claim -> start -> verify -> evidence -> finish cycles per second,
                   and claim latency percentiles (ms), one process
  multi_process    the same cycles from N processes on one database file, claim
                   latency percentiles over all of them, and lock errors that
                   reached a caller
  large_table      claim p95 with --done-rows DONE tasks in the table, against the
                   same run on an empty table, as a ratio
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from pytest_maf import tasks
from pytest_maf.errors import MafError
from pytest_maf.evidence import record_evidence
from pytest_maf.timing import percentiles
from pytest_maf.store import open_store

TTL_MS = 30_000


def seed_ready(db: Path, count: int) -> None:
    with open_store(db, create=True) as store:
        for index in range(count):
            tasks.add_task(store, task_id=f"ready-{index:08}")


def run_cycles(db: str, agent: str, duration_s: float, schema: str | None = None) -> dict[str, object]:
    """Claim and carry tasks to DONE for ``duration_s``; return latencies and counts."""
    claim_ms: list[float] = []
    cycles = errors = 0
    with open_store(db, **({"schema": schema} if schema else {})) as store:
        end = time.perf_counter() + duration_s
        while time.perf_counter() < end:
            try:
                started = time.perf_counter()
                claim = tasks.claim_next_task(store, agent, TTL_MS)
                claim_ms.append((time.perf_counter() - started) * 1000)
                tasks.start_task(store, claim.task_id, agent, claim.attempt)
                tasks.begin_verification(store, claim.task_id, agent, claim.attempt)
                record_evidence(store, claim.task_id, claim.attempt, "bench", "PASS", agent_id=agent)
                tasks.finish_task(store, claim.task_id, agent, claim.attempt)
                cycles += 1
            except MafError as error:
                errors += 1
                if errors > 100:
                    raise SystemExit(f"{agent}: too many errors, last: {error}")
    return {"claim_ms": claim_ms, "cycles": cycles, "errors": errors}


def _worker(db: str, agent: str, duration_s: float, start_at: float, out: multiprocessing.Queue) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    out.put(run_cycles(db, agent, duration_s))


def multi_process(db: Path, processes: int, duration_s: float) -> dict[str, object]:
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()
    start_at = time.time() + 1.0  # let every process import and connect first
    workers = [
        context.Process(target=_worker, args=(str(db), f"agent-{n}", duration_s, start_at, results))
        for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    reports = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    claims = [sample for report in reports for sample in report["claim_ms"]]  # type: ignore[attr-defined]
    cycles = sum(report["cycles"] for report in reports)  # type: ignore[misc]
    return {
        "processes": processes,
        "cycles_per_s": round(cycles / duration_s, 1),
        "claim_ms": percentiles(claims),
        "lock_errors_reaching_callers": sum(report["errors"] for report in reports),  # type: ignore[misc]
    }


def fill_done(db: Path, rows: int) -> None:
    """Bulk-insert DONE tasks directly, as a long-lived store would have accumulated."""
    connection = sqlite3.connect(db)
    now = time.time_ns() // 1_000_000
    batch = 50_000
    with connection:
        for first in range(0, rows, batch):
            connection.executemany(
                "INSERT INTO tasks (id, state, priority, payload_json, created_at, updated_at, attempts)"
                " VALUES (?, 'DONE', 100, '{}', ?, ?, 1)",
                ((f"done-{n:08}", now - rows + n, now) for n in range(first, min(rows, first + batch))),
            )
    connection.close()


def claim_p95(db: Path, claims: int) -> float:
    seed_ready(db, claims)
    samples = []
    with open_store(db) as store:
        for _ in range(claims):
            started = time.perf_counter()
            tasks.claim_next_task(store, "bench", TTL_MS)
            samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)["p95"]


# PostgreSQL (--db): pytest-maf's claims next to the bare one-statement claim on the same server.


def run_claims(url: str, schema: str, agent: str, duration_s: float) -> dict[str, object]:
    """Claim (only) for ``duration_s``; return latencies and counts."""
    claim_ms: list[float] = []
    with open_store(url, schema=schema) as store:
        end = time.perf_counter() + duration_s
        while time.perf_counter() < end:
            started = time.perf_counter()
            tasks.claim_next_task(store, agent, TTL_MS)
            claim_ms.append((time.perf_counter() - started) * 1000)
    return {"claim_ms": claim_ms, "cycles": len(claim_ms), "errors": 0}


def _postgres_worker(
    mode: str, url: str, schema: str, agent: str, duration_s: float, start_at: float, out: multiprocessing.Queue
) -> None:
    from pytest_maf.store import postgres_bench

    time.sleep(max(0.0, start_at - time.time()))
    if mode == "floor":
        samples = postgres_bench.bare_claims(url, schema, agent, duration_s)
        out.put({"claim_ms": samples, "cycles": len(samples), "errors": 0})
    elif mode == "claim":
        out.put(run_claims(url, schema, agent, duration_s))
    else:
        out.put(run_cycles(url, agent, duration_s, schema=schema))


def postgres_run(mode: str, url: str, processes: int, duration_s: float, pool: int) -> dict[str, object]:
    """One run of ``mode`` (floor, claim or cycle) by ``processes`` processes in a scratch schema."""
    import uuid

    from pytest_maf.store import postgres_bench

    schema = f"maf_bench_{uuid.uuid4().hex[:10]}"
    try:
        if mode == "floor":
            postgres_bench.create_floor_table(url, schema, pool)
        else:
            open_store(url, create=True, schema=schema).close()
            postgres_bench.seed_ready_tasks(url, schema, pool)
        context = multiprocessing.get_context("spawn")
        results: multiprocessing.Queue = context.Queue()
        start_at = time.time() + 1.5  # let every process import and connect first
        workers = [
            context.Process(target=_postgres_worker, args=(mode, url, schema, f"agent-{n}", duration_s, start_at, results))
            for n in range(processes)
        ]
        for worker in workers:
            worker.start()
        reports = [results.get() for _ in workers]
        for worker in workers:
            worker.join()
    finally:
        postgres_bench.drop_schema(url, schema)
    samples = [sample for report in reports for sample in report["claim_ms"]]  # type: ignore[attr-defined]
    done = sum(report["cycles"] for report in reports)  # type: ignore[misc]
    return {
        "per_s": round(done / duration_s, 1),
        "claim_ms": percentiles(samples),
        "errors": sum(report["errors"] for report in reports),  # type: ignore[misc]
    }


def _ratios(figure: dict[str, object], floor: dict[str, object]) -> dict[str, object]:
    floor_ms: dict[str, float] = floor["claim_ms"]  # type: ignore[assignment]
    figure_ms: dict[str, float] = figure["claim_ms"]  # type: ignore[assignment]
    return {
        **figure,
        "rate_ratio_to_floor": round(figure["per_s"] / floor["per_s"], 3) if floor["per_s"] else None,  # type: ignore[operator]
        "latency_ratio_to_floor": {
            key: round(figure_ms[key] / floor_ms[key], 2) if floor_ms.get(key) else None
            for key in figure_ms if key in ("p50", "p95", "p99")
        },
    }


def postgres_report(url: str, duration_s: float, process_counts: list[int], pool: int) -> dict[str, object]:
    import psycopg

    from pytest_maf.database_url import redact_url

    with psycopg.connect(url) as connection:
        server = connection.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    report: dict[str, object] = {"server": redact_url(url), "server_version": server, "duration_s": duration_s}
    for processes in process_counts:
        floor = postgres_run("floor", url, processes, duration_s, pool)
        claims = postgres_run("claim", url, processes, duration_s, pool)
        cycles = postgres_run("cycle", url, processes, duration_s, pool)
        report[f"processes_{processes}"] = {
            "floor_bare_update_skip_locked": floor,
            "claim": _ratios(claims, floor),
            "claim_to_finish": _ratios(cycles, floor),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput run")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--done-rows", type=int, default=1_000_000)
    parser.add_argument("--pool", type=int, default=60_000, help="READY tasks seeded for the runs")
    parser.add_argument("--db", metavar="URL", help="a postgresql:// server: measure there, against the bare-claim floor")
    args = parser.parse_args(argv)
    if args.db:
        pool = max(args.pool, 200_000)
        report = postgres_report(args.db, args.duration, sorted({1, args.processes}), pool)
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0

    with tempfile.TemporaryDirectory(prefix="maf-bench-") as tmp:
        single_db = Path(tmp) / "single.db"
        seed_ready(single_db, args.pool)
        single = run_cycles(str(single_db), "solo", args.duration)

        multi_db = Path(tmp) / "multi.db"
        seed_ready(multi_db, args.pool)
        multi = multi_process(multi_db, args.processes, args.duration)

        empty_db, large_db = Path(tmp) / "empty.db", Path(tmp) / "large.db"
        open_store(large_db, create=True).close()
        fill_done(large_db, args.done_rows)
        empty_p95 = claim_p95(empty_db, 2_000)
        large_p95 = claim_p95(large_db, 2_000)

    report = {
        "sqlite_version": sqlite3.sqlite_version,
        "single_process": {
            "cycles_per_s": round(single["cycles"] / args.duration, 1),  # type: ignore[operator]
            "claim_ms": percentiles(single["claim_ms"]),  # type: ignore[arg-type]
        },
        "multi_process": multi,
        "large_table": {
            "done_rows": args.done_rows,
            "claim_p95_ms_empty": empty_p95,
            "claim_p95_ms_with_done_rows": large_p95,
            "ratio": round(large_p95 / empty_p95, 2) if empty_p95 else None,
        },
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
