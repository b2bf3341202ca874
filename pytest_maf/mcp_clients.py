"""The `pytest-maf` entry in each coding agent's MCP client file, for `maf init --mcp`.

Each client reads its servers from one file, at the paths the preflight's
``mcp.client[...]`` checks read (``preflight.mcp_clients``): JSON files with
an ``mcpServers`` object, and Codex's TOML with ``[mcp_servers.<name>]``
tables. The entry runs ``maf mcp`` with ``MAF_AGENT_ID`` in its environment.

A file is merged into, never clobbered: other servers and keys stay, an
existing ``pytest-maf`` entry is kept as it is (it may carry the agent's real
id), and a file that does not parse, or whose servers are not a table, is
refused before anything is written. TOML is only read by the standard
library, so the entry's table is appended as text and the whole file parsed
again: it is written only when the result is the old document plus the entry.

Example::

    plans = plan_client_files(repo_root, settings.mcp_clients, ["claude", "codex"])
    for plan in plans:
        plan.write()
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from pytest_maf.config import MCP_CLIENT_ALIASES
from pytest_maf.errors import UsageError
from pytest_maf.files import folder_outside, write_text_atomic

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older interpreters only
    import tomli as tomllib

SERVER_NAME = "pytest-maf"
COMMAND, ARGUMENTS = "maf", ["mcp"]
BARE_KEY_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def placeholder_agent_id(client: str) -> str:
    """The agent id an entry starts with, one per client, for the user to change: ``claude-1``."""
    return f"{client.split('-')[0]}-1"


def server_entry(agent_id: str) -> dict[str, Any]:
    return {"command": COMMAND, "args": list(ARGUMENTS), "env": {"MAF_AGENT_ID": agent_id}}


def client_names(text: str, known: Iterable[str]) -> list[str]:
    """``claude,codex`` as configured client names (``claude`` is ``claude-code``); unknown ones refused."""
    known = sorted(known)
    names = []
    for given in (part.strip() for part in text.split(",")):
        if not given:
            continue
        name = MCP_CLIENT_ALIASES.get(given, given)
        if name not in known:
            raise UsageError(f"--mcp: unknown MCP client {given!r}; clients are claude, {', '.join(known)}")
        names.append(name)
    if not names:
        raise UsageError(f"--mcp needs client names, such as claude,cursor,codex,gemini (known: {', '.join(known)})")
    return list(dict.fromkeys(names))


# TOML, written by hand: basic strings with every character TOML forbids escaped.

_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for character in text:
        if character in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[character])
        elif ord(character) < 0x20 or ord(character) == 0x7F:
            out.append(f"\\u{ord(character):04X}")
        else:
            out.append(character)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if key and set(key) <= BARE_KEY_CHARACTERS else toml_string(key)


def toml_value(value: Any) -> str:
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {type(value).__name__}")


def toml_table(path: Sequence[str], values: dict[str, Any]) -> str:
    """``[a.b]`` and one ``key = value`` line per item."""
    lines = [f"[{'.'.join(toml_key(part) for part in path)}]"]
    lines += [f"{toml_key(key)} = {toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


# Planning and writing.


@dataclass(frozen=True)
class ClientFilePlan:
    """What `maf init --mcp` does to one client's file: ``text`` is None when it is kept as it is."""

    client: str
    path: Path
    action: str  # created, added or kept
    agent_id: str | None  # the entry's MAF_AGENT_ID, when known
    text: str | None

    def write(self) -> None:
        if self.text is not None:
            write_text_atomic(self.path, self.text)


def _refuse(path: Path, why: str) -> UsageError:
    return UsageError(f"{path}: {why}; nothing was written (add the {SERVER_NAME} entry by hand, or fix the file)")


def _json_plan(client: str, path: Path, text: str | None) -> ClientFilePlan:
    agent_id = placeholder_agent_id(client)
    if text is None:
        document: Any = {"mcpServers": {SERVER_NAME: server_entry(agent_id)}}
        return ClientFilePlan(client, path, "created", agent_id, json.dumps(document, indent=2) + "\n")
    try:
        document = json.loads(text) if text.strip() else {}
    except (ValueError, RecursionError) as error:
        raise _refuse(path, f"does not parse as JSON ({error})") from None
    if not isinstance(document, dict):
        raise _refuse(path, "is not a JSON object")
    servers = document.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise _refuse(path, "its mcpServers is not an object")
    if SERVER_NAME in servers:
        return ClientFilePlan(client, path, "kept", _entry_agent(servers[SERVER_NAME]), None)
    servers[SERVER_NAME] = server_entry(agent_id)
    return ClientFilePlan(client, path, "added", agent_id, json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _toml_plan(client: str, path: Path, text: str | None) -> ClientFilePlan:
    agent_id = placeholder_agent_id(client)
    table = toml_table(["mcp_servers", SERVER_NAME], server_entry(agent_id))
    if text is None:
        return ClientFilePlan(client, path, "created", agent_id, table)
    try:
        document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as error:
        raise _refuse(path, f"does not parse as TOML ({error})") from None
    servers = document.get("mcp_servers", {})
    if not isinstance(servers, dict):
        raise _refuse(path, "its mcp_servers is not a table")
    if SERVER_NAME in servers:
        return ClientFilePlan(client, path, "kept", _entry_agent(servers[SERVER_NAME]), None)
    merged = text + ("" if not text or text.endswith("\n") else "\n") + ("\n" if text.strip() else "") + table
    expected = {**document, "mcp_servers": {**servers, SERVER_NAME: server_entry(agent_id)}}
    try:
        if tomllib.loads(merged) != expected:
            raise _refuse(path, f"appending [mcp_servers.{SERVER_NAME}] would change what the file says")
    except tomllib.TOMLDecodeError:  # mcp_servers written as an inline table cannot be extended
        raise _refuse(path, f"[mcp_servers.{SERVER_NAME}] cannot be appended to it") from None
    return ClientFilePlan(client, path, "added", agent_id, merged)


def _entry_agent(entry: Any) -> str | None:
    env = entry.get("env") if isinstance(entry, dict) else None
    agent = env.get("MAF_AGENT_ID") if isinstance(env, dict) else None
    return agent if isinstance(agent, str) else None


def plan_client_file(client: str, path: Path) -> ClientFilePlan:
    """What to write to ``client``'s file at ``path``; raises :class:`UsageError` rather than clobber it."""
    if path.is_symlink():
        raise _refuse(path, "is a symbolic link")
    if path.exists() and not path.is_file():
        raise _refuse(path, "is not a file")
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else None
    except UnicodeDecodeError:
        raise _refuse(path, "is not UTF-8 text") from None
    return _toml_plan(client, path, text) if path.suffix == ".toml" else _json_plan(client, path, text)


def plan_client_files(base: Path, configured: Iterable[tuple[str, str]], clients: Sequence[str]) -> list[ClientFilePlan]:
    """Every client's plan, each file checked before any is written (all or nothing)."""
    paths = dict(configured)
    for client in clients:
        outside = folder_outside(base / paths[client], base)
        if outside is not None:
            raise _refuse(base / paths[client], f"is in a folder that a symbolic link takes out of the repository, to {outside}")
    return [plan_client_file(client, base / paths[client]) for client in clients]
