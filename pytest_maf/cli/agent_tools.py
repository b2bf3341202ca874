"""`maf mcp`: the coordination tools for one agent, as an MCP server over stdio."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pytest_maf.cli.common import add_agent, agent_of, prints_no_result
from pytest_maf.config import Settings
from pytest_maf.errors import UsageError

MISSING_SDK = "maf mcp needs the MCP SDK: pip install 'pytest-maf[mcp]'"


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> int:
    agent = agent_of(args)  # refused before a word of the protocol is spoken
    try:
        from pytest_maf import mcp_server
    except ModuleNotFoundError:
        from importlib.util import find_spec

        if find_spec("mcp") is None:  # the SDK, or a module it brings (anyio), is not installed: the mcp extra
            raise UsageError(MISSING_SDK) from None
        raise
    from pytest_maf.agent_tools import AgentTools

    environ = dict(os.environ)
    if args.db is not None:  # the preflight subprocess uses the same store
        if settings.database_url is not None:
            environ.update(MAF_DATABASE_URL=settings.database_url, MAF_DATABASE_SCHEMA=settings.database_schema)
        else:
            environ["MAF_DB_PATH"] = str(settings.db_path)
    return mcp_server.serve(AgentTools(settings, agent, Path.cwd(), environ))


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mcp = commands.add_parser(
        "mcp", help="serve the coordination tools to one agent over MCP (stdio)",
        description="An MCP server on stdin and stdout that acts for one agent: tasks and leases,"
        " evidence, file reservations, agent-mail and escalation, status and the preflight, each"
        " the same operation as the maf command's. No tool takes an agent id. Paths are"
        " repository-relative. Needs the mcp extra: pip install 'pytest-maf[mcp]'.",
        epilog="example .mcp.json entry: {\"mcpServers\": {\"pytest-maf\": {\"command\": \"maf\","
        " \"args\": [\"mcp\"], \"env\": {\"MAF_AGENT_ID\": \"claude-1\"}}}} (or run"
        " `maf init --mcp claude,cursor,codex,gemini`)",
    )
    add_agent(mcp, "the agent the server acts for")
    prints_no_result(mcp, "it serves MCP on stdin and stdout")
    mcp.set_defaults(handler=cmd_mcp)
