"""Time of the load test's audit: replaying a recorded history of many events.

Run:  python benchmarks/audit.py [--events 20000 200000 1000000] [--agents 10]

Builds a history shaped like `maf load-test`'s (agents cycling through add,
claim, renew, start, verify, evidence, commit, done, then a reservation
acquired and released, some patterns shared) and times
:func:`pytest_maf.audit.task_violations` and
:func:`pytest_maf.audit.reservation_clashes` on it. Prints, per size, the
seconds of each and the microseconds per event: a linear audit keeps the
microseconds per event flat as the history grows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pytest_maf.audit import reservation_clashes, task_violations
from pytest_maf.records import Event, ReservationEvent

TASK_KINDS = ("add", "claim", "renew", "start", "verify", "evidence", "commit", "done")


def load_test_history(events: int, agents: int) -> tuple[list[Event], list[ReservationEvent]]:
    """About ``events`` events, 80 % of them task events and 20 % reservation events.

    In each round every agent finishes a task, then all acquire a reservation
    (held at the same time, half of them in a shared folder) and release it.
    """
    task_events: list[Event] = []
    reservation_events: list[ReservationEvent] = []
    ts, cycle, round_number = 0, 0, 0

    def reserve(kind: str, agent: str, pattern: str) -> None:
        nonlocal ts
        ts += 1
        data = {"pattern": pattern, "exclusive": True, "expires_at": ts + 60_000} if kind == "acquire" else {"pattern": pattern}
        reservation_events.append(ReservationEvent(len(reservation_events) + 1, ts, kind, agent, data))

    while len(task_events) + len(reservation_events) < events:
        held = []
        for number in range(agents):
            agent = f"load-{number}"
            task_id = f"t{cycle}"
            cycle += 1
            for kind in TASK_KINDS:
                ts += 1
                data = {"agent": agent, "attempt": 1, "lease_expires_at": ts + 30_000}
                task_events.append(Event(len(task_events) + 1, task_id, ts, kind, data))
            slot = (round_number + number) % agents
            held.append((agent, f"shared/module{slot}/**" if slot % 2 else f"own/{agent}/**"))
        for agent, pattern in held:
            reserve("acquire", agent, pattern)
        for agent, pattern in held:
            reserve("release", agent, pattern)
        round_number += 1
    return task_events, reservation_events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[20_000, 200_000, 1_000_000])
    parser.add_argument("--agents", type=int, default=10)
    args = parser.parse_args(argv)
    rows = []
    for size in args.events:
        task_events, reservation_events = load_test_history(size, args.agents)
        started = time.perf_counter()
        violations = task_violations(task_events)
        tasks_s = time.perf_counter() - started
        started = time.perf_counter()
        clashes = reservation_clashes(reservation_events)
        reservations_s = time.perf_counter() - started
        total = len(task_events) + len(reservation_events)
        rows.append({
            "events": total,
            "task_violations_s": round(tasks_s, 3),
            "reservation_clashes_s": round(reservations_s, 3),
            "us_per_event": round((tasks_s + reservations_s) * 1e6 / total, 2),
            "problems_found": len(violations) + len(clashes),  # 0: the history is clean
        })
    json.dump(rows, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
