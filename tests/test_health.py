"""The health functions behind the built-in checks and `maf health-check`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pytest_maf import health


@pytest.mark.parametrize(
    ("version", "safe"),
    [("3.6.23", True), ("3.7.0", False), ("3.40.1", False), ("3.44.5", False), ("3.44.6", True),
     ("3.45.0", False), ("3.50.6", False), ("3.50.7", True), ("3.51.2", False), ("3.51.3", True), ("3.52.0", True)],
)
def test_the_wal_reset_race_range_and_its_backports(version: str, safe: bool) -> None:
    assert health.sqlite_wal_reset_safe(version).ok is safe


def test_minimum_versions() -> None:
    assert health.python_at_least("3.8", (3, 11, 7)).ok
    assert not health.python_at_least("3.11", (3, 10, 14)).ok
    assert health.sqlite_at_least("3.35.0", "3.40.1").ok
    result = health.sqlite_at_least("3.35.0", "3.31.1")
    assert not result.ok and "3.31.1 is older than 3.35.0" in result.message


def test_missing_environment_variables_are_named_but_values_never_shown() -> None:
    result = health.environment_variables_present(["API_TOKEN", "HOME_DIR"], {"API_TOKEN": "s3cr3t-value"})
    assert not result.ok and "HOME_DIR" in result.message
    assert "s3cr3t-value" not in result.message + result.hint
    assert health.environment_variables_present(["API_TOKEN"], {"API_TOKEN": "s3cr3t-value"}).ok


def test_tool_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "fakenode"
    tool.write_text("#!/bin/sh\necho v18.16.2\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    assert not health.tool_version("fakenode", ">= 18.17").ok
    assert health.tool_version("fakenode", ">= 18.16").ok
    assert "not on PATH" in health.tool_version("no-such-tool-here", ">= 1").message


@pytest.mark.parametrize(
    ("name", "text", "required", "ok", "says"),
    [
        (".mcp.json", None, True, False, "is missing"),
        (".mcp.json", None, False, True, "not present"),
        (".mcp.json", "{not json", False, False, "does not parse"),
        (".mcp.json", '{"mcpServers": {}}', False, False, "defines no MCP servers"),
        (".mcp.json", '{"other": 1}', False, False, "defines no MCP servers"),
        (".mcp.json", '{"mcpServers": {"fs": {"args": []}}}', False, False, "without a command or url: fs"),
        (".mcp.json", '{"mcpServers": {"fs": {"command": "npx"}, "web": {"url": "http://localhost:1"}}}', False, True, "2 MCP server(s)"),
        ("config.toml", '[mcp_servers.fs]\ncommand = "npx"\n', False, True, "1 MCP server(s)"),
        ("config.toml", "[mcp_servers\n", False, False, "does not parse"),
        ("config.toml", '[other]\nx = 1\n', False, False, "add a mcp_servers table"),
    ],
)
def test_mcp_client_configuration_failures_are_distinct(
    tmp_path: Path, name: str, text: str | None, required: bool, ok: bool, says: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)

    result = health.mcp_client_config("client", path, required)

    assert result.ok is ok
    assert says in result.message + result.hint


def test_mail_root_checks(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    assert health.mail_root_writable(root).ok  # can be created
    assert not health.mail_root_initialised(root).ok
    (root / "messages").mkdir(parents=True)
    (root / "outbox").mkdir()
    assert health.mail_root_initialised(root).ok
    assert health.escalation_inboxes_creatable(root, ["codex-senior"]).ok
    assert not health.escalation_inboxes_creatable(root, ["../escape"]).ok

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert not health.mail_root_writable(blocker / "mail").ok


def test_disk_space(tmp_path: Path) -> None:
    assert health.free_disk_space(tmp_path / "x.db", 1).ok
    result = health.free_disk_space(tmp_path / "x.db", 10**12)
    assert not result.ok and "under the minimum" in result.message


def test_health_exit_codes() -> None:
    ok = health.HealthItem("a", health.CRITICAL, health.passed("fine"))
    warn = health.HealthItem("b", health.WARNING, health.failed("meh", "do x"))
    bad = health.HealthItem("c", health.CRITICAL, health.failed("broken", "do y"))
    assert [health.health_exit_code(items) for items in ([ok], [ok, warn], [ok, warn, bad])] == [0, 2, 1]


def test_a_store_another_session_holds_is_said_busy_not_sent_to_a_recovery(tmp_path: Path) -> None:
    import subprocess
    import sys

    from pytest_maf.store import open_store

    db = tmp_path / "runtime.db"
    open_store(db, create=True).close()
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sqlite3, sys, time
connection = sqlite3.connect({str(db)!r}, isolation_level=None)
connection.execute("PRAGMA locking_mode = EXCLUSIVE")
connection.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
sys.stdin.read()  # until the test lets go
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        found = health.database_schema(db)
    finally:
        holder.communicate(timeout=30)

    assert not found.ok and "database is locked" in found.message
    assert "MAF_BUSY_TIMEOUT" in found.hint and "recover" not in found.hint  # before: `maf db recover`, or a restore
