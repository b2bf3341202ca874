"""`maf mcp`: the coordination tools of :mod:`pytest_maf.agent_tools` as an MCP server over stdio.

The server acts for the one agent it was started as (``MAF_AGENT_ID`` or
``--agent``): no tool takes an agent id, and a call with an argument a tool
does not declare is refused, so no caller acts as another agent through it.
A tool returns its result as structured content (and as JSON text); a
refusal is a tool error whose text is ``<kind>: <the maf command's error
line>``, with ``{"error": {"kind", "message", "exit_code", ...}}`` as its
structured content. Needs the MCP SDK (``pip install 'pytest-maf[mcp]'``).

Example::

    serve(AgentTools(load_settings(), "claude-1", Path.cwd()))
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable

import anyio

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import ValidationError

from pytest_maf import __version__
from pytest_maf.agents import set_client
from pytest_maf.agent_tools import PREFLIGHT_GRACE_S, AgentTools, error_payload, error_text
from pytest_maf.errors import MafError, UsageError, refused_by_the_system
from pytest_maf.mcp_stdio import serve_stdio, stopped_by, under_way

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context
    from mcp.types import InputRequiredResult

if sys.version_info < (3, 11):  # anyio's backport
    from exceptiongroup import BaseExceptionGroup

SERVER_NAME = "pytest-maf"
# Every tool, in the order a client lists them; True marks those that only read.
TOOLS: tuple[tuple[str, bool], ...] = (
    ("task_claim", False),
    ("task_renew", False),
    ("task_heartbeat", False),
    ("task_start", False),
    ("task_verify", False),
    ("task_finish", False),
    ("task_release", False),
    ("task_show", True),
    ("evidence_record", False),
    ("reservation_acquire", False),
    ("reservation_renew", False),
    ("reservation_release", False),
    ("reservation_check", True),
    ("reservation_list", True),
    ("mail_send", False),
    ("mail_list", True),
    ("mail_show", True),
    ("mail_ack", False),
    ("escalate", False),
    ("status", True),
    ("preflight", False),
)


def instructions(agent_id: str) -> str:
    return (
        f"pytest-maf coordination for agent {agent_id} (every call acts as {agent_id}; no tool takes"
        " an agent id). Work: task_claim, then reservation_acquire the files you will change"
        " (with task_id, they are released when the lease ends), task_start, do the work,"
        " task_verify, evidence_record for each verifier, task_finish. Every call under a lease"
        " gives the task_id and attempt task_claim returned; task_heartbeat keeps leases alive."
        " Check mail_list now and then; escalate when stuck. A refusal is an error whose text"
        " starts with its kind: lease_lost (you no longer hold the task: claim again), conflict"
        " (another agent holds those files: wait or choose others), not_found, bad_input, ..."
    )


def refusal(error: MafError) -> CallToolResult:
    """A refused call: the tool error an agent reads, in the command's words."""
    return CallToolResult(
        content=[TextContent(type="text", text=error_text(error))],
        structured_content={"error": error_payload(error)},
        is_error=True,
    )


def _refusals_as_tool_errors(operation: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """``operation`` with a :class:`MafError` returned as a tool error; its signature and docstring kept."""
    arguments = _arguments_of_flags(operation)
    flags = re.compile("|".join(re.escape(flag) + r"(?![\w-])" for flag in sorted(arguments, key=len, reverse=True)))

    @functools.wraps(operation)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            with under_way():
                return operation(*args, **kwargs)
        except MafError as error:
            said = flags.sub(lambda found: arguments[found.group()], str(error)) if arguments else str(error)
            return refusal(in_tool_words(error, said))
        except OSError as error:  # what the system refused (the mail folder unwritable, a name too long)
            return refusal(refused_by_the_system(error))

    return call


# The command line's ways out as an agent over MCP takes them: the tool, not the command. A flag of
# the tool's own is its argument first (see _arguments_of_flags); these are what is left.
TOOL_WORDS: tuple[tuple[str, str], ...] = (
    ("`maf task claim` leases the next READY task", "task_claim without task_id leases the next READY task"),
    ("`maf task claim`", "task_claim"),
    ("(see `maf task list`)", "(status counts the tasks in each state; task_claim without task_id leases the next READY one)"),
    ("(see `maf reservation list`", "(see reservation_list"),
    ("(see `maf mail list`)", "(see mail_list)"),
    ("use --force with --reason", "use reservation_release with force and a reason"),
)


def in_tool_words(error: MafError, said: str) -> MafError:
    """``error`` with the command's ways out named as the tools and arguments that take them (``said`` is
    its message, the tool's own flags already its arguments); the same class, so the same kind."""
    for command_words, tool_words in TOOL_WORDS:
        said = said.replace(command_words, tool_words)
    if said == str(error):
        return error
    reworded = type(error).__new__(type(error))  # not through __init__, which builds the message anew
    reworded.__dict__.update(error.__dict__)
    reworded.args = (said,)
    return reworded


def _arguments_of_flags(operation: Callable[..., Any]) -> dict[str, str]:
    """The tool argument for each flag of the command: ``--error-context`` -> ``error_context``,
    and ``--ttl`` -> ``ttl_seconds`` or ``ttl_minutes``."""
    names = [name for name in inspect.signature(operation).parameters if name != "self"]
    arguments = {f"--{name.replace('_', '-')}": name for name in names}
    arguments.update({"--ttl": name for name in names if name.startswith("ttl_")})
    return arguments


class AgentServer(MCPServer[Any]):
    """An MCP server that refuses any argument a tool does not declare (such as an agent id)."""

    def __init__(self, agent_id: str, tools: list[Tool], **options: Any) -> None:
        super().__init__(SERVER_NAME, tools=tools, **options)
        self.agent_id = agent_id
        self.parameters = {tool.name: frozenset(tool.parameters.get("properties", {})) for tool in tools}
        self.types = {
            tool.name: {name: json_types(schema) for name, schema in tool.parameters.get("properties", {}).items()}
            for tool in tools
        }

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        if name not in self.parameters:
            return refusal(UsageError(f"there is no tool {name!r}; the tools are {', '.join(self.parameters)}"))
        unknown = sorted(set(arguments) - self.parameters[name])
        if unknown:
            return refusal(UsageError(
                f"{name} takes no argument {', '.join(map(repr, unknown))}; this server acts for"
                f" agent {self.agent_id} only, and an agent id is never an argument"
            ))
        misshapen = [
            f"{argument}: expected {' or '.join(sorted(self.types[name][argument]))}, got {json_type(value)} {json.dumps(value)[:40]}"
            for argument, value in arguments.items()
            if not _of_type(value, self.types[name][argument])
        ]
        if misshapen:  # not coerced: true is no attempt 1, nor "no" a false
            return refusal(UsageError(f"{name}: {'; '.join(misshapen)}"))
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as error:
            if isinstance(error, UnexpectedToolError) or not isinstance(error.__cause__, ValidationError):
                raise  # a crash of the tool itself, not the agent's arguments: the SDK logs it
            return refusal(UsageError(f"{name}: {invalid_arguments(error.__cause__)}"))


_JSON_TYPES: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("boolean", bool), ("integer", int), ("number", (int, float)), ("string", str), ("array", list),
    ("object", dict), ("null", type(None)),
)


def json_types(schema: dict[str, Any]) -> frozenset[str]:
    """The JSON types a parameter's schema admits (``type``, or each of ``anyOf``); none said: any."""
    said = [schema.get("type")] + [option.get("type") for option in schema.get("anyOf", ())]
    return frozenset(kind for kind in said if isinstance(kind, str))


def json_type(value: Any) -> str:
    return next((kind for kind, python in _JSON_TYPES if isinstance(value, python)), type(value).__name__)


def _of_type(value: Any, types: frozenset[str]) -> bool:
    """Whether ``value`` is of one of ``types`` as JSON Schema types it (true is no integer, 1.0 is one).
    A string is no array or object, as the schema says (the SDK would read JSON text there)."""
    kind = json_type(value)
    if not types or kind in types or (kind == "integer" and "number" in types):
        return True
    if kind == "number" and "integer" in types:
        return float(value).is_integer()  # 1.0 is an integer to JSON Schema; 1.5 is not
    return False


def invalid_arguments(error: ValidationError) -> str:
    """What is wrong with a call's arguments, one clause per argument: ``attempt: a value is required``."""
    problems = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "the arguments"
        said = "a value is required" if problem["type"] == "missing" else str(problem["msg"])
        problems.append(f"{where}: {said}")
    return "; ".join(problems)


def _tool(tools: AgentTools, name: str, read_only: bool) -> Tool:
    operation = getattr(tools, name)
    tool = Tool.from_function(
        _refusals_as_tool_errors(operation),
        name=name,
        description=" ".join((operation.__doc__ or "").split()),
        annotations=ToolAnnotations(read_only_hint=read_only),
        structured_output=True,
    )
    tool.parameters["additionalProperties"] = False  # said in the schema too, for clients that check
    return tool


def build_server(tools: AgentTools) -> AgentServer:
    """The MCP server for ``tools``' agent: every tool of :data:`TOOLS`, and two resources."""
    server = AgentServer(
        tools.agent_id,
        [_tool(tools, name, read_only) for name, read_only in TOOLS],
        instructions=instructions(tools.agent_id),
        version=__version__,
        log_level="WARNING",
    )

    def resource_json(operation: Callable[[], dict[str, Any]]) -> str:
        try:
            return json.dumps(operation(), indent=2, sort_keys=True, ensure_ascii=False)
        except MafError as error:
            raise ResourceError(error_text(error)) from None

    @server.resource(
        "maf://inbox", name="inbox", mime_type="application/json",
        description=f"{tools.agent_id}'s agent-mail inbox, unread messages first",
    )
    def inbox() -> str:
        return resource_json(tools.mail_list)

    @server.resource(
        "maf://reservations", name="reservations", mime_type="application/json",
        description="every live file reservation, each marked mine or not",
    )
    def live_reservations() -> str:
        return resource_json(tools.reservation_list)

    return server


def serve(tools: AgentTools) -> int:
    """Speak MCP over stdin and stdout until the client closes them, or a signal ends the server.

    SIGTERM and Ctrl-C end it (exit 143, 130) even while the client holds stdin open, once the tool
    calls under way have ended and their answers are written (:func:`~pytest_maf.mcp_stdio.serve_stdio`);
    a preflight run under way is stopped. Stdin ending as the signal comes ends it as the signal asked too. A client gone from the other end of stdout
    ends it as a closed pipe ends any command (exit 141): the server's task group reports that
    inside an exception group, and it is raised as itself for the command's usual handling.
    """
    set_client("mcp")
    previous = {}
    if threading.current_thread() is threading.main_thread():  # the event loop's handlers leave the defaults
        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    # A preflight under way may be answered that long after the client closed stdin.
    answers_after_eof_s = tools.settings.preflight_timeout_s + PREFLIGHT_GRACE_S + ANSWER_MARGIN_S
    try:
        anyio.run(serve_stdio, build_server(tools), answers_after_eof_s)
    except BaseExceptionGroup as group:
        raise _what_ended(group) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    stopped = stopped_by()
    if stopped is not None:  # stdin ended as the signal came (a client shutting down does both): it still counts
        raise _stop(stopped)
    return 0


# Beyond the longest a tool may take (a preflight), how long an answer is waited for after stdin ends.
ANSWER_MARGIN_S = 30.0


def _stop(signum: int) -> BaseException:
    """What the command raises for a signal the server received: Ctrl-C's, or SIGTERM's."""
    from pytest_maf.cli import Terminated

    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _what_ended(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception inside ``group`` that ended the server: a signal's, a closed pipe, else the group."""
    from pytest_maf.cli import Terminated

    for kind in (Terminated, KeyboardInterrupt, OSError):
        found: BaseException | None = group.subgroup(lambda error: isinstance(error, kind))  # noqa: B023 (used at once)
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        if found is not None:
            return found
    return group
