"""The `maf` parser's own rules, applied once to the whole tree of subcommands.

Light on purpose (argparse, sys, the exit codes and terminal escapes): `maf --help`
imports it before any command's module (the git hooks' `maf guard` lines, parsed
by none, do not import it). The option helpers the
commands use (``add_json``, ``add_output``, ``add_limit``, ``add_agent``) are
in :mod:`pytest_maf.cli.common`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn, Sequence

from pytest_maf.cli import ParserError
from pytest_maf.cli.examples import EXAMPLES
from pytest_maf.errors import BAD_INPUT
from pytest_maf.terminal import printable, printable_json

# Options of the `maf` command itself, accepted before or after the subcommand.
GLOBAL_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--db",), {
        "metavar": "PATH|URL",
        "help": "runtime database file, or a postgresql:// URL"
        " (default: MAF_DATABASE_URL, MAF_DB_PATH or .maf/runtime.db)",
    }),
    (("--log-format",), {
        "choices": ("text", "json"), "help": "event lines on stderr (default: logging.format, text; level: LOG_LEVEL, default warning)",
    }),
    (("--debug",), {
        "action": "store_true", "help": "show the traceback of an internal error (default: MAF_DEBUG=1 shows it)",
    }),
)


class VersionAction(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("pytest-maf")
        except PackageNotFoundError:  # run from a source tree that was never installed
            installed = "unknown (not installed)"
        print(f"maf (pytest-maf) {installed}")
        parser.exit(0)


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """The top-level parser's own options: :data:`GLOBAL_OPTIONS` and ``--version``."""
    for names, settings in GLOBAL_OPTIONS:
        parser.add_argument(*names, **settings)
    parser.add_argument("--version", action=VersionAction, help="print the installed version and exit")


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """``parser``'s subcommands (each once, aliases left out), as (name, parser)."""
    found: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    found.append((name, sub))
    return found


class HelpPrinter:
    """The handler of a command group given without its action: its help on stdout, exit 0."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser

    def __call__(self, args: argparse.Namespace, settings: Any) -> int:
        self.parser.print_help()
        return 0


def is_command_group(parser: argparse.ArgumentParser) -> bool:
    """A group of commands (``maf task``), not a command that prints a result of its own."""
    return isinstance(parser.get_default("handler"), HelpPrinter)


class ExampleFormatter(argparse.HelpFormatter):
    """argparse's formatter, but the example at the end of a help is shown as written (not rewrapped),
    so that it can be copied whole."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example:\n"):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def apply_conventions(parser: argparse.ArgumentParser) -> None:
    """Once the whole tree is built: every subcommand also takes the global options
    (after it; what was given before it stays unless given again), a command shows its
    example (:data:`pytest_maf.cli.examples.EXAMPLES`) at the end of its help, and a command
    group given without its action prints its help on stdout (exit 0)."""
    for _, sub in subcommands(parser):
        example = EXAMPLES.get(sub.prog.removeprefix("maf "))
        if sub.epilog is None and example is not None:
            sub.epilog = f"example:\n  {example}"
            if sub.formatter_class is argparse.HelpFormatter:
                sub.formatter_class = ExampleFormatter
        group = sub.add_argument_group("global options (also accepted before the command)")
        for names, settings in GLOBAL_OPTIONS:
            group.add_argument(*names, **{**settings, "default": argparse.SUPPRESS})
        apply_conventions(sub)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.required = False
            if parser.get_default("handler") is None:
                parser.set_defaults(handler=HelpPrinter(parser), needs_settings=False)
    if parser.get_default("needs_settings") is None:  # not the group's False: its commands need settings
        parser.set_defaults(needs_settings=True)


PARSED_BY = "_maf_parsed_by"  # the innermost (sub)command parser that parsed, while parsing


class MafParser(argparse.ArgumentParser):
    """The `maf` parser: a usage error raises :class:`ParserError` (main prints it and exits 2),
    with the usage of the command it belongs to, as git does (`maf task list --frob` shows
    `maf task list`'s usage, not the top-level one). Options are taken only as spelled in full."""

    def __init__(self, *args: Any, **settings: Any) -> None:
        # An option is spelled in full: no prefix stands for it (`--for` is not `--force`).
        super().__init__(*args, **{"allow_abbrev": False, **settings})

    def error(self, message: str) -> NoReturn:
        raise ParserError(self, message)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if not hasattr(parsed, PARSED_BY):  # a subcommand's parser, run inside this one, set it first
            setattr(parsed, PARSED_BY, self)
        return parsed, extras

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        command: argparse.ArgumentParser = getattr(parsed, PARSED_BY, self)
        delattr(parsed, PARSED_BY)
        if extras:
            command.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def maf_parser(**settings: Any) -> argparse.ArgumentParser:
    """The top-level parser: a :class:`MafParser`, whose subcommands' parsers are MafParsers too."""
    return MafParser(**settings)


def report_usage_error(error: ParserError, *, as_json: bool) -> int:
    """As argparse says it (usage, then ``PROG: error: MESSAGE``), plus the JSON object when asked."""
    error.parser.print_usage(sys.stderr)
    print(f"{error.parser.prog}: error: {printable(error.message)}", file=sys.stderr)
    if as_json:
        print(printable_json({"error": error.message, "exit_code": BAD_INPUT}, indent=None))
    return BAD_INPUT
