"""`maf bench`: the core operations timed in this process, and a comparison with a baseline.

Every figure is milliseconds per operation (lower is better), the median of
several rounds, so a baseline recorded on one machine is compared with a run
on the same machine.
"""

from __future__ import annotations

import platform
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from pytest_maf import escalation, reservations, tasks
from pytest_maf.config import load_settings
from pytest_maf.errors import UsageError
from pytest_maf.evidence import record_evidence
from pytest_maf.records import Reservation
from pytest_maf.store import open_store
from pytest_maf.timing import per_operation_ms
from pytest_maf.values import MAX_JSON_BYTES, parse_json



def run_benchmarks() -> dict[str, Any]:
    from pytest_maf.extras import import_extra

    exposition = import_extra("pytest_maf.metrics", "metrics", "maf bench").exposition

    with tempfile.TemporaryDirectory(prefix="maf-bench-") as directory:
        root = Path(directory)
        (root / ".git").mkdir()
        settings = load_settings(environ={}, cwd=root)
        with open_store(settings.db_path, create=True) as store:

            def cycle(n: int) -> None:
                task = tasks.add_task(store)
                claim = tasks.claim_task(store, task.id, "bench", 30_000)
                tasks.start_task(store, task.id, "bench", claim.attempt)
                tasks.begin_verification(store, task.id, "bench", claim.attempt)
                record_evidence(store, task.id, claim.attempt, "unit", "PASS", agent_id="bench")
                tasks.finish_task(store, task.id, "bench", claim.attempt)

            def reserve(n: int) -> None:
                reservations.acquire(store, [f"src/m{n % 50}/**"], "bench", 60_000)
                reservations.release(store, [f"src/m{n % 50}/**"], "bench")

            def escalate(n: int) -> None:
                escalation.escalate(store, settings, agent_id=f"a{n}", bead_id="bd", error_context="x",
                                    target=settings.escalation_targets[0])

            held = [
                Reservation(f"agent-{n}", pattern, True, "", 0, 2**62)
                for n, pattern in enumerate(
                    f"pkg{n % 50}/gen{n}/*.bin" if n % 3 else f"pkg{n % 50}/m{n % 7}/f{n}.py" for n in range(5000)
                )
            ]
            paths = [f"pkg{n % 50}/m{n % 7}/f{n}.py" for n in range(1000)]
            metrics = {
                "claim_to_finish_cycle": per_operation_ms(cycle, 100),
                "reservation_acquire_release": per_operation_ms(reserve, 100),
                "guard_1000_paths_5000_reservations": per_operation_ms(
                    lambda n: reservations.blocking_reservations(held, paths, "committer"), 1
                ),
                "escalation_open": per_operation_ms(escalate, 40),
                "metrics_scrape": per_operation_ms(lambda n: exposition(settings), 5),
            }
    return {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "metrics": metrics}


MIN_FIGURE_MS = 1e-6


def read_baseline(path: Path) -> dict[str, Any]:
    """A baseline written by ``maf bench --output``; anything else is a :class:`UsageError` naming the file."""
    if not path.exists():
        raise UsageError(f"no baseline {path}: record one with `maf bench --output {path}`")
    if not path.is_file():
        raise UsageError(f"{path} is not a file; give a baseline file written by `maf bench --output`")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise UsageError(f"{path} is larger than {MAX_JSON_BYTES} bytes: not a baseline written by `maf bench --output`")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read the baseline {path}: {error}") from None
    baseline = parse_json(f"the baseline {path}", text)
    figures = baseline.get("metrics") if isinstance(baseline, dict) else None
    if not isinstance(figures, dict) or not figures or not all(
        isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 for value in figures.values()
    ):
        raise UsageError(
            f"{path} is not a baseline: expected {{\"metrics\": {{NAME: MILLISECONDS, ...}}}} as written by"
            " `maf bench --output`"
        )
    tiny = sorted(name for name, value in figures.items() if value < MIN_FIGURE_MS)
    if tiny:  # no operation takes less than a nanosecond: a ratio to it would be past any float
        raise UsageError(f"{path} is not a baseline: {', '.join(tiny)} under a nanosecond is no time `maf bench` measured")
    return {"metrics": figures, **{key: value for key, value in baseline.items() if key != "metrics"}}


def compare(baseline: dict[str, Any], current: dict[str, Any], threshold: float) -> list[dict[str, Any]]:
    rows = []
    for name, now in current["metrics"].items():
        before = baseline.get("metrics", {}).get(name)
        if before is None:
            continue
        ratio = now / before if before else float("inf")
        rows.append({
            "metric": name, "baseline_ms": before, "current_ms": now,
            "ratio": round(ratio, 3), "regression": ratio > threshold,
        })
    return rows
