"""A worker for the multi-process reservation test: reserve, hold briefly, release.

Usage: python reservation_worker.py DB AGENT SEED ROUNDS
(DB: a SQLite file, or a PostgreSQL URL with the schema in MAF_TEST_SCHEMA)
Prints a JSON report (grants, conflicts, errors) on stdout.
"""

from __future__ import annotations

import json
import random
import sys
import time

from backends import open_shared_store
from pytest_maf import reservations
from pytest_maf.errors import MafError

PATTERNS = ["src/**", "src/*.py", "src/a*", "src/app.py", "src/b/**", "docs/**", "*.md", "docs/x.md", "tests/**"]


def main() -> int:
    db, agent, seed, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    report = {"agent": agent, "grants": 0, "conflicts": 0, "errors": []}
    with open_shared_store(db) as store:
        for _ in range(rounds):
            wanted = rng.sample(PATTERNS, rng.choice([1, 1, 2]))
            let_expire = rng.random() < 0.2
            ttl_ms = 20 if let_expire else 60_000
            try:
                reservations.acquire(store, wanted, agent, ttl_ms, exclusive=rng.random() < 0.8)
            except reservations.ReservationConflictError:
                report["conflicts"] += 1  # type: ignore[operator]
                continue
            except MafError as error:
                report["errors"].append(str(error))  # type: ignore[union-attr]
                continue
            report["grants"] += 1  # type: ignore[operator]
            time.sleep(rng.uniform(0, 0.003))
            if not let_expire:
                reservations.release(store, wanted, agent)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
