"""The plugin's cost: 2,000 trivial tests run plain, with the plugin idle, with --junitxml, and as verifiers.

Run:  python benchmarks/plugin.py [--tests 2000] [--runs 7] [--base REV]

Every pytest runs as a new process with PYTEST_DISABLE_PLUGIN_AUTOLOAD=1, so
no other installed plugin (xdist, hypothesis, timeout, ...) runs and hides the
difference: the plugin is loaded with ``-p pytest_maf.plugin`` where it is
wanted, exactly as in a virtualenv with only pytest and pytest-maf. Python's
bytecode cache is on (in a temporary PYTHONPYCACHEPREFIX, warmed by a first
round), as for an installed package. The configurations, each --runs times,
interleaved round by round (the order rotating), so that the machine's other
load falls on all alike:

  plain        pytest alone
  plugin_idle  pytest with the plugin and no --maf-* option (target: under 3 % over plain)
  junitxml     pytest --junitxml (the peer: a report written per test)
  maf_task     pytest with the plugin, --maf-task T --maf-agent A: every test a
               verifier of a task leased before each run, its evidence stored
               and the task finished (target: no more over plain than junitxml)

With --base REV (a commit, e.g. the one before a change), the plugin of that
commit's source (`git archive`) is timed too, idle and with --maf-task (a task
its own code leased, in a store of its own), in the same rounds: base_idle and
base_maf_task. Every configuration imports pytest-maf from a source tree
(PYTHONPATH): this checkout's, or the base's.

Prints JSON: median wall and CPU (user + system) seconds of each, their ratios
to plain, and maf_task's overhead over plain as a ratio to junitxml's. It also
times `pytest --maf-preflight` in a new git repository each run (target: under
1.5 s; the operations guide's KPI is under 2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from revisions import source_of  # benchmarks/revisions.py: this script's folder is first on sys.path
from pytest_maf import tasks
from pytest_maf.store import open_store

AGENT = "bench-agent"
HERE = Path(__file__).resolve().parents[1]
PLUGIN = ["-p", "pytest_maf.plugin"]


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``command``; a failed run stops the benchmark."""
    cpu_before, started = children_cpu_s(), time.perf_counter()
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - started, children_cpu_s() - cpu_before
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stdout[-2000:]}{completed.stderr[-2000:]}")
    return elapsed, cpu


def leased_task(db: Path) -> str:
    with open_store(db, create=True) as store:
        task = tasks.add_task(store)
        claim = tasks.claim_task(store, task.id, AGENT, 600_000)
        tasks.start_task(store, task.id, AGENT, claim.attempt)
    return task.id


def write_suite(suite: Path, tests: int) -> None:
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\njunit_family = xunit1\n")
    (suite / "test_trivial.py").write_text(
        "import pytest\n\n"
        f"@pytest.mark.parametrize('n', range({tests}))\n"
        "def test_trivial(n):\n    assert n >= 0\n"
    )


def active_plugins(suite: Path, env: dict[str, str], pytest_command: list[str]) -> list[str]:
    """The plugins pytest reports loading in the maf_task configuration (its header's plugins: line)."""
    output = subprocess.run(
        [*pytest_command, *PLUGIN, "--collect-only", "-v"], cwd=suite, env=env,
        capture_output=True, text=True,
    ).stdout
    line = next((line for line in output.splitlines() if line.startswith("plugins:")), "plugins:")
    return [name.strip() for name in line.removeprefix("plugins:").split(",") if name.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=2000, help="trivial tests in the suite (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each configuration (default: %(default)s)")
    parser.add_argument("--base", metavar="REV", help="also time the plugin of this commit's source")
    parser.add_argument("--lease", metavar="DB", help=argparse.SUPPRESS)  # a leased task for --base's runs
    args = parser.parse_args(argv)
    if args.lease:
        print(leased_task(Path(args.lease)))
        return 0

    root = Path(tempfile.mkdtemp(prefix="maf-plugin-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAF_", "PYTHON", "PYTEST_"))}
    env.update(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONPYCACHEPREFIX=str(root / "pycache"), PYTHONPATH=str(HERE))
    pytest_command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_trivial.py"]
    try:
        suite = root / "suite"
        write_suite(suite, args.tests)
        db = suite / ".maf" / "runtime.db"
        configurations: dict[str, tuple[Callable[[], list[str]], Path, dict[str, str]]] = {
            "plain": (lambda: [], suite, env),
            "plugin_idle": (lambda: PLUGIN, suite, env),
            "junitxml": (lambda: [f"--junitxml={root / 'junit.xml'}"], suite, env),
            "maf_task": (lambda: [*PLUGIN, "--maf-task", leased_task(db), "--maf-agent", AGENT], suite, env),
        }
        if args.base:
            base_env = {**env, "PYTHONPATH": str(source_of(args.base, root / "base"))}
            base_suite = root / "base-suite"
            write_suite(base_suite, args.tests)
            base_db = base_suite / ".maf" / "runtime.db"

            def base_lease() -> list[str]:
                leased = subprocess.run(
                    [sys.executable, __file__, "--lease", str(base_db)], env=base_env, capture_output=True, text=True,
                    check=True,
                )
                return [*PLUGIN, "--maf-task", leased.stdout.strip(), "--maf-agent", AGENT]

            configurations["base_idle"] = (lambda: PLUGIN, base_suite, base_env)
            configurations["base_maf_task"] = (base_lease, base_suite, base_env)
        names = list(configurations)
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for round_number in range(args.runs + 1):  # round 0 warms the bytecode cache and is not counted
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                options, cwd, run_env = configurations[name]
                elapsed, used = timed_run([*pytest_command, *options()], cwd, run_env)
                if round_number:
                    wall[name].append(elapsed)
                    cpu[name].append(used)
        plugins = active_plugins(suite, env, pytest_command)

        preflight = []
        for run in range(args.runs):
            repo = root / f"fresh-{run}"
            repo.mkdir()
            subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
            preflight.append(timed_run([*pytest_command[:-1], *PLUGIN, "--maf-preflight"], repo, env)[0])
    finally:
        shutil.rmtree(root, ignore_errors=True)

    median_wall = {name: statistics.median(values) for name, values in wall.items()}
    median_cpu = {name: statistics.median(values) for name, values in cpu.items()}

    def over_junitxml(medians: dict[str, float], name: str = "maf_task") -> float | None:
        """``name``'s cost over plain as a ratio to junitxml's (None when junitxml measured no cost)."""
        junitxml = medians["junitxml"] - medians["plain"]
        return round((medians[name] - medians["plain"]) / junitxml, 2) if junitxml > 0 else None

    report = {
        "tests": args.tests,
        "runs": args.runs,
        "plugins_loaded": plugins,
        "median_wall_s": {name: round(value, 3) for name, value in median_wall.items()},
        "median_cpu_s": {name: round(value, 3) for name, value in median_cpu.items()},
        "wall_ratio_to_plain": {name: round(value / median_wall["plain"], 3) for name, value in median_wall.items()},
        "cpu_ratio_to_plain": {name: round(value / median_cpu["plain"], 3) for name, value in median_cpu.items()},
        "maf_task_overhead_over_junitxml_overhead": {"wall": over_junitxml(median_wall), "cpu": over_junitxml(median_cpu)},
        **({"base": args.base, "base_maf_task_overhead_over_junitxml_overhead": {
            "wall": over_junitxml(median_wall, "base_maf_task"), "cpu": over_junitxml(median_cpu, "base_maf_task"),
        }} if args.base else {}),
        "targets": {"maf_task_over_junitxml_overhead": 1.0, "plugin_idle_over_plain": 1.03},
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
