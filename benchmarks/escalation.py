"""Escalation latency: open and raise escalations through agent-mail.

Run:  python benchmarks/escalation.py [--count 500]

Each escalation writes two message files atomically (fsync, rename, fsync of
the directory) and a row and an event in the store. Prints JSON with p50,
p95, p99 and max in milliseconds for new escalations and for raises of
active ones (target: p95 under 100 ms, the operations guide's KPI), beside the
cost of the store transaction alone as a baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from pytest_maf import escalation, tasks
from pytest_maf.config import load_settings
from pytest_maf.timing import percentiles
from pytest_maf.store import open_store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="maf-escalation-bench-") as tmp:
        root = Path(tmp)
        (root / ".git").mkdir()
        settings = load_settings(environ={}, cwd=root)
        opened, raised, baseline = [], [], []
        with open_store(settings.db_path, create=True) as store:
            for n in range(args.count):
                started = time.perf_counter()
                escalation.escalate(store, settings, agent_id=f"agent-{n}", bead_id="bd-1",
                                    error_context="tests hang", target="minimax-debug-1")
                opened.append((time.perf_counter() - started) * 1000)
            for n in range(args.count):
                started = time.perf_counter()
                escalation.escalate(store, settings, agent_id=f"agent-{n}", bead_id="bd-1",
                                    error_context="still hanging", target="minimax-debug-1")
                raised.append((time.perf_counter() - started) * 1000)
            for n in range(args.count):
                started = time.perf_counter()
                tasks.add_task(store)
                baseline.append((time.perf_counter() - started) * 1000)
    json.dump({
        "count": args.count,
        "open_ms": percentiles(opened),
        "raise_ms": percentiles(raised),
        "baseline_store_write_ms": percentiles(baseline),
        "target_p95_ms": 100,
    }, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
