"""The plugin's cost: 2,000 trivial tests run plain, with --junitxml, and as verifiers.

Run:  python benchmarks/plugin.py [--tests 2000] [--runs 5]

Each configuration runs --runs times as a new pytest process; the medians are
reported in seconds and as ratios against the plain run of the same
benchmark (target: the --maf-task overhead no larger than --junitxml's). It
also times `pytest --maf-preflight` in a new git repository each run
(targets: under 1.5 s; the operations guide's KPI is under 2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_maf import tasks
from pytest_maf.store import open_store

AGENT = "bench-agent"


def wall_time(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stdout[-2000:]}{completed.stderr[-2000:]}")
    return elapsed


def leased_task(db: Path) -> str:
    with open_store(db, create=True) as store:
        task = tasks.add_task(store)
        claim = tasks.claim_task(store, task.id, AGENT, 600_000)
        tasks.start_task(store, task.id, AGENT, claim.attempt)
    return task.id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAF_")}
    pytest_command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]

    root = Path(tempfile.mkdtemp(prefix="maf-plugin-bench-"))
    try:
        suite = root / "suite"
        suite.mkdir()
        (suite / "pytest.ini").write_text("[pytest]\njunit_family = xunit1\n")
        (suite / "test_trivial.py").write_text(
            "import pytest\n\n"
            f"@pytest.mark.parametrize('n', range({args.tests}))\n"
            "def test_trivial(n):\n    assert n >= 0\n"
        )
        db = suite / ".maf" / "runtime.db"
        samples: dict[str, list[float]] = {"plain": [], "junitxml": [], "maf_task": []}
        for _ in range(args.runs):  # interleaved, so drift affects every configuration alike
            samples["plain"].append(wall_time([*pytest_command, "test_trivial.py"], suite, env))
            samples["junitxml"].append(
                wall_time([*pytest_command, "test_trivial.py", f"--junitxml={root / 'junit.xml'}"], suite, env)
            )
            task_id = leased_task(db)
            samples["maf_task"].append(
                wall_time([*pytest_command, "test_trivial.py", "--maf-task", task_id, "--maf-agent", AGENT], suite, env)
            )

        preflight = []
        for run in range(args.runs):
            repo = root / f"fresh-{run}"
            repo.mkdir()
            subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
            preflight.append(wall_time([sys.executable, "-m", "pytest", "--maf-preflight", "-q", "-p", "no:cacheprovider"], repo, env))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    medians = {name: statistics.median(values) for name, values in samples.items()}
    plain = medians["plain"]
    report = {
        "tests": args.tests,
        "runs": args.runs,
        "median_s": {name: round(value, 3) for name, value in medians.items()},
        "ratio_to_plain": {name: round(value / plain, 3) for name, value in medians.items()},
        "overhead_s": {
            "junitxml": round(medians["junitxml"] - plain, 3),
            "maf_task": round(medians["maf_task"] - plain, 3),
        },
        "preflight_fresh_repo_s": {
            "median": round(statistics.median(preflight), 3),
            "max": round(max(preflight), 3),
            "target": 1.5,
        },
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
