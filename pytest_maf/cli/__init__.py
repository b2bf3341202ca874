"""The `maf` command: parses input, calls the library, formats output.

Exit codes: 0 done, 1 blocked or failed, 2 bad input, 3 nothing to do,
4 lease lost or not the holder. An error is one line on stderr.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Sequence

from pytest_maf import logs
from pytest_maf.cli import admin, coordination, operations, reservations, tasks
from pytest_maf.config import load_settings
from pytest_maf.errors import MafError

EPILOG = """\
exit codes: 0 done, 1 a check failed or a conflict blocked, 2 bad input,
3 nothing to do (no READY task), 4 lease lost or not the holder.

The runtime database is .maf/runtime.db at the repository root (the current
directory outside a git repository); MAF_DB_PATH or --db overrides it.
Run `maf COMMAND --help` for each command's options.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maf",
        description="Tasks, leases, file reservations and evidence for repositories"
        " worked on by several agents.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--db", metavar="PATH", help="runtime database (default: MAF_DB_PATH or .maf/runtime.db)"
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), help="event lines on stderr (level: LOG_LEVEL, default warning)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    tasks.register(commands)
    reservations.register(commands)
    coordination.register(commands)
    admin.register(commands)
    operations.register(commands)
    operations.register_performance(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 must not end in a traceback
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(db_path=args.db) if getattr(args, "needs_settings", True) else None
        if settings is not None:
            logs.configure(
                settings.log_level, args.log_format or settings.log_format, logs.secret_values(settings.required_env)
            )
        return int(args.handler(args, settings))
    except MafError as error:
        print(f"maf: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("maf: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
