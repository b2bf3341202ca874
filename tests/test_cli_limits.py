"""`--limit N` on the listing commands, newest first where time matters; evidence rows show when they were recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_run import run, scratch_folder
from pytest_maf import tasks
from pytest_maf.clock import ManualClock
from pytest_maf.evidence import list_recorded_evidence, record_evidence
from pytest_maf.store import Store, open_store

HOUR_MS = 3_600_000


def record_three(store: Store, clock: ManualClock) -> None:
    """Evidence of task a (attempt 1) an hour apart: unit, then lint; then task b's unit."""
    for task_id in ("a", "b"):
        tasks.add_task(store, task_id=task_id)
    tasks.claim_next_task(store, "agent-1", HOUR_MS * 10)
    tasks.claim_next_task(store, "agent-1", HOUR_MS * 10)
    for task_id, verifier in (("a", "unit"), ("a", "lint"), ("b", "unit")):
        clock.advance(HOUR_MS)
        record_evidence(store, task_id, 1, verifier, "PASS", agent_id="agent-1")


def test_evidence_is_listed_newest_first_with_the_time_it_was_recorded(store: Store, clock: ManualClock) -> None:
    start = clock.now_ms
    record_three(store, clock)

    listed = list_recorded_evidence(store)
    assert [(row.evidence.task_id, row.evidence.verifier, row.recorded_at) for row in listed] == [
        ("b", "unit", start + 3 * HOUR_MS), ("a", "lint", start + 2 * HOUR_MS), ("a", "unit", start + HOUR_MS),
    ]
    assert [row.evidence.verifier for row in list_recorded_evidence(store, "a", limit=1)] == ["lint"]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return scratch_folder(tmp_path, monkeypatch)


def test_maf_evidence_list_shows_the_time_and_takes_limit(capsys: pytest.CaptureFixture[str], in_tmp: Path) -> None:
    clock = ManualClock(1_700_000_000_000)  # 2023-11-14T22:13:20Z
    with open_store(in_tmp / ".maf" / "runtime.db", clock=clock, create=True) as store:
        record_three(store, clock)

    code, out, _ = run(capsys, "evidence", "list", "--limit", "2")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["RECORDED", "TASK", "ATTEMPT"]
    assert [row.split()[:4] for row in rows] == [
        ["2023-11-15T01:13:20Z", "b", "1", "unit"], ["2023-11-15T00:13:20Z", "a", "1", "lint"],
    ]
    code, out, _ = run(capsys, "evidence", "list", "--task", "a", "--json", "--limit", "5")
    assert [(row["verifier"], row["recorded_at"]) for row in json.loads(out)] == [
        ("lint", 1_700_000_000_000 + 2 * HOUR_MS), ("unit", 1_700_000_000_000 + HOUR_MS),
    ]


def test_maf_task_list_limit_keeps_claim_order(capsys: pytest.CaptureFixture[str], in_tmp: Path) -> None:
    assert run(capsys, "setup")[0] == 0
    for task_id, priority in (("later", "50"), ("first", "1"), ("second", "10")):
        assert run(capsys, "task", "add", "--id", task_id, "--priority", priority)[0] == 0
    code, out, _ = run(capsys, "task", "list", "--limit", "2", "--json")
    assert code == 0 and [task["id"] for task in json.loads(out)] == ["first", "second"]


def test_maf_mail_list_is_newest_first_and_takes_limit(capsys: pytest.CaptureFixture[str], in_tmp: Path) -> None:
    for subject in ("one", "two", "three"):
        assert run(capsys, "mail", "send", "--from", "a1", "--to", "b2", "--subject", subject, "--body", "x")[0] == 0
    code, out, _ = run(capsys, "mail", "list", "--agent", "b2", "--json")
    assert code == 0 and [m["subject"] for m in json.loads(out)] == ["three", "two", "one"]
    code, out, _ = run(capsys, "mail", "list", "--agent", "b2", "--limit", "1")
    assert code == 0 and len(out.splitlines()) == 1 and out.rstrip().endswith("three")


@pytest.mark.parametrize("value", ["0", "-3", "many", "1e3", "", "99999999999999999999", "\x1b[31m", "1_000", "\u0663"])
@pytest.mark.parametrize("command", [["task", "list"], ["evidence", "list"], ["mail", "list", "--agent", "b2"]])
def test_a_bad_limit_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], in_tmp: Path, command: list[str], value: str) -> None:
    code, out, err = run(capsys, *command, "--limit", value)
    assert code == 2 and out == ""
    (line,) = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]
    assert line.startswith(f"maf {' '.join(command[:2])}: error: argument --limit: expected a whole number")
    assert "\x1b" not in err
    assert not (in_tmp / ".maf").exists()


@pytest.mark.parametrize("value", ["\u0663", "1_000", "1.5", "99999999999999999999", ""])
def test_a_priority_is_a_whole_number_in_plain_digits(capsys: pytest.CaptureFixture[str], in_tmp: Path, value: str) -> None:
    # Python's int() reads "\u0663" (ARABIC-INDIC DIGIT THREE) as 3 and "1_000" as 1000; a user reads neither so.
    code, out, err = run(capsys, "task", "add", "--id", "t1", "--priority", value)
    assert code == 2 and out == "" and "argument --priority: expected a whole number" in err
    assert not (in_tmp / ".maf").exists()
