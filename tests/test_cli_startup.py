"""`maf` imports only what the chosen command needs: the guard runs in every
commit's hook, and `maf --help` should not load the whole package.

These assert the import graph (which modules a real `maf` process loaded),
not a time: the time is measured by benchmarks/guard.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_maf import cli, reservations
from pytest_maf.store import open_store, setup_store
from tests.workspace import GIT_IDENTITY, git, isolated_env

# Libraries and modules that no `maf guard` needs: the test runner, optional
# extras, and the other commands' implementations.
NOT_FOR_THE_GUARD = (
    "pytest", "_pytest", "sqlite_utils", "yaml", "prometheus_client", "psycopg", "psycopg2", "mcp",
    "dataclasses", "inspect",  # pytest_maf.light_dataclass makes the classes on its path
    "logging",  # imported by the first event written: none at the default level
    "pytest_maf.plugin", "pytest_maf.verification", "pytest_maf.health", "pytest_maf.git_hooks",
    "pytest_maf.tasks", "pytest_maf.escalation", "pytest_maf.metrics", "pytest_maf.loadtest",
    "pytest_maf.store.maintenance", "pytest_maf.store.export", "pytest_maf.store.postgres",
    *(f"pytest_maf.cli.{module}" for (module, _) in cli.COMMANDS if module != "guard"),
)
# The git hooks' own command lines are answered without a parser, and no module on their path
# imports typing at run time (its names are for the type checker: `if TYPE_CHECKING:`). git runs
# through os.posix_spawnp; threading is for the store's checkpoints, random for a busy store's
# retries, copy for nothing the guard does.
NOT_FOR_THE_HOOKS = (
    "argparse", "typing", "pytest_maf.cli.conventions", "pytest_maf.cli.common",
    "subprocess", "threading", "random", "copy",
)
RECORD_MODULES = (
    "import atexit, json, sys\n"
    "atexit.register(lambda: open(sys.argv[1], 'w').write(json.dumps(sorted(sys.modules))))\n"
    "from pytest_maf.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


def run_maf_recording_modules(
    cwd: Path, home: Path, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `maf ARGS` as a new process; return it and the modules it had imported when it exited."""
    record = home / "modules.json"
    completed = subprocess.run(
        [sys.executable, "-c", RECORD_MODULES, str(record), *args],
        cwd=cwd, capture_output=True, text=True, env=isolated_env(home, env), timeout=120,
    )
    return completed, set(json.loads(record.read_text()))


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (or their submodules) are among ``modules``."""
    return sorted(m for m in modules if any(m == name or m.startswith(name + ".") for name in names))


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_command_table_names_every_registered_command_with_its_help() -> None:
    full = cli.build_parser(load=cli.ALL)
    lazy = cli.build_parser(load=None)
    assert list(subcommands(lazy)) == list(subcommands(full))
    assert lazy.format_help() == full.format_help()


@pytest.mark.parametrize("command", [name for names in cli.COMMANDS.values() for name in names])
def test_choosing_a_command_registers_it_in_full(command: str) -> None:
    full = subcommands(cli.build_parser(load=cli.ALL))[command]
    chosen = subcommands(cli.build_parser(load=command))[command]
    assert chosen.format_help() == full.format_help()


@pytest.mark.parametrize("arguments", cli.HOOK_COMMAND_LINES, ids=" ".join)
def test_the_hooks_command_lines_give_what_the_parser_gives(arguments: list[str]) -> None:
    assert vars(cli.parse(arguments)) == vars(cli.build_parser(load="guard").parse_args(arguments))


def test_maf_help_lists_every_command_and_imports_none(tmp_path: Path) -> None:
    completed, modules = run_maf_recording_modules(tmp_path, tmp_path, "--help")
    assert completed.returncode == 0, completed.stderr
    for names in cli.COMMANDS.values():
        for name, help_text in names.items():
            assert f"    {name} " in completed.stdout
            assert help_text.split()[0] in completed.stdout
    assert loaded(modules, tuple(f"pytest_maf.cli.{module}" for (module, _) in cli.COMMANDS)) == []
    assert loaded(modules, ("pytest_maf.store", "pytest_maf.config", "pytest")) == []


def test_a_command_s_help_and_errors_come_from_its_own_parser(tmp_path: Path) -> None:
    completed, _ = run_maf_recording_modules(tmp_path, tmp_path, "guard", "--help")
    assert completed.returncode == 0
    assert completed.stdout.startswith("usage: maf guard [-h] [--agent ID] [--pre-push]")
    completed, _ = run_maf_recording_modules(tmp_path, tmp_path, "guard", "--no-such-option")
    assert completed.returncode == 2
    assert "unrecognized arguments: --no-such-option" in completed.stderr
    completed, _ = run_maf_recording_modules(tmp_path, tmp_path, "no-such-command")
    assert completed.returncode == 2
    assert "invalid choice: 'no-such-command'" in completed.stderr


def test_the_guard_blocks_without_importing_what_it_does_not_use(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**isolated_env(tmp_path), **GIT_IDENTITY}
    git(repo, "init", "-q", env=env)
    (repo / "src").mkdir()
    (repo / "src" / "app.py").write_text("x = 1\n")
    git(repo, "add", "src/app.py", env=env)
    setup_store(repo / ".maf" / "runtime.db")
    with open_store(repo / ".maf" / "runtime.db") as store:
        reservations.acquire(store, ["src/**"], "agent-a", 60_000)

    completed, modules = run_maf_recording_modules(repo, tmp_path, "guard", MAF_AGENT_ID="agent-b")

    assert completed.returncode == 1, completed.stderr
    assert "src/app.py: agent-a holds src/**" in completed.stdout
    assert "pytest_maf.guard" in modules and "pytest_maf.store.sqlite" in modules
    assert loaded(modules, NOT_FOR_THE_GUARD) == []
    assert loaded(modules, NOT_FOR_THE_HOOKS) == []

    # Options before the command: the command is found by a first pass, with the same result.
    completed, modules = run_maf_recording_modules(
        repo, tmp_path, "--db", str(repo / ".maf" / "runtime.db"), "--log-format", "json", "guard",
        MAF_AGENT_ID="agent-b",
    )
    assert completed.returncode == 1, completed.stderr
    assert "src/app.py: agent-a holds src/**" in completed.stdout
    assert loaded(modules, NOT_FOR_THE_GUARD) == []
