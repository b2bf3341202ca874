"""`maf guard`: the check the git hooks run on every commit and push.

Apart from `maf reservation ...` and light on purpose: the hooks' own command
lines (:data:`pytest_maf.cli.HOOK_COMMAND_LINES`) are answered without argparse
(:func:`hook_arguments`), and this module imports what the guard uses, no more.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

from pytest_maf import guard
from pytest_maf.cli.acting_agent import optional_agent_of
from pytest_maf.errors import UsageError
from pytest_maf.terminal import printable

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from pytest_maf.config import Settings

GUARD_PRINTS_NO_RESULT = "a git hook: its exit code is the answer"


def cmd_guard(args: argparse.Namespace | SimpleNamespace, settings: Settings) -> int:
    pushed = _pushed_refs() if args.pre_push else None
    verdict = guard.guard_verdict(settings, Path.cwd(), optional_agent_of(args), os.environ, pushed=pushed)
    if verdict.status == guard.BLOCKED:
        print(f"maf guard: {printable(verdict.summary)}")
        for line in verdict.details:  # paths and reasons are shown as stored, escapes escaped
            print(f"  {printable(line)}")
        print(guard.WAYS_OUT.format(what="push" if args.pre_push else "commit"))
    elif verdict.status == guard.OVERRIDDEN:
        print(f"maf guard: warning: {printable(verdict.summary)}", file=sys.stderr)
        for line in verdict.details:
            print(f"  {printable(line)}", file=sys.stderr)
        for warning in verdict.warnings:
            print(f"maf guard: warning: {printable(warning)}", file=sys.stderr)
    return verdict.exit_code


# A pre-push hook's standard input: a line of some 100 bytes per ref pushed.
MAX_PUSHED_BYTES = 64 * 1024 * 1024


def _pushed_refs() -> str:
    """A pre-push hook's standard input: the refs being pushed."""
    if sys.stdin is None:  # closed: the push is not known, so it is not let through
        raise UsageError("maf guard --pre-push reads the refs being pushed from standard input, which is closed")
    pushed = sys.stdin.read(MAX_PUSHED_BYTES + 1)
    if len(pushed) > MAX_PUSHED_BYTES:  # /dev/zero, say: not a push git describes, so it is not let through
        raise UsageError(
            f"maf guard --pre-push: more than {MAX_PUSHED_BYTES} bytes on standard input, which is not the"
            " list of refs git gives a pre-push hook"
        )
    return pushed


def hook_arguments(arguments: Sequence[str]) -> SimpleNamespace:
    """What the parser gives for one of :data:`pytest_maf.cli.HOOK_COMMAND_LINES`, made without
    building it: every commit runs one (``tests/test_cli_startup.py`` compares the two)."""
    return SimpleNamespace(
        db=None, log_format=None, debug=False, command="guard", handler=cmd_guard, needs_settings=True,
        agent=None, pre_push=list(arguments) == ["guard", "--pre-push"], prints_no_result=GUARD_PRINTS_NO_RESULT,
    )


def register_guard(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pytest_maf.cli.common import add_agent, prints_no_result

    guard_parser = commands.add_parser(
        "guard", help="block a commit touching files reserved by other agents",
        description="Check the staged paths (or, with --pre-push, the pushed commits' paths)"
        " against other agents' exclusive reservations. Exit 1 when blocked. No repository, no"
        " database at the default place (a link there to nothing fails closed), or nothing staged: exit 0. A named database that is"
        " missing or unreadable fails closed (exit 2). MAF_RESERVATION_OVERRIDE=true with"
        " MAF_OVERRIDE_REASON=\"why\" lets a blocked commit through: recorded, and each holder"
        " is told by agent-mail (no reason: exit 2).",
    )
    add_agent(guard_parser, "the committing agent")
    guard_parser.add_argument("--pre-push", action="store_true", help="read a pre-push hook's stdin")
    prints_no_result(guard_parser, GUARD_PRINTS_NO_RESULT)
    guard_parser.set_defaults(handler=cmd_guard)
