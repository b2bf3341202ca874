"""Log files an operator can keep: JSON lines with service and version, rotation, event names the README lists."""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, get_args

import pytest

import pytest_maf
from pytest_maf import logs
from pytest_maf.tasks import Action
from tests.workspace import Workspace

REQUIRED = ("timestamp", "level", "service", "version", "event")
ROOT = Path(__file__).resolve().parents[1]


def lines_of(*paths: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in paths for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def restore_logger() -> Iterator[None]:
    """``logs.configure`` replaces the package logger's handlers: put the library's quiet default back."""
    yield
    for handler in list(logs.LOGGER.handlers):
        logs.LOGGER.removeHandler(handler)
        handler.close()
    logs.LOGGER.addHandler(logging.NullHandler())
    logs.LOGGER.setLevel(logging.NOTSET)


def test_commands_append_json_lines_with_service_version_and_context(workspace: Workspace) -> None:
    main = workspace.main
    workspace.maf(main, "task", "add", "--id", "t1")

    claimed = workspace.maf(main, "task", "claim", agent="claude-1", MAF_LOG_FILE="logs/maf.log")
    started = workspace.maf(main, "task", "start", "t1", "--attempt", "1", agent="claude-1", MAF_LOG_FILE="logs/maf.log")

    assert claimed.returncode == started.returncode == 0, claimed.stderr + started.stderr
    assert claimed.stderr == ""  # stderr keeps its own level (warning); the file takes info and above
    claim, start = lines_of(main / "logs" / "maf.log")
    for line in (claim, start):
        assert all(field in line for field in REQUIRED)
        assert (line["service"], line["version"], line["level"]) == ("pytest-maf", pytest_maf.__version__, "info")
    assert (claim["event"], claim["task_id"], claim["agent_id"], claim["attempt"]) == ("claim", "t1", "claude-1", 1)
    assert (start["event"], start["to"]) == ("start", "RUNNING")


def test_an_escalation_keeps_the_log_level_and_names_its_own_level_apart(workspace: Workspace) -> None:
    secret = "tok-9f8e7d6c5b4a"
    args = ("escalate", "--agent-id", "claude-1", "--bead-id", "bd-1", "--target", "codex-senior")

    for context in ("first", f"again, the API rejected {secret}"):
        result = workspace.maf(workspace.main, *args, "--error-context", context, MAF_LOG_FILE="maf.log",
                               MAF_REQUIRED_ENV="API_TOKEN", API_TOKEN=secret)
        assert result.returncode == 0, result.stderr

    text = (workspace.main / "maf.log").read_text(encoding="utf-8")
    opened, raised = lines_of(workspace.main / "maf.log")
    assert (opened["event"], opened["level"], opened["escalation_level"]) == ("escalation_open", "info", 1)
    assert (raised["event"], raised["level"], raised["escalation_level"]) == ("escalation_raise", "info", 2)
    assert secret not in text and raised["error_context"] == "again, the API rejected ***"


def test_the_file_rotates_before_it_passes_the_configured_size(tmp_path: Path, restore_logger: None) -> None:
    log_file = tmp_path / "logs" / "maf.log"
    logs.configure("warning", "text", [], stream=sys.stderr, log_file=logs.LogFile(log_file, "info", 1024, 2))

    for number in range(200):
        logs.log_event("claim", task_id=f"task-{number:03d}", agent_id="claude-1", attempt=1)

    rotated = [log_file, Path(f"{log_file}.1"), Path(f"{log_file}.2")]
    assert all(path.is_file() for path in rotated) and not Path(f"{log_file}.3").exists()
    assert all(0 < path.stat().st_size <= 1024 for path in rotated)
    kept = lines_of(*reversed(rotated))  # oldest first
    assert [line["task_id"] for line in kept] == [f"task-{n:03d}" for n in range(200 - len(kept), 200)]


def test_the_configured_size_reaches_the_file_of_a_real_command(workspace: Workspace) -> None:
    log_file = workspace.main / "logs" / "maf.log"
    log_file.parent.mkdir()
    earlier = json.dumps({"event": "earlier", "padding": "x" * 900}) + "\n"
    log_file.write_text(earlier)
    workspace.maf(workspace.main, "task", "add", "--id", "t1")

    result = workspace.maf(workspace.main, "task", "claim", agent="claude-1", MAF_LOG_FILE="logs/maf.log",
                           MAF_LOG_MAX_BYTES="1024", MAF_LOG_BACKUP_COUNT="1")

    assert result.returncode == 0, result.stderr
    assert Path(f"{log_file}.1").read_text() == earlier  # the claim's line would have passed 1024 bytes
    assert [line["event"] for line in lines_of(log_file)] == ["claim"]


WRITER = """
import sys
from pathlib import Path
from pytest_maf import logs
logs.configure("warning", "text", [], log_file=logs.LogFile(Path(sys.argv[1]), "info", 4096, 100))
for number in range(400):
    logs.log_event("claim", task_id=f"{sys.argv[2]}-{number}", agent_id=sys.argv[2], attempt=1)
"""


def test_processes_sharing_a_file_lose_no_line_across_rotations(tmp_path: Path) -> None:
    log_file = tmp_path / "maf.log"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(log_file), name]) for name in ("a", "b")]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]

    files = [log_file, *sorted(tmp_path.glob("maf.log.[0-9]*"))]
    assert len(files) > 10 and all(path.stat().st_size <= 4096 for path in files)
    written = {line["task_id"] for line in lines_of(*files)}  # every line parses: none interleaved
    assert written == {f"{name}-{n}" for name in ("a", "b") for n in range(400)}


@pytest.mark.parametrize(("db_path", "log_file", "expected"), [
    (".maf/runtime.db", ".maf/runtime.db-wal", "which this command must not overwrite"),
    (".maf/runtime.db", ".maf/runtime.db", "which this command must not overwrite"),
    (".maf/maf.log.1", ".maf/maf.log", "maf.log would overwrite"),  # FILE.1 is the store
    (".maf/runtime.db", "maf-config/default.yaml", "holds the configuration"),  # lines appended broke every command
    (".maf/runtime.db", "maf-config/local.json", "holds the configuration"),  # a new layer of JSON lines
    (".maf/runtime.db", ".env", "which this command must not overwrite"),
    (".maf/runtime.db", ".git/HEAD", "is in git's own folder"),  # lines appended: git no longer knew HEAD
], ids=["wal", "database", "rotated-name", "config-file", "new-config-layer", "dotenv", "git-head"])
def test_a_log_file_that_names_the_store_is_refused(workspace: Workspace, db_path: str, log_file: str, expected: str) -> None:
    result = workspace.maf(workspace.main, "task", "add", "--id", "t1", MAF_DB_PATH=db_path, MAF_LOG_FILE=log_file)

    assert result.returncode == 2
    assert result.stderr.startswith("maf: error: invalid configuration: environment: logging.file: ")
    assert expected in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (workspace.main / ".maf" / "maf.log.1").exists()
    assert "t1" not in workspace.maf(workspace.main, "task", "list").stdout


def test_a_log_file_that_cannot_be_written_warns_once_and_the_command_goes_on(workspace: Workspace) -> None:
    (workspace.main / "blocker").write_text("a file where the log folder would be\n")
    workspace.maf(workspace.main, "task", "add", "--id", "t1")

    result = workspace.maf(workspace.main, "task", "claim", agent="claude-1", MAF_LOG_FILE="blocker/maf.log")

    assert result.returncode == 0 and "t1" in result.stdout
    (warning,) = result.stderr.splitlines()
    assert warning.startswith("maf: warning: cannot write the log file ") and "blocker/maf.log" in warning


@pytest.mark.parametrize("log_file", ["app.db", "backup.db"])
def test_a_log_file_that_holds_binary_data_is_left_as_it_was_and_the_command_goes_on(
    workspace: Workspace, log_file: str
) -> None:
    import sqlite3

    workspace.maf(workspace.main, "db", "backup", "--output", "backup.db")
    with sqlite3.connect(workspace.main / "app.db") as application:  # another application's database
        application.execute("CREATE TABLE customers (name TEXT)")
    workspace.maf(workspace.main, "task", "add", "--id", "t1")
    before = (workspace.main / log_file).read_bytes()

    result = workspace.maf(workspace.main, "task", "claim", agent="claude-1", MAF_LOG_FILE=log_file)

    assert result.returncode == 0 and "t1" in result.stdout
    (warning,) = result.stderr.splitlines()
    assert warning.startswith("maf: warning: cannot write the log file ") and "binary data" in warning
    # before: JSON lines appended to the database and a lock file left beside it
    assert (workspace.main / log_file).read_bytes() == before
    assert not (workspace.main / f"{log_file}.lock").exists()
    status = subprocess.run(["git", "status", "--short"], cwd=workspace.main, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr


def test_a_log_file_that_is_a_fifo_without_reader_warns_and_the_command_goes_on(workspace: Workspace) -> None:
    fifo = workspace.main / "maf.pipe"
    os.mkfifo(fifo)
    workspace.maf(workspace.main, "task", "add", "--id", "t1")

    result = workspace.maf(workspace.main, "task", "claim", agent="claude-1", MAF_LOG_FILE=str(fifo))

    assert result.returncode == 0 and "t1" in result.stdout
    (warning,) = result.stderr.splitlines()
    assert warning.startswith("maf: warning: cannot write the log file ") and "maf.pipe" in warning
    assert not (workspace.main / "maf.pipe.lock").exists()


def _events_in_code() -> set[str]:
    """Every event name a ``log_event(...)`` call in pytest_maf can pass."""
    found: set[str] = set()
    for module in (ROOT / "pytest_maf").rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "log_event"):
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant):
                found.add(first.value)
            elif isinstance(first, ast.IfExp) and isinstance(first.body, ast.Constant) and isinstance(first.orelse, ast.Constant):
                found |= {first.body.value, first.orelse.value}
            else:  # the task state machine logs each move by its action's name
                assert module.name == "tasks.py" and ast.unparse(first) == "action", f"{module}: {ast.unparse(node)}"
                found |= set(get_args(Action))
    return found


def test_the_readme_lists_every_event_name_the_code_logs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("\n### Logs\n") :]
    table = re.search(r"\| event \| level \| context \|\n\|[-|]+\|\n((?:\|.*\n)+)", section)
    assert table is not None
    listed = {name for row in table.group(1).splitlines() for name in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    assert listed == _events_in_code()


@pytest.mark.parametrize(("variable", "value", "problem"), [
    ("MAF_LOG_MAX_BYTES", "100", "logging.max_bytes: must be at least 1024, got 100"),
    ("MAF_LOG_MAX_BYTES", "2000000000", "logging.max_bytes: must be at most 1073741824"),
    ("MAF_LOG_BACKUP_COUNT", "0", "logging.backup_count: must be above 0, got 0"),
    ("MAF_LOG_FILE_LEVEL", "loud", "logging.file_level: unknown level 'loud'"),
    ("MAF_LOG_FILE", "logs/\x1b[2Jmaf.log", "logging.file: expected a file path without control characters"),
])
def test_log_settings_out_of_bounds_are_refused(tmp_path: Path, variable: str, value: str, problem: str) -> None:
    from pytest_maf.config import ConfigError, load_settings

    with pytest.raises(ConfigError) as raised:
        load_settings(environ={variable: value}, cwd=tmp_path)

    (message,) = raised.value.problems
    assert message.startswith(f"environment: {problem}")
