"""The `maf` command: parses input, calls the library, formats output.

Exit codes are the table :data:`pytest_maf.errors.EXIT_CODES`. An error is one
line on stderr; whatever escapes a command unexpectedly becomes one line with
the internal-error code, and ``--debug`` (or ``MAF_DEBUG=1``) shows its
traceback.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import textwrap
import traceback
from typing import Sequence

from pytest_maf import logs
from pytest_maf.cli import admin, agent_tools, coordination, operations, reservations, tasks
from pytest_maf.config import load_settings
from pytest_maf.database_url import url_passwords
from pytest_maf.errors import BAD_INPUT, EXIT_CODES, INTERNAL_ERROR, INTERRUPTED, MafError

EPILOG = "exit codes:\n" + "".join(
    textwrap.fill(meaning, 79, initial_indent=f"  {code:>3}  ", subsequent_indent=" " * 7) + "\n"
    for code, meaning in EXIT_CODES.items()
) + """
The runtime database is .maf/runtime.db at the repository root (the current
directory outside a git repository); MAF_DB_PATH or --db overrides it.
MAF_DATABASE_URL (or --db postgresql://...) puts the store on PostgreSQL,
shared by agents on many machines. Agents name themselves with MAF_AGENT_ID
(or --agent).
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
        "--db", metavar="PATH|URL",
        help="runtime database file, or a postgresql:// URL (default: MAF_DATABASE_URL, MAF_DB_PATH or .maf/runtime.db)",
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), help="event lines on stderr (level: LOG_LEVEL, default warning)"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an internal error (also MAF_DEBUG=1)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    tasks.register(commands)
    reservations.register(commands)
    coordination.register(commands)
    agent_tools.register(commands)
    admin.register(commands)
    operations.register(commands)
    operations.register_performance(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 must not end in a traceback
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    for position, argument in enumerate(arguments, start=1):
        try:
            argument.encode("utf-8")
        except UnicodeEncodeError:  # bytes the shell passed that are not UTF-8
            shown = argument.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            print(f"maf: error: argument {position} ({shown[:60]!r}) is not UTF-8 text; pass it as UTF-8", file=sys.stderr)
            return BAD_INPUT
    args = parser.parse_args(arguments)
    try:
        settings = load_settings(db_path=args.db) if getattr(args, "needs_settings", True) else None
        if settings is not None:
            logs.configure(
                settings.log_level, args.log_format or settings.log_format,
                [*logs.secret_values(settings.required_env), *url_passwords(settings.database_url)],
            )
        return int(args.handler(args, settings))
    except MafError as error:
        print(f"maf: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("maf: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as error:  # a path the system refused: too long, no permission, no space
        if args.debug or os.environ.get("MAF_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        name = f": {_shortened(str(error.filename))}" if error.filename else ""
        print(f"maf: error: {error.strerror or type(error).__name__}{name}", file=sys.stderr)
        return BAD_INPUT
    except Exception as error:  # the outer edge: no traceback reaches a user unasked
        if args.debug or os.environ.get("MAF_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        summary = str(error).splitlines()[0] if str(error).strip() else ""
        print(
            f"maf: internal error: {type(error).__name__}{': ' + summary if summary else ''}"
            " (a bug in pytest-maf; rerun with --debug for the traceback, and report it)",
            file=sys.stderr,
        )
        return INTERNAL_ERROR


def _shortened(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2 :]}"
