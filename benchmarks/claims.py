"""Claims on SQLite side by side with litequeue; on PostgreSQL beside a bare claim (--db).

Run:  python benchmarks/claims.py [--duration 5] [--processes 8] [--rounds 3] [--baseline TREE] [--done-rows 1000000]
      python benchmarks/claims.py --db postgresql://postgres@127.0.0.1:5432/test [--duration 5]

Without --db it prints JSON, every figure measured in the same run on one file
system, each engine with the same durability (WAL, synchronous=NORMAL), each
run in a fresh interpreter so every engine starts alike:

  claim_only_N  claims per second by N processes draining a queue filled to
                --pool READY tasks, again and again for --duration seconds of
                draining; the claim latency percentiles (max included) and the
                lock errors that reached a caller: pytest-maf's
                claim_next_task (a lease, an event, the attempt counted)
                beside litequeue's pop()
  cycle_1       enqueue + claim + complete per second by one process:
                pytest-maf add_task, claim_next_task(start=True) and
                complete_task (verify, an evidence row, finish), each a
                fenced transaction writing an event per transition, beside
                litequeue put, pop, done, and beside sql_floor: the same
                statements through bare sqlite3, none of pytest-maf's Python
                around them (what its code could at best come down to
                without writing less)
  cycle_N       the same by N processes (no floor: bare sqlite3 would wait
                on SQLite's busy handler, not on a floor of the same kind)
  load_test     `maf load-test` cycles per second at 1 and at N processes,
                their ratio, the claim p95 at N, and the processor time
                a cycle took at 1 and at N (every process's, waiting
                included), and the writers' turn at 1 and at N: the
                mean time a write held it and the share of the run
                some process held it
  large_table   claim p95 with --done-rows DONE tasks, as a ratio to an empty table

With --baseline TREE (a checkout of another pytest-maf, such as `git worktree
add --detach /tmp/maf-base main`) every pytest-maf figure is measured again
with that tree's code, interleaved with the others, as "baseline". Each
figure is the median of --rounds runs (the max latency: the worst of them),
the engines taking turns in each round, so drift in the machine's load
touches all of them alike. litequeue
comes from `pip install -e '.[bench]'`.

With --db (PostgreSQL; every run in a scratch schema, dropped afterwards) it
prints JSON with, for 1 and 8 processes: claims per second (claim only),
claim-to-finish cycles per second, claim latency percentiles, and the same
for a floor measured in the same run (a bare UPDATE ... WHERE id = (SELECT
... FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING loop on a scratch table of the
same server), with each figure's ratio to the floor.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from pytest_maf import tasks
from pytest_maf.errors import MafError, NothingToClaimError
from pytest_maf.evidence import record_evidence
from pytest_maf.store import open_store
from pytest_maf.timing import percentiles

TTL_MS = 30_000
COMPLETE_TASK = getattr(tasks, "complete_task", None)  # absent from an older --baseline tree
ENGINES = ("litequeue", "baseline", "pytest_maf")


# pytest-maf


def seed_ready(db: Path, count: int, first: int = 0) -> None:
    """``count`` READY work tasks, each with its options and its 'add' event, inserted in bulk."""
    if not db.exists():
        open_store(db, create=True).close()
    connection = sqlite3.connect(db)
    now = time.time_ns() // 1_000_000
    ids = [f"ready-{n:08}" for n in range(first, first + count)]
    with connection:
        connection.executemany(
            "INSERT INTO tasks (id, state, priority, payload_json, created_at, updated_at, attempts)"
            " VALUES (?, 'READY', 100, '{}', ?, ?, 0)", ((task_id, now, now) for task_id in ids),
        )
        connection.executemany(
            "INSERT INTO task_options (task_id, max_attempts, kind) VALUES (?, 3, 'work')", ((t,) for t in ids)
        )
        connection.executemany(
            "INSERT INTO events (task_id, ts, kind, data_json) VALUES (?, ?, 'add', ?)",
            ((task_id, now, '{"max_attempts":3,"priority":100,"to":"READY"}') for task_id in ids),
        )
    connection.close()


def maf_complete(store: Any, agent: str, task_id: str, attempt: int) -> None:
    """Carry a claimed task to DONE: start, verify, one PASS evidence row, finish."""
    tasks.start_task(store, task_id, agent, attempt)
    tasks.begin_verification(store, task_id, agent, attempt)
    record_evidence(store, task_id, attempt, "bench", "PASS", agent_id=agent)
    tasks.finish_task(store, task_id, agent, attempt)


class MafQueue:
    """pytest-maf through its library API, as an agent uses it."""

    def __init__(self, db: str, agent: str) -> None:
        self.store, self.agent = open_store(db), agent

    def claim(self) -> Any:
        try:
            return tasks.claim_next_task(self.store, self.agent, TTL_MS)
        except NothingToClaimError:
            return None

    def cycle(self) -> float:
        """Enqueue, claim, complete: the seconds the claim took.

        With a pytest-maf that has them, the claim also starts the task and
        ``complete_task`` verifies, records the evidence and finishes in one
        transaction (three transactions a cycle); an older one takes six
        (add, claim, start, verify, evidence, finish). The events and rows
        written are the same.
        """
        tasks.add_task(self.store)
        started = time.perf_counter()
        if COMPLETE_TASK is None:
            claim = tasks.claim_next_task(self.store, self.agent, TTL_MS)
            claimed = time.perf_counter() - started
            maf_complete(self.store, self.agent, claim.task_id, claim.attempt)
        else:
            claim = tasks.claim_next_task(self.store, self.agent, TTL_MS, start=True)
            claimed = time.perf_counter() - started
            COMPLETE_TASK(self.store, claim.task_id, self.agent, claim.attempt, [("bench", "PASS", None)])
        return claimed

    def close(self) -> None:
        self.store.close()


class LiteQueueQueue:
    """litequeue: put, pop, done, with its own settings (WAL, synchronous=NORMAL, as pytest-maf's store)."""

    def __init__(self, db: str, agent: str) -> None:
        from litequeue import LiteQueue

        self.queue, self.agent = LiteQueue(db), agent

    def claim(self) -> Any:
        return self.queue.pop()

    def cycle(self) -> Any:
        self.queue.put(self.agent)
        started = time.perf_counter()
        message = self.queue.pop()
        claimed = time.perf_counter() - started
        self.queue.done(message.message_id)
        return claimed

    def close(self) -> None:
        self.queue.close()


class SqlFloorQueue:
    """The statements a pytest-maf cycle runs, as its store runs them (BEGIN IMMEDIATE, WAL,
    synchronous=NORMAL, foreign keys on, the same SQL with its values bound), through bare sqlite3
    with none of pytest-maf's Python around them: the floor its own code sits on. Checkpoints are
    SQLite's own, in the COMMIT that crosses 1,000 frames. tests/test_benchmark_floor.py keeps the
    statements those of pytest-maf's cycle."""

    def __init__(self, db: str, agent: str) -> None:
        from pytest_maf.store.sqlite import connect

        self.connection, self.agent = connect(Path(db)), agent
        self.made = 0

    def _transaction(self, steps: Callable[[sqlite3.Connection], Any]) -> Any:
        connection = self.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = steps(connection)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return result

    def add(self) -> None:
        self.made += 1
        task_id, now = f"task-{os.getpid():x}-{self.made:x}", time.time_ns() // 1_000_000

        def steps(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO tasks (id, state, priority, payload_json, created_at, updated_at, attempts)"
                " VALUES (?, 'READY', ?, ?, ?, ?, 0)", (task_id, 100, "{}", now, now),
            )
            connection.execute("INSERT INTO task_options (task_id, max_attempts, kind) VALUES (?, ?, ?)", (task_id, 3, "work"))
            connection.execute(
                "INSERT INTO events (task_id, ts, kind, data_json) VALUES (?, ?, ?, ?)",
                (task_id, now, "add", json.dumps({"max_attempts": 3, "priority": 100, "to": "READY"}, separators=(",", ":"))),
            )

        self._transaction(steps)

    def claim(self) -> Any:
        """Claim and start the oldest READY work task: its two events, its lease, the agent's sighting, the duration."""
        agent = self.agent

        def steps(connection: sqlite3.Connection) -> Any:
            started, now = time.perf_counter(), time.time_ns() // 1_000_000
            connection.execute(
                "SELECT task_id, agent_id, lease_expires_at, attempt FROM leases WHERE lease_expires_at <= ?"
                " ORDER BY lease_expires_at, task_id", (now,),
            ).fetchall()
            row = connection.execute(
                "SELECT t.id, t.state, t.priority, t.payload_json, t.created_at, t.updated_at, t.attempts,"
                " COALESCE(o.max_attempts, 3), COALESCE(o.kind, 'work') FROM tasks AS t"
                " LEFT JOIN task_options AS o ON o.task_id = t.id"
                " WHERE t.state = 'READY' AND COALESCE(o.kind, 'work') = 'work'"
                " ORDER BY t.priority, t.created_at, t.rowid LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            task_id, attempt, expires = row[0], row[6] + 1, now + TTL_MS
            connection.execute(
                "UPDATE tasks SET state = ?, attempts = ?, updated_at = ? WHERE id = ?", ("RUNNING", attempt, now, task_id)
            )
            moves = (("claim", "READY", "LEASED"), ("start", "LEASED", "RUNNING"))
            connection.executemany(
                "INSERT INTO events (task_id, ts, kind, data_json) VALUES (?, ?, ?, ?)",
                [(task_id, now, kind, json.dumps(
                    {"agent": agent, "attempt": attempt, "from": before, "lease_expires_at": expires, "to": after},
                    separators=(",", ":"),
                )) for kind, before, after in moves],
            )
            connection.execute(
                "INSERT INTO leases (task_id, agent_id, lease_expires_at, attempt) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (task_id) DO UPDATE SET agent_id = excluded.agent_id,"
                " lease_expires_at = excluded.lease_expires_at, attempt = excluded.attempt",
                (task_id, agent, expires, attempt),
            )
            self._sighted(connection, now)
            took_us = int((time.perf_counter() - started) * 1_000_000)
            connection.execute(
                "INSERT INTO operation_durations (operation, outcome, le_us, shard, count, sum_us, max_us)"
                " VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT (operation, outcome, le_us, shard) DO UPDATE SET"
                " count = count + 1, sum_us = sum_us + excluded.sum_us, max_us = MAX(max_us, excluded.max_us)",
                ("claim", "", 500, 0, took_us, took_us),
            )
            return task_id, attempt, expires

        return self._transaction(steps)

    def _sighted(self, connection: sqlite3.Connection, now: int) -> None:
        connection.execute(
            "INSERT INTO agents (agent_id, client, first_seen, last_seen) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (agent_id) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen),"
            " client = CASE WHEN excluded.client = '' THEN client ELSE excluded.client END"
            " WHERE excluded.last_seen >= last_seen + 100 OR excluded.client NOT IN ('', client)",
            (self.agent, "", now, now),
        )

    def complete(self, task_id: str, attempt: int, expires: int) -> None:
        """Verify, one PASS evidence row, commit and done: four events, the lease deleted, the agent sighted."""
        agent = self.agent

        def steps(connection: sqlite3.Connection) -> None:
            now = time.time_ns() // 1_000_000
            connection.execute(
                "SELECT t.id, t.state, t.priority, t.payload_json, t.created_at, t.updated_at, t.attempts,"
                " COALESCE(o.max_attempts, 3), COALESCE(o.kind, 'work'), l.agent_id, l.lease_expires_at, l.attempt"
                " FROM tasks AS t LEFT JOIN task_options AS o ON o.task_id = t.id"
                " LEFT JOIN leases AS l ON l.task_id = t.id WHERE t.id = ?", (task_id,),
            ).fetchone()
            connection.execute(
                "SELECT task_id, attempt, verifier, result, details_json FROM evidence WHERE task_id = ? AND attempt = ?"
                " ORDER BY task_id, attempt, verifier", (task_id, attempt),
            ).fetchall()
            connection.executemany(
                "INSERT INTO evidence (task_id, attempt, verifier, result, details_json) VALUES (?, ?, ?, ?, ?)",
                [(task_id, attempt, "bench", "PASS", "{}")],
            )
            connection.execute(
                "UPDATE tasks SET state = ?, attempts = ?, updated_at = ? WHERE id = ?", ("DONE", attempt, now, task_id)
            )
            held = {"agent": agent, "attempt": attempt}
            data = (
                ("verify", {**held, "from": "RUNNING", "lease_expires_at": expires, "to": "VERIFYING"}),
                ("evidence", {**held, "lease_expires_at": expires, "result": "PASS", "verifier": "bench"}),
                ("commit", {**held, "from": "VERIFYING", "reason": "all 1 verifiers passed", "to": "COMMITTED"}),
                ("done", {**held, "from": "COMMITTED", "to": "DONE"}),
            )
            connection.executemany(
                "INSERT INTO events (task_id, ts, kind, data_json) VALUES (?, ?, ?, ?)",
                [(task_id, now, kind, json.dumps(fields, separators=(",", ":"))) for kind, fields in data],
            )
            connection.execute("DELETE FROM leases WHERE task_id = ?", (task_id,))
            connection.execute(
                "SELECT agent_id, pattern, exclusive, reason, created_at, expires_at, task_id FROM reservations"
                " WHERE task_id = ? ORDER BY pattern, agent_id", (task_id,),
            ).fetchall()
            self._sighted(connection, now)

        self._transaction(steps)

    def cycle(self) -> float:
        self.add()
        started = time.perf_counter()
        claimed = self.claim()
        took = time.perf_counter() - started
        self.complete(*claimed)
        return took

    def close(self) -> None:
        self.connection.close()


def litequeue_seed(db: Path, count: int, first: int = 0) -> None:
    from litequeue import LiteQueue

    queue = LiteQueue(str(db))
    with queue.transaction():
        for n in range(first, first + count):
            queue.put(f"{n}")
    queue.close()


QUEUES: dict[str, Callable[[str, str], Any]] = {"maf": MafQueue, "litequeue": LiteQueueQueue, "sql_floor": SqlFloorQueue}
SEEDS: dict[str, Callable[..., None]] = {"maf": seed_ready, "litequeue": litequeue_seed}
LOCK_ERRORS = (MafError, sqlite3.OperationalError)  # what a busy database raises to the caller of each


def _drain_worker(engine: str, db: str, agent: str, barrier: Any, stop: Any, out: Any) -> None:
    """Round after round: wait for the queue to be filled, claim until it is empty."""
    queue = QUEUES[engine](db, agent)
    claim_ms: list[float] = []
    errors = 0
    while True:
        barrier.wait()
        if stop.is_set():
            break
        while True:
            started = time.perf_counter()
            try:
                claimed = queue.claim()
            except LOCK_ERRORS:
                errors += 1
                continue
            if claimed is None:
                break
            claim_ms.append((time.perf_counter() - started) * 1000)
        barrier.wait()
    queue.close()
    out.put({"claim_ms": claim_ms, "done": len(claim_ms), "errors": errors})


def _cycle_worker(engine: str, db: str, agent: str, duration_s: float, start_at: float, out: Any) -> None:
    queue = QUEUES[engine](db, agent)
    claim_ms: list[float] = []
    errors = 0
    time.sleep(max(0.0, start_at - time.time()))
    end = time.perf_counter() + duration_s
    while time.perf_counter() < end:
        try:
            claim_ms.append(queue.cycle() * 1000)
        except LOCK_ERRORS:
            errors += 1
    queue.close()
    out.put({"claim_ms": claim_ms, "done": len(claim_ms), "errors": errors})


def _summary(reports: list[dict[str, Any]], processes: int, seconds: float) -> dict[str, Any]:
    samples = [sample for report in reports for sample in report["claim_ms"]]
    return {
        "processes": processes,
        "per_s": round(sum(report["done"] for report in reports) / seconds, 1),
        "claim_ms": percentiles(samples),
        "lock_errors_reaching_callers": sum(report["errors"] for report in reports),
    }


def drain_rounds(engine: str, db: Path, processes: int, duration_s: float, depth: int) -> dict[str, Any]:
    """Claims only: fill the queue to ``depth``, let ``processes`` drain it; again until ``duration_s`` of draining."""
    context = multiprocessing.get_context("spawn")
    results: Any = context.Queue()
    barrier, stop = context.Barrier(processes + 1), context.Event()
    workers = [
        context.Process(target=_drain_worker, args=(engine, str(db), f"agent-{n}", barrier, stop, results))
        for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    draining = 0.0
    rounds = 0
    while draining < duration_s:
        SEEDS[engine](db, depth, rounds * depth)
        barrier.wait()  # the round starts
        started = time.perf_counter()
        barrier.wait()  # every process found the queue empty
        draining += time.perf_counter() - started
        rounds += 1
    stop.set()
    barrier.wait()
    reports = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    return {**_summary(reports, processes, draining), "queue_depth": depth, "refills": rounds}


def cycles(engine: str, db: Path, processes: int, duration_s: float) -> dict[str, Any]:
    """Enqueue + claim + complete by ``processes`` processes from one start, for ``duration_s``."""
    start_at = time.time() + 1.0 + 0.1 * processes  # let every process import and connect first
    reports = run_processes(
        _cycle_worker, processes, lambda n: (engine, str(db), f"agent-{n}", duration_s, start_at)
    )
    return _summary(reports, processes, duration_s)


def run_processes(target: Callable[..., None], processes: int, args_of: Callable[[int], tuple[Any, ...]]) -> list[Any]:
    """Start ``processes`` fresh interpreters running ``target(*args_of(n), results)``; each puts one report."""
    context = multiprocessing.get_context("spawn")
    results: Any = context.Queue()
    workers = [context.Process(target=target, args=(*args_of(n), results)) for n in range(processes)]
    for worker in workers:
        worker.start()
    reports = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    return reports


def workload(name: str, engine: str, args: argparse.Namespace) -> dict[str, Any]:
    """One workload by one engine, in this interpreter (the parent runs each in a fresh one)."""
    with tempfile.TemporaryDirectory(prefix="maf-claims-") as tmp:
        db = Path(tmp) / "queue.db"
        if engine != "litequeue":  # the floor runs on pytest-maf's schema
            open_store(db, create=True).close()
        if name == "claim_only":
            return drain_rounds(engine, db, args.processes, args.duration, args.pool)
        if name == "cycle":
            return cycles(engine, db, args.processes, args.duration)
        if name == "load_test":
            from pytest_maf.loadtest import run_load_test

            report = run_load_test(db, args.processes, args.duration)
            claim = report["operations"]["claim"]
            return {
                "processes": args.processes, "per_s": report["cycles_per_s"],
                "claim_ms": {key: claim[key] for key in ("p50", "p95", "p99", "max") if key in claim},
                "errors": report["errors"], "invariants_ok": report["invariants"]["ok"],
                "cpu_ms_per_cycle": report.get("cpu_ms_per_cycle"),  # absent from an older --baseline tree
                "turn_held_ms_each": report.get("writers_turn", {}).get("held_ms_each"),  # likewise
                "turn_held_share": report.get("writers_turn", {}).get("held_share"),
            }
        if name == "large_table":
            empty_db, large_db = Path(tmp) / "empty.db", Path(tmp) / "large.db"
            open_store(large_db, create=True).close()
            fill_done(large_db, args.done_rows)
            empty_p95, large_p95 = claim_p95(empty_db, 2_000), claim_p95(large_db, 2_000)
            return {
                "done_rows": args.done_rows, "claim_p95_ms_empty": empty_p95, "claim_p95_ms_with_done_rows": large_p95,
                "ratio": round(large_p95 / empty_p95, 2) if empty_p95 else None,
            }
    raise SystemExit(f"unknown workload {name!r}")


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


def measure(name: str, engine: str, args: argparse.Namespace, processes: int) -> dict[str, Any]:
    """Run one workload in a fresh interpreter: the baseline with ``--baseline``'s tree first on the path."""
    env = dict(os.environ)
    if engine == "baseline":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(args.baseline).resolve()), env.get("PYTHONPATH")]))
    command = [
        sys.executable, __file__, "--workload", name, "--engine", engine if engine in QUEUES else "maf",
        "--processes", str(processes), "--duration", str(args.duration), "--pool", str(args.pool),
        "--done-rows", str(args.done_rows),
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if completed.returncode != 0:
        raise SystemExit(f"{name} by {engine} failed:\n{completed.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(completed.stdout)
    return figures


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one workload by one engine: the median rate and percentiles, the worst max, the errors summed."""
    first = runs[0]
    latencies = [run["claim_ms"] for run in runs if run["claim_ms"]]
    return {
        **first,
        "per_s": statistics.median(run["per_s"] for run in runs),
        "per_s_each_round": [run["per_s"] for run in runs],
        "claim_ms": {
            **{key: statistics.median(ms[key] for ms in latencies) for key in ("p50", "p95", "p99") if latencies},
            "max": max((ms["max"] for ms in latencies), default=None),
        },
        **({"errors": {k: v for run in runs for k, v in run["errors"].items()}} if "errors" in first else {}),
        **({"invariants_ok": all(run["invariants_ok"] for run in runs)} if "invariants_ok" in first else {}),
        **{key: statistics.median(run[key] for run in runs)
           for key in ("cpu_ms_per_cycle", "turn_held_ms_each", "turn_held_share") if first.get(key) is not None},
        **({"lock_errors_reaching_callers": sum(run["lock_errors_reaching_callers"] for run in runs)}
           if "lock_errors_reaching_callers" in first else {}),
    }


def rounds(name: str, engines: list[str], args: argparse.Namespace, processes: int) -> dict[str, Any]:
    """``args.rounds`` rounds of ``name``, the engines taking turns in each, so drift in the machine's load hits all."""
    runs: dict[str, list[dict[str, Any]]] = {engine: [] for engine in engines}
    for turn in range(args.rounds):
        for engine in engines[turn % len(engines):] + engines[: turn % len(engines)]:
            runs[engine].append(measure(name, engine, args, processes))
    return {engine: combined(runs[engine]) for engine in engines}


def side_by_side(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    engines = [engine for engine in ENGINES if engine != "baseline" or args.baseline]
    n = args.processes
    report: dict[str, Any] = {
        "sqlite_version": sqlite3.sqlite_version, "litequeue_version": version("litequeue"),
        "durability": "journal_mode=WAL, synchronous=NORMAL for each", "duration_s": args.duration,
        "rounds": args.rounds, "baseline": str(args.baseline) if args.baseline else None,
    }
    for name, processes in (("claim_only", n), ("cycle", 1), ("cycle", n)):
        row = rounds(name, engines + ["sql_floor"] * (name == "cycle" and processes == 1), args, processes)
        for engine in engines:
            if engine != "litequeue":
                row[f"{engine}_ratio_to_litequeue"] = ratio(row[engine]["per_s"], row["litequeue"]["per_s"])
        if args.baseline:
            row["ratio_to_baseline"] = ratio(row["pytest_maf"]["per_s"], row["baseline"]["per_s"])
        if "sql_floor" in row:
            row["ratio_to_sql_floor"] = ratio(row["pytest_maf"]["per_s"], row["sql_floor"]["per_s"])
        report[f"{name}_{processes}"] = row
    mafs = [engine for engine in engines if engine != "litequeue"]
    one, many = rounds("load_test", mafs, args, 1), rounds("load_test", mafs, args, n)
    report["load_test"] = {
        engine: {
            "cycles_per_s_1": one[engine]["per_s"], f"cycles_per_s_{n}": many[engine]["per_s"],
            f"ratio_{n}_to_1": ratio(many[engine]["per_s"], one[engine]["per_s"]),
            f"claim_p95_ms_{n}": many[engine]["claim_ms"].get("p95"),
            "cpu_ms_per_cycle_1": one[engine].get("cpu_ms_per_cycle"),
            f"cpu_ms_per_cycle_{n}": many[engine].get("cpu_ms_per_cycle"),
            # the writers' turn: the mean time a write held it, and the share of the run it was held
            "turn_held_ms_each_1": one[engine].get("turn_held_ms_each"),
            f"turn_held_ms_each_{n}": many[engine].get("turn_held_ms_each"),
            "turn_held_share_1": one[engine].get("turn_held_share"),
            f"turn_held_share_{n}": many[engine].get("turn_held_share"),
            "errors": {**one[engine]["errors"], **many[engine]["errors"]},
            "invariants_ok": one[engine]["invariants_ok"] and many[engine]["invariants_ok"],
        }
        for engine in mafs
    }
    if args.done_rows:
        report["large_table"] = measure("large_table", "pytest_maf", args, 1)
    return report


# PostgreSQL (--db): pytest-maf's claims next to the bare one-statement claim on the same server.


def run_cycles(url: str, agent: str, duration_s: float, schema: str) -> dict[str, object]:
    """Claim seeded tasks and carry them to DONE for ``duration_s``; return latencies and counts."""
    claim_ms: list[float] = []
    cycles = errors = 0
    with open_store(url, schema=schema) as store:
        end = time.perf_counter() + duration_s
        while time.perf_counter() < end:
            try:
                started = time.perf_counter()
                claim = tasks.claim_next_task(store, agent, TTL_MS)
                claim_ms.append((time.perf_counter() - started) * 1000)
                maf_complete(store, agent, claim.task_id, claim.attempt)
                cycles += 1
            except MafError as error:
                errors += 1
                if errors > 100:
                    raise SystemExit(f"{agent}: too many errors, last: {error}")
    return {"claim_ms": claim_ms, "cycles": cycles, "errors": errors}


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
        start_at = time.time() + 1.5  # let every process import and connect first
        reports = run_processes(
            _postgres_worker, processes, lambda n: (mode, url, schema, f"agent-{n}", duration_s, start_at)
        )
    finally:
        postgres_bench.drop_schema(url, schema)
    samples = [sample for report in reports for sample in report["claim_ms"]]
    done = sum(report["cycles"] for report in reports)
    return {
        "per_s": round(done / duration_s, 1),
        "claim_ms": percentiles(samples),
        "errors": sum(report["errors"] for report in reports),
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
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput run (default 5)")
    parser.add_argument("--processes", type=int, default=8, help="processes of the multi-process runs (default 8)")
    parser.add_argument("--done-rows", type=int, default=1_000_000, help="DONE tasks of the large-table run; 0 skips it")
    parser.add_argument(
        "--pool", type=int, default=2_000,
        help="queue depth of the claim-only runs: filled to this many READY tasks, drained, again (default 2000)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each run, engines taking turns; medians (default 3)")
    parser.add_argument("--baseline", metavar="TREE", help="also measure pytest-maf from this checkout, as 'baseline'")
    parser.add_argument("--db", metavar="URL", help="a postgresql:// server: measure there, against the bare-claim floor")
    parser.add_argument("--workload", choices=("claim_only", "cycle", "load_test", "large_table"), help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=tuple(QUEUES), default="maf", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.db:
        pool = 200_000
        report = postgres_report(args.db, args.duration, sorted({1, args.processes}), pool)
    elif args.workload:
        report = workload(args.workload, args.engine, args)
    else:
        report = side_by_side(args)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
