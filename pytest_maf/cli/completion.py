"""`maf completion bash|zsh`: a shell completion script generated from the parser (shtab)."""

from __future__ import annotations

import argparse
from typing import Any

from pytest_maf.cli.common import prints_no_result
from pytest_maf.cli.conventions import subcommands
from pytest_maf.config import Settings
from pytest_maf.extras import import_extra

SHELLS = ("bash", "zsh")
# Options and positionals that name a file or a folder (by their metavar): completed as paths.
PATH_METAVARS = frozenset({"FILE", "PATH", "PATH|URL", "DIR", "FOLDER"})


def _prepare(parser: argparse.ArgumentParser, files: Any) -> None:
    """Through the whole tree (built for this script alone): every action that takes a path is
    marked for shtab's file completion, and each command is described by its one-line help
    (shtab would show a paragraph-long description in zsh's menu)."""
    for action in parser._actions:
        if action.metavar in PATH_METAVARS:
            action.complete = files  # type: ignore[attr-defined]  # shtab reads this attribute
    for _, sub in subcommands(parser):
        sub.description = None
        _prepare(sub, files)


def completion_script(shell: str) -> str:
    """The ``shell`` completion script of the whole `maf` command."""
    shtab = import_extra("shtab", "completion", "maf completion")
    from pytest_maf.cli import ALL, build_parser

    parser = build_parser(load=ALL)
    _prepare(parser, shtab.FILE)
    return str(shtab.complete(parser, shell=shell))


def cmd_completion(args: argparse.Namespace, settings: Settings | None) -> int:
    print(completion_script(args.shell), end="")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    completion = commands.add_parser(
        "completion", help="print a bash or zsh completion script for maf",
        description="Print the completion script of SHELL, generated from maf's own parser: every"
        " command, option and choice, and file names where a command takes a file. Needs the"
        " completion extra: pip install 'pytest-maf[completion]'.",
        epilog="bash: maf completion bash > ~/.maf-completion.bash, sourced from ~/.bashrc;"
        " zsh: maf completion zsh > ~/.zfunc/_maf, with fpath=(~/.zfunc $fpath) before compinit"
        " in ~/.zshrc (then start a new shell)",
    )
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL", help=f"one of: {', '.join(SHELLS)}")
    prints_no_result(completion, "its output is the script itself")
    completion.set_defaults(handler=cmd_completion, needs_settings=False)
