"""`maf load-test`: several processes drive one database, then the history is audited.

Each process loops until a deadline shared by all: add a task, claim it,
renew, start, verify, record evidence, finish, then reserve and release a file
pattern (some patterns shared between processes, so conflicts happen). No
operation starts after the deadline, and every wait for the database is
bounded, so the processes stop on time; the parent waits for their figures a
bounded grace period and then stops any that are left. Each reports the
processor time it spent from the shared start (its waits for the writers'
turn included), so the run says what a cycle costs the machine as well as
how many it made. Afterwards the recorded
events are replayed, one task at a time, to check that no task was held by two
agents at once, no fenced operation was accepted from a stale holder, no two
agents held overlapping exclusive reservations, no task was lost, and the
database passes its integrity check.

Ctrl-C stops the run: the processes ignore SIGINT (so none prints a
traceback) and the parent terminates them.
"""

from __future__ import annotations

import math
import multiprocessing
import queue
import random
import signal
import threading
import time
from array import array
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from pytest_maf import audit, reservations, tasks
from pytest_maf.errors import LeaseLostError, MafError, NothingToClaimError, StoreError, UsageError
from pytest_maf.evidence import record_evidence
from pytest_maf.store import open_store
from pytest_maf.store.maintenance import read_history
from pytest_maf.store.sqlite import SQLiteStore
from pytest_maf.timing import percentiles

T = TypeVar("T")

OPERATIONS = ("add", "claim", "renew", "start", "verify", "evidence", "finish", "reserve", "release")
TASK_TTL_MS = 30_000
# Load-test tasks are never handed to an agent's `maf task claim`.
KIND = "load-test"
RESERVATION_TTL_MS = 60_000
MAX_CONCURRENT = 64
MIN_DURATION_S, MAX_DURATION_S = 0.1, 24 * 60 * 60.0
# Before the shared clock starts, every process is imported and connected.
STARTUP_S = 1.0
STARTUP_PER_PROCESS_S = 0.02
# How long after the deadline the parent waits for the processes' figures:
# 5 % of the run, at least 2 s.
GRACE_SHARE, MIN_GRACE_S = 0.05, 2.0
STOP_TIMEOUT_S = 5.0


def check_run(concurrent: int, duration_s: float) -> None:
    """Refuse a process count or a duration the run could not honour (:class:`UsageError`)."""
    if isinstance(concurrent, bool) or not isinstance(concurrent, int) or not 1 <= concurrent <= MAX_CONCURRENT:
        raise UsageError(f"--concurrent must be a whole number from 1 to {MAX_CONCURRENT}, got {concurrent!r}")
    if not math.isfinite(duration_s) or not MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
        raise UsageError(
            f"--duration must be a number of seconds from {MIN_DURATION_S:g} (a shorter run measures nothing) to"
            f" {MAX_DURATION_S:g}, got {duration_s!r}"
        )


def grace_s(duration_s: float) -> float:
    return max(MIN_GRACE_S, GRACE_SHARE * duration_s)


class _DeadlinePassed(Exception):
    """The shared deadline came: no further operation starts."""


def _worker(db: str, agent: str, seed: int, start_at: float, stop_at: float, busy_timeout_s: float, results: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers
    if hasattr(signal, "pthread_sigmask"):  # started with SIGINT blocked (see _sigint_held); a pending one is dropped
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    rng = random.Random(seed)
    samples = {name: array("d") for name in OPERATIONS}
    errors: Counter[str] = Counter()
    conflicts = 0

    def timed(name: str, operation: Callable[[], T], *, cleanup: bool = False) -> T:
        if time.time() >= stop_at and not cleanup:  # what was acquired is still given back
            raise _DeadlinePassed
        started = time.perf_counter()
        try:
            return operation()
        finally:
            samples[name].append((time.perf_counter() - started) * 1000)

    time.sleep(max(0.0, start_at - time.time()))
    started_at, processor_started = time.time(), time.process_time()
    store = None
    try:
        with open_store(db, busy_timeout_s=busy_timeout_s) as store:
            while True:
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
                    timed("release", lambda: reservations.release(store, [pattern], agent), cleanup=True)
                except NothingToClaimError:
                    continue  # another process took the task this one added
                except LeaseLostError:
                    errors["lease lost"] += 1
                except StoreError as error:
                    errors["store: " + str(error).split(":")[0]] += 1
                except MafError as error:
                    errors[type(error).__name__] += 1
    except _DeadlinePassed:
        pass
    except Exception as error:  # reported to the parent as one line, never as a traceback here
        errors[f"stopped by {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"] += 1
    results.put({
        "samples": samples, "errors": dict(errors), "conflicts": conflicts,
        "started": started_at, "stopped": time.time(), "cpu_s": time.process_time() - processor_started,
        "writer_turns": store.writer_turns() if isinstance(store, SQLiteStore) else None,
    })


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


@contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold back Ctrl-C while processes start: they start with SIGINT blocked (inherited through exec),
    so none is interrupted before it ignores it, and the parent receives a held Ctrl-C right after."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI job's time limit, say) stops the run as Ctrl-C does, with its processes and scratch files."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore Ctrl-C for a moment (in the main thread): while the processes are being stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _collect(results: Any, processes: list[Any], deadline: float) -> list[dict[str, Any]]:
    """The processes' reports, until each has reported, all have ended, or ``deadline`` (time.time()) passes."""
    reports: list[dict[str, Any]] = []
    while len(reports) < len(processes):
        remaining = deadline - time.time()
        if remaining <= 0:
            break
        try:
            reports.append(results.get(timeout=min(remaining, 0.5)))
        except queue.Empty:
            if not any(process.is_alive() for process in processes):
                break  # the rest died without reporting
    return reports


def _stop(processes: list[Any], deadline: float) -> int:
    """Let the processes end until ``deadline`` (time.time()), then terminate those still running and
    reap every one, each wait bounded; how many had to be stopped."""
    stopped = 0
    processes = [process for process in processes if process.pid is not None]  # those started
    with _sigint_ignored():  # a second Ctrl-C must not leave processes behind
        for process in processes:
            process.join(max(0.0, deadline - time.time()))
        for process in processes:
            if process.is_alive():
                process.terminate()
                stopped += 1
        for process in processes:
            process.join(STOP_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join(STOP_TIMEOUT_S)
    return stopped


def run_load_test(db_path: Path, concurrent: int, duration_s: float) -> dict[str, Any]:
    check_run(concurrent, duration_s)
    refuse_real_work(db_path)
    open_store(db_path, create=True).close()
    began = time.monotonic()
    grace = grace_s(duration_s)
    start_at = time.time() + STARTUP_S + STARTUP_PER_PROCESS_S * concurrent
    stop_at = start_at + duration_s
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(
            target=_worker, args=(str(db_path), f"load-{n}", n, start_at, stop_at, min(30.0, grace / 2), results),
            daemon=True,
        )
        for n in range(concurrent)
    ]
    ended = 0.0  # without the reports (Ctrl-C), stop the processes at once
    try:
        with _sigint_held():
            for process in processes:
                process.start()
        reports = _collect(results, processes, stop_at + grace)
        ended = stop_at + grace
    finally:
        stopped = _stop(processes, ended)
        results.close()
    run_s = time.monotonic() - began

    measured_s = (
        max(report["stopped"] for report in reports) - min(report["started"] for report in reports)
        if reports else 0.0
    )
    per_second = measured_s if measured_s > 0 else duration_s
    operations: dict[str, Any] = {}
    for name in OPERATIONS:
        samples = array("d")
        for report in reports:
            samples.extend(report["samples"][name])
        operations[name] = {"count": len(samples), "per_s": round(len(samples) / per_second, 1), **percentiles(samples)}
    errors: Counter[str] = Counter()
    for report in reports:
        errors.update(report["errors"])
    if len(reports) < concurrent:
        errors[f"no figures: stopped by the parent {grace:g} s after the deadline, or died"] += concurrent - len(reports)
    cpu_s = sum(report["cpu_s"] for report in reports)
    turns = [report["writer_turns"] for report in reports if report["writer_turns"] is not None]
    finished = operations["finish"]["count"]
    audit_began = time.monotonic()
    invariants = check_invariants(db_path)
    audit_s = time.monotonic() - audit_began
    return {
        "concurrent": concurrent,
        "duration_s": duration_s,
        "timing": {
            "measured_s": round(measured_s, 3),
            "last_stop_after_deadline_s": round(max((r["stopped"] for r in reports), default=stop_at) - stop_at, 3),
            "processes_stopped_by_parent": stopped,
            "run_s": round(run_s, 3),
            "audit_s": round(audit_s, 3),
            "cpu_s": round(cpu_s, 3),
        },
        "cycles_per_s": operations["finish"]["per_s"],
        "cpu_ms_per_cycle": round(cpu_s * 1000 / finished, 3) if finished else None,
        "operations": operations,
        "reservation_conflicts": sum(report["conflicts"] for report in reports),
        "writers_turn": writers_turn(turns, measured_s),
        "errors": dict(errors),
        "invariants": invariants,
    }


def writers_turn(turns: list[dict[str, float]], measured_s: float) -> dict[str, Any]:
    """The processes' use of the writers' turn, added up: the turns their writes took, the mean time
    each waited for and held, and the share of the measured time some process held it (near 1, the
    writes are bound by the turn: more processes add waiting, not throughput)."""
    taken = sum(int(each["turns"]) for each in turns)
    held_s = sum(each["held_s"] for each in turns)
    waited_s = sum(each["waited_s"] for each in turns)
    return {
        "turns": taken,
        "held_ms_each": round(held_s * 1000 / taken, 3) if taken else None,
        "waited_ms_each": round(waited_s * 1000 / taken, 3) if taken else None,
        "held_share": round(held_s / measured_s, 3) if taken and measured_s > 0 else None,
    }


def check_invariants(db_path: Path) -> dict[str, Any]:
    """Replay the history at ``db_path`` (one task at a time) and check every invariant."""
    with read_history(db_path) as history:
        violations = audit.task_violations_by_task(history.task_histories())
        clashes = audit.reservation_clashes(history.reservation_events())
        lost = history.tasks_without_their_add()
        integrity = history.integrity()
    checks = {
        "no_double_grant_or_stale_operation": {"ok": not violations, "problems": violations[:10]},
        "no_overlapping_exclusive_reservations": {"ok": not clashes, "problems": [
            f"{a.agent}:{a.pattern} and {b.agent}:{b.pattern}" for a, b in clashes[:10]
        ]},
        "no_lost_task": {"ok": not lost, "problems": lost[:10]},
        "integrity": {"ok": integrity == ["ok"], "problems": integrity[:5] if integrity != ["ok"] else []},
    }
    return {"ok": all(check["ok"] for check in checks.values()), **checks}
