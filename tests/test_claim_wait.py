"""`maf task claim --wait`: a claimer that waits for work instead of exiting 3."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from backends import backend_param
from pytest_maf import tasks
from pytest_maf.cli import main
from pytest_maf.errors import NothingToClaimError, UsageError
from pytest_maf.store import Store

WAIT_S = 30.0  # far longer than any wake-up takes: a waiter still blocked after it failed


def claim_in_background(store: Store, results: list[object]) -> threading.Thread:
    """A claimer on a connection of its own, waiting up to WAIT_S; its claim (or error) lands in ``results``."""

    def run() -> None:
        with store.reopen() as own:
            try:
                results.append(tasks.claim_next_task_waiting(own, "agent-waiting", 60_000, timeout_s=WAIT_S))
            except Exception as error:  # reported by the test, not lost in the thread
                results.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_waiting_claimer_takes_the_task_added_while_it_waits(store: Store) -> None:
    results: list[object] = []
    waiter = claim_in_background(store, results)
    waiter.join(0.3)
    assert waiter.is_alive() and results == []  # nothing READY: it waits, it does not exit

    tasks.add_task(store, task_id="late")
    waiter.join(WAIT_S / 2)

    assert not waiter.is_alive()
    (claim,) = results
    assert isinstance(claim, tasks.Claim) and (claim.task_id, claim.agent_id) == ("late", "agent-waiting")


def test_a_wait_that_runs_out_is_nothing_to_claim(store: Store) -> None:
    with pytest.raises(NothingToClaimError, match="within 0.2 s"):
        tasks.claim_next_task_waiting(store, "agent-a", 60_000, timeout_s=0.2)
    with pytest.raises(UsageError):
        tasks.claim_next_task_waiting(store, "agent-a", 60_000, timeout_s=float("nan"))


@pytest.mark.parametrize("backend", [backend_param("postgres")], indirect=True)  # SQLite's waiters poll
def test_on_postgresql_the_commit_that_makes_a_task_ready_wakes_the_waiter(store: Store) -> None:
    with store.reopen() as listener:
        listener.wait_for_work(0)  # starts listening
        woke = threading.Event()
        thread = threading.Thread(target=lambda: (listener.wait_for_work(WAIT_S), woke.set()), daemon=True)
        thread.start()
        thread.join(0.3)
        assert not woke.is_set()

        tasks.add_task(store, task_id="t1")

        assert woke.wait(WAIT_S / 2)  # woken by the commit, long before its wait ran out


def test_the_command_waits_then_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["setup"]) == 0
    capsys.readouterr()

    assert main(["task", "claim", "--agent", "a", "--wait", "--timeout", "0.2"]) == 3
    assert "no READY task to claim within 0.2 s" in capsys.readouterr().err
    assert main(["task", "claim", "--agent", "a", "--timeout", "5"]) == 2
    assert "give --wait too" in capsys.readouterr().err
    assert main(["task", "add", "--id", "t1"]) == 0
    assert main(["task", "claim", "--agent", "a", "--wait", "--timeout", "5"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("claimed t1 attempt 1 for a")
