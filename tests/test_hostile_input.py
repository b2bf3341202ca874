"""Hostile and careless input against every `maf` subcommand, through the installed command.

Each case gives one line on stderr with the documented exit code, never a
traceback, and on refusal leaves the database and the repository's files
byte for byte as they were. Every command runs with a deadline.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from workspace import Workspace

BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n" for previous, name in zip("abcdefgh", "bcdefghi")
)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under the repository (and its store) with a digest of its bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and ".git" not in path.relative_to(root).parts[:1]:
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def one_line_refusal(completed: subprocess.CompletedProcess[str], code: int) -> None:
    assert completed.returncode == code, (completed.returncode, completed.stdout, completed.stderr)
    assert "Traceback" not in completed.stderr + completed.stdout
    lines = [line for line in completed.stderr.splitlines() if line.startswith("maf")]
    assert len(lines) == 1, completed.stderr


Setup = Callable[[Workspace], None]


def nothing(workspace: Workspace) -> None:
    pass


def alias_bomb(workspace: Workspace) -> None:
    workspace.write(workspace.main, "maf-config/default.yaml", BILLION_LAUGHS)


# (id, set-up, argv, exit code, words the one line must contain)
CASES: list[tuple[str, Setup, list[str], int, str]] = [
    ("alias-bomb-validate", alias_bomb, ["config", "validate"], 2, "aliases"),
    ("alias-bomb-show", alias_bomb, ["config", "show"], 2, "aliases"),
    ("alias-bomb-guard", alias_bomb, ["guard"], 2, "aliases"),
    ("priority-past-int64", nothing, ["task", "add", "--priority", "100000000000000000000"], 2, "priority"),
    ("max-attempts-past-int64", nothing, ["task", "add", "--max-attempts", "100000000000000000000"], 2, "attempts"),
    ("payload-nan", nothing, ["task", "add", "--payload", "NaN"], 2, "NaN"),
    ("payload-infinity", nothing, ["task", "add", "--payload", '{"x": Infinity}'], 2, "Infinity"),
    ("payload-nested-60000", nothing, ["task", "add", "--payload", "[" * 60_000 + "]" * 60_000], 2, "nested"),  # one argument is at most 128 KiB
    ("claim-ttl-nan", nothing, ["task", "claim", "--agent", "a", "--ttl", "nan"], 2, "--ttl"),
    ("claim-ttl-huge", nothing, ["task", "claim", "--agent", "a", "--ttl", "1e308"], 2, "--ttl"),
    ("unknown-task", nothing, ["task", "show", "nope"], 2, "no task"),
    ("junit-over-the-store", nothing, ["evidence", "export", "--junit", ".maf/runtime.db"], 2, "must not overwrite"),
    ("junit-over-the-wal", nothing, ["evidence", "export", "--junit", ".maf/runtime.db-wal"], 2, "must not overwrite"),
    ("junit-into-a-directory", nothing, ["evidence", "export", "--junit", "src"], 2, "is a directory"),
    ("junit-empty-name", nothing, ["evidence", "export", "--junit", ""], 2, "give a file name"),
]


@pytest.mark.parametrize(
    ("setup", "argv", "code", "words"),
    [pytest.param(setup, argv, code, words, id=case_id) for case_id, setup, argv, code, words in CASES],
)
def test_hostile_input_is_one_line_and_changes_nothing(
    workspace: Workspace, setup: Setup, argv: list[str], code: int, words: str
) -> None:
    setup(workspace)
    before = snapshot(workspace.main)

    completed = workspace.maf(workspace.main, *argv, agent="alice", timeout=60)

    one_line_refusal(completed, code)
    assert words in completed.stdout + completed.stderr
    assert snapshot(workspace.main) == before


def test_a_corrupt_stored_row_is_reported_and_does_not_break_its_neighbours(workspace: Workspace) -> None:
    import json
    import sqlite3

    for task_id in ("good", "bad"):
        assert workspace.maf(workspace.main, "task", "add", "--id", task_id).returncode == 0
    with sqlite3.connect(workspace.main / ".maf" / "runtime.db") as connection:
        connection.execute("UPDATE tasks SET payload_json = '{not json' WHERE id = 'bad'")
        connection.execute("UPDATE events SET data_json = 'NaN]' WHERE task_id = 'bad'")

    listed = workspace.maf(workspace.main, "task", "list", "--json")
    shown = workspace.maf(workspace.main, "task", "show", "bad", "--json")

    assert listed.returncode == 0, listed.stderr
    assert sorted(task["id"] for task in json.loads(listed.stdout)) == ["bad", "good"]
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert "tasks.payload_json of task 'bad' is not valid JSON" in detail["task"]["payload"]["unreadable"]
    assert "events.data_json" in detail["events"][0]["data"]["unreadable"]
