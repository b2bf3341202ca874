"""The views read on through rows of shapes only damage or another tool leaves, line their columns up
by what a terminal shows (a wide character takes two columns), and log free text escaped."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pytest_maf import agents, reservations, tasks
from pytest_maf.cli import main
from pytest_maf.cli.common import table_lines
from pytest_maf.cli.views import clip
from pytest_maf.store import open_store
from pytest_maf.terminal import cells

MINUTE = 60_000


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "runtime.db"
    with open_store(path, create=True) as store:
        tasks.add_task(store, task_id="fix-1")
    return path


def damaged(db: Path, *statements: str) -> None:
    with sqlite3.connect(db) as connection:
        for statement in statements:
            connection.execute(statement)


def test_queued_mail_of_another_shape_is_counted_not_a_crash(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    damaged(
        db,
        "INSERT INTO mail_outbox VALUES ('m-list', 'r1', '[1]', 0, NULL)",
        """INSERT INTO mail_outbox VALUES ('m-object', 'r2', '{"to": {"a": 1}}', 0, NULL)""",
    )

    # Before: AttributeError and TypeError, exit 70, from status, agents and report alike.
    assert main(["--db", str(db), "status", "--json"]) == 0
    queued = json.loads(capsys.readouterr().out)
    assert "?" in json.dumps(queued)
    assert main(["--db", str(db), "agents"]) == 0
    assert main(["--db", str(db), "report", "--html", "report.html"]) == 0
    assert "could not be delivered" in capsys.readouterr().err  # said, and kept queued


@pytest.mark.timeout(60)  # before the fix, the memory ran out: stopped well before
def test_a_report_of_a_task_whose_attempt_count_is_damaged_stays_small(db: Path, tmp_path: Path) -> None:
    damaged(db, f"UPDATE tasks SET attempts = {2**63 - 1}")

    # Before: a list of every attempt without evidence, built until the memory ran out.
    assert main(["--db", str(db), "report", "--html", "report.html"]) == 0

    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert len(page) < 100_000 and f"attempt {2**63 - 1} of" in page


def test_columns_line_up_by_terminal_columns_whatever_the_characters(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    agents.set_client("maf")  # as a `maf task claim` names it (the test's own fixture puts it back)
    with open_store(db) as store:
        tasks.add_task(store, task_id="fix-2")
        tasks.claim_task(store, "fix-1", "агент-漢字-🤖", 10 * MINUTE)
        tasks.claim_task(store, "fix-2", "plain", 10 * MINUTE)

    assert main(["--db", str(db), "agents"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()[:3]

    # Before: the wide agent's row ran three columns past the header's CLIENT.
    starts = {cells(line[: line.index("maf")]) for line in rows}
    assert starts == {cells(header[: header.index("CLIENT")])}


def test_a_table_and_a_clipped_line_count_wide_characters_twice() -> None:
    lines = table_lines(["NAME", "N"], [["漢字", 1], ["ab", 22]])

    assert [cells(line) for line in lines] == [cells("NAME   N")] * 3
    assert clip("漢字漢字abc", 5) == "漢字\x1b[0m"  # 4 columns: a wide character that does not fit whole is left out


def test_a_logged_reason_reaches_the_terminal_escaped(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open_store(db) as store:
        reservations.acquire(store, ["zz/**"], "bob", 10 * MINUTE)
    reason = "a\x1b[31mRED\x1b]8;;http://x/\x1b\\L\rOVER\u202e"

    assert main(["--db", str(db), "reservation", "release", "zz/**", "--agent", "lead", "--force", "--reason", reason]) == 0

    logged = capsys.readouterr().err
    assert "reservation_force_release" in logged and "\x1b" not in logged and "\u202e" not in logged
    assert "reason=a\\x1b[31mRED" in logged  # before: the ESC itself, which coloured the terminal
