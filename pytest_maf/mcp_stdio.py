"""The stdio transport of `maf mcp`: one JSON-RPC message a line, every request answered.

The SDK's stdio loop leaves some requests unanswered: a line it cannot read
(cut short, stray text after the request, a batch, an id of a type it does not
take), and, at the end, the answers of calls still under way. This transport
reads the lines itself, so each one it cannot pass on is answered with a
JSON-RPC error (-32700 when it is no JSON, with the request's id when that can
be read, else null; -32600 for a batch or a message of the wrong shape); and it
writes the answers itself, so the server ends only once those of the calls
under way are written.

Example::

    anyio.run(serve_stdio, build_server(tools), 60.0)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import sys
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator

import anyio

from mcp.shared.message import SessionMessage
from mcp.types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError

from pytest_maf.agent_tools import stop_children
from pytest_maf.errors import MafError
from pytest_maf.values import is_utf8

if TYPE_CHECKING:
    import anyio.abc
    from mcp.server.mcpserver import MCPServer
    from mcp.types import JSONRPCMessage

# Tool calls under way, in the SDK's worker threads; a signal lets them end (a store transaction, a
# message delivered with its outbox copy) and their answers be written, for at most STOP_WAIT_S.
_CALLS = threading.Condition()
_calls = 0
STOP_WAIT_S = 10.0
_ENDING = threading.Event()
# SIGTERM and SIGINT as they arrive, noted by the interpreter before the event loop dispatches them:
# one that comes as stdin ends, and the server with it, still decides how the process ends.
_ARRIVED: list[int] = []
SERVER_ENDING = -32000  # JSON-RPC's range for an implementation's own errors


class ServerEndingError(MafError):
    """A tool call that had not begun when a signal asked the server to end: nothing was done."""

    exit_code = 1


@contextlib.contextmanager
def under_way() -> Iterator[None]:
    """Count a tool call as under way; once a signal asked the server to end, refuse to begin one."""
    global _calls
    with _CALLS:
        if _ENDING.is_set():
            raise ServerEndingError("the server is ending (a signal asked it to): this call was not run; call it again")
        _calls += 1
    try:
        yield
    finally:
        with _CALLS:
            _calls -= 1
            _CALLS.notify_all()


async def serve_stdio(server: MCPServer[Any], answers_after_eof_s: float) -> None:
    """Serve ``server`` over the process's stdin and stdout until stdin ends, or a signal ends the
    process (SIGTERM 143, SIGINT 130) once the calls under way are answered. A request still under
    way when stdin ends is answered before the server ends, for at most ``answers_after_eof_s``."""
    with _claimed_stdio() as (wire_in, wire_out):
        read_send, read_receive = anyio.create_memory_object_stream[Any](0)
        write_send, write_receive = anyio.create_memory_object_stream[SessionMessage](0)
        answers = _Answers(write_send, answers_after_eof_s)
        async with anyio.create_task_group() as group:
            group.start_soon(_write_answers, write_receive, wire_out, answers)
            group.start_soon(_read_requests, wire_in, read_send, answers)
            async with anyio.create_task_group() as watch:
                if threading.current_thread() is threading.main_thread():  # else the program's own handlers stay
                    await watch.start(_end_on_signal, answers)
                lowlevel = server._lowlevel_server  # noqa: SLF001 (run_stdio_async's own path, with our streams)
                await lowlevel.run(read_receive, answers, lowlevel.create_initialization_options())
                watch.cancel_scope.cancel()  # stdin has ended and the server with it; a signal come by now is noted


@contextlib.contextmanager
def _claimed_stdio() -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """The wire's ends of stdin and stdout on descriptors of their own, while fd 0 reads the null
    device and fd 1 writes to stderr (as the SDK's transport does): a child reads no request, and a
    stray print breaks no line of the protocol. Where a descriptor cannot be moved, it is used as it is."""
    sys.stdout.flush()
    try:
        wire_in, wire_out = os.dup(0), os.dup(1)
    except OSError:
        yield sys.stdin.buffer, sys.stdout.buffer
        return
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
        os.dup2(2, 1)
    except OSError:
        os.dup2(wire_in, 0)
        os.close(null)
        yield sys.stdin.buffer, sys.stdout.buffer
        return
    os.close(null)
    try:
        # wire_in is never closed: a thread may still be blocked reading it when the server ends.
        yield os.fdopen(wire_in, "rb", closefd=False), os.fdopen(wire_out, "wb")
    finally:
        with contextlib.suppress(OSError):
            os.dup2(wire_in, 0)
            os.dup2(wire_out, 1)


async def _read_requests(wire_in: BinaryIO, send: Any, answers: _Answers) -> None:
    """Pass each message the client sends to the server, answer each line that is none; at the end
    of stdin, wait for the answers still owed, then end the server's input."""
    async with send:
        while raw := await anyio.to_thread.run_sync(wire_in.readline):
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():  # a blank line carries no message
                continue
            read = read_message(line)
            if isinstance(read, list):
                for error in read:
                    await answers.send(SessionMessage(error))
                continue
            if _ENDING.is_set() and isinstance(read, JSONRPCRequest):  # read after the signal: not begun
                await answers.send(SessionMessage(_error(SERVER_ENDING, "the server is ending: this request was not run", read.id)))
                continue
            if isinstance(read, JSONRPCRequest):
                answers.asked(read.id, read)
            elif isinstance(read, JSONRPCNotification) and read.method == "notifications/cancelled":
                cancelled = read.params if isinstance(read.params, dict) else {}
                answers.settled(cancelled.get("requestId"))  # a cancelled request gets no answer
            await send.send(SessionMessage(read))
        await answers.all_answered()


async def _write_answers(receive: Any, wire_out: BinaryIO, answers: _Answers) -> None:
    """Write each message of the server as one line, flushed, and count it written."""

    def write_line(line: bytes) -> None:
        wire_out.write(line)
        wire_out.flush()

    async with receive:
        async for message in receive:
            line = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
            await anyio.to_thread.run_sync(write_line, line.encode("utf-8"))
            answers.written += 1


def read_message(line: str) -> JSONRPCMessage | list[JSONRPCError]:
    """The message a line holds, or the errors answering it when it holds none the server can take."""
    try:
        message = jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValidationError as error:
        return unreadable(line, error)
    if isinstance(message, JSONRPCNotification) and '"id"' in line:  # the SDK drops an id it does not take
        with contextlib.suppress(ValueError, RecursionError):
            parsed = json.loads(line)
            if isinstance(parsed, dict) and "id" in parsed:
                return [_error(INVALID_REQUEST, f"the request could not be read: id: {_an_id_is(parsed['id'])}", None)]
    return message


def unreadable(line: str, error: ValidationError) -> list[JSONRPCError]:
    """The errors answering a line the SDK could not read: one for each request it names (its id, or
    null where that cannot be read), as JSON-RPC 2.0 asks."""
    details = error.errors()
    said = f"the request could not be read: {details[0]['msg']}"
    try:
        parsed = json.loads(line)  # Python's parser takes lone surrogates, and deeper nesting
    except (ValueError, RecursionError):  # cut short, stray text after it, or nested deeper still
        return [_error(PARSE_ERROR, said, _usable(top_level_id(line)))]
    if details[0]["type"] == "json_invalid":
        return [_error(PARSE_ERROR, said, _request_id(parsed))]
    if isinstance(parsed, list):
        batch = "the request could not be read: a batch; MCP takes one message a line, send each on its own"
        ids = [found for found in map(_request_id, parsed) if found is not None]
        return [_error(INVALID_REQUEST, batch, found) for found in ids] or [_error(INVALID_REQUEST, batch, None)]
    # the request's own shape, not the response's or the notification's the SDK also tried
    detail = next((detail for detail in details if detail["loc"][:1] == ("JSONRPCRequest",)), details[0])
    where = ".".join(map(str, detail["loc"][1:])) or "the request"
    return [_error(INVALID_REQUEST, f"the request could not be read: {where}: {detail['msg']}", _request_id(parsed))]


def _request_id(parsed: Any) -> str | int | None:
    """The id of a request an answer can carry; None for anything else (a response, a notification)."""
    return _usable(parsed.get("id")) if isinstance(parsed, dict) and "method" in parsed else None


def _usable(request_id: Any) -> str | int | None:
    """``request_id`` if an answer can carry it: a string (with no lone surrogate) or an integer."""
    if isinstance(request_id, bool) or not isinstance(request_id, (str, int)) or not is_utf8(str(request_id)):
        return None
    return request_id


def _an_id_is(value: Any) -> str:
    return f"a request id is a string or an integer, not {json.dumps(value)[:40]}; a notification has no id"


def _error(code: int, message: str, request_id: str | int | None) -> JSONRPCError:
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=message))


class _Answers:
    """The server's write stream, counting the answers still owed, by request id (two requests under
    way may share one), and the messages handed to the writer and written."""

    def __init__(self, inner: Any, longest_s: float) -> None:
        self._inner = inner
        self._longest_s = longest_s
        self.pending: Counter[Any] = Counter()
        self.changed = anyio.Event()
        self.handed = 0
        self.written = 0
        self.requests: dict[Any, JSONRPCRequest] = {}  # the latest under each id, for what its answer says
        self.initialized = False

    async def send(self, message: Any) -> None:
        answer = message.message
        request = self.requests.get(_correlated(answer.id)) if isinstance(answer, (JSONRPCResponse, JSONRPCError)) else None
        if isinstance(answer, JSONRPCError) and answer.error.code == INVALID_PARAMS and not answer.error.data:
            message = SessionMessage(_error(INVALID_PARAMS, self.invalid_params(request), answer.id))  # the SDK's bare words
        elif isinstance(answer, JSONRPCResponse) and request is not None and request.method == "initialize":
            self.initialized = True
        self.handed += 1
        await self._inner.send(message)
        if isinstance(answer, (JSONRPCResponse, JSONRPCError)):
            self.settled(answer.id)

    def invalid_params(self, request: JSONRPCRequest | None) -> str:
        """What was wrong with a request the SDK answered only "Invalid request parameters"."""
        if not self.initialized:
            return "not initialized: send initialize (then notifications/initialized) before any other request"
        params = request.params if request is not None and isinstance(request.params, dict) else {}
        if request is not None and request.method == "tools/call":
            if not isinstance(params.get("name"), str):
                return "tools/call: params.name is required: the name of the tool to call (tools/list lists them)"
            if "arguments" in params and not isinstance(params["arguments"], dict):
                return f"tools/call: params.arguments must be an object, not {json.dumps(params['arguments'])[:40]}"
        method = request.method if request is not None else "the request"
        return f"{method}: its params are not what the method takes"

    def asked(self, request_id: Any, request: JSONRPCRequest | None = None) -> None:
        self.pending[_correlated(request_id)] += 1
        if request is not None:
            self.requests[_correlated(request_id)] = request

    def settled(self, request_id: Any) -> None:
        key = _correlated(request_id)
        if isinstance(key, (str, int)) and self.pending[key] > 0:  # a list or an object names no request
            self.pending[key] -= 1
            if not self.pending[key]:
                del self.pending[key]
                self.requests.pop(key, None)
        self.changed.set()

    async def all_answered(self) -> None:
        with anyio.move_on_after(self._longest_s):
            while self.pending:
                self.changed = anyio.Event()
                await self.changed.wait()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def __aenter__(self) -> _Answers:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._inner.aclose()


def _correlated(request_id: Any) -> Any:
    """A request id as the SDK matches answers and cancellations to it: "7" and 7 are one id."""
    if isinstance(request_id, str):
        with contextlib.suppress(ValueError):
            return int(request_id)
    return request_id


# How often, while a signal's end waits, the calls under way and the answers written are looked at.
ENDING_POLL_S = 0.02


def stopped_by() -> int | None:
    """The first SIGTERM or SIGINT the server received, if one came: the server ends as it asked
    even when stdin ended first, or at the same time (as a client shutting down does both)."""
    return _ARRIVED[0] if _ARRIVED else None


async def _end_on_signal(answers: _Answers, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """On SIGTERM or Ctrl-C: begin no more calls, stop a preflight run, and end the process once the
    calls under way have ended and their answers are written (at most :data:`STOP_WAIT_S`). The read
    of stdin, in a thread of its own, would hold an orderly end until the client closed it. A second
    signal ends the process at once. Every one is noted as it arrives (:func:`stopped_by`), also
    once the loop no longer listens, until the caller puts its own handlers back."""
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            _note_arrivals(passing_on=True)
            task_status.started()
            async for signum in signals:
                _ENDING.set()
                stop_children()
                async with anyio.create_task_group() as group:
                    group.start_soon(_exit_once_answered, signum, answers)
                    async for second in signals:
                        _exit(second)
    finally:
        _note_arrivals(passing_on=False)  # the loop put back the defaults: SIGTERM's ends the process without a word


def _note_arrivals(*, passing_on: bool) -> None:
    """Note each SIGTERM and SIGINT in :data:`_ARRIVED`; ``passing_on``, hand it on to the handler
    in place (the event loop's, which dispatches it to :func:`_end_on_signal`)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(signum) if passing_on else None
        signal.signal(signum, functools.partial(_noted, handler if callable(handler) else None))


def _noted(handler: Callable[[int, Any], Any] | None, signum: int, frame: Any) -> None:
    _ARRIVED.append(signum)
    if handler is not None:
        handler(signum, frame)


async def _exit_once_answered(signum: int, answers: _Answers) -> None:
    def settled() -> bool:  # the calls' threads change these: looked at, not awaited
        with _CALLS:
            return not answers.pending and _calls == 0 and answers.written == answers.handed

    with anyio.move_on_after(STOP_WAIT_S):
        while not settled():
            await anyio.sleep(ENDING_POLL_S)
    _exit(signum)


def _exit(signum: int) -> None:
    code, word = (130, "interrupted") if signum == signal.SIGINT else (128 + signum, "terminated")
    with contextlib.suppress(OSError):
        os.write(2, f"maf: {word}\n".encode())
    os._exit(code)


_JSON_MARKS = re.compile(r'["{}\[\]]')
_STRING_END = re.compile(r'(?:[^"\\]|\\.)*"', re.DOTALL)
_KEY_END = re.compile(r"\s*:")
_WHOLE_NUMBER = re.compile(r"\s*(-?\d+)\s*[,}]")
_STRING_START = re.compile(r'\s*"')


def top_level_id(text: str) -> Any:
    """The ``"id"`` of the object ``text`` opens, read without parsing what is nested in it (a
    request nested past what any parser takes still names its id); None when it names none, or
    not as a string or a whole number."""
    depth, at = 0, 0
    while (mark := _JSON_MARKS.search(text, at)) is not None:
        at = mark.end()
        if mark.group() != '"':
            depth += 1 if mark.group() in "{[" else -1
            continue
        closed = _STRING_END.match(text, at)
        if closed is None:
            return None
        string, at = text[mark.start():closed.end()], closed.end()
        if depth != 1 or string != '"id"':
            continue
        key_end = _KEY_END.match(text, at)
        if key_end is None:  # "id" as a value, not a key
            continue
        number = _WHOLE_NUMBER.match(text, key_end.end())
        if number is not None:
            return int(number.group(1))
        opened = _STRING_START.match(text, key_end.end())
        value = None if opened is None else _STRING_END.match(text, opened.end())
        try:
            return json.loads(text[opened.end() - 1:value.end()]) if opened and value else None
        except ValueError:
            return None
    return None
