"""Whole-process time of `maf guard` for many staged files against many reservations.

Run:  python benchmarks/guard.py [--files 1000] [--reservations 5000] [--runs 15]

Builds a temporary git repository with --files staged files and a runtime store
with --reservations live exclusive reservations of another agent (plain paths,
globs under the same directories as the staged files, unanchored globs; a few
cover staged files), then times the guard as a new
process, the way a git hook runs it. Baselines from the same run: the Python
interpreter starting (`python -c pass`) and `git diff --cached` alone.
Prints JSON: milliseconds (median, p95) and ratios to the baselines.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from pytest_maf import reservations
from pytest_maf.store import open_store, setup_store
from pytest_maf.timing import percentiles, stopwatch


def timed(command: list[str], cwd: Path, env: dict[str, str], runs: int) -> tuple[dict[str, float], int]:
    samples = []
    code = 0
    for _ in range(runs):
        with stopwatch() as elapsed:
            completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True)
        samples.append(elapsed.ms)
        code = completed.returncode
    figures = percentiles(samples)
    return {"median_ms": round(statistics.median(samples), 1), "p95_ms": round(figures["p95"], 1)}, code


def build_repository(root: Path, files: int) -> list[str]:
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    names = [f"pkg{n % 50:02}/module{n % 7}/file_{n:05}.py" for n in range(files)]
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    return names


def reserve(db: Path, count: int, staged: list[str]) -> int:
    rng = random.Random(7)
    with open_store(db) as store:
        batch = []
        for n in range(count):
            # Under the same top-level directories as the staged files, so the
            # index cannot skip them by their first segment.
            top = f"pkg{n % 50:02}"
            kind = n % 5
            if kind == 0:
                pattern = f"{top}/module{n % 7}/other_{n}.py"  # plain paths beside staged files
            elif kind == 1:
                pattern = f"{top}/generated{n}/*.bin"
            elif kind == 2:
                pattern = f"{top}/module{n % 7}/*_{n}.js"
            elif kind == 3:
                pattern = rng.choice(staged) if n % 40 == 3 else f"{top}/docs{n}/*.md"
            else:
                pattern = f"*.lock{n}"  # unanchored: matches at any depth
            batch.append(pattern)
        # One holder: by gitignore's directory rule an unanchored glob (*.lock1)
        # overlaps every other pattern (a/b.py/x.lock1), so the reservations of
        # different agents could not all be granted.
        for pattern in batch:
            reservations.acquire(store, [pattern], "bench-holder", 60 * 60_000)
        return len(reservations.list_reservations(store))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--reservations", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="maf-guard-bench-"))
    try:
        staged = build_repository(root, args.files)
        db = root / ".maf" / "runtime.db"
        setup_store(db)
        held = reserve(db, args.reservations, staged)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAF_")}
        env["MAF_AGENT_ID"] = "bench-committer"
        console_script = Path(sys.executable).with_name("maf")
        maf = [str(console_script)] if console_script.exists() else [sys.executable, "-m", "pytest_maf"]
        guard, code = timed([*maf, "guard"], root, env, args.runs)
        python, _ = timed([sys.executable, "-c", "pass"], root, env, args.runs)
        git, _ = timed(["git", "diff", "--cached", "--name-only", "-z", "--no-renames"], root, env, args.runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    report = {
        "staged_files": args.files,
        "reservations": args.reservations,
        "live_reservations": held,
        "guard_exit_code": code,
        "guard": guard,
        "baseline_python_start": python,
        "baseline_git_diff": git,
        "guard_over_python_start": round(guard["median_ms"] / python["median_ms"], 2),
        "target_ms": 300,
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
