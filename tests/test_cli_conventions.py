"""One consistent command line: every `maf` subcommand, walked from the parser.

The rules (see pytest_maf/cli/common.py and conventions.py): an option with a default says it in
its help; a command that prints a result takes --json, or says why not; the
same option names everywhere; the global options work before or after the
command; with --json a failure is also a JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
from importlib.metadata import version
from pathlib import Path
from typing import Iterator

import pytest

from cli_run import run, scratch_folder
from pytest_maf.cli import build_parser
from pytest_maf.cli.conventions import GLOBAL_OPTIONS, is_command_group, subcommands
from pytest_maf.cli.examples import EXAMPLES
from pytest_maf.errors import INTERRUPTED
from workspace import Workspace

# Spellings that mean an option another command already names: use the one way (or keep it hidden).
OTHER_SPELLINGS = {
    "--agent-id": "--agent", "--agent_id": "--agent", "--from-agent": "--agent",
    "--out": "--output", "--output-file": "--output", "--junit": "--output", "-o": "--output",
    "--db-path": "--db", "--database-url": "--db",
    "--as-json": "--json", "--format-json": "--json",
    "--max": "--limit", "--count": "--limit", "--last": "--limit", "--max-rows": "--limit", "-n": "--limit",
}


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("maf",)) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser below ``maf`` (groups and commands), as ("maf task list", parser)."""
    for name, sub in subcommands(parser):
        yield " ".join((*path, name)), sub
        yield from commands(sub, (*path, name))


ALL = sorted(commands(build_parser()))


def test_the_walk_sees_every_command() -> None:
    names = {name for name, _ in ALL}
    assert {"maf task list", "maf evidence list", "maf mail list", "maf db backup", "maf escalate resolve"} <= names
    assert len(names) > 40


def shown_help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    return (action.help or "") % {"default": action.default, "prog": parser.prog}


@pytest.mark.parametrize("name,parser", ALL, ids=[name for name, _ in ALL])
def test_every_option_with_a_default_says_it(name: str, parser: argparse.ArgumentParser) -> None:
    silent = [
        action.option_strings for action in parser._actions
        if action.option_strings and action.help != argparse.SUPPRESS
        and action.default not in (None, False, argparse.SUPPRESS)
        and "default" not in shown_help(action, parser)
    ]
    assert not silent, f"{name}: the help of {silent} does not say the default"


@pytest.mark.parametrize("name,parser", ALL, ids=[name for name, _ in ALL])
def test_every_shown_option_says_what_it_does(name: str, parser: argparse.ArgumentParser) -> None:
    unexplained = [
        action.option_strings for action in parser._actions
        if action.option_strings and action.help != argparse.SUPPRESS and not (action.help or "").strip()
    ]
    assert not unexplained, f"{name}: {unexplained} have no help"


@pytest.mark.parametrize("name,parser", ALL, ids=[name for name, _ in ALL])
def test_every_command_that_prints_a_result_takes_json(name: str, parser: argparse.ArgumentParser) -> None:
    if is_command_group(parser):
        return
    options = {option for action in parser._actions for option in action.option_strings}
    exempt = parser.get_default("prints_no_result")
    if exempt is not None:
        assert "--json" not in options and exempt.strip(), f"{name}: says it prints no result, so no --json"
        return
    assert "--json" in options, f"{name} has no --json: add_json(parser), or prints_no_result(parser, why)"


@pytest.mark.parametrize("name,parser", ALL, ids=[name for name, _ in ALL])
def test_options_are_spelled_the_one_way(name: str, parser: argparse.ArgumentParser) -> None:
    shown = {option for action in parser._actions if action.help != argparse.SUPPRESS for option in action.option_strings}
    assert not {option: OTHER_SPELLINGS[option] for option in shown & OTHER_SPELLINGS.keys()}
    for action in parser._actions:
        if "--limit" in action.option_strings:
            assert action.dest == "limit" and action.metavar == "N", f"{name}: --limit is common.add_limit's"
        if "--output" in action.option_strings:
            assert action.dest == "output" and action.metavar == "FILE", f"{name}: --output is common.add_output's"
    assert {names[0] for names, _ in GLOBAL_OPTIONS} <= {option for action in parser._actions for option in action.option_strings}


# Options whose value differs in kind between commands, on purpose: a reservation's --ttl is in minutes.
METAVAR_MAY_DIFFER = {"--ttl"}


def test_an_option_takes_the_same_kind_of_value_everywhere() -> None:
    metavars: dict[str, set[str]] = {}
    for _, parser in ALL:
        for action in parser._actions:
            if action.help != argparse.SUPPRESS and action.nargs != 0:
                for option in action.option_strings:
                    metavars.setdefault(option, set()).add(str(action.metavar or action.dest.upper()))
    differing = {option: sorted(seen) for option, seen in metavars.items() if len(seen) > 1}
    assert differing.keys() <= METAVAR_MAY_DIFFER, differing


# Behaviour, as a user meets it.


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return scratch_folder(tmp_path, monkeypatch)


def test_global_options_work_after_the_command_too(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    store = str(tmp_path / "elsewhere.db")
    assert run(capsys, "setup", "--db", store)[0] == 0
    assert run(capsys, "task", "add", "--id", "t1", "--db", store)[0] == 0

    listings = [
        run(capsys, *argv)
        for argv in (
            ("--db", store, "task", "list", "--json"),
            ("task", "list", "--json", "--db", store),
            ("task", "--db", store, "list", "--json"),
            ("--db", "ignored.db", "task", "list", "--db", store, "--json"),  # the later one wins
        )
    ]
    assert [code for code, _, _ in listings] == [0, 0, 0, 0], listings
    assert {out for _, out, _ in listings} == {listings[0][1]}
    assert [task["id"] for task in json.loads(listings[0][1])] == ["t1"]
    assert not (tmp_path / ".maf").exists() and not (tmp_path / "ignored.db").exists()


def test_debug_after_the_command_is_the_global_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "task", "list", "--debug", "--log-format", "json", "--db", "missing.db")
    assert code == 2 and "no runtime database" in err and out == ""


def test_a_failure_with_json_is_a_json_object_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "setup")[0] == 0
    code, out, err = run(capsys, "task", "claim", "--agent", "a1", "--json")

    assert code == 3
    assert json.loads(out) == {"error": json.loads(out)["error"], "exit_code": 3}
    assert "READY" in json.loads(out)["error"]
    assert err.count("\n") == 1 and err.startswith("maf: error: ")

    code, out, err = run(capsys, "task", "claim", "--agent", "a1")  # without --json stdout stays empty
    assert (code, out) == (3, "")


def test_a_usage_error_with_json_is_a_json_object_too(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "task", "list", "--json", "--state")
    assert code == 2
    assert json.loads(out) == {"error": "argument --state: expected one argument", "exit_code": 2}
    assert "maf task list: error: argument --state: expected one argument" in err

    code, out, err = run(capsys, "task", "list", "--state")
    assert (code, out) == (2, "") and "error: argument --state" in err


@pytest.mark.parametrize(
    "argv, command",
    [
        (["task", "list", "--frob"], "maf task list"),
        (["reservation", "acquire", "src/", "--bogus", "--json"], "maf reservation acquire"),
        (["db", "backup", "--output", "copy.db", "extra"], "maf db backup"),
        (["--frob"], "maf"),
    ],
    ids=["option", "nested-option-json", "positional", "top-level"],
)
def test_an_unknown_argument_shows_the_usage_of_its_own_command(
    capsys: pytest.CaptureFixture[str], argv: list[str], command: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    usage, *_, line = err.splitlines()
    assert usage.startswith(f"usage: {command} [-h]")  # as git shows `git commit`'s usage, not git's
    assert line == f"{command}: error: unrecognized arguments: {argv[-2] if argv[-1] == '--json' else argv[-1]}"
    assert out == ("" if "--json" not in argv else '{"error": "unrecognized arguments: --bogus", "exit_code": 2}\n')


def test_a_direction_character_in_an_error_is_shown_escaped_and_parses_back(capsys: pytest.CaptureFixture[str]) -> None:
    name = "backup\u202egz.db"  # a right-to-left override would show the name reversed on a terminal
    code, out, err = run(capsys, "db", "verify-backup", name, "--json")
    assert code == 2
    assert err == "maf: error: no such file: backup\\u202egz.db\n"
    assert "\u202e" not in out and json.loads(out) == {"error": f"no such file: {name}", "exit_code": 2}

    code, out, err = run(capsys, "task", "list", "\u202e", "--json")  # a usage error
    assert code == 2 and "\u202e" not in err + out
    assert json.loads(out) == {"error": "unrecognized arguments: \u202e", "exit_code": 2}


def test_json_after_a_double_dash_is_not_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "task", "run", "nope", "--agent", "a1", "--", "echo", "--json")
    assert code == 2 and out == ""


def test_version_bare_maf_and_a_bare_group(workspace: Workspace) -> None:
    shown = workspace.maf(workspace.main, "--version")
    assert (shown.returncode, shown.stdout.strip()) == (0, f"maf (pytest-maf) {version('pytest-maf')}")

    bare = workspace.maf(workspace.main)
    assert bare.returncode == 0 and bare.stdout.startswith("usage: maf") and "COMMAND" in bare.stdout
    assert bare.stderr == ""

    group = workspace.maf(workspace.main, "task")
    assert group.returncode == 0 and group.stdout.startswith("usage: maf task") and group.stderr == ""
    assert "claim" in group.stdout and "global options" in group.stdout


def test_the_commands_given_json_print_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    def as_json(*argv: str) -> object:
        code, out, err = run(capsys, *argv, "--json")
        assert code == 0, (argv, err)
        return json.loads(out)

    as_json("setup")
    as_json("task", "add", "--id", "t1")
    cancelled = as_json("task", "cancel", "t1")
    assert isinstance(cancelled, dict) and (cancelled["id"], cancelled["state"]) == ("t1", "DEAD")
    exported = as_json("evidence", "export", "--output", "evidence.xml")
    assert exported == {"output": "evidence.xml", "rows": 0} and (tmp_path / "evidence.xml").is_file()
    assert as_json("evidence", "export", "--junit", "old.xml") == {"output": "old.xml", "rows": 0}  # the old spelling

    sent = as_json("mail", "send", "--from", "a1", "--to", "b2", "--subject", "hi", "--body", "there")
    assert isinstance(sent, dict) and sent["subject"] == "hi"
    assert as_json("mail", "show", sent["id"]) == sent
    acknowledged = as_json("mail", "ack", sent["id"], "--agent", "b2")
    assert isinstance(acknowledged, dict) and acknowledged["read_at"]

    assert as_json("config", "validate") == {"valid": True, "problems": [], "files": [], "notes": []}
    backup = as_json("db", "backup", "--output", "copy.db")
    assert isinstance(backup, dict) and Path(backup["path"]).resolve() == tmp_path.resolve() / "copy.db" and backup["rows"]["tasks"] == 1
    assert as_json("db", "verify-backup", "copy.db") == {"file": "copy.db", "ok": True, "problems": [], "rows": backup["rows"]}
    optimized = as_json("db", "optimize")
    assert isinstance(optimized, dict) and "ANALYZE" in " ".join(optimized["done"]).upper()


def test_a_required_output_given_by_neither_spelling_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "setup")[0] == 0
    code, out, err = run(capsys, "evidence", "export", "--json")
    assert code == 2 and json.loads(out)["error"] == "give --output FILE" and err == "maf: error: give --output FILE\n"


@pytest.mark.parametrize(
    "argv, says",
    [
        (["task", "list", "--log-format", "xml"], "maf task list: error: argument --log-format: invalid choice: 'xml'"),
        (["task", "list", "--db"], "maf task list: error: argument --db: expected one argument"),
        (["task", "list", "--db", "a\x1b[2Jb"], "maf: error: invalid configuration: command line: runtime.db_path:"),
    ],
    ids=["bad-log-format", "db-without-value", "db-with-escape"],
)
def test_a_bad_global_option_after_the_command_is_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    (line,) = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]
    assert line.startswith(says) and "\x1b" not in err



COMMANDS_ONLY = [(name, parser) for name, parser in ALL if not is_command_group(parser)]


@pytest.mark.parametrize("name,parser", COMMANDS_ONLY, ids=[name for name, _ in COMMANDS_ONLY])
def test_every_commands_help_ends_with_an_example(name: str, parser: argparse.ArgumentParser) -> None:
    shown = parser.format_help()
    epilog = shown.rsplit("  --debug", 1)[-1]  # what follows the last option: the epilog
    assert "maf " in epilog, f"`{name} --help` shows no example"


@pytest.mark.parametrize("command,example", sorted(EXAMPLES.items()))
def test_each_example_in_the_help_parses(command: str, example: str) -> None:
    import shlex

    words = shlex.split(example.split(" #", 1)[0].split(" > ", 1)[0])
    assert words[: 1 + command.count(" ") + 1] == ["maf", *command.split()], example
    try:
        build_parser().parse_args(words[1:])
    except Exception as refused:  # the parser's ParserError: the example went stale
        raise AssertionError(f"`maf {command} --help`: its example {example!r} does not parse: {refused}") from None
    assert f"example:\n  {example}\n" in dict(ALL)[f"maf {command}"].format_help()  # shown as written, unwrapped


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_as_the_command_loads_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    import pytest_maf.cli as cli

    def interrupted(arguments: list[str]) -> argparse.Namespace:
        raise KeyboardInterrupt  # as Ctrl-C lands while the command's modules are imported

    monkeypatch.setattr(cli, "parse", interrupted)
    code = cli.main(["task", "list", *(["--json"] if as_json else [])])

    out, err = capsys.readouterr()
    assert code == INTERRUPTED  # before: a traceback ending in KeyboardInterrupt
    assert "maf: interrupted" in err and "Traceback" not in err
    if as_json:
        assert json.loads(out)["exit_code"] == INTERRUPTED


@pytest.mark.parametrize("option", ["--agent", "--json", "--config"])
def test_a_command_option_before_the_command_says_where_it_goes(capsys: pytest.CaptureFixture[str], option: str) -> None:
    import pytest_maf.cli as cli

    with pytest.raises(SystemExit) as exited:
        cli.main([option, "x", "task", "list"])

    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert f"{option} is not an option of maf itself" in err  # before: "argument COMMAND: invalid choice: 'x'"
    assert "invalid choice" not in err
