"""A lease kept alive keeps what is tied to it, and keeping it alive never cuts it short."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_maf import reservations, tasks
from pytest_maf.cli import main
from pytest_maf.clock import ManualClock
from pytest_maf.store import Store

MINUTE_MS = 60_000


def test_a_reservation_tied_to_a_task_lasts_as_long_as_its_kept_lease(store: Store, clock: ManualClock) -> None:
    tasks.add_task(store, task_id="fix-42")
    claim = tasks.claim_next_task(store, "claude-1", 30 * MINUTE_MS)
    reservations.acquire(store, ["src/api/"], "claude-1", MINUTE_MS, task_id="fix-42")
    tasks.start_task(store, "fix-42", "claude-1", claim.attempt)

    for _ in range(3):  # 45 minutes of work, the lease renewed every quarter of an hour
        clock.advance(15 * MINUTE_MS)
        tasks.renew_lease(store, "fix-42", "claude-1", claim.attempt, 30 * MINUTE_MS)

    with pytest.raises(reservations.ReservationConflictError):
        reservations.acquire(store, ["src/api/handlers.py"], "codex-2", MINUTE_MS)
    (held,) = reservations.list_reservations(store)
    (lease,) = store.read(lambda transaction: transaction.list_leases("claude-1"))
    assert (held.agent_id, held.expires_at) == ("claude-1", lease.lease_expires_at)


def test_a_reservation_tied_to_a_longer_lease_starts_as_long_as_it(store: Store) -> None:
    tasks.add_task(store, task_id="fix-42")
    tasks.claim_next_task(store, "claude-1", 120 * MINUTE_MS)

    (held,) = reservations.acquire(store, ["src/"], "claude-1", MINUTE_MS, task_id="fix-42")

    (lease,) = store.read(lambda transaction: transaction.list_leases("claude-1"))
    assert held.expires_at == lease.lease_expires_at


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    for name in ("MAF_DB_PATH", "MAF_DATABASE_URL", "MAF_AGENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAF_AGENT_ID", "claude-1")
    assert main(["setup"]) == 0
    assert main(["task", "add", "--id", "fix-42"]) == 0
    return tmp_path


def lease_left_s(capsys: pytest.CaptureFixture[str]) -> float:
    capsys.readouterr()
    assert main(["task", "show", "fix-42", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    from pytest_maf.clock import system_clock

    return (shown["lease"]["lease_expires_at"] - system_clock()) / 1000


@pytest.mark.parametrize("keep", [
    ["task", "heartbeat"], ["task", "renew", "fix-42", "--attempt", "1"], ["task", "run", "fix-42", "--", sys.executable, "-c", "pass"],
])
def test_keeping_a_lease_without_a_ttl_never_shortens_a_longer_one(
    repo: Path, capsys: pytest.CaptureFixture[str], keep: list[str]
) -> None:
    assert main(["task", "claim", "--ttl", "7200"]) == 0

    assert main(keep) == 0

    assert lease_left_s(capsys) > 7000


def test_an_explicit_ttl_still_sets_the_lease_from_now(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["task", "claim", "--ttl", "7200"]) == 0

    assert main(["task", "renew", "fix-42", "--attempt", "1", "--ttl", "600"]) == 0

    assert 500 < lease_left_s(capsys) <= 600


FINISH_THEN_LINGER = """
import time
from pytest_maf import tasks
from pytest_maf.evidence import record_evidence
from pytest_maf.store import open_store
with open_store(".maf/runtime.db") as store:
    tasks.begin_verification(store, "fix-42", "claude-1", 1)
    record_evidence(store, "fix-42", 1, "tests", "PASS", agent_id="claude-1")
    tasks.finish_task(store, "fix-42", "claude-1", 1)
time.sleep(4.5)  # the keeper renews meanwhile (every 2 seconds, at a 6-second lease), and finds the lease ended
print("linger done")
"""


def test_a_command_that_finishes_its_own_task_runs_to_its_end(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["task", "claim", "--ttl", "6"]) == 0
    assert main(["task", "start", "fix-42", "--attempt", "1"]) == 0
    capsys.readouterr()

    code = main(["task", "run", "fix-42", "--ttl", "6", "--", sys.executable, "-c", FINISH_THEN_LINGER])

    err = capsys.readouterr().err
    assert (code, "lease" in err) == (0, False)
    assert main(["task", "show", "fix-42", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["task"]["state"] == "DONE"


def test_renewing_or_taking_again_a_tied_reservation_never_cuts_it_below_the_lease(store: Store, clock: ManualClock) -> None:
    tasks.add_task(store, task_id="fix-42")
    tasks.claim_next_task(store, "claude-1", 120 * MINUTE_MS)
    reservations.acquire(store, ["src/"], "claude-1", MINUTE_MS, task_id="fix-42")
    (lease,) = store.read(lambda transaction: transaction.list_leases("claude-1"))

    (renewed,) = reservations.renew(store, ["src/"], "claude-1", MINUTE_MS)
    (again,) = reservations.acquire(store, ["src/"], "claude-1", MINUTE_MS)  # without --task: still tied

    assert renewed.expires_at == again.expires_at == lease.lease_expires_at
    assert again.task_id == "fix-42"


def test_a_tied_reservation_shows_the_time_it_really_ends_its_lease_s_not_its_ttl(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before, acquire, list, check and the guard said "until" the longer --ttl while the reservation
    # ended with a shorter lease: another agent was told to wait minutes past the real end.
    assert main(["task", "claim", "--ttl", "20", "--json"]) == 0
    capsys.readouterr()
    assert main(["reservation", "acquire", "docs/", "--task", "fix-42", "--ttl", "5", "--json"]) == 0
    (acquired,) = json.loads(capsys.readouterr().out)["granted"]
    assert main(["task", "show", "fix-42", "--json"]) == 0
    lease_end = json.loads(capsys.readouterr().out)["lease"]["lease_expires_at"]

    assert acquired["expires_at"] == lease_end
    assert main(["reservation", "list", "--json"]) == 0
    assert [held["expires_at"] for held in json.loads(capsys.readouterr().out)] == [lease_end]

    assert main(["task", "heartbeat", "fix-42", "--ttl", "10"]) == 0  # shortened on purpose: the reservation too
    capsys.readouterr()
    assert main(["task", "show", "fix-42", "--json"]) == 0
    shorter = json.loads(capsys.readouterr().out)["lease"]["lease_expires_at"]
    assert main(["reservation", "list", "--json"]) == 0
    assert [held["expires_at"] for held in json.loads(capsys.readouterr().out)] == [shorter] and shorter < lease_end


def test_a_tied_reservation_follows_its_lease_both_ways(store: Store, clock: ManualClock) -> None:
    tasks.add_task(store, task_id="fix-42")
    claim = tasks.claim_next_task(store, "claude-1", MINUTE_MS)
    (held,) = reservations.acquire(store, ["src/"], "claude-1", 30 * MINUTE_MS, task_id="fix-42")
    assert held.expires_at == clock() + MINUTE_MS  # the lease's end, not the longer ttl's

    for ttl in (45 * MINUTE_MS, 5 * MINUTE_MS):  # extended, then shortened on purpose
        tasks.renew_lease(store, "fix-42", "claude-1", claim.attempt, ttl)
        (held,) = reservations.list_reservations(store)
        assert held.expires_at == clock() + ttl


def test_a_heartbeat_that_finds_a_lease_of_yours_expired_says_so_and_exits_4(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_maf.clock import ManualClock, system_clock
    from pytest_maf.store import open_store

    assert main(["task", "add", "--id", "fix-43"]) == 0
    with open_store(repo / ".maf" / "runtime.db") as store:
        tasks.claim_task(store, "fix-43", "claude-1", 60_000)  # kept
    # Claimed a minute ago for a second: run out, and nobody's claim has taken it back since.
    with open_store(repo / ".maf" / "runtime.db", clock=ManualClock(system_clock() - 60_000)) as store:
        tasks.claim_task(store, "fix-42", "claude-1", 1_000)
    capsys.readouterr()

    code = main(["task", "heartbeat", "--json"])  # before: exit 0, and not a word of fix-42

    out, err = capsys.readouterr()
    failure = json.loads(out)  # the error object, with what was renewed all the same
    assert (code, failure["exit_code"]) == (4, 4) and failure["error"].startswith("claude-1 lost fix-42 (attempt 1)")
    assert [lease["task_id"] for lease in failure["renewed"]] == ["fix-43"]
    assert [lease["task_id"] for lease in failure["lost"]] == ["fix-42"]
    assert re.fullmatch(r"maf: error: claude-1 lost fix-42 \(attempt 1\): its lease expired (59|60|61)s ago and another"
                        r" agent may claim it; stop its work\n", err)
    assert main(["task", "heartbeat"]) == 0  # told once: the task is given back, as its expiry gives it back


def test_the_agent_tools_keep_a_lease_as_the_commands_do_never_shortening_it_without_a_ttl(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before, the MCP task_heartbeat and task_renew cut a 4-hour lease to the 30-minute default.
    from pytest_maf.agent_tools import AgentTools
    from pytest_maf.config import load_settings

    agent = AgentTools(load_settings(), "claude-1", repo)
    claimed = agent.task_claim(task_id="fix-42", ttl_seconds=4 * 3600)
    (beat,) = agent.task_heartbeat()["renewed"]
    renewed = agent.task_renew("fix-42", claimed["attempt"])
    assert beat["lease_expires_at"] == renewed["lease_expires_at"] == claimed["lease_expires_at"]
    assert agent.task_renew("fix-42", claimed["attempt"], ttl_seconds=60)["lease_expires_at"] < claimed["lease_expires_at"]


@pytest.mark.parametrize(("ttl", "said"), [("0.001", "--ttl 0.001 is too short"), ("0.5", "--ttl 0.5 is too short")])
def test_task_run_refuses_a_lease_it_would_have_to_renew_more_than_three_times_a_second(
    repo: Path, capsys: pytest.CaptureFixture[str], ttl: str, said: str
) -> None:
    assert main(["task", "claim", "--agent", "claude-1"]) == 0
    capsys.readouterr()

    code = main(["task", "run", "fix-42", "--agent", "claude-1", "--ttl", ttl, "--", sys.executable, "-c", "pass"])

    err = capsys.readouterr().err
    assert code == 2 and said in err and "give at least 1 s" in err, err
    assert main(["history", "--task", "fix-42", "--json"]) == 0
    assert "renew" not in capsys.readouterr().out  # nothing written, not a renewal every third of a millisecond


def test_task_run_refuses_an_empty_command(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["task", "claim", "--agent", "claude-1"]) == 0
    capsys.readouterr()

    code = main(["task", "run", "fix-42", "--agent", "claude-1", "--", ""])

    assert code == 2 and "the command after `--` is empty" in capsys.readouterr().err
