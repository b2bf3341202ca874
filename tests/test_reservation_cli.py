"""`maf reservation ...` from the shell: output, JSON and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_maf.cli import main


@pytest.fixture(autouse=True)
def store_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("MAF_DB_PATH", "MAF_AGENT_MAIL_ROOT", "MAF_RESERVATION_DEFAULT_TIMEOUT", "MAF_RESERVATION_MAX_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["setup"]) == 0
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_acquire_conflict_lists_every_holder_and_grants_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "reservation", "acquire", "src/**", "--agent", "a", "--reason", "refactor")
    run(capsys, "reservation", "acquire", "docs/x.md", "--agent", "c")

    code, out, err = run(capsys, "reservation", "acquire", "src/app.py", "docs/*.md", "tests/**", "--agent", "b", "--json")

    assert code == 1
    report = json.loads(out)
    assert report["granted"] == []
    assert report["exit_code"] == 1 and "reserved" in report["error"]  # a failure, shaped as every --json failure
    assert {(c["requested"], c["holder"], c["holder_pattern"], c["reason"]) for c in report["conflicts"]} == {
        ("src/app.py", "a", "src/**", "refactor"),
        ("docs/*.md", "c", "docs/x.md", ""),
    }
    assert all(c["expires_at"] > 0 for c in report["conflicts"])
    assert "src/app.py: a holds src/** (exclusive) until" in err
    code, out, _ = run(capsys, "reservation", "list", "--agent", "b", "--json")
    assert json.loads(out) == []


def test_ttl_limits_come_from_the_environment(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run(capsys, "reservation", "acquire", "a.txt", "--agent", "a", "--ttl", "121")
    assert code == 2 and "maximum of 120 minutes" in err

    monkeypatch.setenv("MAF_RESERVATION_MAX_TIMEOUT", "240")
    monkeypatch.setenv("MAF_RESERVATION_DEFAULT_TIMEOUT", "45")
    assert run(capsys, "reservation", "acquire", "a.txt", "--agent", "a", "--ttl", "121")[0] == 0
    code, out, _ = run(capsys, "reservation", "acquire", "b.txt", "--agent", "a", "--json")
    (granted,) = json.loads(out)["granted"]
    assert granted["expires_at"] - granted["created_at"] == 45 * 60_000


@pytest.mark.parametrize("pattern", ["/etc/hosts", "../elsewhere/x", "a/../../b", "/"])
def test_patterns_outside_the_repository_exit_2(capsys: pytest.CaptureFixture[str], pattern: str) -> None:
    code, _, err = run(capsys, "reservation", "acquire", pattern, "--agent", "a")
    assert code == 2 and err.startswith("maf: error: ") and len(err.splitlines()) == 1


def test_a_leading_slash_names_the_root_and_spellings_of_one_pattern_are_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "reservation", "acquire", "/README.md", "docs/", "src/../lib/**", "--agent", "a", "--json")
    assert code == 0
    assert [g["pattern"] for g in json.loads(out)["granted"]] == ["/README.md", "docs/", "lib/**"]

    code, out, _ = run(capsys, "reservation", "release", "./README.md", "**/docs/**", "/lib/", "--agent", "a")
    assert code == 0 and out.splitlines() == [
        "released /README.md held by a", "released docs/ held by a", "released lib/** held by a",
    ]


def test_release_by_another_agent_exits_4_and_force_needs_a_reason(capsys: pytest.CaptureFixture[str], store_in_tmp: Path) -> None:
    run(capsys, "reservation", "acquire", "src/**", "--agent", "a")

    assert run(capsys, "reservation", "release", "src/**", "--agent", "b")[0] == 4
    assert run(capsys, "reservation", "release", "src/**", "--agent", "b", "--force")[0] == 2
    code, out, _ = run(capsys, "reservation", "release", "./src/", "--agent", "b", "--force", "--reason", "stuck")

    assert code == 0 and "a was told by agent-mail" in out
    assert len(list((store_in_tmp / ".agent-mail" / "messages" / "a").glob("*.json"))) == 1


def test_check_and_status(capsys: pytest.CaptureFixture[str], store_in_tmp: Path) -> None:
    run(capsys, "reservation", "acquire", "src/**", "--agent", "a")
    run(capsys, "reservation", "acquire", "src/shared.py", "--agent", "c", "--shared")  # conflicts: exclusive held
    run(capsys, "reservation", "acquire", "docs/**", "--agent", "c", "--shared")

    code, out, _ = run(capsys, "reservation", "check", "src/app.py", "docs/x.md", "--agent", "b")
    assert code == 1
    assert "src/app.py: blocked, a holds src/**" in out and "docs/x.md: free" in out
    assert run(capsys, "reservation", "check", "src/app.py", "--agent", "a")[0] == 0

    code, out, _ = run(capsys, "reservation", "status", "--file", str(store_in_tmp / "docs" / "x.md"))
    assert code == 0 and "docs/x.md: c holds docs/** (shared)" in out


def test_renew_extends_only_for_the_holder(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "reservation", "acquire", "src/**", "--agent", "a", "--ttl", "5")
    code, out, _ = run(capsys, "reservation", "renew", "src/**", "--agent", "a", "--ttl", "60", "--json")
    (renewed,) = json.loads(out)
    assert code == 0 and renewed["expires_at"] - renewed["created_at"] >= 59 * 60_000
    assert run(capsys, "reservation", "renew", "src/**", "--agent", "b")[0] == 4


def test_a_long_reason_is_one_line_of_the_list_as_in_maf_status_and_whole_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    reason = "why " * 500  # 2,000 characters, the most a reason may hold
    run(capsys, "reservation", "acquire", "src/**", "--agent", "a", "--reason", reason)

    code, out, _ = run(capsys, "reservation", "list")

    # Before: the whole reason on the row, two thousand characters wide.
    assert code == 0 and len(out.splitlines()) == 2
    assert out.splitlines()[1].endswith("... (1800 more characters; --json shows all)")
    assert json.loads(run(capsys, "reservation", "list", "--json")[1])[0]["reason"] == reason


def test_one_long_pattern_does_not_widen_every_row_of_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    long = "src/" + "deep/" * 60 + "file.py"  # 311 characters
    run(capsys, "reservation", "acquire", long, "--agent", "a")
    run(capsys, "reservation", "acquire", "docs/**", "--agent", "b")

    code, out, _ = run(capsys, "reservation", "list")

    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert code == 0 and long in rows
    # Before: every row padded to the longest pattern, 300 blanks before its agent.
    assert rows["docs/**"].startswith("docs/**" + " " * 55 + "b ")  # 60 wide at most, then two blanks


def test_a_conflict_that_comes_of_a_folder_at_any_depth_says_how_to_reserve_the_root_one_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pytest_maf.agent_tools import error_payload
    from pytest_maf.reservations import ReservationConflictError, acquire
    from pytest_maf.store import open_store

    assert run(capsys, "reservation", "acquire", "src/", "--agent", "a2")[0] == 0

    code, _, err = run(capsys, "reservation", "acquire", "tests/", "--agent", "a3")
    assert code == 1 and "tests/: a2 holds src/ (exclusive) until" in err and "(both match src/tests/a)" in err
    assert "    hint: your tests/ matches a tests folder at any depth (you can ask for /tests/ or tests/** for the root" in err
    assert "a2's src/ matches a src folder at any depth (a2 can hold /src/ or src/** for the root one only)" in err
    code, out, _ = run(capsys, "reservation", "acquire", "/tests/", "--agent", "a3", "--json")
    (conflict,) = json.loads(out)["conflicts"]
    assert code == 1 and conflict["hint"] == (
        "a2's src/ matches a src folder at any depth (a2 can hold /src/ or src/** for the root one only)"
    )
    code, out, err = run(capsys, "reservation", "acquire", "src/app.py", "--agent", "a3", "--json")
    assert code == 1 and json.loads(out)["conflicts"][0]["hint"] is None  # the root src/ holds it too: no help
    assert "hint" not in err
    with open_store(Path(".maf/runtime.db")) as store, pytest.raises(ReservationConflictError) as raised:
        acquire(store, ["docs/"], "a3", 60_000)
    assert "a2 can hold /src/" in error_payload(raised.value)["conflicts"][0]["hint"]  # the same for MCP tools
