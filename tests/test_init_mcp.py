"""`maf init --mcp`: each client's MCP file gets a pytest-maf entry, merged in, never clobbered,
and the preflight's mcp.client checks pass for what it writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_maf.mcp_clients import toml_key, toml_string, toml_table
from workspace import Workspace

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older interpreters only
    import tomli as tomllib

CLAUDE_FILE = """\
{
  "mcpServers": {
    "github": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"], "env": {"TOKEN": "x"}},
    "docs": {"url": "https://docs.example/mcp"}
  },
  "theme": "dark"
}
"""
CODEX_FILE = """\
model = "o3"  # the model

[mcp_servers.github]
command = "npx"
args = ["-y", "@modelcontextprotocol/server-github"]
env = { TOKEN = "x" }

[profiles.fast]
model = "o4-mini"
"""
ENTRY = {"command": "maf", "args": ["mcp"]}


def ok(completed: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert completed.returncode == 0, (completed.stdout, completed.stderr)
    return completed


def test_entries_are_merged_into_existing_files_and_created_where_missing(workspace: Workspace) -> None:
    root = workspace.main
    workspace.write(root, ".mcp.json", CLAUDE_FILE)
    workspace.write(root, ".codex/config.toml", CODEX_FILE)

    done = ok(workspace.maf(root, "init", "--mcp", "claude,cursor,codex,gemini"))

    claude = json.loads((root / ".mcp.json").read_text(encoding="utf-8"))
    before = json.loads(CLAUDE_FILE)
    assert claude["theme"] == "dark"
    assert {name: claude["mcpServers"][name] for name in ("github", "docs")} == before["mcpServers"]
    assert claude["mcpServers"]["pytest-maf"] == {**ENTRY, "env": {"MAF_AGENT_ID": "claude-1"}}

    text = (root / ".codex/config.toml").read_text(encoding="utf-8")
    assert text.startswith(CODEX_FILE)  # the user's lines, comments and order, untouched
    codex = tomllib.loads(text)
    assert codex["model"] == "o3" and codex["profiles"] == {"fast": {"model": "o4-mini"}}
    assert codex["mcp_servers"]["github"]["env"] == {"TOKEN": "x"}
    assert codex["mcp_servers"]["pytest-maf"] == {**ENTRY, "env": {"MAF_AGENT_ID": "codex-1"}}

    for relative, agent in ((".cursor/mcp.json", "cursor-1"), (".gemini/settings.json", "gemini-1")):
        created = json.loads((root / relative).read_text(encoding="utf-8"))
        assert created == {"mcpServers": {"pytest-maf": {**ENTRY, "env": {"MAF_AGENT_ID": agent}}}}
    assert "change MAF_AGENT_ID" in done.stdout and "claude-1" in done.stdout

    preflight = workspace.pytest(root, "--maf-preflight", "-k", "mcp", agent="claude-1")
    assert preflight.returncode == 0, preflight.stdout + preflight.stderr
    assert "4 passed, 0 failed" in preflight.stdout


def test_running_it_again_keeps_each_entry_as_the_user_left_it(workspace: Workspace) -> None:
    root = workspace.main
    ok(workspace.maf(root, "init", "--mcp", "claude,codex"))
    claude = root / ".mcp.json"
    claude.write_text(claude.read_text(encoding="utf-8").replace("claude-1", "claude-review"), encoding="utf-8")
    codex = root / ".codex/config.toml"
    codex_text = codex.read_text(encoding="utf-8")

    again = ok(workspace.maf(root, "init", "--mcp", "claude-code,codex", "--json"))

    assert json.loads(claude.read_text(encoding="utf-8"))["mcpServers"]["pytest-maf"]["env"] == {
        "MAF_AGENT_ID": "claude-review"
    }
    assert codex.read_text(encoding="utf-8") == codex_text
    reported = {item["client"]: (item["action"], item["agent_id"]) for item in json.loads(again.stdout)["mcp"]}
    assert reported == {"claude-code": ("kept", "claude-review"), "codex": ("kept", "codex-1")}


@pytest.mark.parametrize(
    ("relative", "text"),
    [
        (".mcp.json", '{"mcpServers": {"github": {"command": "npx"},}}'),  # a trailing comma
        (".mcp.json", '{"mcpServers": ["github"]}'),
        (".codex/config.toml", "[mcp_servers.github\ncommand = 'npx'\n"),
        (".codex/config.toml", 'mcp_servers = { github = { command = "npx" } }\n'),  # inline: cannot grow
    ],
    ids=["json-syntax", "json-servers-not-an-object", "toml-syntax", "toml-inline-servers"],
)
def test_a_file_it_cannot_merge_into_is_refused_and_nothing_is_written(
    workspace: Workspace, relative: str, text: str
) -> None:
    root = workspace.main
    workspace.write(root, relative, text)

    refused = workspace.maf(root, "init", "--mcp", "gemini,claude,codex")

    assert refused.returncode == 2
    (line,) = refused.stderr.splitlines()
    assert relative in line and "nothing was written" in line
    assert (root / relative).read_text(encoding="utf-8") == text
    assert not (root / ".gemini").exists()
    assert not (root / ".agent-mail").exists() and not (root / "maf-config").exists()


@pytest.mark.parametrize("linked", [".cursor", ".codex", "maf-config"])
def test_a_folder_a_symbolic_link_takes_out_of_the_repository_is_refused_and_nothing_is_written(
    workspace: Workspace, tmp_path: Path, linked: str
) -> None:
    elsewhere = tmp_path / "home" / linked  # a user's own folder, as `.cursor -> ~/.cursor` committed to a repository
    elsewhere.mkdir(parents=True)
    (workspace.main / linked).symlink_to(elsewhere)

    refused = workspace.maf(workspace.main, "init", "--mcp", "cursor,codex")

    assert refused.returncode == 2
    (line,) = refused.stderr.splitlines()
    assert linked in line and str(elsewhere) in line and "nothing was written" in line
    assert list(elsewhere.iterdir()) == []  # before: mcp.json, config.toml or default.yaml written there
    assert not (workspace.main / ".agent-mail").exists()


@pytest.mark.parametrize("inside", [False, True], ids=["another-disk", "a-folder-of-the-repository"])
def test_a_runtime_folder_that_is_a_symbolic_link_is_kept_out_of_git(
    workspace: Workspace, tmp_path: Path, inside: bool
) -> None:
    fast = workspace.main / "build" / "maf" if inside else tmp_path / "fast-disk"
    fast.mkdir(parents=True)
    store = workspace.main / ".maf"
    for name in os.listdir(store):
        shutil.move(store / name, fast / name)
    store.rmdir()
    store.symlink_to(fast)  # the store on another disk

    ok(workspace.maf(workspace.main, "setup"))

    status = subprocess.run(["git", "status", "--short"], cwd=workspace.main, capture_output=True, text=True, timeout=60)
    assert ".maf" not in status.stdout and "build" not in status.stdout  # before: '?? .maf', ready to be committed


def test_an_unknown_client_is_bad_input(workspace: Workspace) -> None:
    refused = workspace.maf(workspace.main, "init", "--mcp", "claude,vscode")
    assert refused.returncode == 2
    assert "unknown MCP client 'vscode'" in refused.stderr
    assert not (workspace.main / ".mcp.json").exists()


@given(st.text())
def test_any_string_written_as_toml_reads_back_the_same(text: str) -> None:
    assert tomllib.loads(f"value = {toml_string(text)}\n")["value"] == text


@given(st.text(min_size=1), st.dictionaries(st.text(min_size=1), st.text() | st.lists(st.text()), max_size=3))
def test_a_table_written_as_toml_reads_back_the_same(name: str, values: dict[str, object]) -> None:
    document = tomllib.loads(toml_table(["mcp_servers", name], values))
    assert document == {"mcp_servers": {name: values}}
    assert toml_key("pytest-maf") == "pytest-maf"
