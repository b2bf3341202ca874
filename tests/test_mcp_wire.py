"""`maf mcp` on the wire: raw JSON-RPC lines to a real server process, its stdin held open as a
client holds it, and a deadline on every read."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from typing import Any

import pytest

from workspace import Workspace, maf_command

pytest.importorskip("mcp", reason="maf mcp needs the mcp extra")

STEP_S = 30  # one answer, or one server's start-up or end
INITIALIZE = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}


class Wire:
    """A `maf mcp` process, initialized; each line it writes is read by a thread of its own."""

    def __init__(self, workspace: Workspace, agent: str, *, initialize: bool = True) -> None:
        self.server = subprocess.Popen(
            [*maf_command(), "mcp"], cwd=workspace.main, env=workspace.env(agent),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if initialize:
            self.initialize()

    def initialize(self) -> None:
        self.send(json.dumps(INITIALIZE))
        assert self.answer()["id"] == 0
        self.send('{"jsonrpc": "2.0", "method": "notifications/initialized"}')

    def _read(self) -> None:
        assert self.server.stdout is not None
        for line in self.server.stdout:
            self.lines.put(line)
        self.lines.put(b"")

    def send(self, *lines: str) -> None:
        assert self.server.stdin is not None
        self.server.stdin.write("".join(line + "\n" for line in lines).encode())
        self.server.stdin.flush()

    def answer(self) -> dict[str, Any]:
        """The next line the server writes, within the deadline: a client waiting for ever fails here."""
        try:
            line = self.lines.get(timeout=STEP_S)
        except queue.Empty:
            raise AssertionError(f"no answer within {STEP_S} s") from None
        assert line, "the server ended its output"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def rest(self) -> list[dict[str, Any]]:
        """Every line still to come, up to the end of the server's output."""
        found = []
        while line := self.lines.get(timeout=STEP_S):
            found.append(json.loads(line))  # a line cut short would not parse
        return found

    def close(self) -> None:
        for stream in (self.server.stdin, self.server.stdout, self.server.stderr):
            if stream is not None:
                stream.close()
        if self.server.poll() is None:
            self.server.kill()
        self.server.wait(STEP_S)


@pytest.fixture
def wire(workspace: Workspace) -> Any:
    server = Wire(workspace, "alice")
    yield server
    server.close()


@pytest.mark.parametrize(("line", "code", "request_id"), [
    ('{"jsonrpc": "2.0", "id": 5, "method": "ping"', -32700, 5),  # cut short
    ('{"jsonrpc": "2.0", "id": 6, "method": "ping"} trailing', -32700, 6),  # stray text after it
    ('{not json', -32700, None),
    ('[{"jsonrpc": "2.0", "id": 3, "method": "ping"}]', -32600, 3),  # a batch, which MCP does not take
    ("[]", -32600, None),
    ("5", -32600, None),
    ('{"jsonrpc": "2.0", "id": 4.5, "method": "ping"}', -32600, None),  # an id of a type no answer takes
    ('{"jsonrpc": "2.0", "id": null, "method": "ping"}', -32600, None),
    ('{"jsonrpc": "2.0", "id": true, "method": "ping"}', -32600, None),
], ids=["cut-short", "trailing-text", "not-json", "batch", "empty-batch", "number", "id-fraction", "id-null", "id-true"])
def test_every_line_that_is_no_request_is_answered_and_the_server_goes_on(
    wire: Wire, line: str, code: int, request_id: object
) -> None:
    wire.send(line, '{"jsonrpc": "2.0", "id": 7, "method": "ping"}')

    # Before: no answer to the line, and a client waiting on it waited for ever.
    refused = wire.answer()
    assert (refused["id"], refused["error"]["code"]) == (request_id, code), refused
    assert refused["error"]["message"].startswith("the request could not be read: ")
    assert wire.answer() == {"jsonrpc": "2.0", "id": 7, "result": {}}


def test_a_batch_is_refused_once_for_each_request_in_it(wire: Wire) -> None:
    wire.send('[{"jsonrpc": "2.0", "id": 3, "method": "ping"}, {"jsonrpc": "2.0", "method": "x"},'
              ' {"jsonrpc": "2.0", "id": "b", "method": "ping"}]')

    answers = [wire.answer(), wire.answer()]

    assert [(answer["id"], answer["error"]["code"]) for answer in answers] == [(3, -32600), ("b", -32600)]
    assert "send each on its own" in answers[0]["error"]["message"]


def test_a_signal_ends_the_server_once_the_answers_of_the_calls_under_way_are_written(
    workspace: Workspace, wire: Wire
) -> None:
    calls = 100
    wire.send(*(json.dumps({"jsonrpc": "2.0", "id": 10 + number, "method": "tools/call", "params": {
        "name": "reservation_acquire", "arguments": {"patterns": [f"src/f{number}.py"]}}}) for number in range(calls)))
    first = wire.answer()  # calls are under way

    wire.server.send_signal(15)

    answers = [first, *wire.rest()]
    assert wire.server.wait(STEP_S) == 143
    assert wire.server.stderr is not None and wire.server.stderr.read().decode() == "maf: terminated\n"
    reported = {
        granted["pattern"]
        for answer in answers if "result" in answer and not answer["result"]["isError"]
        for granted in answer["result"]["structuredContent"]["granted"]
    }
    listed = workspace.maf(workspace.main, "reservation", "list", "--json")
    stored = {reservation["pattern"] for reservation in json.loads(listed.stdout)}
    # Before: reservations written by calls under way whose answers were never sent.
    assert stored == reported
    assert len({answer["id"] for answer in answers}) == len(answers)
    refused = [answer for answer in answers if "error" in answer or answer["result"]["isError"]]
    for answer in refused:  # begun after the signal: said so, and nothing was done
        said = answer["error"]["message"] if "error" in answer else answer["result"]["content"][0]["text"]
        assert "the server is ending" in said, answer


def test_a_request_with_params_the_sdk_refuses_is_told_what_was_wrong(workspace: Workspace) -> None:
    wire = Wire(workspace, "alice", initialize=False)
    try:
        wire.send('{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "status", "arguments": {}}}')
        early = wire.answer()
        wire.initialize()
        wire.send('{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"arguments": {}}}',
                  '{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "status", "arguments": []}}')
        nameless, listed = wire.answer(), wire.answer()
    finally:
        wire.close()

    # Before: each was "Invalid request parameters", with data "".
    assert (early["id"], early["error"]["code"]) == (1, -32602)
    assert early["error"]["message"].startswith("not initialized: send initialize")
    assert nameless["error"]["message"].startswith("tools/call: params.name is required")
    assert listed["error"]["message"] == "tools/call: params.arguments must be an object, not []"


@pytest.mark.slow
def test_a_signal_ends_the_server_as_it_asks_when_stdin_closes_at_the_same_time(workspace: Workspace) -> None:
    # The signal and the end of stdin race, and the wrong one won one time in five to twenty: twenty chances.
    expected = {15: (143, "maf: terminated\n"), 2: (130, "maf: interrupted\n")}
    ended = []
    for signals in ([15, 2, 15, 2, 15], [2, 15, 2, 15, 2]) * 2:
        wires = [Wire(workspace, "alice", initialize=False) for _ in signals]  # a few started side by side
        try:
            for wire, signum in zip(wires, signals):
                wire.initialize()
                wire.send('{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "status", "arguments": {}}}')
                assert wire.answer()["id"] == 1  # nothing under way
                wire.server.send_signal(signum)  # a client shutting down ends the server
                assert wire.server.stdin is not None
                wire.server.stdin.close()  # and closes its end
                returncode = wire.server.wait(STEP_S)
                assert wire.server.stderr is not None
                ended.append(((returncode, wire.server.stderr.read().decode()), expected[signum]))
        finally:
            for wire in wires:
                wire.close()

    # Before: some of them exited 0 without a word, as if the client had only closed stdin.
    assert [found for found, _ in ended] == [wanted for _, wanted in ended]
