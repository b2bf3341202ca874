"""Whole-process time of `maf guard` for staged files against live reservations.

Run:  python benchmarks/guard.py [--files 10] [--reservations 50] [--runs 15] [--base REV]
      python benchmarks/guard.py --files 1000 --reservations 5000 --base REV

Builds a temporary git repository with --files staged files and a runtime store
with --reservations live exclusive reservations of another agent (plain paths,
globs under the same directories as the staged files, unanchored globs; a few
cover staged files, so the guard blocks), then times the guard as a new
process, the way a git hook runs it: the installed `maf` script.

Measured in the same run, interleaved round by round so that the machine's
other load falls on every figure alike:

- floors: the Python interpreter starting (`python -c pass`, which includes
  the site-packages start-up every `maf` pays) and `git diff --cached
  --name-only` alone;
- with --base REV (a commit, e.g. `main` or the one before a change): the
  guard of that commit's source (`git archive`), against this checkout's source
  started the same way, each with a store its own code made; and the top
  importers of each (`python -X importtime`, the least of --runs runs).

Every figure is taken twice: with Python's bytecode cache (how an installed
package runs: the cache lives in a temporary PYTHONPYCACHEPREFIX, warmed by a
first run) and without it (PYTHONDONTWRITEBYTECODE=1 and no cache: every
module compiled from source in every process, as with an editable install on
a machine that sets that variable). Prints JSON: median and p95 wall-clock
milliseconds, median CPU milliseconds (user + system: less sensitive to the
machine's other load), ratios to the floors and to the base, and the exit
codes (1: blocked).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from revisions import source_of  # benchmarks/revisions.py: this script's folder is first on sys.path
from pytest_maf.timing import percentiles, stopwatch

TARGET_MS = 100  # 10 staged files against 50 reservations, whole process, bytecode cached
# Runs `maf ARGS` from the source tree given first: `python -c SOURCE_MAF TREE guard`.
SOURCE_MAF = "import sys; sys.path.insert(0, sys.argv.pop(1)); from pytest_maf.cli import main; sys.exit(main())"


def staged_names(files: int) -> list[str]:
    return [f"pkg{n % 50:02}/module{n % 7}/file_{n:05}.py" for n in range(files)]


def build_repository(root: Path, files: int) -> list[str]:
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    names = staged_names(files)
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    return names


def patterns(count: int, staged: list[str]) -> list[str]:
    rng = random.Random(7)
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
    return batch


def populate(db: Path, files: int, count: int) -> int:
    """Create the store at ``db`` with ``count`` reservations, by the pytest-maf found first on sys.path."""
    from pytest_maf import reservations
    from pytest_maf.store import open_store, setup_store

    setup_store(db)
    with open_store(db) as store:
        # One holder: by gitignore's directory rule an unanchored glob (*.lock1)
        # overlaps every other pattern (a/b.py/x.lock1), so the reservations of
        # different agents could not all be granted.
        for pattern in patterns(count, staged_names(files)):
            reservations.acquire(store, [pattern], "bench-holder", 60 * 60_000)
        return len(reservations.list_reservations(store))


def figures(samples: list[float], cpu: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples), 1),
        "p95_ms": round(percentiles(samples)["p95"], 1),
        "cpu_median_ms": round(statistics.median(cpu), 1),
    }


def children_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def measure(
    commands: dict[str, tuple[list[str], dict[str, str]]], cwd: Path, runs: int
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Each command once to warm up, then ``runs`` rounds, one run of every command per round."""
    samples: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    codes: dict[str, int] = {}
    for round_number in range(runs + 1):
        for name, (command, env) in commands.items():
            cpu_before = children_cpu_ms()
            with stopwatch() as elapsed:
                completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True)
            codes[name] = completed.returncode
            if round_number:
                samples[name].append(elapsed.ms)
                cpu[name].append(children_cpu_ms() - cpu_before)
    return {name: figures(samples[name], cpu[name]) for name in commands}, codes


def top_importers(command: list[str], cwd: Path, env: dict[str, str], runs: int, count: int = 10) -> list[list[object]]:
    """``python -X importtime``'s modules with the largest cumulative import time, as
    [module, milliseconds]: each module's least time over ``runs`` runs (the least disturbed)."""
    least: dict[str, int] = {}
    for _ in range(runs):
        completed = subprocess.run(
            [command[0], "-X", "importtime", *command[1:]], cwd=cwd, env=env, capture_output=True, text=True
        )
        for line in completed.stderr.splitlines():
            fields = line.removeprefix("import time:").split("|")
            if len(fields) == 3 and fields[1].strip().isdigit():
                name, cumulative = fields[2].strip(), int(fields[1])
                least[name] = min(least.get(name, cumulative), cumulative)
    ranked = sorted(least.items(), key=lambda item: -item[1])[:count]
    return [[name, round(us / 1000, 1)] for name, us in ranked]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10, help="staged files (default: %(default)s)")
    parser.add_argument("--reservations", type=int, default=50, help="live reservations (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each command (default: %(default)s)")
    parser.add_argument("--base", metavar="REV", help="also time the guard of this commit's source")
    parser.add_argument("--populate", metavar="DB", help=argparse.SUPPRESS)  # used for --base's store
    args = parser.parse_args(argv)
    if args.populate:
        populate(Path(args.populate), args.files, args.reservations)
        return 0

    root = Path(tempfile.mkdtemp(prefix="maf-guard-bench-"))
    try:
        repo = root / "repo"
        repo.mkdir()
        build_repository(repo, args.files)
        held = populate(repo / ".maf" / "runtime.db", args.files, args.reservations)
        plain = {k: v for k, v in os.environ.items() if not k.startswith(("MAF_", "PYTHON"))}
        plain["MAF_AGENT_ID"] = "bench-committer"
        console_script = Path(sys.executable).with_name("maf")
        maf = [str(console_script)] if console_script.exists() else [sys.executable, "-m", "pytest_maf"]
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "guard": ([*maf, "guard"], plain),
            "python_start": ([sys.executable, "-c", "pass"], plain),
            "git_diff_cached": (["git", "diff", "--cached", "--name-only", "-z", "--no-renames"], plain),
        }
        if args.base:
            base_source = source_of(args.base, root / "base")
            base_db = root / "base.db"
            subprocess.run(
                [sys.executable, __file__, "--populate", str(base_db),
                 "--files", str(args.files), "--reservations", str(args.reservations)],
                # No bytecode cache written into the base's source: its guard is timed without one too.
                env={**plain, "PYTHONPATH": str(base_source), "PYTHONDONTWRITEBYTECODE": "1"}, check=True,
            )
            here = str(Path(__file__).resolve().parents[1])
            commands["guard_from_source"] = ([sys.executable, "-c", SOURCE_MAF, here, "guard"], plain)
            commands["guard_from_base_source"] = (
                [sys.executable, "-c", SOURCE_MAF, str(base_source), "guard"], {**plain, "MAF_DB_PATH": str(base_db)}
            )
        results: dict[str, object] = {}
        for mode, extra in (
            ("bytecode_cached", {"PYTHONPYCACHEPREFIX": str(root / "pycache")}),
            ("no_bytecode_cache", {"PYTHONDONTWRITEBYTECODE": "1"}),
        ):
            timed, codes = measure(
                {name: (command, {**env, **extra}) for name, (command, env) in commands.items()}, repo, args.runs
            )
            guard = timed["guard"]["median_ms"]
            ratios = {
                "guard_over_python_start": round(guard / timed["python_start"]["median_ms"], 2),
                "guard_minus_python_start_ms": round(guard - timed["python_start"]["median_ms"], 1),
            }
            if args.base:
                ratios["source_over_base_source"] = round(
                    timed["guard_from_source"]["median_ms"] / timed["guard_from_base_source"]["median_ms"], 2
                )
            results[mode] = {"ms": timed, "ratios": ratios, "exit_codes": codes}
            if mode == "bytecode_cached":
                importers = {
                    name: top_importers(commands[name][0], repo, {**commands[name][1], **extra}, args.runs)
                    for name in ("guard_from_source", "guard_from_base_source") if name in commands
                }
                results["top_importers_ms"] = importers
    finally:
        shutil.rmtree(root, ignore_errors=True)

    report = {
        "staged_files": args.files,
        "reservations": args.reservations,
        "live_reservations": held,
        "runs": args.runs,
        "base": args.base,
        **results,
        "target_ms": TARGET_MS if (args.files, args.reservations) == (10, 50) else "no slower than --base",
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
