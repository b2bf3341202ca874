"""What a verifier's outcome counts for: only a test that ran and passed is PASS;
a hung preflight check is interrupted at the preflight's time limit; a warning
a person accepted in configuration is recorded as acknowledged.

The pytester tests drive the plugin in-process; the workspace tests drive the
installed ``pytest`` and ``maf`` in a scratch git repository, as an agent does.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from backends import open_environment_store
from pytest_maf import tasks
from pytest_maf.evidence import list_evidence

if TYPE_CHECKING:
    from pytest_maf.store import Store
    from workspace import Workspace

NO_VERDICT_TESTS = """
import pytest

def test_skipped():
    pytest.skip("needs a GPU")

@pytest.mark.xfail(reason="known bug 17")
def test_xfailed():
    assert False

@pytest.mark.skipif(True, reason="not on this platform")
def test_skipped_by_marker():
    pass
"""

MIXED_TESTS = """
import pytest

def test_one():
    pass

def test_two():
    pass

def test_skipped():
    pytest.skip("later")

@pytest.mark.xfail(reason="known bug 17")
def test_xfailed():
    assert False

@pytest.mark.xfail(reason="fixed upstream?")
def test_xpassed():
    pass
"""

SLOW_CHECKS = """
import time
import pytest

@pytest.mark.maf_check(id="svc.slow")
def test_slow():
    time.sleep(12)

@pytest.mark.maf_check(id="svc.after")
def test_after():
    pass
"""

WARNING_CHECKS = """
import pytest

@pytest.mark.maf_check(id="svc.cache", severity="warning")
def test_cache_is_warm():
    pytest.fail("cache is cold; warm it with `make cache`", pytrace=False)

@pytest.mark.maf_check(id="svc.fine")
def test_fine():
    pass
"""

ACKNOWLEDGED = """
preflight:
  acknowledged_warnings:
    svc.cache:
      by: dana
      on: 2026-05-01
      reason: the cache warms on first use in CI
"""

# maf's count line: "2 passed, 0 failed, 1 skipped, 1 xfailed, 1 xpassed, 0 warning(s); task ..."
COUNTS = re.compile(r"^(?P<counts>\d+ passed, .*); task \S+ attempt \d+$", re.MULTILINE)


@pytest.fixture(autouse=True)
def isolated(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAF_DB_PATH", "MAF_DATABASE_URL", "MAF_DATABASE_SCHEMA", "MAF_AGENT_ID", "MAF_AGENT_MAIL_ROOT", "MAF_REQUIRED_ENV", "MAF_MCP_REQUIRED",
                 "MAF_PREFLIGHT_TIMEOUT", "MAF_ENV", "NODE_ENV", "PYTEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini("[pytest]\n")


def evidence_rows(pytester: pytest.Pytester) -> dict[str, tuple[str, dict[str, Any]]]:
    """verifier -> (result, details), read through the run's own backend."""
    with open_environment_store(pytester.path) as store:
        rows = list_evidence(store)
    return {row.verifier: (row.result, row.details) for row in rows}


def running_task(pytester: pytest.Pytester, task_id: str = "fix-42", agent: str = "claude-1") -> None:
    with open_environment_store(pytester.path, create=True) as store:
        tasks.add_task(store, task_id=task_id)
        claim = tasks.claim_task(store, task_id, agent, 60_000)
        tasks.start_task(store, task_id, agent, claim.attempt)


def task_state(pytester: pytest.Pytester, task_id: str) -> str:
    with open_environment_store(pytester.path) as store:
        return tasks.get_task(store, task_id).state


def maf_counts(result: pytest.RunResult) -> dict[str, int]:
    found = COUNTS.search(result.stdout.str())
    assert found, result.stdout.str()
    counts = {}
    for part in found.group("counts").split(", "):
        number, kind = part.split(" ", 1)
        counts[kind] = int(number)
    return counts


def with_checks(pytester: pytest.Pytester, ini: str = "", **files: str) -> None:
    checks = pytester.mkdir("project_checks")
    for name, text in files.items():
        (checks / f"test_{name}.py").write_text(text)
    pytester.makeini(f"[pytest]\nmaf_checks = project_checks\n{ini}")


# Only a test that ran and passed is PASS.


def test_a_verification_whose_tests_all_skip_or_xfail_decides_nothing(pytester: pytest.Pytester, on_backend: str) -> None:
    pytester.makepyfile(test_feature=NO_VERDICT_TESTS)
    running_task(pytester)

    result = pytester.runpytest("--maf-task", "fix-42", "--maf-agent", "claude-1", "test_feature.py")

    result.assert_outcomes(skipped=2, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the task did not commit
    result.stdout.fnmatch_lines([
        "0 passed, 0 failed, 2 skipped, 1 xfailed, 0 warning(s); task fix-42 attempt 1",
        "task fix-42: ROLLBACK -> READY (no verifier passed or failed (2 skipped, 1 xfailed):*not evidence*",
    ])
    assert "COMMITTED" not in result.stdout.str()
    assert evidence_rows(pytester) == {}
    assert task_state(pytester, "fix-42") == "READY"


def test_a_test_whose_node_id_is_long_is_evidence_like_any_other(pytester: pytest.Pytester, on_backend: str) -> None:
    folder = pytester.mkpydir("integration") / "api"
    folder.mkdir()
    (folder / "test_user_account_management_endpoints.py").write_text(
        "import pytest\n"
        "class TestUserAccountManagementEndpoints:\n"
        "    @pytest.mark.parametrize('payload', [1], ids=['create-user-with-valid-email-and-password-' * 3])\n"
        "    def test_post_users_returns_created_and_location_header(self, payload):\n"
        "        pass\n"
    )
    running_task(pytester)

    result = pytester.runpytest("--maf-task", "fix-42", "--maf-agent", "claude-1", "integration")

    # Before: a node id over 128 characters was refused as a verifier id, and the passing run rolled back.
    assert result.ret == 0, result.stdout.str()
    (verifier,) = evidence_rows(pytester)
    assert len(verifier) > 200 and verifier.endswith("-create-user-with-valid-email-and-password-]")
    assert task_state(pytester, "fix-42") == "DONE"


def test_mixed_outcomes_are_counted_apart_as_pytest_counts_them(pytester: pytest.Pytester, on_backend: str) -> None:
    pytester.makepyfile(test_feature=MIXED_TESTS)
    running_task(pytester)

    result = pytester.runpytest("--maf-task", "fix-42", "--maf-agent", "claude-1", "test_feature.py")

    assert result.ret == 0
    pytest_counts = result.parseoutcomes()
    assert pytest_counts == {"passed": 2, "skipped": 1, "xfailed": 1, "xpassed": 1}
    assert maf_counts(result) == {"failed": 0, "warning(s)": 0, **pytest_counts}
    rows = evidence_rows(pytester)
    assert {verifier: row[0] for verifier, row in rows.items()} == {
        "test_feature.py::test_one": "PASS", "test_feature.py::test_two": "PASS",
    }
    assert task_state(pytester, "fix-42") == "DONE"


def test_a_strict_xpass_is_a_failure_as_pytest_counts_it(pytester: pytest.Pytester, on_backend: str) -> None:
    pytester.makepyfile(test_feature="""
import pytest

def test_one():
    pass

@pytest.mark.xfail(reason="bug 17", strict=True)
def test_should_still_fail():
    pass
""")
    running_task(pytester)

    result = pytester.runpytest("--maf-task", "fix-42", "--maf-agent", "claude-1", "test_feature.py")

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["1 passed, 1 failed, 0 warning(s); task fix-42*", "FAIL *test_should_still_fail: *XPASS(strict)*bug 17*"])
    result_of = {verifier: row[0] for verifier, row in evidence_rows(pytester).items()}
    assert result_of["test_feature.py::test_should_still_fail"] == "FAIL"
    assert task_state(pytester, "fix-42") == "READY"  # rolled back, attempts left


def test_deselected_verifiers_are_not_evidence(pytester: pytest.Pytester, on_backend: str) -> None:
    pytester.makepyfile(test_feature=MIXED_TESTS)
    running_task(pytester)

    result = pytester.runpytest(
        "--maf-task", "fix-42", "--maf-agent", "claude-1", "test_feature.py", "-k", "skipped or xfailed"
    )

    result.assert_outcomes(skipped=1, xfailed=1, deselected=3)
    assert maf_counts(result) == {"passed": 0, "failed": 0, "skipped": 1, "xfailed": 1, "deselected": 3, "warning(s)": 0}
    result.stdout.fnmatch_lines(["*ROLLBACK -> READY (no verifier passed or failed (1 skipped, 1 xfailed, 3 deselected)*"])
    assert evidence_rows(pytester) == {}


def test_a_preflight_with_skipped_checks_still_commits_and_counts_agree(pytester: pytest.Pytester, on_backend: str) -> None:
    with_checks(pytester, skipping="""
import pytest

@pytest.mark.maf_check(id="svc.gpu")
def test_gpu():
    pytest.skip("no GPU on this machine")

@pytest.mark.maf_check(id="svc.fine")
def test_fine():
    pass
""")

    result = pytester.runpytest("--maf-preflight")

    assert result.ret == 0, result.stdout.str()
    outcomes, counts = result.parseoutcomes(), maf_counts(result)
    assert counts["passed"] == outcomes["passed"] and counts["skipped"] == outcomes["skipped"] >= 1
    assert counts["warning(s)"] == outcomes.get("xfailed", 0)  # failing warning checks show as xfailed
    result.stdout.fnmatch_lines(["*COMMITTED -> DONE*"])
    rows = evidence_rows(pytester)
    assert "svc.gpu" not in rows and rows["svc.fine"][0] == "PASS"
    assert len(rows) == outcomes["passed"] + outcomes.get("xfailed", 0)


# A hung check is interrupted at the preflight's time limit.


def test_a_hung_check_is_interrupted_and_recorded_as_a_failure(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAF_PREFLIGHT_TIMEOUT", "2")
    with_checks(pytester, slow=SLOW_CHECKS)

    result = pytester.runpytest("--maf-preflight", "-p", "no:randomly")

    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([
        "FAIL svc.slow: timed out at the preflight's limit of 2 s (MAF_PREFLIGHT_TIMEOUT)*",
        "FAIL preflight.timeout: maf preflight took over 2 s (MAF_PREFLIGHT_TIMEOUT): 1 check(s) were not run",
        "task task-*: ROLLBACK -> DEAD*",
    ])
    rows = evidence_rows(pytester)
    assert rows["svc.slow"][0] == "FAIL" and rows["svc.slow"][1]["timed_out"] is True
    assert "svc.after" not in rows


INTERRUPTED_TESTS = """
import pytest

def test_a():
    pass

def test_b():
    pytest.exit("the agent gave up")

def test_c():
    assert False
"""


def test_a_verification_stopped_by_pytest_exit_rolls_back(pytester: pytest.Pytester, on_backend: str) -> None:
    pytester.makepyfile(test_feature=INTERRUPTED_TESTS)
    running_task(pytester)

    result = pytester.runpytest("--maf-task", "fix-42", "--maf-agent", "claude-1", "-p", "no:randomly", "test_feature.py")

    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([
        "FAIL verification.interrupted: the run was interrupted (pytest.exit(): the agent gave up):"
        " 2 check(s) did not finish",
        "task fix-42: ROLLBACK -> READY*",
    ])
    rows = evidence_rows(pytester)
    assert {verifier: row[0] for verifier, row in rows.items()} == {
        "test_feature.py::test_a": "PASS", "verification.interrupted": "FAIL",
    }
    assert task_state(pytester, "fix-42") == "READY"


def test_a_verification_with_a_collection_error_says_so_and_rolls_back(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_feature="def test_one():\n    pass\n", test_broken="def test_x(:\n    pass\n")
    running_task(pytester)

    result = pytester.runpytest("--maf-task", "fix-42", "--maf-agent", "claude-1", "test_feature.py", "test_broken.py")

    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([
        "FAIL verification.interrupted: the run was interrupted (1 error during collection): 1 check(s) did not finish",
        "task fix-42: ROLLBACK -> READY*",
    ])
    assert evidence_rows(pytester)["verification.interrupted"][0] == "FAIL"


@pytest.mark.parametrize("refusal", [["-m", "not ("], ["--maf-checks", "nope.*"]], ids=["bad-m", "unmatched-check"])
def test_a_usage_error_found_while_collecting_leaves_the_verified_task_as_it_was(
    pytester: pytest.Pytester, on_backend: str, refusal: list[str]
) -> None:
    pytester.makepyfile(test_feature="def test_one():\n    pass\n")
    running_task(pytester)
    with open_environment_store(pytester.path) as store:
        before = tasks.describe_task(store, "fix-42")

    result = pytester.runpytest("--maf-task", "fix-42", "--maf-agent", "claude-1", *refusal)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "maf verification" not in result.stdout.str()  # no summary of a run that did not begin
    with open_environment_store(pytester.path) as store:
        assert tasks.describe_task(store, "fix-42") == before  # not claimed, rolled back or given evidence
        assert list_evidence(store) == []


def test_a_preflight_stopped_by_ctrl_c_does_not_commit(pytester: pytest.Pytester) -> None:
    with_checks(pytester, interrupted="""
import pathlib
import time
import pytest

@pytest.mark.maf_check(id="svc.first")
def test_first():
    pass

@pytest.mark.maf_check(id="svc.hung")
def test_hung():
    pathlib.Path("started").write_text("")
    time.sleep(60)
""")
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--maf-preflight", "-p", "no:randomly", "-p", "no:cacheprovider"],
        cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 60
    while not (pytester.path / "started").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)  # Ctrl-C
    output = run.communicate(timeout=60)[0]

    assert run.returncode == pytest.ExitCode.INTERRUPTED, output
    assert re.search(r"^FAIL preflight.interrupted: the run was interrupted \(Ctrl-C\)", output, re.MULTILINE), output
    assert re.search(r"^task task-\S+: ROLLBACK -> DEAD", output, re.MULTILINE) and "COMMITTED" not in output
    rows = evidence_rows(pytester)
    assert (rows["svc.first"][0], rows["preflight.interrupted"][0]) == ("PASS", "FAIL") and "svc.hung" not in rows


def test_a_preflight_that_overran_with_pytest_timeout_blocked_does_not_commit(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAF_PREFLIGHT_TIMEOUT", "3")  # the built-in checks before it finish well within it, loaded or not
    with_checks(pytester, slow="""
import time
import pytest

@pytest.mark.maf_check(id="svc.slow")
def test_slow():
    time.sleep(4)
""")

    result = pytester.runpytest("--maf-preflight", "-p", "no:timeout", "-p", "no:randomly")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "FAIL preflight.timeout: maf preflight took over 3 s (MAF_PREFLIGHT_TIMEOUT); with pytest-timeout blocked*",
        "task task-*: ROLLBACK -> DEAD*",
    ])


def test_the_time_limit_holds_without_plugin_autoloading(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAF_PREFLIGHT_TIMEOUT", "2")
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    with_checks(pytester, slow=SLOW_CHECKS)

    result = pytester.runpytest_subprocess("-p", "pytest_maf.plugin", "--maf-preflight", "-p", "no:cacheprovider", timeout=60)

    result.stdout.fnmatch_lines(["FAIL svc.slow: timed out at the preflight's limit of 2 s*"])
    assert "PytestAssertRewriteWarning" not in result.stdout.str()


def test_a_shorter_timeout_of_the_users_own_is_an_ordinary_failure(pytester: pytest.Pytester) -> None:
    with_checks(pytester, own="""
import time
import pytest

@pytest.mark.timeout(0.5)
@pytest.mark.maf_check(id="svc.own-limit")
def test_own_limit():
    time.sleep(12)

@pytest.mark.maf_check(id="svc.after")
def test_after():
    pass
""")

    result = pytester.runpytest("--maf-preflight")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["FAIL svc.own-limit: Timeout (>0.5s) from pytest-timeout."])
    rows = evidence_rows(pytester)
    assert "timed_out" not in rows["svc.own-limit"][1] and rows["svc.after"][0] == "PASS"


def test_verifier_runs_get_no_time_limit(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAF_PREFLIGHT_TIMEOUT", "1")
    pytester.makepyfile(test_feature="import time\n\ndef test_slowish():\n    time.sleep(1.5)\n")
    running_task(pytester)

    result = pytester.runpytest("--maf-task", "fix-42", "--maf-agent", "claude-1", "test_feature.py")

    result.assert_outcomes(passed=1)
    assert task_state(pytester, "fix-42") == "DONE"


# A warning someone accepted.


def test_an_acknowledged_warning_is_recorded_and_passes_strict(pytester: pytest.Pytester, on_backend: str) -> None:
    with_checks(pytester, warning=WARNING_CHECKS)
    pytester.mkdir("maf-config")
    (pytester.path / "maf-config" / "local.yaml").write_text(ACKNOWLEDGED)

    result = pytester.runpytest("--maf-preflight", "--maf-strict", "-k", "cache or fine")

    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([
        "1 passed, 0 failed, * deselected, 0 warning(s), 1 acknowledged; task *",
        "ACK svc.cache: cache is cold; warm it with `make cache` (acknowledged by dana on 2026-05-01:"
        " the cache warms on first use in CI)",
        "*COMMITTED -> DONE (no blocking failure; 1 acknowledged: svc.cache)",
    ])
    assert "WARN svc.cache" not in result.stdout.str()
    result_, details = evidence_rows(pytester)["svc.cache"]
    assert result_ == "FAIL" and details["blocking"] is False
    assert details["acknowledged"] == {"by": "dana", "on": "2026-05-01", "reason": "the cache warms on first use in CI"}


def test_an_acknowledgement_cannot_clear_a_critical_check(pytester: pytest.Pytester) -> None:
    with_checks(pytester, critical="""
import pytest

@pytest.mark.maf_check(id="svc.db")
def test_db():
    pytest.fail("the database does not answer", pytrace=False)
""")
    pytester.mkdir("maf-config")
    (pytester.path / "maf-config" / "local.yaml").write_text(
        "preflight:\n  acknowledged_warnings:\n    svc.db: {by: dana, on: 2026-05-01, reason: flaky}\n"
    )

    result = pytester.runpytest("--maf-preflight", "-k", "test_db")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "FAIL svc.db: the database does not answer",
        "maf: preflight.acknowledged_warnings names svc.db, a critical check: only a warning can be acknowledged*",
    ])
    assert "acknowledged" not in evidence_rows(pytester)["svc.db"][1]


# End to end, in a real repository, as an agent runs it.


def write_checks(workspace: Workspace, **files: str) -> None:
    for name, text in files.items():
        workspace.write(workspace.main, f"ci/checks/test_{name}.py", text)
    workspace.write(workspace.main, "pytest.ini", "[pytest]\nmaf_checks = ci/checks\n")


def maf_json(workspace: Workspace, *args: str) -> Any:
    completed = workspace.maf(workspace.main, *args, "--json")
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def preflight_tasks(workspace: Workspace) -> list[dict[str, Any]]:
    return [task for task in maf_json(workspace, "task", "list", "--all") if "preflight" in (task.get("kind"), task["payload"].get("kind"))]


def test_an_all_skipped_verification_leaves_the_task_undone(workspace: Workspace) -> None:
    workspace.write(workspace.main, "tests/test_feature.py", NO_VERDICT_TESTS)
    assert workspace.maf(workspace.main, "task", "add", "--id", "fix-7").returncode == 0
    claim = maf_json(workspace, "task", "claim", "--agent", "alice")
    started = workspace.maf(workspace.main, "task", "start", "fix-7", "--attempt", str(claim["attempt"]), agent="alice")
    assert started.returncode == 0, started.stderr

    run = workspace.pytest(workspace.main, "--maf-task", "fix-7", "tests/test_feature.py", agent="alice")

    assert run.returncode == 1, run.stdout + run.stderr
    assert "no verifier passed or failed (2 skipped, 1 xfailed)" in run.stdout
    shown = maf_json(workspace, "task", "show", "fix-7")
    assert shown["task"]["state"] == "READY" and shown["evidence"] == []
    (rollback,) = [event for event in shown["events"] if event["kind"] == "rollback"]
    assert "no verifier passed or failed" in rollback["data"]["reason"]


def test_a_hung_check_cannot_hold_a_commit_past_the_time_limit(workspace: Workspace) -> None:
    write_checks(workspace, slow=SLOW_CHECKS)

    # The check sleeps 12 s; a FAIL that says it timed out is the proof it was interrupted.
    run = workspace.pytest(workspace.main, "--maf-preflight", agent="alice", MAF_PREFLIGHT_TIMEOUT="5", timeout=60)

    assert run.returncode == 2, run.stdout + run.stderr  # interrupted
    assert "FAIL svc.slow: timed out at the preflight's limit of 5 s (MAF_PREFLIGHT_TIMEOUT)" in run.stdout
    latest = max(preflight_tasks(workspace), key=lambda task: task["created_at"])
    assert latest["state"] == "DEAD"  # rolled back; a preflight has one attempt
    rows = {row["verifier"]: row for row in maf_json(workspace, "evidence", "list", "--task", latest["id"])}
    assert rows["svc.slow"]["result"] == "FAIL" and "svc.after" not in rows


def test_an_acknowledged_warning_passes_strict_and_an_unacknowledged_one_does_not(workspace: Workspace) -> None:
    write_checks(workspace, warning=WARNING_CHECKS)
    selection = ("-k", "cache or fine")

    unacknowledged = workspace.pytest(workspace.main, "--maf-preflight", "--maf-strict", *selection, agent="alice")

    assert unacknowledged.returncode == 1, unacknowledged.stdout
    assert "FAIL svc.cache: cache is cold" in unacknowledged.stdout

    workspace.write(workspace.main, "maf-config/local.yaml", ACKNOWLEDGED)
    validated = workspace.maf(workspace.main, "config", "validate")
    assert validated.returncode == 0 and validated.stdout.startswith("configuration is valid"), validated.stdout

    acknowledged = workspace.pytest(workspace.main, "--maf-preflight", "--maf-strict", *selection, agent="alice")

    assert acknowledged.returncode == 0, acknowledged.stdout + acknowledged.stderr
    assert "ACK svc.cache: cache is cold" in acknowledged.stdout and "WARN svc.cache" not in acknowledged.stdout
    assert "1 passed, 0 failed" in acknowledged.stdout and "0 warning(s), 1 acknowledged" in acknowledged.stdout
    latest = max(preflight_tasks(workspace), key=lambda task: task["created_at"])
    assert latest["state"] == "DONE"
    (row,) = [row for row in maf_json(workspace, "evidence", "list", "--task", latest["id"]) if row["verifier"] == "svc.cache"]
    assert row["result"] == "FAIL"
    assert row["details"]["acknowledged"] == {"by": "dana", "on": "2026-05-01", "reason": "the cache warms on first use in CI"}


def test_under_xdist_workers_apply_the_acknowledgement(pytester: pytest.Pytester, on_backend: str) -> None:
    with_checks(pytester, warning=WARNING_CHECKS)
    pytester.mkdir("maf-config")
    (pytester.path / "maf-config" / "local.yaml").write_text(ACKNOWLEDGED)

    result = pytester.runpytest_subprocess("--maf-preflight", "--maf-strict", "-n", "2", "-p", "no:cacheprovider", "-k", "cache or fine")

    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["ACK svc.cache: cache is cold*(acknowledged by dana on 2026-05-01:*"])
    assert evidence_rows(pytester)["svc.cache"][1]["acknowledged"]["by"] == "dana"


def test_an_acknowledgement_no_longer_needed_is_pointed_out(pytester: pytest.Pytester) -> None:
    warm = WARNING_CHECKS.replace('pytest.fail("cache is cold; warm it with `make cache`", pytrace=False)', "pass")
    assert warm != WARNING_CHECKS
    with_checks(pytester, warning=warm)
    pytester.mkdir("maf-config")
    (pytester.path / "maf-config" / "local.yaml").write_text(ACKNOWLEDGED)

    result = pytester.runpytest("--maf-preflight", "-k", "cache")

    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["maf: svc.cache passes now: its entry in preflight.acknowledged_warnings can go"])
    assert evidence_rows(pytester)["svc.cache"][0] == "PASS"


def test_a_verifier_id_is_kept_up_to_its_bound_on_either_backend(store: Store) -> None:
    from pytest_maf.errors import UsageError
    from pytest_maf.evidence import record_evidence

    tasks.add_task(store, task_id="fix-1")
    claim = tasks.claim_task(store, "fix-1", "claude-1", 60_000)
    tasks.start_task(store, "fix-1", "claude-1", claim.attempt)
    longest = "tests/" + "x" * 1_018  # 1,024 characters: within PostgreSQL's largest index entry too

    widest = "漢" * 682  # 2,046 bytes in UTF-8
    for verifier in (longest, widest):
        record_evidence(store, "fix-1", claim.attempt, verifier, "PASS", agent_id="claude-1")

    assert sorted(row.verifier for row in list_evidence(store, "fix-1")) == [longest, widest]
    for refused, limit in ((longest + "y", "the limit is 1024"), ("漢" * 700, "the limit is 2048")):
        with pytest.raises(UsageError, match=limit):
            record_evidence(store, "fix-1", claim.attempt, refused, "PASS", agent_id="claude-1")
