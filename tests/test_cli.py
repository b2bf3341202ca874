"""The `maf` command: output, JSON for scripts, and the exit codes of pytest_maf/errors.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_maf import tasks
from pytest_maf.cli import main
from pytest_maf.clock import ManualClock, system_clock
from pytest_maf.store import open_store


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("MAF_DB_PATH", "MAF_TASK_LEASE_TTL", "MAF_TASK_LEASE_MAX_TTL", "MAF_TASK_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_setup_reports_creation_then_finds_it(capsys: pytest.CaptureFixture[str], in_tmp: Path) -> None:
    code, out, _ = run(capsys, "setup")
    assert code == 0
    assert f"created {in_tmp / '.maf' / 'runtime.db'}" in out
    (listed,) = [line.removeprefix("tables: ") for line in out.splitlines() if line.startswith("tables: ")]
    assert listed == ", ".join(sorted(listed.split(", ")))
    assert {"tasks", "leases", "events", "evidence", "reservations", "escalations", "counters"} <= set(listed.split(", "))

    code, out, _ = run(capsys, "setup")
    assert code == 0 and "nothing to do" in out


def test_setup_in_a_subdirectory_uses_the_repository_root(
    capsys: pytest.CaptureFixture[str], in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    git(in_tmp, "init", "-q")
    (in_tmp / "src" / "deep").mkdir(parents=True)
    monkeypatch.chdir(in_tmp / "src" / "deep")

    assert run(capsys, "setup")[0] == 0

    assert (in_tmp / ".maf" / "runtime.db").is_file()
    assert not (in_tmp / "src" / "deep" / ".maf").exists()


def test_a_linked_worktree_shares_the_main_store(
    capsys: pytest.CaptureFixture[str], in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main_tree = in_tmp / "repo"
    main_tree.mkdir()
    git(main_tree, "init", "-q")
    git(main_tree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "root")
    git(main_tree, "worktree", "add", "-q", str(in_tmp / "agent-b"))
    monkeypatch.chdir(in_tmp / "agent-b")

    run(capsys, "setup")

    assert (main_tree / ".maf" / "runtime.db").is_file()


def test_db_path_from_environment_and_flag(
    capsys: pytest.CaptureFixture[str], in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAF_DB_PATH", "env/runtime.db")
    run(capsys, "setup")
    run(capsys, "--db", "flag/runtime.db", "setup")
    assert (in_tmp / "env" / "runtime.db").is_file()
    assert (in_tmp / "flag" / "runtime.db").is_file()


def test_whole_lifecycle_from_the_shell(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "setup")
    code, out, _ = run(capsys, "task", "add", "--id", "t1", "--payload", '{"goal": "fix"}')
    assert (code, out) == (0, "t1\n")

    claim = run_json(capsys, "task", "claim", "--agent", "a", "--ttl", "60")
    assert set(claim) == {"task_id", "attempt", "agent_id", "lease_expires_at"}  # type: ignore[arg-type]
    assert claim["task_id"] == "t1" and claim["attempt"] == 1  # type: ignore[index]

    holder = ["t1", "--agent", "a", "--attempt", "1"]
    assert run(capsys, "task", "renew", *holder, "--ttl", "60")[0] == 0
    assert run(capsys, "task", "start", *holder)[1] == "t1 is RUNNING\n"
    assert run(capsys, "task", "verify", *holder)[1] == "t1 is VERIFYING\n"
    code, out, _ = run(
        capsys, "evidence", "add", "t1", "--agent", "a", "--attempt", "1", "--verifier", "unit",
        "--result", "PASS", "--details", '{"passed": 12}',
    )
    assert code == 0 and "recorded PASS" in out
    code, out, _ = run(capsys, "task", "finish", *holder)
    assert code == 0 and out.startswith("COMMITTED") and "t1 is DONE" in out

    shown = run_json(capsys, "task", "show", "t1")
    assert shown["task"]["state"] == "DONE"  # type: ignore[index]
    assert shown["evidence"][0]["details"] == {"passed": 12}  # type: ignore[index]
    kinds = [event["kind"] for event in shown["events"]]  # type: ignore[index]
    assert kinds == ["add", "claim", "renew", "start", "verify", "evidence", "commit", "done"]


def test_failed_verification_prints_rollback(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "setup")
    run(capsys, "task", "add", "--id", "t1")
    run(capsys, "task", "claim", "--agent", "a")
    holder = ["t1", "--agent", "a", "--attempt", "1"]
    run(capsys, "task", "start", *holder)
    run(capsys, "task", "verify", *holder)
    run(capsys, "evidence", "add", "t1", "--agent", "a", "--attempt", "1", "--verifier", "unit", "--result", "fail")

    code, out, _ = run(capsys, "task", "finish", *holder)

    assert code == 0
    assert out.startswith("ROLLBACK: 1 of 1 verifiers failed: unit") and "t1 is READY" in out


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["task", "claim", "--agent", "a"], 3, "no READY task"),
        (["task", "show", "nope"], 2, "no task with id 'nope'"),
        (["task", "cancel", "nope"], 2, "no task with id 'nope'"),
        (["task", "add", "--id", "t0"], 2, "already exists"),
        (["task", "start", "t0", "--agent", "a", "--attempt", "1"], 4, "has no lease"),
        (["task", "claim", "--agent", "a", "--ttl", "0"], 2, "above 0"),
        (["task", "claim", "--agent", "a", "--ttl", "99999"], 2, "above the maximum"),
        (["task", "list", "--state", "SLEEPING"], 2, "unknown state"),
        (["evidence", "add", "t0", "--agent", "a", "--attempt", "1", "--verifier", "v", "--result", "PASS", "--details", "[1]"], 2, "JSON object"),
    ],
)
def test_user_mistakes_are_one_line_with_the_design_exit_code(
    capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    run(capsys, "setup")
    run(capsys, "task", "add", "--id", "t0")
    if argv[:2] == ["task", "claim"] and "--ttl" not in argv:
        run(capsys, "task", "cancel", "t0")

    got_code, out, err = run(capsys, *argv)

    assert got_code == code
    assert message in err
    assert err.startswith("maf: error: ") and err.count("\n") == 1
    assert out == ""


def test_a_stale_holder_gets_exit_4(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "setup")
    run(capsys, "task", "add", "--id", "t1")
    run(capsys, "task", "claim", "--agent", "a")

    code, _, err = run(capsys, "task", "start", "t1", "--agent", "b", "--attempt", "1")

    assert code == 4 and "leased to agent 'a'" in err


def test_illegal_transition_gets_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "setup")
    run(capsys, "task", "add", "--id", "t1")
    run(capsys, "task", "claim", "--agent", "a")

    code, _, err = run(capsys, "task", "finish", "t1", "--agent", "a", "--attempt", "1")

    assert code == 2
    assert "cannot finish task 't1': it is LEASED" in err


def test_invalid_json_payload_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "setup")
    with pytest.raises(SystemExit) as exited:
        main(["task", "add", "--payload", "{nope"])
    assert exited.value.code == 2
    assert "--payload: is not valid JSON" in capsys.readouterr().err
    assert run_json(capsys, "task", "list") == []


def test_commands_before_setup_say_to_run_it(capsys: pytest.CaptureFixture[str], in_tmp: Path) -> None:
    code, _, err = run(capsys, "task", "list")
    assert code == 2 and "run `maf setup` first" in err
    assert not (in_tmp / ".maf").exists()


def test_reclaim_reports_where_tasks_went(capsys: pytest.CaptureFixture[str], in_tmp: Path) -> None:
    run(capsys, "setup")
    # Leases granted ten minutes ago with a 30 s TTL are long expired now.
    past = ManualClock(system_clock() - 600_000)
    with open_store(in_tmp / ".maf" / "runtime.db", clock=past) as store:
        tasks.add_task(store, task_id="t1")
        tasks.add_task(store, task_id="t2", max_attempts=1)
        tasks.claim_next_task(store, "a", 30_000)
        tasks.claim_next_task(store, "a", 30_000)

    report = run_json(capsys, "leases", "reclaim")
    code, out, _ = run(capsys, "leases", "reclaim")

    assert report["reclaimed"] == 2  # type: ignore[index]
    assert report["moved_to"] == {"READY": 1, "DEAD": 1}  # type: ignore[index]
    assert (code, out) == (0, "reclaimed 0 expired lease(s)\n")


def test_list_filters_by_state(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "setup")
    for task_id in ("t1", "t2", "t3"):
        run(capsys, "task", "add", "--id", task_id)
    run(capsys, "task", "cancel", "t2")

    ready = run_json(capsys, "task", "list", "--state", "ready")
    code, out, _ = run(capsys, "task", "list")

    assert [task["id"] for task in ready] == ["t1", "t3"]  # type: ignore[index, union-attr]
    assert code == 0 and "t2" in out and "DEAD" in out


def test_corrupt_database_exits_2_without_traceback(in_tmp: Path) -> None:
    (in_tmp / ".maf").mkdir()
    (in_tmp / ".maf" / "runtime.db").write_bytes(b"garbage" * 1000)

    result = subprocess.run(
        [sys.executable, "-m", "pytest_maf", "task", "list"],
        cwd=in_tmp,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot use the runtime database" in result.stderr


def test_evidence_list_and_junit_export(capsys: pytest.CaptureFixture[str], in_tmp: Path) -> None:
    import xml.etree.ElementTree as ET

    run(capsys, "setup")
    run(capsys, "task", "add", "--id", "t1")
    run(capsys, "task", "claim", "--agent", "a")
    for verifier, result, details in (
        ("unit", "PASS", "{}"),
        ("lint", "FAIL", '{"message": "3 lint errors"}'),
        ("cache", "FAIL", '{"message": "cold", "severity": "warning", "blocking": false}'),
    ):
        run(capsys, "evidence", "add", "t1", "--agent", "a", "--attempt", "1", "--verifier", verifier, "--result", result, "--details", details)

    listed = run_json(capsys, "evidence", "list", "--task", "t1")
    code, out, _ = run(capsys, "evidence", "export", "--junit", "reports/evidence.xml", "--task", "t1")

    assert [row["verifier"] for row in listed] == ["cache", "lint", "unit"]  # type: ignore[index]
    assert code == 0 and "wrote 3 evidence row(s)" in out
    suite = ET.parse(in_tmp / "reports" / "evidence.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "t1 attempt 1"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["lint"].find("failure").get("message") == "3 lint errors"  # type: ignore[union-attr]
    assert cases["cache"].find("skipped").get("message") == "warning: cold"  # type: ignore[union-attr]
    assert list(cases["unit"]) == []
    assert run(capsys, "evidence", "export", "--junit", "x.xml", "--task", "nope")[0] == 2


def test_evidence_whose_text_xml_cannot_hold_is_exported_with_escapes(
    capsys: pytest.CaptureFixture[str], in_tmp: Path
) -> None:
    import xml.etree.ElementTree as ET

    run(capsys, "setup")
    run(capsys, "task", "add", "--id", "t1")
    run(capsys, "task", "claim", "--agent", "a")
    for verifier, message in (("nonchar", "got \\ufffe"), ("surrogate", "half \\ud800 of it"), ("control", "bell \\u0007")):
        code, _, err = run(capsys, "evidence", "add", "t1", "--agent", "a", "--attempt", "1", "--verifier", verifier,
                           "--result", "FAIL", "--details", f'{{"message": "{message}"}}')
        assert code == 0, err

    code, out, err = run(capsys, "evidence", "export", "--output", "evidence.xml")

    assert code == 0, err  # before: "internal error: ExpatError: reference to invalid character number" (70)
    suite = ET.parse(in_tmp / "evidence.xml").getroot().find("testsuite")
    assert suite is not None
    messages = {case.get("name"): case.find("failure").get("message") for case in suite.iter("testcase")}  # type: ignore[union-attr]
    assert messages == {"nonchar": "got \\ufffe", "surrogate": "half \\ud800 of it", "control": "bell \\x07"}
