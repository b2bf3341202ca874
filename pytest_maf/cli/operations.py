"""`maf db ...`, `maf metrics` and the performance commands."""

from __future__ import annotations

import argparse
import io
import math
import sys
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from pytest_maf.cli import db_backups, db_health
from pytest_maf.cli.common import (
    add_json, add_output, given, number, print_json, print_table, prints_no_result, said_beside, whole_number,
)
from pytest_maf.clock import system_clock
from pytest_maf.config import Settings
from pytest_maf.errors import FAILED, UsageError
from pytest_maf.files import SQLITE_HEADER, checked_output, checked_text_output, regular_file_head, store_files
from pytest_maf.store import maintenance
from pytest_maf.store import export as db_export
from pytest_maf.terminal import Progress, printable

DAY_MS = 24 * 60 * 60 * 1000
MAX_CLEANUP_DAYS = 36_500  # a hundred years: any older cut-off keeps nothing more


def positive_number(high: float) -> Callable[[str], float]:
    """An argument type: a finite number above 0 and at most ``high``."""

    def parse(text: str) -> float:
        value = number(text)
        if not math.isfinite(value) or not 0 < value <= high:
            raise argparse.ArgumentTypeError(f"expected a number above 0 and at most {high:g}, got {text}")
        return value

    return parse


Handler = Callable[[argparse.Namespace, Settings], int]


def on_a_sqlite_file(command: str, handler: Handler, instead: str) -> Handler:
    """``handler``, refused with one line saying what to do ``instead`` when the configured store is on PostgreSQL."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        if settings.database_url is not None:
            raise UsageError(
                f"maf db {command} works on a SQLite store file, and this store is on PostgreSQL"
                f" ({settings.store_shown}): {instead}"
            )
        return handler(args, settings)

    return run


def cmd_recover(args: argparse.Namespace, settings: Settings) -> int:
    default = settings.db_path.with_name(f"{settings.db_path.stem}-recovered.db")
    output = checked_output(str(default) if args.output is None else args.output, store_files(settings.db_path), "--output")
    with Progress(f"recovering {settings.db_path} into {output}"):
        report = maintenance.recover(settings.db_path, output, use_shell=not args.no_shell)
    code = FAILED if report.problems or not report.written else 0
    failure = None
    if not report.written:
        readable = sum(count for count in report.readable_before.values() if count)
        failure = (
            f"recovered no row from {settings.db_path}"
            + (f" ({readable} row(s) were counted in it)" if readable else " (nothing in it could be read)")
            + "; nothing was written. Restore a backup instead: `maf db restore BACKUP`"
        )
        print(f"maf: error: {failure}", file=sys.stderr)
    if args.json:
        failed = {} if failure is None else {"error": failure, "exit_code": code}  # as every command's error object
        print_json({**asdict(report), "output": str(report.output) if report.written else None, "lost": report.lost(),
                    **failed})
        return code
    if not report.written:
        return code
    print(f"recovered into {report.output} ({report.method})")
    for table, count in report.recovered.items():
        lost = report.lost()[table]
        print(f"  {table}: {count} rows recovered, " + ("lost unknown (unreadable before)" if lost is None else f"{lost} lost"))
    if report.lost_and_found:
        print(f"  lost_and_found: {report.lost_and_found} rows whose table could not be told")
    for note in report.notes:
        print(f"  note: {note}")
    for problem in report.problems:
        print(f"  problem: {problem}")
    print(f"check it, then `maf db restore {report.output}`" if not report.problems else "the result still has problems")
    return code


def cmd_cleanup(args: argparse.Namespace, settings: Settings) -> int:
    older_than_ms = system_clock() - args.days * DAY_MS
    with Progress(f"{'deleting' if args.apply else 'counting'} old history in {settings.store_shown}"):
        if settings.database_url is not None:
            from pytest_maf.store.cleanup import cleanup_postgres

            with db_health.postgres_store(settings) as store:
                counts = cleanup_postgres(store, older_than_ms, apply=args.apply)
        else:
            counts = maintenance.cleanup(
                settings.db_path, older_than_ms, apply=args.apply, busy_timeout_s=settings.busy_timeout_s
            )
    if args.json:
        print_json({**counts, "applied": args.apply})
        return 0
    verb = "deleted" if args.apply else "would delete"
    print(f"{verb} {counts['events']} events and {counts['evidence']} evidence rows of {counts['tasks']}"
          f" DONE/DEAD task(s), {counts['reservation_events']} reservation events and"
          f" {counts['escalation_events']} events of closed escalations, older than {args.days} day(s)"
          + ("" if args.apply else "; add --apply to act"))
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    tables = db_export.chosen_tables(args.table or [], args.format)  # refused before the store is opened
    if args.output is None:
        with _utf8_stdout() as stdout:
            db_export.export(settings.db_path, args.format, tables, stdout)
        return 0
    output = checked_text_output(args.output, store_files(settings.db_path), "--output")
    counts = db_export.export_to_file(settings.db_path, args.format, tables, output)
    print(f"exported {', '.join(f'{table} {count}' for table, count in counts.items())} row(s) to {output}")
    return 0


@contextmanager
def _utf8_stdout() -> Iterator[TextIO]:
    """Standard output, written in UTF-8 whatever the locale (as an --output file is)."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # already a text-only stream
        yield sys.stdout
        return
    sys.stdout.flush()
    stream = io.TextIOWrapper(buffer, encoding="utf-8", newline="")
    try:
        yield stream
    finally:
        stream.flush()
        stream.detach()  # sys.stdout still owns the buffer


def cmd_copy(args: argparse.Namespace, settings: Settings) -> int:
    from pytest_maf.store.copy import copy_store

    report = copy_store(
        args.source, args.destination, force=args.force,
        source_schema=args.source_schema or settings.database_schema,
        destination_schema=args.dest_schema or settings.database_schema, busy_timeout_s=settings.busy_timeout_s,
    )
    if args.json:
        print_json(asdict(report))
        return 0
    replaced = f", replacing {report.replaced} row(s) it held" if report.replaced else ""
    print(f"copied {sum(report.rows.values())} row(s) from {report.source} to {report.destination}{replaced};"
          " row counts and schema verified")
    print("  " + ", ".join(f"{table} {count}" for table, count in report.rows.items()))
    return 0


def cmd_metrics(args: argparse.Namespace, settings: Settings) -> int:
    from pytest_maf.extras import import_extra

    metrics = import_extra("pytest_maf.metrics", "metrics", "maf metrics")

    if args.metrics_command == "serve":
        try:
            server = metrics.metrics_server(settings, args.host, args.port)
        except (OSError, OverflowError, UnicodeError) as error:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {error}") from None
        shown = f"[{args.host}]" if ":" in args.host and not args.host.startswith("[") else args.host  # IPv6
        print(f"serving http://{shown}:{server.server_port}/metrics", flush=True)
        try:
            server.serve_forever()  # until Ctrl-C (130) or SIGTERM (143), as every command ends on them
        finally:
            server.server_close()
        return 0
    sys.stdout.write(metrics.exposition(settings))
    return 0


def _host(text: str) -> str:
    if not text.strip():  # "" would listen on every interface: say so, do not do it
        raise argparse.ArgumentTypeError("give an address; 0.0.0.0 listens on every interface, if that is meant")
    return text


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = commands.add_parser("db", help="back up, verify, restore, recover, export and tidy the runtime database").add_subparsers(
        dest="db_command", metavar="ACTION", required=True
    )
    db_backups.register(db)
    recover = db.add_parser(
        "recover", help="rebuild a malformed database into a new file and report what was lost",
        description="Uses the sqlite3 shell's .recover when it is installed, else a row-by-row salvage.",
    )
    add_output(recover, "the rebuilt database to write", default_note="<db>-recovered.db beside it")
    recover.add_argument("--no-shell", action="store_true", help="salvage row by row even if sqlite3 is installed")
    add_json(recover)
    recover.set_defaults(handler=on_a_sqlite_file(
        "recover", cmd_recover, "use the server's own recovery there, or `maf db restore BACKUP`"
    ))
    db_health.register(db)
    cleanup = db.add_parser(
        "cleanup", help="delete events and evidence of DONE/DEAD tasks older than N days (dry run unless --apply)",
        description="Deletes what is older than N days: the events and evidence of DONE and DEAD tasks, reservation"
        " events, and the events of escalations no longer active. Their counts are first added to the store's"
        " counters in the same transaction, so the *_total counters of `maf metrics` never go down.",
    )
    cleanup.add_argument(
        "--days", required=True, type=whole_number(0, MAX_CLEANUP_DAYS), metavar="N",
        help=f"finished or written more than N days ago (0 to {MAX_CLEANUP_DAYS}; 0: all of it)",
    )
    cleanup.add_argument("--apply", action="store_true", help="delete; without it, only count")
    add_json(cleanup)
    cleanup.set_defaults(handler=cmd_cleanup)
    export = db.add_parser(
        "export", help="the store's rows as JSON or CSV, read-only (for a spreadsheet or a script)",
        description="A SQLite store only (a PostgreSQL one: `maf db copy` it into a file, then export that)."
        " Opens the store read-only: nothing is migrated or written. Values are exactly as stored:"
        " times are epoch milliseconds, *_json columns the JSON text they hold. JSON: one object mapping each"
        " table to the list of its rows. CSV: one table (exactly one --table), a header row, NULL as an empty cell.",
    )
    export.add_argument("--format", choices=db_export.FORMATS, default="json", help="default: json")
    export.add_argument(
        "--table", action="extend", nargs="+", metavar="TABLE", help="the tables to export (default: all; csv: one)"
    )
    add_output(export, "write FILE (whole or not at all)", default_note="standard output")
    prints_no_result(export, "its output is the rows themselves: --format json")
    export.set_defaults(handler=on_a_sqlite_file(
        "export", cmd_export, "copy it into a file first (maf db copy URL export.db), then export that"
        " (maf db export --db export.db)"
    ))
    copy = db.add_parser(
        "copy", help="copy a whole store between backends (a SQLite file or a postgresql:// URL), verified",
        description="Copies every table and row in order, keeping ids and times, in one transaction on the"
        " destination (a missing one is created), then compares the row counts per table and checks the"
        " destination's schema. A destination that holds rows is refused (exit 2, nothing written) unless"
        " --force, which replaces them; so is copying a store onto itself.",
    )
    copy.add_argument("source", type=given, metavar="SOURCE", help="a store file, or a postgresql:// URL")
    copy.add_argument("destination", type=given, metavar="DEST", help="a store file, or a postgresql:// URL")
    copy.add_argument("--force", action="store_true", help="replace the rows the destination holds")
    copy.add_argument("--source-schema", type=given, metavar="NAME", help="SOURCE's PostgreSQL schema (default: runtime.database_schema)")
    copy.add_argument("--dest-schema", type=given, metavar="NAME", help="DEST's PostgreSQL schema (default: runtime.database_schema)")
    add_json(copy)
    copy.set_defaults(handler=cmd_copy)

    metrics = commands.add_parser(
        "metrics", help="Prometheus metrics from the store (text exposition, or serve /metrics)"
    )
    actions = metrics.add_subparsers(dest="metrics_command", metavar="ACTION")
    serve = actions.add_parser("serve", help="serve /metrics over HTTP until interrupted")
    serve.add_argument("--host", default="127.0.0.1", type=_host, help="address to listen on, IPv4 or IPv6 (::1) (default: loopback only)")
    serve.add_argument(
        "--port", type=whole_number(0, 65535), default=9464, help="0 to 65535, 0: any free port (default: %(default)s)"
    )
    prints_no_result(serve, "it serves /metrics until interrupted")
    prints_no_result(metrics, "its output is the Prometheus text exposition")
    metrics.set_defaults(handler=cmd_metrics)


def refuse_a_store_named(command: str, args: argparse.Namespace, drives: str) -> None:
    """A command that measures on a store of its own refuses --db rather than leave it unused: its
    figures would pass for that store's (a PostgreSQL server's, say)."""
    if getattr(args, "db", None) is not None:
        raise UsageError(
            f"maf {command} measures on {drives}, never on --db's store; leave --db out (for PostgreSQL,"
            " `python benchmarks/claims.py --db postgresql://...` measures claims)"
        )


def cmd_load_test(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile

    from pytest_maf.loadtest import run_load_test, terminate_as_interrupt

    from pytest_maf.database_url import is_database_url, is_other_url

    if args.database is not None and (is_database_url(args.database) or is_other_url(args.database)):
        raise UsageError(
            "load-test drives a SQLite file: --database takes a file path, not a URL (for PostgreSQL,"
            " `python benchmarks/claims.py --db postgresql://...` measures claims)"
        )
    refuse_a_store_named("load-test", args, "a scratch SQLite file, or the new one --database names")
    given = None if args.database is None else checked_output(args.database, store_files(settings.db_path), "--database")
    if given is not None and regular_file_head(given, len(SQLITE_HEADER)) not in (b"", SQLITE_HEADER):
        raise UsageError(
            f"{args.database} is not a SQLite file: --database names a new or scratch file that load-test fills"
            " with its own tasks"
        )
    with terminate_as_interrupt(), tempfile.TemporaryDirectory(prefix="maf-load-") as scratch:
        # removed however the run ends: done, failed, Ctrl-C or SIGTERM
        with Progress(f"load test: {args.concurrent} process(es), {args.duration:g} s of load and the audit"):
            report = run_load_test(given or Path(scratch) / "load.db", args.concurrent, args.duration)
    if args.json:
        print_json(report)
    else:
        timing = report["timing"]
        each = report["cpu_ms_per_cycle"]  # None when no cycle finished
        print(f"{args.concurrent} process(es) for {args.duration:g} s: {report['cycles_per_s']} claim-to-finish cycles/s"
              + ("" if each is None else f", {each} ms of processor time each (all processes, waiting included)"))
        print(f"measured {timing['measured_s']} s; the last process stopped {timing['last_stop_after_deadline_s']} s"
              f" after the deadline; {timing['processes_stopped_by_parent']} stopped by the parent;"
              f" audit {timing['audit_s']} s; whole run {timing['run_s']} s")
        print_table(
            ["OPERATION", "COUNT", "PER S", "P50 MS", "P95 MS", "P99 MS", "MAX MS"],
            [[name, stats["count"], stats["per_s"], *(stats.get(key, 0.0) for key in ("p50", "p95", "p99", "max"))]
             for name, stats in report["operations"].items()],
        )
        turn = report["writers_turn"]
        if turn["turns"]:
            print(f"writers' turn: {turn['turns']} taken, held {turn['held_ms_each']} ms each"
                  f" ({turn['held_share']:.0%} of the measured time), waited for {turn['waited_ms_each']} ms each")
        print(f"reservation conflicts: {report['reservation_conflicts']}; errors: {report['errors'] or 'none'}")
        for name, check in report["invariants"].items():
            if name != "ok":
                print(f"{'ok  ' if check['ok'] else 'FAIL'}  {name}" + (f": {check['problems']}" if check["problems"] else ""))
    return 0 if report["invariants"]["ok"] else 1


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from pytest_maf.bench import compare, read_baseline, run_benchmarks
    from pytest_maf.files import json_file_bytes, write_output

    refuse_a_store_named("bench", args, "a scratch SQLite file of its own")
    if args.output is None and args.compare is None:
        raise UsageError("give --output FILE to record a baseline, or --compare FILE")
    baseline: dict[str, Any] | None = None
    if args.compare is not None:  # read first: a bad baseline is refused before minutes of timing
        baseline = read_baseline(Path(args.compare))
    output = None
    if args.output is not None:
        protected = store_files(settings.db_path) + ([Path(args.compare)] if args.compare else [])
        output = checked_text_output(args.output, protected, "--output")
    current = run_benchmarks()
    if output is not None:
        write_output(output, json_file_bytes(current))
        if not args.json:
            with said_beside(output):
                print(printable(f"wrote {output}"))
    if baseline is None and args.json:
        print_json(current)
        return 0
    if baseline is None:
        for name, value in current["metrics"].items():
            print(f"{name:<40} {value:>10.4f} ms")
        return 0
    rows = compare(baseline, current, args.threshold)
    if not rows:  # a comparison that compared nothing must not pass
        raise UsageError(
            f"the baseline {args.compare} has none of the figures maf bench measures"
            f" ({', '.join(current['metrics'])}); record one with `maf bench --output FILE`"
        )
    if args.json:
        print_json(rows)
    else:
        print_table(
            ["METRIC", "BASELINE MS", "NOW MS", "RATIO", ""],
            [[row["metric"], row["baseline_ms"], row["current_ms"], row["ratio"], "REGRESSION" if row["regression"] else ""]
             for row in rows],
        )
    return 1 if any(row["regression"] for row in rows) else 0


def register_performance(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    load = commands.add_parser(
        "load-test", help="N processes drive one database for S seconds; then the history is audited",
        description="Reports throughput, the processor time a cycle took (every process's, waiting included),"
        " p50/p95/p99/max latency per operation, how long the writes waited for and held the writers' turn"
        " (and the share of the time it was held: near 100%, more processes add waiting, not throughput),"
        " errors, and"
        " checks the invariants (no double grant, no stale operation accepted, no overlapping"
        " exclusive reservations, no lost task, integrity). Exit 1 if any invariant fails. Uses a"
        " new temporary database unless --database is given; a database that holds agents' tasks"
        " or reservations is refused (exit 2), and load-test tasks are never handed to `maf task claim`.",
    )
    # The bounds are loadtest.check_run's, checked before any process starts.
    load.add_argument("--concurrent", type=int, default=4, metavar="N", help="processes at once (default: %(default)s)")
    load.add_argument(
        "--duration", type=number, default=10.0, metavar="S",
        help="seconds of load (0.1 to a day; default: %(default)s); the processes stop at the deadline and the"
        " parent waits at most 5%% more (at least 2 s)",
    )
    load.add_argument("--database", type=given, metavar="PATH", help="run against this SQLite file instead of a temporary one (a new or scratch file; never --db's store)")
    add_json(load)
    load.set_defaults(handler=cmd_load_test)

    bench = commands.add_parser(
        "bench", help="time the core operations; record a baseline or compare against one",
        description="Times a claim-to-finish cycle, a reservation, the guard's matching, an"
        " escalation and a metrics scrape, in this process. --compare prints each ratio to the"
        " baseline and flags those above --threshold (exit 1).",
    )
    add_output(bench, "write the figures as a baseline", default_note="not written")
    bench.add_argument("--compare", type=given, metavar="FILE", help="a baseline to compare against")
    bench.add_argument(
        "--threshold", type=positive_number(1e6), default=1.25, help="ratio counted as a regression (default 1.25)"
    )
    add_json(bench)
    bench.set_defaults(handler=cmd_bench)
