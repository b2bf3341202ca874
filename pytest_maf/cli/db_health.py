"""`maf db optimize` and `maf db stats`: the store's indexes and query health, on SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import TYPE_CHECKING

from pytest_maf.cli.common import add_json, print_json, print_table
from pytest_maf.config import Settings
from pytest_maf.terminal import printable

if TYPE_CHECKING:
    from pytest_maf.store.optimize import Step
    from pytest_maf.store.postgres import PostgresStore


def postgres_store(settings: Settings) -> PostgresStore:
    """The configured PostgreSQL store (``settings.database_url`` is set), for whole-store maintenance."""
    from pytest_maf.store import open_store_for
    from pytest_maf.store.postgres import PostgresStore

    store = open_store_for(settings)
    assert isinstance(store, PostgresStore)
    return store


def _step_line(step: Step) -> str:
    measures = ", ".join(
        f"{name.replace('_', ' ')} {step.before[name]} -> {step.after[name]}"
        + (f" ({step.after[name] - step.before[name]:+d})" if step.after[name] != step.before[name] else "")
        for name in step.before
    )
    return f"{step.name}: {measures}; {step.seconds:.3f} s"


def cmd_optimize(args: argparse.Namespace, settings: Settings) -> int:
    from pytest_maf.store.optimize import optimize_postgres, optimize_sqlite

    if settings.database_url is not None:
        with postgres_store(settings) as store:
            steps = optimize_postgres(store, reindex=args.reindex, vacuum=args.vacuum)
    else:
        steps = optimize_sqlite(
            settings.db_path, reindex=args.reindex, vacuum=args.vacuum, busy_timeout_s=settings.busy_timeout_s
        )
    if args.json:
        print_json({
            "store": settings.store_shown, "done": [step.name for step in steps],
            "steps": [{**asdict(step), "changed": step.changed()} for step in steps],
        })
        return 0
    print(f"optimised {printable(settings.store_shown)}:")
    for step in steps:
        print(f"  {_step_line(step)}")
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from pytest_maf.store.stats import postgres_stats, sqlite_stats

    if settings.database_url is not None:
        with postgres_store(settings) as store:
            report = postgres_stats(store)
    else:
        report = sqlite_stats(settings.db_path)
    if args.json:
        print_json(asdict(report))
        return 0

    def shown(value: int | None) -> object:
        return "?" if value is None else value

    print(f"{printable(report.location)} ({report.backend}): {report.bytes} bytes")
    scans = report.backend == "postgresql"
    print_table(
        ["TABLE", "ROWS", "BYTES", *(["SEQ SCANS", "INDEX SCANS"] if scans else [])],
        [[table.name, table.rows, shown(table.bytes),
          *([shown(table.sequential_scans), shown(table.index_scans)] if scans else [])] for table in report.tables],
    )
    print()
    print_table(
        ["INDEX", "TABLE", "BYTES", *(["SCANS"] if scans else [])],
        [[index.name, index.table, shown(index.bytes), *([shown(index.scans)] if scans else [])]
         for index in report.indexes],
    )
    print()
    if report.slowest:
        print("slowest recorded operations:")
        print_table(
            ["OPERATION", "OUTCOME", "COUNT", "MEAN MS", "MAX MS"],
            [[item.operation, item.outcome, item.count, item.mean_ms, item.max_ms] for item in report.slowest],
        )
    else:
        print("slowest recorded operations: none")
    for note in report.notes:
        print(f"note: {printable(note)}")
    return 0


def register(db: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The index and query health actions of `maf db`."""
    optimize = db.add_parser(
        "optimize", help="refresh the planner's statistics; optionally rebuild indexes and compact; each step measured",
        description="SQLite: ANALYZE, PRAGMA optimize, REINDEX (--reindex), VACUUM (--vacuum), then a WAL checkpoint;"
        " each step reports the pages, free pages and bytes before and after. PostgreSQL: ANALYZE, REINDEX TABLE"
        " (--reindex) and VACUUM (--vacuum) of each of the store's tables; each step reports the bytes of the"
        " tables and of their indexes before and after. Agents may keep working; REINDEX and VACUUM make them wait"
        " while they run.",
    )
    optimize.add_argument("--reindex", action="store_true", help="also rebuild every index")
    optimize.add_argument("--vacuum", action="store_true", help="also VACUUM: rewrite the tables to reclaim free space")
    add_json(optimize)
    optimize.set_defaults(handler=cmd_optimize)
    stats = db.add_parser(
        "stats", help="table sizes, row counts, index use and the slowest recorded operations",
        description="Every table with its exact row count and size (with its indexes), every index with its size"
        " (and, on PostgreSQL, how often it was scanned), and the operations whose recorded duration was longest."
        " SQLite sizes come from its dbstat table when SQLite has one; SQLite counts no index use. Read-only.",
    )
    add_json(stats)
    stats.set_defaults(handler=cmd_stats)
