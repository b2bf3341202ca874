"""The `maf` command: parses input, calls the library, formats output.

Exit codes are the table :data:`pytest_maf.errors.EXIT_CODES`. An error is one
line on stderr; whatever escapes a command unexpectedly becomes one line with
the internal-error code, and ``--debug`` (or ``MAF_DEBUG=1``) shows its
traceback.

Commands are registered lazily, so that `maf guard` (run by every commit's
hook) starts in the time it takes to import what the guard uses, not the whole
package. :data:`COMMANDS` names, for each module of ``pytest_maf.cli``, the
commands its ``register`` function adds, with their one-line help: `maf --help`
is built from this table alone, and `maf NAME ...` imports only the module
that owns NAME, lets the one register function that adds NAME register it in
full, and parses again.

Adding a command:

1. add it in a module's ``register(commands)`` as usual (or in a new module
   of ``pytest_maf.cli`` with a ``register`` of its own);
2. add ``"NAME": "the same one-line help"`` under that module (and register
   function) in :data:`COMMANDS`, in the order they are registered;
3. keep that module's top-level imports light (argparse, ``cli.common``,
   ``config``): import what does the work (a store backend, an optional
   library, a big module of the library) inside the handler.

``tests/test_cli_startup.py`` fails when a registered command is missing from
:data:`COMMANDS` or its help differs, and when `maf --help` or `maf guard`
imports a module they do not need.
"""

from __future__ import annotations

import gc
import io
import os
import sys

from pytest_maf.errors import BAD_INPUT, EXIT_CODES, INTERNAL_ERROR, INTERRUPTED, MafError, refused_by_the_system
from pytest_maf.terminal import printable, printable_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator, Sequence
    from types import SimpleNamespace

# The command lines the git hooks run (pytest_maf.git_hooks, .pre-commit-hooks.yaml): answered
# without argparse (pytest_maf.cli.guard.hook_arguments), since every commit runs one.
HOOK_COMMAND_LINES = (["guard"], ["guard", "--pre-push"])
EPILOG_AFTER_EXIT_CODES = """
The runtime database is .maf/runtime.db at the repository root (the current
directory outside a git repository); MAF_DB_PATH or --db overrides it.
MAF_DATABASE_URL (or --db postgresql://...) puts the store on PostgreSQL,
shared by agents on many machines. Agents name themselves with MAF_AGENT_ID
(or --agent).
Run `maf COMMAND --help` for each command's options. The options above may
also follow the command (`maf task list --db FILE`). `maf` alone, or a command
group without its action (`maf task`), prints its help and exits 0.
"""

# (module of pytest_maf.cli, its register function): {command: one-line help}, in `maf --help` order.
COMMANDS: dict[tuple[str, str], dict[str, str]] = {
    ("tasks", "register"): {
        "setup": "create or upgrade the runtime database",
        "task": "add, claim and drive tasks",
        "leases": "lease maintenance",
        "evidence": "verification evidence",
    },
    ("reservations", "register"): {"reservation": "reserve files for an agent"},
    # Apart, so that `maf guard` (run by every commit's hook) builds its own parser and no other.
    ("guard", "register_guard"): {"guard": "block a commit touching files reserved by other agents"},
    ("reservations", "register_install_hooks"): {
        "install-hooks": "install git pre-commit and pre-push hooks running the guard",
    },
    ("coordination", "register"): {
        "escalate": "ask a senior agent for help (agent-mail), or list and resolve escalations",
        "mail": "read and send agent-mail",
    },
    ("agent_tools", "register"): {
        "mcp": "serve the coordination tools to one agent over MCP (stdio)",
    },
    ("admin", "register"): {
        "init": "lay out the agent-mail root and write a starter maf-config/default.yaml",
        "config": "validate, show, diff, snapshot and restore the layered configuration",
        "health-check": "is the system healthy? exit 0 healthy, 1 critical, 2 warnings",
    },
    ("operations", "register"): {
        "db": "back up, verify, restore, recover, export and tidy the runtime database",
        "metrics": "Prometheus metrics from the store (text exposition, or serve /metrics)",
    },
    ("views", "register"): {
        "status": "who holds which task and files, what failed, who overrode what: one screen",
        "history": "the audit trail: claims, expiries, overrides, force-releases, escalations; newest first",
    },
    ("operations", "register_performance"): {
        "load-test": "N processes drive one database for S seconds; then the history is audited",
        "bench": "time the core operations; record a baseline or compare against one",
    },
    ("report", "register"): {"report": "write the store as one self-contained HTML page (pass rate, checks, tasks, holders)"},
    ("agents", "register"): {"agents": "the agents the store has seen: last seen, what each holds, which are stale"},
    ("completion", "register"): {"completion": "print a bash or zsh completion script for maf"},
}
ALL = "*"


def registrar_of(command: str) -> tuple[str, str] | None:
    """The (module of ``pytest_maf.cli``, register function) that adds ``command`` (None for an unknown one)."""
    for registrar, names in COMMANDS.items():
        if command in names:
            return registrar
    return None


class ParserError(Exception):
    """argparse refused the command line (raised instead of its exit, so main can answer in JSON too).
    Here, not beside the parser (:mod:`pytest_maf.cli.conventions`): main catches it without
    importing argparse for the hooks' command lines, which build no parser."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


def epilog() -> str:
    """The end of `maf --help`: the exit codes' table, then where the database is and who acts."""
    import textwrap

    return "exit codes:\n" + "".join(
        textwrap.fill(meaning, 79, initial_indent=f"  {code:>3}  ", subsequent_indent=" " * 7) + "\n"
        for code, meaning in EXIT_CODES.items()
    ) + EPILOG_AFTER_EXIT_CODES


def build_parser(load: str | None = ALL) -> argparse.ArgumentParser:
    """The `maf` parser. ``ALL``: every module imported and registered in full. None: no module
    imported, every command a placeholder that has its help and parses nothing (enough for `maf
    --help` and to find which command was chosen). A command: only its module, and of it only the
    register function that adds that command (in full): no other command's parser is built."""
    import argparse
    import importlib

    from pytest_maf.cli.conventions import add_global_options, apply_conventions, maf_parser

    parser = maf_parser(
        prog="maf",
        description="Tasks, leases, file reservations and evidence for repositories"
        " worked on by several agents.",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_global_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = registrar_of(load) if load not in (None, ALL) else None
    for (module, function), names in COMMANDS.items():
        if load == ALL or (module, function) == wanted:
            register = getattr(importlib.import_module(f"pytest_maf.cli.{module}"), function)
            register(commands)
        elif load is None:  # a placeholder: named with its help, parses nothing
            for name, help_text in names.items():
                commands.add_parser(name, help=help_text, add_help=False)
    apply_conventions(parser)
    return parser


def parse(arguments: Sequence[str]) -> argparse.Namespace | SimpleNamespace:
    """Parse `maf` arguments, importing only the chosen command's module.

    When the first argument names a command (as in the git hooks' `maf guard`),
    that is the command. Otherwise a first pass, with placeholders, finds it
    (and answers `maf --help`, and a missing or unknown command, exactly as the
    full parser would). Then the arguments are parsed with that command's
    module registered. The git hooks' own command lines are not parsed: their
    arguments are known (:func:`pytest_maf.cli.guard.hook_arguments`).
    """
    if list(arguments) in HOOK_COMMAND_LINES:  # argparse is not even imported
        from pytest_maf.cli.guard import hook_arguments

        return hook_arguments(arguments)
    if arguments and registrar_of(arguments[0]) is not None:
        command = arguments[0]
    else:
        first_pass = build_parser(load=None)
        misplaced = _command_option_first(arguments)
        if misplaced:
            first_pass.error(
                f"{misplaced} is not an option of maf itself (those are --db, --log-format and --debug):"
                " give it after the command that takes it (`maf COMMAND --help` lists a command's options)"
            )
        command = first_pass.parse_known_args(arguments)[0].command
    return build_parser(load=command).parse_args(arguments)


def _past_own_options(arguments: Sequence[str]) -> Iterator[str]:
    """``arguments`` up to ``--`` without maf's own options (:data:`conventions.GLOBAL_OPTIONS`, ``--version``,
    ``--help``) and their values: the command's words, and any option that is not maf's."""
    from pytest_maf.cli.conventions import GLOBAL_OPTIONS

    own = {"--version", "-h", "--help"}
    with_values: set[str] = set()
    for names, settings in GLOBAL_OPTIONS:
        own.update(names)
        if settings.get("action") != "store_true":
            with_values.update(names)
    skip = False
    for argument in arguments:
        if argument == "--":
            return
        name = argument.split("=", 1)[0]
        if skip:
            skip = False
        elif name in own:
            skip = name in with_values and "=" not in argument
        else:
            yield argument


def _command_option_first(arguments: Sequence[str]) -> str | None:
    """An option before the command that is not one of maf's own (``maf --agent x task list``), else None."""
    first = next(_past_own_options(arguments), None)
    if first is None or not first.startswith("-"):
        return None  # the command comes first: what follows is its own
    # said so when a command follows: alone, it is an unknown argument
    return first.split("=", 1)[0] if any(not later.startswith("-") for later in arguments) else None


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 must not end in a traceback
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    arguments = list(sys.argv[1:] if argv is None else argv)
    as_json = json_wanted(arguments)
    for position, argument in enumerate(_own_arguments(arguments), start=1):
        try:
            argument.encode("utf-8")
        except UnicodeEncodeError:  # bytes the shell passed that are not UTF-8
            shown = argument.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            return report_failure(
                f"maf: error: argument {position} ({shown[:60]!r}) is not UTF-8 text; pass it as UTF-8",
                BAD_INPUT, as_json=as_json,
            )
    collecting = gc.isenabled()
    gc.disable()  # importing the command's modules makes thousands of objects and no garbage cycles
    try:
        args = parse(arguments)
    except ParserError as error:  # exits as argparse would, for callers of main() too
        from pytest_maf.cli.conventions import report_usage_error

        raise SystemExit(report_usage_error(error, as_json=as_json)) from None
    except KeyboardInterrupt:  # Ctrl-C as the command's modules load
        return report_failure("maf: interrupted", INTERRUPTED, as_json=as_json)
    finally:
        if collecting:
            gc.enable()
    previous = _ending_on_sigterm()
    try:
        from pytest_maf import logs
        from pytest_maf.agents import set_client
        from pytest_maf.config import load_settings
        from pytest_maf.database_url import url_passwords

        set_client("maf")

        settings = load_settings(db_path=args.db) if getattr(args, "needs_settings", True) else None
        if settings is not None:
            logs.configure(
                settings.log_level, args.log_format or settings.log_format,
                [*logs.secret_values(settings.required_env), *url_passwords(settings.database_url)],
                log_file=None if settings.log_file is None else logs.LogFile(
                    settings.log_file, settings.log_file_level, settings.log_max_bytes, settings.log_backup_count
                ),
            )
        return int(args.handler(args, settings))
    except MafError as error:
        return report_failure(f"maf: error: {error}", error.exit_code, as_json=as_json)
    except KeyboardInterrupt:
        return report_failure("maf: interrupted", INTERRUPTED, as_json=as_json)
    except Terminated as stop:  # what was under way was rolled back, its scratch files removed
        return report_failure("maf: terminated", 128 + stop.signum, as_json=as_json)
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as error:  # a path the system refused: too long, no permission, no space
        if args.debug or os.environ.get("MAF_DEBUG", "") not in ("", "0"):
            import traceback

            traceback.print_exc()
        return report_failure(f"maf: error: {refused_by_the_system(error)}", BAD_INPUT, as_json=as_json)
    except Exception as error:  # the outer edge: no traceback reaches a user unasked
        if args.debug or os.environ.get("MAF_DEBUG", "") not in ("", "0"):
            import traceback

            traceback.print_exc()
        summary = str(error).splitlines()[0] if str(error).strip() else ""
        return report_failure(
            f"maf: internal error: {type(error).__name__}{': ' + summary if summary else ''}"
            " (a bug in pytest-maf; rerun with --debug for the traceback, and report it)",
            INTERNAL_ERROR, as_json=as_json,
        )
    finally:
        _restore_sigterm(previous)


class Terminated(BaseException):
    """SIGTERM (a CI job's time limit, ``kill``, a supervisor) as an exception, so the command ends as
    Ctrl-C ends it: its transaction rolled back, its scratch files removed. Not an Exception: nothing
    that handles errors takes it for one."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _ending_on_sigterm() -> object:
    """SIGTERM raises :class:`Terminated` while the command runs, where nothing else handles it; the
    handler it had (to put back), or None."""
    import signal

    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None  # the caller's own (a test runner, an embedding program)
        return signal.signal(signal.SIGTERM, _terminate)
    except (ValueError, OSError):  # not the main thread
        return None


def _restore_sigterm(previous: object) -> None:
    if previous is None:
        return
    import signal

    try:
        signal.signal(signal.SIGTERM, previous)  # type: ignore[arg-type]
    except (ValueError, OSError):
        pass


def json_wanted(arguments: Sequence[str]) -> bool:
    """``--json`` among the command line's own options (not after a ``--``)."""
    options = arguments[: list(arguments).index("--")] if "--" in arguments else arguments
    return "--json" in options


def _own_arguments(arguments: list[str]) -> list[str]:
    """The arguments that are maf's: all but a command's after ``--`` in ``maf task run TASK -- CMD``."""
    if "--" not in arguments:
        return arguments
    head = arguments[: arguments.index("--")]
    words = [argument for argument in _past_own_options(head) if not argument.startswith("-")]
    return head if words[:2] == ["task", "run"] else arguments


def report_failure(message: str, exit_code: int, *, as_json: bool) -> int:
    """A failure: ``message`` (one line) on stderr, and with ``--json`` an error object on stdout; a
    control or direction character in it (from a file name, say) is shown escaped in both."""
    print(printable(message), file=sys.stderr)
    if as_json:
        shown = message.removeprefix("maf: error: ").removeprefix("maf: ")
        try:
            print(printable_json({"error": shown, "exit_code": exit_code}, indent=None), flush=True)
        except OSError:  # standard output is what failed (a full disk): the line on stderr says it all
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # and nothing fails at exit
    return exit_code
