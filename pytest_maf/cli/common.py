"""Helpers shared by the `maf` subcommands: argument types, the options every
command spells the same way, and output.

The command line's rules, kept by ``tests/test_cli_conventions.py`` (which
walks every subcommand):

- the same names everywhere: :func:`add_agent` (``--agent ID``),
  :func:`add_json` (``--json``), :func:`add_output` (``--output FILE``),
  :func:`add_limit` (``--limit N``); an old spelling stays as a hidden alias;
- ``--json`` on every command that prints a result (:func:`add_json`), or the
  command says why not with :func:`prints_no_result`; with ``--json`` a
  failure also prints ``{"error": ..., "exit_code": N}`` on stdout
  (:func:`pytest_maf.cli.report_failure`);
- every option with a default says it in its help ("default: ...");
- the global options (``--db``, ``--log-format``, ``--debug``) work before or
  after the subcommand, and a command group without its action prints its
  help: :mod:`pytest_maf.cli.conventions` applies both to the whole parser.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from typing import TYPE_CHECKING, Any, Callable, Sequence

from pytest_maf.cli.acting_agent import AGENT_VARIABLE as AGENT_VARIABLE
from pytest_maf.cli.acting_agent import agent_of as agent_of
from pytest_maf.cli.acting_agent import optional_agent_of as optional_agent_of
from pytest_maf.clock import iso_utc
from pytest_maf.config import Settings
from pytest_maf.errors import MafError, UsageError
from pytest_maf.ids import validate_id
from pytest_maf.terminal import cells, printable, printable_json
from pytest_maf.store import open_store_for
from pytest_maf.values import parse_duration, parse_json

if TYPE_CHECKING:
    from pathlib import Path

    from pytest_maf.git_exclude import ExcludeReport
    from pytest_maf.store import Store


def json_argument(text: str) -> Any:
    """A JSON value given as an option's argument; ``null`` is refused, not taken as the option left out."""
    try:
        value = parse_json("the value", text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error).replace("the value ", "", 1)) from None
    if value is None:
        raise argparse.ArgumentTypeError("null is no value to store: leave the option out for its default, {}")
    return value


def given(text: str) -> str:
    """An option's value that must say something: ``--task=`` from an unset shell variable is refused,
    not read as "every task" (a filter) or as no file at all."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value: give one")
    return text


def _whole(text: str) -> int:
    """``text`` as a whole number written with the digits 0-9 (Python's int() also takes other scripts'
    digits and underscores: ``٣``, ``1_000``)."""
    if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", text):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(text)


def positive_int(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def number(text: str) -> float:
    try:
        if not text.isascii() or "_" in text:  # float() also takes other scripts' digits and underscores
            raise ValueError(text)
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def duration(text: str) -> int:
    """An argument type: a span of time such as ``30m``, ``2h``, ``1d`` or ``1h30m``, in milliseconds
    (:func:`pytest_maf.values.parse_duration`)."""
    try:
        return parse_duration("", text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error).strip()) from None


def add_json(parser: argparse.ArgumentParser, *, also_before: bool = False) -> None:
    """``--json``: the result as JSON on stdout; a failure as ``{"error": ..., "exit_code": N}``.
    ``also_before``: an action's, whose command takes ``--json`` before the action too (absent here,
    the command's is kept, not reset)."""
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS if also_before else False,
        help='print the result as JSON for scripts (a failure: {"error": ..., "exit_code": N})',
    )


def prints_no_result(parser: argparse.ArgumentParser, why: str) -> None:
    """Say that ``parser``'s command has no ``--json``, and why (it serves, runs a command, ...)."""
    parser.set_defaults(prints_no_result=why)


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argument type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        value = _whole(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}, got {value}")
        return value

    return parse


MAX_LIMIT = 1_000_000
limit_number = whole_number(1, MAX_LIMIT)


def add_limit(parser: argparse.ArgumentParser, what: str, default: int | None = None) -> None:
    """``--limit N``: at most N of ``what`` (the newest first where time matters); read as ``args.limit``."""
    shown = "all" if default is None else str(default)
    parser.add_argument(
        "--limit", type=limit_number, default=default, metavar="N", help=f"at most N {what} (default: {shown})"
    )


def add_output(
    parser: argparse.ArgumentParser, help_text: str, *, required: bool = False,
    hidden_aliases: Sequence[str] = (), default_note: str | None = None,
) -> None:
    """``--output FILE`` (``args.output``); ``default_note`` says what happens without it."""
    if required:
        shown = f"{help_text} (required)"
    else:
        shown = help_text if default_note is None else f"{help_text} (default: {default_note})"
    # An alias cannot stand in for a required option in argparse: output_of checks it instead.
    parser.add_argument(
        "--output", dest="output", metavar="FILE", required=required and not hidden_aliases, help=shown
    )
    for alias in hidden_aliases:
        parser.add_argument(alias, dest="output", help=argparse.SUPPRESS)


def output_of(args: argparse.Namespace) -> str:
    """``--output`` (or a hidden alias of it) of a command that needs one; missing is a usage error."""
    output: str | None = getattr(args, "output", None)
    if output is None:
        raise UsageError("give --output FILE")
    return output




def add_agent(parser: argparse.ArgumentParser, help_text: str, *, hidden_aliases: Sequence[str] = ()) -> None:
    """``--agent ID`` (read by :func:`agent_of`, default MAF_AGENT_ID); aliases are accepted but not shown."""
    parser.add_argument("--agent", dest="agent", metavar="ID", help=f"{help_text} (default: {AGENT_VARIABLE})")
    for alias in hidden_aliases:
        parser.add_argument(alias, dest="agent", help=argparse.SUPPRESS)


Handler = Callable[[argparse.Namespace, Any], int]


def resolving_agent(handler: Handler, *, required: bool = True) -> Handler:
    """``handler`` with ``args.agent`` replaced by :func:`agent_of` (or :func:`optional_agent_of`) first."""

    def run(args: argparse.Namespace, settings: Any) -> int:
        args.agent = agent_of(args) if required else optional_agent_of(args)
        return handler(args, settings)

    return run


def said_beside(output: Path) -> contextlib.AbstractContextManager[Any]:
    """Around what a command says about the file it wrote: sent to standard error when that file is
    its standard output (``--html /dev/stdout | gzip``), so the file stays whole."""
    from pytest_maf.files import standard_stream

    return contextlib.redirect_stdout(sys.stderr) if standard_stream(output) == 1 else contextlib.nullcontext()


def print_json(value: Any) -> None:
    """``value`` as indented JSON; a control or direction character in a string is a ``\\u`` escape."""
    print(printable_json(value))


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Columns as wide as their widest cell (up to :data:`ALIGNED_WIDTH`); numbers right-aligned; control
    characters escaped."""
    for line in table_lines(header, rows):
        print(line)


ALIGNED_WIDTH = 60  # a longer cell overflows its column instead of widening every row to its length


def table_lines(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """:func:`print_table`'s lines: the header's first, then one per row."""
    shown = [[printable(cell) for cell in row] for row in rows]
    widths = [max([cells(name), *(min(cells(row[i]), ALIGNED_WIDTH) for row in shown)]) for i, name in enumerate(header)]
    numeric = [bool(rows) and all(isinstance(row[i], (int, float)) for row in rows) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:  # padded by the columns a value takes, not its characters
        return "  ".join(
            " " * (width - cells(value)) + value if right else value + " " * (width - cells(value))
            for value, width, right in zip(values, widths, numeric)
        ).rstrip()

    return [line(header), *(line(row) for row in shown)]


def when(epoch_ms: int) -> str:
    return iso_utc(epoch_ms, "seconds")


def open_configured_store(settings: Settings, *, deliver_queued_mail: bool = True) -> Store:
    """The configured store; first, agent-mail that earlier commands queued is delivered.

    A process that died between an operation's commit and its mail delivery
    left messages queued: the next command that opens the store delivers them
    (one indexed query when none is queued). One that still cannot be
    delivered stays queued, with a warning on stderr.
    """
    store = open_store_for(settings)
    if deliver_queued_mail:
        from pytest_maf.mail import deliver_pending

        try:
            warning = deliver_pending(store, settings.mail_root).warning()
        except (MafError, OSError) as error:
            warning = f"queued agent-mail was not delivered: {error}; the next maf command tries again"
        except BaseException:
            store.close()
            raise
        if warning:
            print(f"maf: warning: {printable(warning)}", file=sys.stderr)
    return store


def keep_runtime_files_out_of_git(settings: Settings) -> tuple[ExcludeReport | None, dict[str, Any] | None]:
    """For `maf setup` and `maf init`: the exclude report and its JSON; a failure only warns."""
    from pytest_maf.git_exclude import exclude_runtime_files

    try:
        report = exclude_runtime_files(settings)
    except (MafError, OSError) as error:
        print(f"maf: warning: could not keep the runtime files out of git: {error}", file=sys.stderr)
        return None, None
    if report is None:
        return None, None
    return report, {"file": str(report.exclude_file), "entries": report.entries, "added": report.added}
