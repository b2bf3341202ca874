"""`maf report --html FILE`: the store as one self-contained HTML page, for a CI artifact or a browser."""

from __future__ import annotations

import argparse

from pytest_maf.cli.common import add_json, add_limit, duration, open_configured_store, print_json, said_beside
from pytest_maf.config import Settings
from pytest_maf.errors import UsageError
from pytest_maf.files import checked_text_output, store_files, write_output
from pytest_maf.terminal import printable


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from pytest_maf.report import gather_report
    from pytest_maf.report_html import render_report

    protected = store_files(settings.db_path) if settings.database_url is None else []
    output = checked_text_output(args.output, protected, "--html")  # refused before the store is opened
    with open_configured_store(settings, deliver_queued_mail=False) as store:
        data = gather_report(store, args.since, args.limit)
    page = render_report(data)
    try:
        write_output(output, page.encode("utf-8"))
    except OSError as error:  # a folder that is a file, no permission, no space: said about the file named
        blocking = next((parent for parent in output.parents if parent.exists() and not parent.is_dir()), None)
        reason = f"{blocking} is not a folder" if blocking is not None else error.strerror or str(error)
        raise UsageError(f"cannot write {output}: {reason}; choose another file for --html") from None
    size = len(page.encode("utf-8"))
    with said_beside(output):
        if args.json:
            print_json({"path": str(output), "bytes": size, "tasks": len(data.tasks)})
        else:
            print(printable(f"wrote {output}: {len(data.tasks)} task(s), {len(data.preflight_runs)} preflight run(s),"
                            f" {size} bytes"))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser(
        "report", help="write the store as one self-contained HTML page (pass rate, checks, tasks, holders)",
        description="One HTML file with no outside assets, for a CI artifact or a browser: the preflight pass"
        " rate over time, each check's recent results, every task attempt with its verifiers' PASS/FAIL and"
        " failure details, each task's timeline, the leases and reservations held now, and the overrides"
        " and force-releases. The file appears whole or not at all, and never over the store.",
    )
    report.add_argument(
        "--html", "--output", dest="output", required=True, metavar="FILE", help="the page to write (required)"
    )
    report.add_argument(
        "--since", type=duration, metavar="DURATION",
        help="only tasks changed, preflights run and overrides made in this window, such as 90m, 24h or 7d"
        " (default: the whole history); leases and reservations are always those held now",
    )
    add_limit(report, "tasks listed, the most recently changed (the chart and checks count every preflight)")
    add_json(report)
    report.set_defaults(handler=cmd_report)
