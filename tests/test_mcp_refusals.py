"""`maf mcp` refusals as an agent reads them: in the tools' words, saying what was wrong, and short."""

from __future__ import annotations

import re

import pytest

from workspace import Workspace

pytest.importorskip("mcp", reason="maf mcp needs the mcp extra")

from test_mcp_server import bounded, ok, run, serving  # noqa: E402

COMMAND_WORDS = re.compile(r"`maf |--[a-z]")


@pytest.mark.slow
def test_a_refusal_names_the_tool_and_argument_that_is_the_way_out_not_a_command(workspace: Workspace) -> None:
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-1"))

    async def scenario() -> None:
        async with serving(workspace, workspace.main, "alice") as alice, \
                serving(workspace, workspace.second, "bob") as bob:
            await alice.ok("reservation_acquire", patterns=["src/"])
            claim = await alice.ok("task_claim", task_id="fix-1")
            refusals = [
                await bob.refused("reservation_release", patterns=["src/"]),
                await bob.refused("reservation_renew", patterns=["src/"]),
                await bob.refused("task_start", task_id="fix-1", attempt=claim["attempt"]),
                await bob.refused("task_renew", task_id="fix-1", attempt=claim["attempt"] + 1),
                await bob.refused("task_show", task_id="no-such-task"),
                await bob.refused("task_claim"),
            ]
            kinds = [refused["kind"] for refused in refusals]
            said = [refused["message"] for refused in refusals]

        assert kinds == ["not_holder", "not_holder", "lease_lost", "lease_lost", "not_found", "nothing_to_claim"]
        # Before: "(or use --force with --reason)", "with `maf task claim`", "(see `maf task list`)".
        assert [message for message in said if COMMAND_WORDS.search(message)] == []
        assert said[0].endswith("(or use force with reason)")  # this tool's own arguments
        assert said[1].endswith("(or use reservation_release with force and a reason)")
        assert "task_claim" in said[3]
        assert said[4].endswith("(status counts the tasks in each state; task_claim without task_id leases the next READY one)")

    run(scenario())


def test_a_conflict_refusal_lists_the_first_twenty_conflicts_and_counts_them_all(workspace: Workspace) -> None:
    ok(workspace.maf(workspace.main, "reservation", "acquire", *(f"src/f{n}.py" for n in range(25)), agent="bob"))

    async def scenario() -> None:
        async with serving(workspace, workspace.main, "alice") as alice:
            result = await bounded(alice.session.call_tool("reservation_acquire", {"patterns": ["*"]}))
        assert result.is_error
        error = result.structured_content["error"]  # type: ignore[index]
        text = result.content[0].text  # type: ignore[union-attr]

        # Before: all of them, however many (1,300 reservations: an answer of 330 KB).
        assert (error["kind"], len(error["conflicts"]), error["conflict_count"]) == ("conflict", 20, 25)
        assert text.count(": bob holds ") == 20
        assert text.endswith("  ... and 5 more (reservation_list lists every live reservation)")

    run(scenario())


@pytest.mark.slow
def test_json_text_for_an_array_or_an_object_is_refused_as_the_schema_says(workspace: Workspace) -> None:
    async def scenario() -> None:
        async with serving(workspace, workspace.main, "alice") as alice:
            patterns = await alice.refused("reservation_acquire", patterns='["src/x"]')
            details = await alice.refused("evidence_record", task_id="t1", attempt=1, verifier="unit", result="PASS",
                                          details='{"a": 1}')
            listed = await alice.ok("reservation_list")

        # Before: read as JSON, and src/x was reserved.
        assert (patterns["kind"], details["kind"]) == ("bad_input", "bad_input")
        assert 'patterns: expected array, got string "[\\"src/x\\"]"' in patterns["message"]
        assert "details: expected null or object, got string" in details["message"]
        assert listed["reservations"] == []

    run(scenario())


@pytest.mark.slow
def test_renewing_a_reservation_tied_to_a_task_says_it_lasts_as_long_as_the_lease(workspace: Workspace) -> None:
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-1"))

    async def scenario() -> None:
        async with serving(workspace, workspace.main, "alice") as alice:
            claim = await alice.ok("task_claim", task_id="fix-1", ttl_seconds=60)
            await alice.ok("reservation_acquire", patterns=["src/tied.py"], task_id="fix-1")
            await alice.ok("reservation_acquire", patterns=["src/free.py"])
            renewed = await alice.ok("reservation_renew", patterns=["src/tied.py", "src/free.py"], ttl_minutes=90)

        tied, free = renewed["renewed"]
        assert tied["expires_at"] < free["expires_at"]
        # Before: "renewed", and no word that ttl_minutes did not apply to it.
        (note,) = renewed["notes"]
        assert note.startswith("src/tied.py is tied to task fix-1: it lasts as long as the task's lease")
        assert "task_renew" in note
        assert claim["task_id"] == "fix-1"

    run(scenario())
