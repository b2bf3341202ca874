"""`maf mcp`: real server processes, one per agent, driven through the MCP SDK's stdio client
in a scratch repository with two worktrees."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, TypeVar

import pytest

from pytest_maf.agent_tools import error_kind, preflight_summary
from pytest_maf.errors import LeaseLostError, MafError, UsageError
from pytest_maf.reservations import NotHolderError
from workspace import DEADLINE_S, Workspace, maf_command

pytest.importorskip("mcp", reason="maf mcp needs the mcp extra")

from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402
from mcp.types import CallToolResult  # noqa: E402

from pytest_maf.mcp_server import TOOLS  # noqa: E402

STEP_S = 30  # one request, or one server's start-up
T = TypeVar("T")


def bounded(awaitable: Awaitable[T], seconds: float = STEP_S) -> Awaitable[T]:
    return asyncio.wait_for(awaitable, seconds)


def run(scenario: Awaitable[None]) -> None:
    """Run a scenario to its end, or fail at the deadline."""
    asyncio.run(asyncio.wait_for(scenario, DEADLINE_S))  # type: ignore[arg-type]


class Agent:
    """One `maf mcp` process acting for one agent, and its client session."""

    def __init__(self, name: str, session: ClientSession) -> None:
        self.name = name
        self.session = session

    async def call(self, tool: str, **arguments: Any) -> CallToolResult:
        return await bounded(self.session.call_tool(tool, arguments))

    async def ok(self, tool: str, **arguments: Any) -> Any:
        result = await self.call(tool, **arguments)
        assert not result.is_error, result.content
        return result.structured_content

    async def refused(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result = await self.call(tool, **arguments)
        assert result.is_error, result.structured_content
        return refusal(result)


def refusal(result: CallToolResult) -> dict[str, Any]:
    """The refusal's kind and message, checked to be what its text says."""
    error = dict(result.structured_content["error"])
    text = result.content[0].text  # type: ignore[union-attr]
    assert text.splitlines()[0] == f"{error['kind']}: {error['message']}"
    return error


def server_parameters(workspace: Workspace, cwd: Path, agent: str | None, *args: str) -> StdioServerParameters:
    command = maf_command()
    return StdioServerParameters(
        command=command[0], args=[*command[1:], "mcp", *args], env=workspace.env(agent), cwd=str(cwd)
    )


@asynccontextmanager
async def serving(workspace: Workspace, cwd: Path, agent: str) -> AsyncIterator[Agent]:
    with open(workspace.home / f"mcp-{agent}.log", "w", encoding="utf-8") as errlog:
        async with stdio_client(server_parameters(workspace, cwd, agent), errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await bounded(session.initialize())
                yield Agent(agent, session)


def ok(completed: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert completed.returncode == 0, (completed.stdout, completed.stderr)
    return completed


def cli_json(workspace: Workspace, *args: str) -> Any:
    return json.loads(ok(workspace.maf(workspace.main, *args, "--json")).stdout)


# The tools an agent sees.


def test_every_tool_is_listed_and_none_takes_an_agent_id(workspace: Workspace) -> None:
    async def scenario() -> None:
        async with serving(workspace, workspace.main, "claude-1") as agent:
            listed = (await bounded(agent.session.list_tools())).tools
            resources = (await bounded(agent.session.list_resources())).resources

        assert [tool.name for tool in listed] == [name for name, _ in TOOLS]
        for tool in listed:
            names = set(tool.input_schema.get("properties", {}))
            assert not any("agent" in name for name in names), (tool.name, names)
            assert tool.input_schema.get("additionalProperties") is False
            assert tool.description
        assert {str(resource.uri) for resource in resources} == {"maf://inbox", "maf://reservations"}

    run(scenario())


@pytest.mark.slow
def test_an_argument_naming_another_agent_is_refused_and_nothing_is_recorded(workspace: Workspace) -> None:
    async def scenario() -> None:
        async with serving(workspace, workspace.main, "claude-1") as agent:
            for extra in ({"agent": "mallory"}, {"agent_id": "mallory"}):
                error = await agent.refused("reservation_acquire", patterns=["docs/**"], **extra)
                assert error["kind"] == "bad_input"
                assert "claude-1" in error["message"]
            assert cli_json(workspace, "reservation", "list") == []

            ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-1"))
            error = await agent.refused("task_claim", task_id="fix-1", agent="mallory")
            assert error["kind"] == "bad_input"
            assert cli_json(workspace, "task", "show", "fix-1")["lease"] is None

            await agent.ok("reservation_acquire", patterns=["docs/**"])
            await agent.ok("task_claim", task_id="fix-1")

        (held,) = cli_json(workspace, "reservation", "list")
        assert (held["agent_id"], held["pattern"]) == ("claude-1", "docs/**")
        assert cli_json(workspace, "task", "show", "fix-1")["lease"]["agent_id"] == "claude-1"

    run(scenario())


@pytest.mark.slow
def test_a_path_outside_the_work_tree_or_beyond_a_link_is_refused_as_the_command_line_refuses_it(workspace: Workspace) -> None:
    async def scenario() -> None:
        async with serving(workspace, workspace.main, "claude-1") as agent:
            outside = str(workspace.second / "src" / "app")  # another worktree's file: not this one's src/app
            for tool, argument in (("reservation_acquire", "patterns"), ("reservation_check", "paths")):
                error = await agent.refused(tool, **{argument: [outside]})
                assert error["kind"] == "bad_input" and "is outside the work tree" in error["message"]
                nul = await agent.refused(tool, **{argument: ["/src/a\x00b"]})  # never reaches the file system
                assert nul["kind"] == "bad_input" and "control characters" in nul["message"]
            inside = await agent.ok("reservation_acquire", patterns=[str(workspace.main / "src" / "app")])
            assert [r["pattern"] for r in inside["granted"]] == ["src/app"]
            (workspace.main / "appl").symlink_to("src/app")
            for tool, argument in (("reservation_acquire", "patterns"), ("reservation_check", "paths")):
                beyond = await agent.refused(tool, **{argument: ["appl/models.py"]})
                assert beyond["kind"] == "bad_input" and "beyond a symbolic link" in beyond["message"]
                assert beyond["message"].endswith("give appl, or the path it leads to, src/app/models.py")

    run(scenario())


@pytest.mark.slow
def test_arguments_of_the_wrong_shape_and_an_unknown_tool_are_refusals_of_kind_bad_input(workspace: Workspace) -> None:
    async def scenario() -> None:
        async with serving(workspace, workspace.main, "claude-1") as agent:
            for tool, arguments, said in (
                ("task_renew", {"task_id": "t1"}, "task_renew: attempt: a value is required"),
                ("task_claim", {"task_id": 123}, "task_claim: task_id: "),
                ("reservation_acquire", {"patterns": "src/**"}, "reservation_acquire: patterns: "),
                # not coerced (before: attempt 1, and shared false)
                ("task_renew", {"task_id": "t1", "attempt": True}, "attempt: expected integer, got boolean true"),
                ("task_renew", {"task_id": "t1", "attempt": "1"}, 'attempt: expected integer, got string "1"'),
                ("task_renew", {"task_id": "t1", "attempt": 1.5}, "attempt: expected integer, got number 1.5"),
                ("reservation_acquire", {"patterns": ["src/**"], "shared": "no"}, "shared: expected boolean, got string"),
                # in the tool's words (before: --ttl, --force needs --reason, --error-context)
                ("task_renew", {"task_id": "t1", "attempt": 1, "ttl_seconds": 0}, "ttl_seconds must be above 0 seconds"),
                ("reservation_release", {"patterns": ["src/**"], "force": True}, "force needs reason: the holders"),
                ("escalate", {"bead_id": "b1", "error_context": " ", "target": "codex-senior"}, "error_context must say"),
                ("no_such_tool", {}, "there is no tool 'no_such_tool'; the tools are task_claim, "),
            ):
                error = await agent.refused(tool, **arguments)
                assert error["kind"] == "bad_input" and said in error["message"], error
                assert "pydantic" not in error["message"] and " --" not in error["message"]
        assert cli_json(workspace, "reservation", "list") == []

    run(scenario())


def test_the_server_refuses_to_start_without_an_agent_id(workspace: Workspace) -> None:
    for agent in (None, "", "team/alice"):
        extra = {} if agent is None else {"MAF_AGENT_ID": agent}
        completed = workspace.maf(workspace.main, "mcp", timeout=STEP_S, **extra)
        assert completed.returncode == 2, completed
        assert completed.stdout == ""  # not a word of the protocol
        (line,) = completed.stderr.splitlines()
        assert line.startswith("maf: error: ")
        assert ("--agent" in line) if not agent else ("agent id 'team/alice'" in line)


@pytest.mark.parametrize("missing", [["mcp"], ["anyio", "mcp"]])  # before, without anyio: an internal error, exit 70
def test_without_the_sdk_maf_mcp_says_what_to_install(workspace: Workspace, missing: list[str]) -> None:
    hidden = "; ".join(f"sys.modules[{name!r}] = None" for name in missing)
    hide_sdk = f"import sys; {hidden}; from pytest_maf.cli import main; sys.exit(main(['mcp']))"
    completed = subprocess.run(
        [sys.executable, "-c", hide_sdk], cwd=workspace.main, env=workspace.env("claude-1"),
        capture_output=True, text=True, timeout=STEP_S,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    (line,) = completed.stderr.splitlines()
    assert "pip install 'pytest-maf[mcp]'" in line


# Two agents at once.


@pytest.mark.slow
def test_two_agents_race_and_exactly_one_wins_each_reservation_and_task(workspace: Workspace) -> None:
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-7"))
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-8"))

    async def scenario() -> None:
        async with serving(workspace, workspace.main, "alice") as alice, \
                serving(workspace, workspace.second, "bob") as bob:
            results = await asyncio.gather(
                alice.call("reservation_acquire", patterns=["src/**"], reason="refactor"),
                bob.call("reservation_acquire", patterns=["src/app/models.py"]),
            )
            outcomes = dict(zip((alice, bob), results))
            (winner,) = [agent for agent, result in outcomes.items() if not result.is_error]
            (loser,) = [agent for agent, result in outcomes.items() if result.is_error]
            lost = refusal(outcomes[loser])
            assert lost["kind"] == "conflict" and lost["exit_code"] == 1
            (conflict,) = lost["conflicts"]
            assert conflict["holder"] == winner.name
            assert conflict["example_path"] == "src/app/models.py"
            assert conflict["expires_at"] > 0
            text = outcomes[loser].content[0].text  # type: ignore[union-attr]
            assert f"{winner.name} holds {conflict['holder_pattern']} (exclusive) until " in text

            claims = await asyncio.gather(alice.call("task_claim", task_id="fix-7"), bob.call("task_claim", task_id="fix-7"))
            assert sorted(claim.is_error for claim in claims) == [False, True]
            won = next(claim.structured_content for claim in claims if not claim.is_error)
            assert refusal(next(claim for claim in claims if claim.is_error))["kind"] == "illegal_transition"

            nexts = await asyncio.gather(alice.call("task_claim"), bob.call("task_claim"))
            assert sorted(claim.is_error for claim in nexts) == [False, True]
            assert refusal(next(claim for claim in nexts if claim.is_error))["kind"] == "nothing_to_claim"

        reservations = cli_json(workspace, "reservation", "list")
        assert [r["agent_id"] for r in reservations] == [winner.name]
        assert cli_json(workspace, "task", "show", "fix-7")["lease"]["agent_id"] == won["agent_id"]

    run(scenario())


@pytest.mark.slow
def test_a_stale_attempt_is_refused_with_the_commands_lease_lost_error(workspace: Workspace) -> None:
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-9"))

    async def scenario() -> None:
        async with serving(workspace, workspace.main, "alice") as alice, \
                serving(workspace, workspace.second, "bob") as bob:
            first = await alice.ok("task_claim")
            await alice.ok("task_release", task_id="fix-9", attempt=first["attempt"])
            second = await bob.ok("task_claim", task_id="fix-9")
            assert (first["attempt"], second["attempt"]) == (1, 2)

            for tool, extra in (("task_start", {}), ("task_renew", {}),
                                ("evidence_record", {"verifier": "unit", "result": "PASS"})):
                error = await alice.refused(tool, task_id="fix-9", attempt=1, **extra)
                assert (error["kind"], error["exit_code"]) == ("lease_lost", 4)

            error = await alice.refused("task_start", task_id="fix-9", attempt=1)
            by_command = workspace.maf(workspace.main, "task", "start", "fix-9", "--attempt", "1", agent="alice")
            assert by_command.returncode == 4
            said = by_command.stderr.strip().replace("`maf task claim`", "task_claim")  # the tool, not the command
            assert said == f"maf: error: {error['message']}"
            await bob.ok("task_start", task_id="fix-9", attempt=2)

    run(scenario())


@pytest.mark.slow
def test_mail_sent_by_one_agent_is_listed_and_acknowledged_by_the_other(workspace: Workspace) -> None:
    async def scenario() -> None:
        async with serving(workspace, workspace.main, "alice") as alice, \
                serving(workspace, workspace.second, "bob") as bob:
            sent = await alice.ok("mail_send", to="bob", subject="api", body="I take src/api; tell me if you need it")
            assert (await alice.ok("mail_list"))["messages"] == []

            inbox = await bob.ok("mail_list")
            assert inbox["unread"] == 1
            (message,) = inbox["messages"]
            assert (message["id"], message["from"], message["subject"]) == (sent["id"], "alice", "api")
            assert (await bob.ok("mail_show", message_id=sent["id"]))["body"].startswith("I take src/api")

            assert (await alice.refused("mail_ack", message_id=sent["id"]))["kind"] == "not_found"
            acknowledged = await bob.ok("mail_ack", message_id=sent["id"])
            assert acknowledged["read_at"] > 0
            later = await alice.ok("mail_send", to="bob", subject="done", body="src/api is free")

            inbox = await bob.ok("mail_list")
            assert inbox["unread"] == 1
            assert [m["id"] for m in inbox["messages"]] == [later["id"], sent["id"]]  # unread first
            read = await bob.session.read_resource("maf://inbox")
            assert json.loads(read.contents[0].text)["unread"] == 1  # type: ignore[union-attr]

    run(scenario())


def test_a_whole_task_through_the_tools_releases_its_reservations_and_is_done(workspace: Workspace) -> None:
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-42"))

    async def scenario() -> None:
        async with serving(workspace, workspace.second, "claude-1") as agent:
            claim = await agent.ok("task_claim")
            task, attempt = claim["task_id"], claim["attempt"]
            granted = await agent.ok("reservation_acquire", patterns=[str(workspace.second / "src/app")], task_id=task)
            assert [(r["pattern"], r["task_id"]) for r in granted["granted"]] == [("src/app", task)]
            status = await agent.ok("status")
            assert status["tasks_by_state"]["LEASED"] == 1
            assert [(lease["task_id"], lease["mine"]) for lease in status["leases"]] == [(task, True)]
            assert [r["pattern"] for r in status["reservations"]] == ["src/app"]
            assert (await agent.ok("reservation_check", paths=["src/app/models.py"]))["ok"] is True

            await agent.ok("task_start", task_id=task, attempt=attempt)
            await agent.ok("task_verify", task_id=task, attempt=attempt)
            await agent.ok("evidence_record", task_id=task, attempt=attempt, verifier="unit", result="PASS",
                           details={"passed": 3})
            finished = await agent.ok("task_finish", task_id=task, attempt=attempt)
            assert (finished["verdict"], finished["final_state"]) == ("COMMITTED", "DONE")
            assert (await agent.ok("reservation_list"))["reservations"] == []
            shown = await agent.ok("task_show", task_id=task)
            assert [row["result"] for row in shown["evidence"]] == ["PASS"]

    run(scenario())


@pytest.mark.slow
def test_reservation_check_names_the_holder_of_a_blocked_path(workspace: Workspace) -> None:
    async def scenario() -> None:
        async with serving(workspace, workspace.main, "alice") as alice, \
                serving(workspace, workspace.second, "bob") as bob:
            await alice.ok("reservation_acquire", patterns=["docs"], reason="rewrite")
            checked = await bob.ok("reservation_check", paths=["docs/api.md", "README.md"])
            assert checked["ok"] is False
            assert [(b["path"], b["holder"], b["pattern"]) for b in checked["blocked"]] == [("docs/api.md", "alice", "docs")]
            assert checked["free"] == ["README.md"]
            folder = await bob.ok("reservation_check", paths=["docs"])  # a folder: before, free
            assert [(b["path"], b["pattern"], b["example_path"]) for b in folder["blocked"]] == [("docs/", "docs", "docs/a")]
            for root in ("/", ".", "docs/.."):  # before: "path '' is empty or contains NUL", of what was not sent
                error = await bob.refused("reservation_check", paths=[root])
                assert error["message"] == f"path {root!r} names the repository root itself, not a file"
            assert (await bob.refused("reservation_release", patterns=["docs"]))["kind"] == "not_holder"
            forced = await bob.ok("reservation_release", patterns=["docs"], force=True, reason="alice is stuck")
            assert [r["agent_id"] for r in forced["released"]] == ["alice"]
            (notice,) = (await alice.ok("mail_list"))["messages"]
            assert notice["type"] == "RESERVATION_FORCE_RELEASED"

    run(scenario())


def test_escalate_dry_run_writes_nothing_and_escalate_tells_the_target(workspace: Workspace) -> None:
    async def scenario() -> None:
        async with serving(workspace, workspace.main, "alice") as alice:
            dry = await alice.ok("escalate", bead_id="bd-1", error_context="tests hang", target="codex-senior",
                                 dry_run=True)
            assert dry["dry_run"] is True and dry["message"]["to"] == "codex-senior"
            assert (await alice.ok("status"))["open_escalations"] == []
            assert cli_json(workspace, "mail", "list", "--agent", "codex-senior") == []
            done = await alice.ok("escalate", bead_id="bd-1", error_context="tests hang", target="codex-senior")
            assert (done["level"], done["raised"], done["undelivered"]) == (1, False, [])
            (request,) = cli_json(workspace, "mail", "list", "--agent", "codex-senior")
            assert (request["type"], request["from"], request["id"]) == ("ESCALATION_REQUEST", "alice", done["message"]["id"])
            (open_one,) = (await alice.ok("status"))["open_escalations"]
            assert open_one["id"] == done["escalation_id"]
            unknown = await alice.refused("escalate", bead_id="bd-1", error_context="x", target="nobody")
            assert unknown["kind"] == "bad_input" and "unknown escalation target" in unknown["message"]

    run(scenario())


@pytest.mark.slow
def test_preflight_runs_as_the_servers_agent_and_reports_each_failure(workspace: Workspace) -> None:
    workspace.write(workspace.main, ".cursor/mcp.json", "{not json")

    async def scenario() -> None:
        async with serving(workspace, workspace.second, "claude-1") as agent:
            report = await agent.ok("preflight")
        assert report["ok"] is False and report["exit_code"] == 1
        assert "task task-" in report["summary"]
        failed = {failure["check"]: failure["message"] for failure in report["failures"]}
        assert failed["mcp.client[cursor]"].startswith("cursor: ")
        assert "does not parse" in failed["mcp.client[cursor]"]
        assert report["verdict"].endswith(")") and "ROLLBACK" in report["verdict"]

    run(scenario())
    tasks = cli_json(workspace, "task", "list", "--all")
    (preflight,) = [task for task in tasks if task["kind"] == "preflight"]
    assert cli_json(workspace, "task", "show", preflight["id"])["events"][1]["data"]["agent"] == "claude-1"


# The pure parts.


def test_each_refusal_is_named_by_one_table() -> None:
    assert error_kind(LeaseLostError("x")) == "lease_lost"
    assert error_kind(NotHolderError("x")) == "not_holder"
    assert error_kind(UsageError("x")) == "bad_input"

    class Other(MafError):
        exit_code = 1

    assert error_kind(Other("x")) == "refused"


def test_the_preflight_section_is_read_into_its_parts() -> None:
    stdout = """\
collected 4 items
...
================================ maf preflight =================================
3 passed, 1 failed, 0 warning(s); task task-1 attempt 1
FAIL mcp.client[cursor]: cursor: .cursor/mcp.json does not parse: Expecting value; fix its syntax
WARN mail.root-initialised: mail root lacks messages/; run `maf init` to lay it out
task task-1: ROLLBACK -> DEAD (1 of 4 verifiers failed: mcp.client[cursor])
maf: a note
=========================== short test summary info ============================
FAILED checks/test_mcp.py::test_mcp_client_configuration[cursor] - Failed
"""
    summary = preflight_summary(stdout)
    assert summary["summary"] == "3 passed, 1 failed, 0 warning(s); task task-1 attempt 1"
    assert summary["failures"] == [{"check": "mcp.client[cursor]", "message":
                                    "cursor: .cursor/mcp.json does not parse: Expecting value; fix its syntax"}]
    assert [w["check"] for w in summary["warnings"]] == ["mail.root-initialised"]
    assert summary["verdict"].startswith("task task-1: ROLLBACK -> DEAD")
    assert summary["notes"] == ["a note"]
    assert "output" not in summary

    broken = preflight_summary("", "ERROR: usage: pytest [options]\npytest: error: unrecognized arguments")
    assert broken["summary"] is None and broken["output"][-1].endswith("unrecognized arguments")


# How the server ends.

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}


def started(workspace: Workspace, agent: str) -> subprocess.Popen[bytes]:
    """`maf mcp` for ``agent``, initialized, its stdin held open."""
    server = subprocess.Popen(
        [*maf_command(), "mcp"], cwd=workspace.main, env=workspace.env(agent),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
    server.stdin.flush()
    answer = asyncio.run(asyncio.wait_for(asyncio.to_thread(server.stdout.readline), STEP_S))
    assert json.loads(answer)["id"] == 1
    server.stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
    server.stdin.flush()
    return server


@pytest.mark.parametrize(("signum", "code", "said"), [(15, 143, "maf: terminated\n"), (2, 130, "maf: interrupted\n")])
def test_a_signal_ends_the_server_at_once_though_the_client_holds_stdin_open(
    workspace: Workspace, signum: int, code: int, said: str
) -> None:
    server = started(workspace, "alice")

    server.send_signal(signum)

    # Before: alive until the client closed stdin, at times with a traceback, exit 1 or 70.
    assert server.wait(STEP_S) == code
    assert server.stderr is not None and server.stderr.read().decode() == said
    server.stdin.close()  # type: ignore[union-attr]
    server.stdout.close()  # type: ignore[union-attr]


def test_a_client_gone_from_the_other_end_of_stdout_is_a_closed_pipe_not_an_internal_error(workspace: Workspace) -> None:
    server = started(workspace, "alice")
    assert server.stdin is not None and server.stdout is not None and server.stderr is not None
    server.stdout.close()

    server.stdin.write(b'{"jsonrpc": "2.0", "id": 2, "method": "ping"}\n')
    server.stdin.flush()
    server.stdin.close()  # its answer is still written, after the end of stdin: to no one

    # Before: exit 70, "maf: internal error: ExceptionGroup ... (a bug in pytest-maf ...)".
    assert server.wait(STEP_S) == 141
    assert server.stderr.read().decode() == ""


def exchange(workspace: Workspace, agent: str, *requests: str) -> dict[Any, dict[str, Any]]:
    """Send ``requests`` after the handshake, close stdin at once, and return every answer by id."""
    lines = [json.dumps(INITIALIZE), '{"jsonrpc": "2.0", "method": "notifications/initialized"}', *requests]
    completed = subprocess.run(
        [*maf_command(), "mcp"], cwd=workspace.main, env=workspace.env(agent), input="\n".join(lines) + "\n",
        capture_output=True, text=True, timeout=STEP_S,
    )
    assert (completed.returncode, completed.stderr) == (0, "")
    return {answer["id"]: answer for answer in map(json.loads, completed.stdout.splitlines())}


def test_a_request_the_sdk_cannot_read_is_answered_with_its_id(workspace: Workspace) -> None:
    deep = '{"a": ' * 300 + "1" + "}" * 300
    deeper = "[" * 5_000 + "]" * 5_000  # past Python's parser too
    answers = exchange(
        workspace, "alice",
        '{"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {"name": "task_show", "arguments": {"task_id": "\\ud800"}}}',
        '{"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": []}',
        f'{{"jsonrpc": "2.0", "id": "deep", "method": "tools/call", "params": {{"name": "status", "arguments": {{"x": {deep}}}}}}}',
        f'{{"jsonrpc": "2.0", "method": "tools/call", "params": {{"name": "status", "arguments": {{"x": {deeper}}}}}, "id": 99}}',
        "not JSON, and no id to answer",
        '{"jsonrpc": "2.0", "id": "\\ud800", "method": "ping"}',  # an id no answer could carry: null, and no end
        '{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": [12]}',  # invalid: answered, id null
        '{"jsonrpc": "2.0", "id": 12, "method": "ping"}',
    )

    # Before: no answer at all to 10, 11 or "deep", and a client waiting on them waited for ever.
    assert set(answers) == {1, 10, 11, "deep", 99, 12, None}
    assert answers[99]["error"]["code"] == -32700
    assert answers[10]["error"]["code"] == -32700 and "hex escape" in answers[10]["error"]["message"]
    assert answers[11]["error"] == {"code": -32600, "message": "the request could not be read: params: Input should be an object"}
    assert answers["deep"]["error"]["code"] == -32700 and "recursion limit" in answers["deep"]["error"]["message"]
    assert answers[12]["result"] == {}


def test_requests_under_way_when_the_client_closes_stdin_are_answered_before_the_server_ends(workspace: Workspace) -> None:
    answers = exchange(
        workspace, "alice",
        '{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "status", "arguments": {}}}',
        '{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "mail_send",'
        ' "arguments": {"to": "bob", "subject": "s", "body": "b"}}}',
        '{"jsonrpc": "2.0", "id": 4, "method": "tools/list"}',
    )

    # Before: the message was sent, and its answer (with the others') was dropped as stdin ended.
    assert set(answers) == {1, 2, 3, 4}
    sent = answers[3]["result"]["structuredContent"]
    assert not answers[3]["result"]["isError"]
    assert [message["id"] for message in cli_json(workspace, "mail", "list", "--agent", "bob")] == [sent["id"]]


def test_an_answer_or_a_cancellation_settles_a_request_however_its_id_is_spelled() -> None:
    from pytest_maf.mcp_stdio import _Answers

    answers = _Answers(None, 1.0)
    answers.asked(2), answers.asked("x"), answers.asked("x")  # two under way with one id: both answered
    answers.settled("2")  # a client may cancel 2 as "2": the SDK takes them for one id, and so must this
    answers.settled([1]), answers.settled({"id": "x"})  # a cancellation naming no request: nothing, no error
    assert dict(answers.pending) == {"x": 2}
    answers.settled("x")
    assert dict(answers.pending) == {"x": 1}


@pytest.mark.slow  # a preflight that takes seconds, stopped; then the seconds it would have taken
def test_a_signal_stops_the_preflight_run_under_way_with_the_server(workspace: Workspace) -> None:
    finished = workspace.home / "preflight-finished"
    workspace.write(workspace.main, "conftest.py", f"import time\ntime.sleep(3)\nopen({str(finished)!r}, 'w').close()\n")
    server = started(workspace, "alice")
    assert server.stdin is not None
    server.stdin.write(b'{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "preflight", "arguments": {}}}\n')
    server.stdin.flush()
    deadline = time.monotonic() + STEP_S
    while not any("maf-preflight" in " ".join(child) for child in _children_of(server.pid)):  # the run has begun
        assert time.monotonic() < deadline, "the preflight never started"
        time.sleep(0.05)

    server.send_signal(15)

    assert server.wait(STEP_S) == 143
    time.sleep(4)  # past when the run would have ended
    # Before: the pytest run went on alone after the server had ended, and recorded its verdict.
    assert not finished.exists()
    server.stdin.close(), server.stdout.close(), server.stderr.close()  # type: ignore[union-attr]


def _children_of(pid: int) -> list[list[str]]:
    """The command lines of the processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append((entry / "cmdline").read_bytes().decode(errors="replace").split("\0"))
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.slow  # megabyte messages, a signal while they are written
def test_a_signal_during_sends_leaves_each_message_whole_with_its_copy(workspace: Workspace) -> None:
    ok(workspace.maf(workspace.main, "init"))
    server = started(workspace, "alice")
    assert server.stdin is not None and server.stdout is not None
    for number in range(12):
        call = {"jsonrpc": "2.0", "id": 10 + number, "method": "tools/call", "params": {
            "name": "mail_send", "arguments": {"to": "bob", "subject": f"s{number}", "body": "z" * 900_000}}}
        server.stdin.write(json.dumps(call).encode() + b"\n")
    server.stdin.flush()
    time.sleep(0.05)  # some sends under way

    server.send_signal(15)

    assert server.wait(STEP_S) == 143
    mail = workspace.main / ".agent-mail"
    inbox = {path.name for path in (mail / "messages" / "bob").glob("*.json")}
    outbox = {path.name for path in (mail / "outbox").glob("*.json")}
    # Before: a message in the inbox without its outbox copy, and megabyte temporary files left behind.
    assert inbox == outbox
    assert [path.name for path in mail.rglob(".*") if path.is_file()] == []
    server.stdin.close(), server.stdout.close(), server.stderr.close()  # type: ignore[union-attr]


@pytest.mark.parametrize(("line", "request_id"), [
    ('{"params": ' + "[" * 5_000 + "]" * 5_000 + ', "id": "late"}', "late"),  # after what is nested
    ('{"id": -7, "params": {"id": 5}}', -7),
    ('{"a": "id", "id": 3}', 3),  # "id" as a value is no key
    ('{"a": "x\\\\", "id": "q\\"uoted"}', 'q"uoted'),  # escapes inside strings
    ('{"params": {"id": 5}}', None),  # an id only inside: none of the request's
    ('{"id": 2.5}', None),
    ('{"id": "unterminated', None),
])
def test_the_id_of_a_request_too_deep_to_parse_is_read_from_its_top_level(line: str, request_id: object) -> None:
    from pytest_maf.mcp_stdio import top_level_id

    assert top_level_id(line) == request_id
