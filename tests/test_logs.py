"""Structured logs: JSON lines with the event and its ids, and no secret values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def maf(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAF_") and k != "LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "pytest_maf", *args], cwd=cwd, capture_output=True, text=True,
        env={**clean, "PYTHONPATH": os.pathsep.join(sys.path), **env},
    )


def test_json_lines_carry_event_task_and_agent(tmp_path: Path) -> None:
    maf(tmp_path, "setup")
    maf(tmp_path, "task", "add", "--id", "t1")

    result = maf(tmp_path, "--log-format", "json", "task", "claim", "--agent", "claude-1", LOG_LEVEL="info")

    (line,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert line["event"] == "claim" and line["level"] == "info"
    assert (line["task_id"], line["agent_id"], line["attempt"]) == ("t1", "claude-1", 1)
    assert line["timestamp"].endswith("+00:00")


def test_the_default_level_keeps_ordinary_commands_quiet(tmp_path: Path) -> None:
    maf(tmp_path, "setup")
    maf(tmp_path, "task", "add", "--id", "t1")
    assert maf(tmp_path, "task", "claim", "--agent", "claude-1").stderr == ""


def test_required_environment_values_never_appear(tmp_path: Path) -> None:
    maf(tmp_path, "setup")
    secret = "tok-9f8e7d6c5b4a"

    result = maf(
        tmp_path, "--log-format", "json", "escalate", "--agent-id", "claude-1", "--bead-id", "bd-1",
        "--target", "codex-senior", "--error-context", f"the API rejected {secret}",
        LOG_LEVEL="debug", MAF_REQUIRED_ENV="API_TOKEN", API_TOKEN=secret,
    )

    assert result.returncode == 0, result.stderr
    assert secret not in result.stderr
    (line,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert line["event"] == "escalation_open" and line["error_context"] == "the API rejected ***"
