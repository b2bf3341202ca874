"""The pytest plugin end to end, through pytester."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET

import pytest

from backends import open_environment_store
from pytest_maf import tasks
from pytest_maf.evidence import list_evidence

FAILING_CHECKS = """
import pytest

@pytest.mark.maf_check(id="custom.critical", severity="critical", tags=["custom"])
def test_critical():
    assert False, "the widget is broken; run `make widget`"

@pytest.mark.maf_check(id="custom.fine", severity="critical")
def test_fine():
    pass
"""

WARNING_CHECK = """
import pytest

@pytest.mark.maf_check(id="custom.warning", severity="warning", tags=["custom"])
def test_warning():
    pytest.fail("cache is cold; warm it with `make cache`", pytrace=False)
"""


@pytest.fixture(autouse=True)
def isolated(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAF_DB_PATH", "MAF_DATABASE_URL", "MAF_DATABASE_SCHEMA", "MAF_AGENT_ID", "MAF_AGENT_MAIL_ROOT", "MAF_REQUIRED_ENV", "MAF_MCP_REQUIRED"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini("[pytest]\n")


def evidence_rows(pytester: pytest.Pytester) -> list[tuple[str, str, str, str]]:
    """(task_id, verifier, result, details as compact JSON), read through the run's own backend."""
    with open_environment_store(pytester.path) as store:
        rows = list_evidence(store)
    return sorted(
        ((row.task_id, row.verifier, row.result, json.dumps(row.details, separators=(",", ":"))) for row in rows),
        key=lambda row: row[1],
    )


def only_task(pytester: pytest.Pytester) -> tasks.Task:
    with open_environment_store(pytester.path) as store:
        (task,) = tasks.list_tasks(store, include_internal=True)
    return task


def with_custom_checks(pytester: pytest.Pytester, **files: str) -> None:
    checks = pytester.mkdir("project_checks")
    for name, text in files.items():
        (checks / f"test_{name}.py").write_text(text)
    pytester.makeini("[pytest]\nmaf_checks = project_checks\n")


def test_preflight_records_a_row_per_check_and_finishes_its_task(pytester: pytest.Pytester, on_backend: str) -> None:
    result = pytester.runpytest("--maf-preflight")

    assert result.ret == 0
    result.stdout.fnmatch_lines(["*= maf preflight =*", "* passed, 0 failed, * warning(s); task task-*", "*COMMITTED -> DONE*"])
    task = only_task(pytester)
    assert task.state == "DONE" and task.payload["kind"] == "preflight"
    verifiers = {row[1] for row in evidence_rows(pytester)}
    assert {"env.python", "env.sqlite", "env.git", "store.schema", "store.disk", "mail.root-writable"} <= verifiers
    outcomes = result.parseoutcomes()
    # A row per check that passed or failed (warnings show as xfailed); a skipped check records none.
    assert len(evidence_rows(pytester)) == outcomes["passed"] + outcomes.get("xfailed", 0)
    assert not [row for row in evidence_rows(pytester) if row[1].startswith("mcp.client")]  # no client file here


def test_preflight_leaves_the_projects_own_tests_alone(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_project="def test_project_code():\n    assert False\n")
    with_custom_checks(pytester, check_extra=FAILING_CHECKS.replace("assert False,", "assert True,"))

    result = pytester.runpytest("--maf-preflight")

    assert result.ret == 0
    verifiers = {row[1] for row in evidence_rows(pytester)}
    assert "custom.critical" in verifiers
    assert not [v for v in verifiers if "test_project" in v]


def test_a_failing_critical_check_fails_the_run_and_rolls_back(pytester: pytest.Pytester, on_backend: str) -> None:
    with_custom_checks(pytester, check_custom=FAILING_CHECKS)

    result = pytester.runpytest("--maf-preflight")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*FAIL custom.critical: the widget is broken; run `make widget`*", "*ROLLBACK -> DEAD*"])
    rows = {row[1]: row for row in evidence_rows(pytester)}
    assert rows["custom.critical"][2] == "FAIL" and rows["custom.fine"][2] == "PASS"
    assert only_task(pytester).state == "DEAD"  # a preflight task has one attempt


def test_a_failing_warning_check_is_recorded_but_passes(pytester: pytest.Pytester, on_backend: str) -> None:
    with_custom_checks(pytester, check_warning=WARNING_CHECK)

    result = pytester.runpytest("--maf-preflight")

    assert result.ret == 0
    result.stdout.fnmatch_lines(["*WARN custom.warning: cache is cold; warm it with `make cache`*"])
    (row,) = [row for row in evidence_rows(pytester) if row[1] == "custom.warning"]
    assert row[2] == "FAIL"
    assert '"severity":"warning"' in row[3] and '"blocking":false' in row[3]
    assert only_task(pytester).state == "DONE"


def test_strict_makes_a_warning_fail_the_run(pytester: pytest.Pytester) -> None:
    with_custom_checks(pytester, check_warning=WARNING_CHECK)

    result = pytester.runpytest("--maf-preflight", "--maf-strict")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*FAIL custom.warning*"])
    assert only_task(pytester).state == "DEAD"


def test_without_maf_options_the_plugin_does_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_project="def test_a():\n    pass\n\ndef test_b():\n    pass\n")

    with_plugin = pytester.runpytest("--collect-only", "-q")
    without_plugin = pytester.runpytest("--collect-only", "-q", "-p", "no:maf")
    ran = pytester.runpytest()

    assert with_plugin.outlines[:2] == without_plugin.outlines[:2] == ["test_project.py::test_a", "test_project.py::test_b"]
    assert ran.ret == 0
    assert not (pytester.path / ".maf").exists()
    assert "maf preflight" not in ran.stdout.str()


def test_collect_only_opens_no_database(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--maf-preflight", "--collect-only", "-q")

    assert result.ret == 0
    result.stdout.fnmatch_lines(["*test_environment.py::test_git_is_available*"])
    assert not (pytester.path / ".maf").exists()


def test_maf_task_runs_verifiers_and_finishes_the_task(pytester: pytest.Pytester, on_backend: str) -> None:
    pytester.makepyfile(test_feature="def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    with open_environment_store(pytester.path, create=True) as store:
        tasks.add_task(store, task_id="fix-42")
        claim = tasks.claim_next_task(store, "claude-1", 60_000)
        tasks.start_task(store, "fix-42", "claude-1", claim.attempt)

    result = pytester.runpytest("--maf-task", "fix-42", "--maf-agent", "claude-1", "test_feature.py")

    assert result.ret == 0
    result.stdout.fnmatch_lines(["*= maf verification =*", "*fix-42: COMMITTED -> DONE*"])
    assert [(row[0], row[1], row[2]) for row in evidence_rows(pytester)] == [
        ("fix-42", "test_feature.py::test_one", "PASS"),
        ("fix-42", "test_feature.py::test_two", "PASS"),
    ]


def test_a_plain_passing_verifier_records_its_details_and_junit_properties(
    pytester: pytest.Pytester, on_backend: str
) -> None:
    pytester.makepyfile(test_feature="""
import pytest

def test_plain(maf_evidence):
    maf_evidence["checked"] = 3

@pytest.mark.maf_check(id="feature.marked", severity="warning", tags=("b", "a"))
def test_marked():
    pass
""")
    with open_environment_store(pytester.path, create=True) as store:
        tasks.add_task(store, task_id="fix-42")
        claim = tasks.claim_next_task(store, "claude-1", 60_000)
        tasks.start_task(store, "fix-42", "claude-1", claim.attempt)
    report = pytester.path / "junit.xml"

    result = pytester.runpytest(
        "--maf-task", "fix-42", "--maf-agent", "claude-1", f"--junitxml={report}", "-o", "junit_family=xunit1",
        "test_feature.py",
    )

    assert result.ret == 0, result.stdout.str()
    details = {row[1]: json.loads(row[3]) for row in evidence_rows(pytester)}
    assert details == {
        "test_feature.py::test_plain": {
            "nodeid": "test_feature.py::test_plain", "severity": "critical", "blocking": True, "tags": [],
            "message": "", "outcome": "passed", "checked": 3,
        },
        "feature.marked": {
            "nodeid": "test_feature.py::test_marked", "severity": "warning", "blocking": True, "tags": ["a", "b"],
            "message": "", "outcome": "passed",
        },
    }
    cases = {case.get("name"): case for case in ET.parse(report).getroot().iter("testcase")}
    properties = {p.get("name"): p.get("value") for p in cases["test_plain"].iter("property")}
    assert properties == {
        "maf.task_id": "fix-42",
        "maf.attempt": "1",
        "maf.verifier": "test_feature.py::test_plain",
        "maf.result": "PASS",
        "maf.severity": "critical",
    }


@pytest.mark.parametrize("holder", ["someone-else", None], ids=["other-agent", "not-claimed"])
def test_maf_task_without_a_live_lease_is_a_usage_error(
    pytester: pytest.Pytester, on_backend: str, holder: str | None
) -> None:
    pytester.makepyfile(test_feature="def test_one():\n    pass\n")
    with open_environment_store(pytester.path, create=True) as store:
        tasks.add_task(store, task_id="fix-42")
        if holder:
            claim = tasks.claim_next_task(store, holder, 60_000)
            tasks.start_task(store, "fix-42", holder, claim.attempt)

    result = pytester.runpytest("--maf-task", "fix-42", "--maf-agent", "claude-1", "test_feature.py")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--maf-task fix-42: agent 'claude-1' does not hold it*"])
    assert evidence_rows(pytester) == []


def test_junit_properties_carry_the_evidence(pytester: pytest.Pytester) -> None:
    with_custom_checks(pytester, check_custom=FAILING_CHECKS)
    report = pytester.path / "junit.xml"

    pytester.runpytest("--maf-preflight", f"--junitxml={report}", "-o", "junit_family=xunit1")

    cases = {case.get("name"): case for case in ET.parse(report).getroot().iter("testcase")}
    properties = {p.get("name"): p.get("value") for p in cases["test_critical"].iter("property")}
    assert properties == {
        "maf.task_id": only_task(pytester).id,
        "maf.attempt": "1",
        "maf.verifier": "custom.critical",
        "maf.result": "FAIL",
        "maf.severity": "critical",
    }


def test_under_xdist_junit_properties_name_the_task_made_after_the_workers_started(pytester: pytest.Pytester) -> None:
    with_custom_checks(pytester, check_custom=FAILING_CHECKS)
    report = pytester.path / "junit.xml"

    pytester.runpytest_subprocess(
        "--maf-preflight", "-n", "2", "-p", "no:cacheprovider", f"--junitxml={report}", "-o", "junit_family=xunit1", timeout=120,
    )

    cases = {case.get("name"): case for case in ET.parse(report).getroot().iter("testcase")}
    properties = {p.get("name"): p.get("value") for p in cases["test_critical"].iter("property")}
    assert (properties["maf.task_id"], properties["maf.attempt"]) == (only_task(pytester).id, "1")


def test_conftest_hooks_add_details_and_see_written_rows(pytester: pytest.Pytester, on_backend: str) -> None:
    with_custom_checks(pytester, check_custom=FAILING_CHECKS)
    pytester.makeconftest(
        """
        written = []

        def pytest_maf_evidence_details(config, nodeid, verifier, result, details):
            details["build"] = "ci-123"

        def pytest_maf_evidence_recorded(config, evidence):
            written.append(evidence.verifier)

        def pytest_terminal_summary(terminalreporter):
            terminalreporter.write_line(f"recorded {len(written)} rows")
        """
    )

    result = pytester.runpytest("--maf-preflight")

    rows = evidence_rows(pytester)
    assert {"custom.critical", "custom.fine"} <= {row[1] for row in rows}
    assert [row[1] for row in rows if '"build":"ci-123"' not in row[3]] == []
    result.stdout.fnmatch_lines([f"recorded {len(rows)} rows"])


def test_fixtures_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures")

    lines = result.outlines
    for name in ("maf_store", "maf_task", "maf_lease", "maf_reservation", "maf_evidence", "maf_settings"):
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{name} "))
        block = lines[start + 1 : lines.index("", start)]
        assert any("Example: ``" in line for line in block), (name, block)


def test_lease_reservation_and_evidence_fixtures(pytester: pytest.Pytester, on_backend: str) -> None:
    with_custom_checks(
        pytester,
        check_fixtures="""
import pytest
from pytest_maf import reservations

@pytest.mark.maf_check(id="custom.fixtures")
def test_workflow(maf_lease, maf_reservation, maf_store, maf_evidence):
    maf_lease.start()
    maf_lease.verify()
    maf_lease.record("unit", "PASS")
    assert maf_lease.finish().final_state == "DONE"
    (held,) = maf_reservation("src/**", reason="fixture test")
    assert [r.pattern for r in reservations.list_reservations(maf_store)] == ["src/**"]
    maf_evidence["checked"] = 3
""",
    )

    result = pytester.runpytest("--maf-preflight", "-k", "workflow")

    assert result.ret == 0, result.stdout.str()
    (row,) = [row for row in evidence_rows(pytester) if row[1] == "custom.fixtures"]
    assert '"checked":3' in row[3]
    with open_environment_store(pytester.path) as store:
        from pytest_maf import reservations

        assert reservations.list_reservations(store) == []  # released at teardown


def test_xdist_writes_one_row_per_check_from_the_controller(pytester: pytest.Pytester, on_backend: str) -> None:
    with_custom_checks(pytester, check_custom=FAILING_CHECKS)

    result = pytester.runpytest_subprocess("--maf-preflight", "-n", "2", "-p", "no:cacheprovider")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    rows = evidence_rows(pytester)
    verifiers = [row[1] for row in rows]
    assert len(verifiers) == len(set(verifiers))
    assert {"custom.critical", "custom.fine", "env.git"} <= set(verifiers)
    collected = pytester.runpytest("--maf-preflight", "--collect-only", "-q").outlines
    skipped = result.parseoutcomes().get("skipped", 0)  # a skipped check records no row
    assert len(rows) == len([line for line in collected if "::" in line]) - skipped


def test_a_preflight_stops_at_its_timeout(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAF_PREFLIGHT_TIMEOUT", "5")  # the built-in checks before it finish well within it, loaded or not
    with_custom_checks(
        pytester,
        check_slow="""
import time
import pytest

@pytest.mark.maf_check(id="custom.slow-1")
def test_slow_one():
    time.sleep(60)

@pytest.mark.maf_check(id="custom.slow-2")
def test_slow_two():
    pass
""",
    )

    result = pytester.runpytest("--maf-preflight", "-p", "no:randomly")

    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*maf preflight took over 5 s (MAF_PREFLIGHT_TIMEOUT)*"])
    results = {row[1]: row[2] for row in evidence_rows(pytester)}
    assert results["custom.slow-1"] == "FAIL" and "custom.slow-2" not in results
    assert results["preflight.timeout"] == "FAIL"
    assert only_task(pytester).state == "DEAD"  # an unfinished preflight does not commit


def test_the_maf_agent_fixture_is_the_runs_agent(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_agent="def test_agent(maf_agent):\n    assert maf_agent == 'claude-7'\n")

    pytester.runpytest("--maf-agent", "claude-7").assert_outcomes(passed=1)


@pytest.mark.parametrize("option", ["--maf-task", "--maf-agent", "--maf-db"])
def test_an_empty_maf_option_value_is_a_usage_error_not_no_option(pytester: pytest.Pytester, option: str) -> None:
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    extra = [] if option == "--maf-task" else ["--maf-preflight"]

    result = pytester.runpytest(f"{option}=", *extra)  # as "$TASK" does with the variable unset

    assert result.ret == pytest.ExitCode.USAGE_ERROR  # before: the tests ran and nothing was recorded
    result.stderr.fnmatch_lines([f"*{option} was given an empty value*"])
    assert not (pytester.path / ".maf").exists()


@pytest.mark.parametrize("mode", [["--maf-task", "fix-42"], ["--maf-preflight"]])
def test_an_agent_id_no_command_takes_is_refused_before_anything_is_asked(pytester: pytest.Pytester, mode: list[str]) -> None:
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    with open_environment_store(pytester.path, create=True) as store:
        tasks.add_task(store, task_id="fix-42")

    result = pytester.runpytest(*mode, "--maf-agent", "../x", "test_a.py")

    assert result.ret == pytest.ExitCode.USAGE_ERROR  # before, with --maf-task: "agent '../x' does not hold it"
    result.stderr.fnmatch_lines(["*agent id '../x' may not contain '/'*"])
    with open_environment_store(pytester.path) as store:
        assert tasks.get_task(store, "fix-42").state == "READY"


def test_the_store_a_first_preflight_makes_is_kept_out_of_git(pytester: pytest.Pytester) -> None:
    subprocess.run(["git", "init", "-q", str(pytester.path)], check=True)
    pytester.makeini("[pytest]\n")
    subprocess.run(["git", "add", "tox.ini"], cwd=pytester.path, check=True)

    pytester.runpytest_subprocess("--maf-preflight", "-p", "no:cacheprovider")

    assert (pytester.path / ".maf" / "runtime.db").exists()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=pytester.path, capture_output=True, text=True, check=True)
    assert ".maf" not in status.stdout


@pytest.mark.parametrize("fixture", ["maf_store", "maf_task", "maf_lease"])
def test_the_store_a_fixture_makes_in_a_plain_run_is_kept_out_of_git(pytester: pytest.Pytester, fixture: str) -> None:
    subprocess.run(["git", "init", "-q", str(pytester.path)], check=True)
    pytester.makepyfile(test_fx=f"def test_uses_the_store({fixture}):\n    pass\n")
    subprocess.run(["git", "add", "tox.ini", "test_fx.py"], cwd=pytester.path, check=True)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_fx.py")

    assert result.ret == 0, result.stdout.str()
    assert (pytester.path / ".maf" / "runtime.db").exists()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=pytester.path, capture_output=True, text=True, check=True)
    assert ".maf" not in status.stdout  # `git add -A` would not commit the store
    assert "/.maf/" in (pytester.path / ".git" / "info" / "exclude").read_text().splitlines()
