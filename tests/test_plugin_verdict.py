"""A run that pytest fails never leaves its task DONE, whatever kept the failure out of the rows."""

from __future__ import annotations

import fnmatch

import pytest

from backends import open_environment_store
from pytest_maf import tasks
from pytest_maf.evidence import list_evidence


@pytest.fixture(autouse=True)
def isolated(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAF_DB_PATH", "MAF_DATABASE_URL", "MAF_DATABASE_SCHEMA", "MAF_AGENT_ID", "MAF_AGENT_MAIL_ROOT"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini("[pytest]\n")


def held_task(pytester: pytest.Pytester) -> None:
    with open_environment_store(pytester.path, create=True) as store:
        tasks.add_task(store, task_id="fix-1")
        claim = tasks.claim_next_task(store, "claude-1", 60_000)
        tasks.start_task(store, "fix-1", "claude-1", claim.attempt)


def state_and_failures(pytester: pytest.Pytester) -> tuple[str, list[str]]:
    with open_environment_store(pytester.path) as store:
        task = tasks.get_task(store, "fix-1")
        rows = list_evidence(store, "fix-1")
    return task.state, sorted(row.verifier for row in rows if row.result == "FAIL")


def verify(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--maf-task", "fix-1", "--maf-agent", "claude-1", "-p", "no:cacheprovider", *args)


LONG_ID = """
import pytest

class TestAdminEndpoints:
    @pytest.mark.parametrize("role", ["admin"], ids=["admin-editor-expected_status_200-" + "x" * 1_000])
    def test_admin_can_update_user_role(self, role):
        assert False, "got 403"

def test_fine():
    pass
"""


def test_a_failure_whose_row_the_store_refuses_still_rolls_the_task_back(pytester: pytest.Pytester) -> None:
    held_task(pytester)
    pytester.makepyfile(test_long=LONG_ID)

    result = verify(pytester, "test_long.py")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*fix-1: ROLLBACK -> READY*verification.unrecorded*"])
    assert state_and_failures(pytester) == ("READY", ["verification.unrecorded"])


def test_a_check_id_used_twice_cannot_hide_its_failure(pytester: pytest.Pytester) -> None:
    held_task(pytester)
    pytester.makepyfile(test_twice="""
import pytest
pytestmark = pytest.mark.maf_check(id="svc.db")

def test_db_answers():
    pass

def test_db_schema_current():
    assert False, "schema is 3 migrations behind"
""")

    result = verify(pytester, "test_twice.py")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert state_and_failures(pytester) == ("READY", ["verification.unrecorded"])


def test_a_module_that_does_not_import_fails_the_task_when_pytest_runs_on(pytester: pytest.Pytester) -> None:
    held_task(pytester)
    pytester.makepyfile(test_ok="def test_a():\n    pass\n", test_broken="import module_that_does_not_exist\n")

    result = verify(pytester, "--continue-on-collection-errors", "test_ok.py", "test_broken.py")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert state_and_failures(pytester) == ("READY", ["verification.pytest"])


def test_a_usage_error_mid_run_rolls_back_what_ran_before_it(pytester: pytest.Pytester) -> None:
    held_task(pytester)
    pytester.makepyfile(test_v="""
import pytest

def test_ok():
    pass

@pytest.fixture
def marked_late(request):  # a marker added as the test runs is seen only then
    request.applymarker(pytest.mark.maf_check(id="v.sev", severity="high"))

def test_typo_severity(marked_late):
    pass

def test_would_fail():
    assert False
""")

    result = verify(pytester, "test_v.py")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert state_and_failures(pytester) == ("READY", ["verification.pytest"])


def test_an_internal_error_mid_run_rolls_the_task_back(pytester: pytest.Pytester) -> None:
    held_task(pytester)
    pytester.makeconftest("""
def pytest_runtest_logreport(report):
    if report.when == "call" and "second" in report.nodeid:
        raise RuntimeError("a reporting plugin crashed")
""")
    pytester.makepyfile(test_ie="def test_first():\n    pass\n\ndef test_second():\n    pass\n\ndef test_third():\n    pass\n")

    result = verify(pytester, "test_ie.py")

    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    assert state_and_failures(pytester) == ("READY", ["verification.pytest"])


def test_a_test_cannot_make_its_own_failure_a_warning(pytester: pytest.Pytester) -> None:
    held_task(pytester)
    pytester.makeconftest("""
def pytest_maf_evidence_details(config, nodeid, verifier, result, details):
    details["severity"] = "warning"
""")
    pytester.makepyfile(test_k="""
def test_ok():
    pass

def test_io_path(maf_evidence):
    maf_evidence["blocking"] = False
    maf_evidence["path"] = "/srv/io"
    assert False, "the IO path is broken"
""")

    result = verify(pytester, "test_k.py")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert state_and_failures(pytester) == ("READY", ["test_k.py::test_io_path"])
    with open_environment_store(pytester.path) as store:
        (row,) = [row for row in list_evidence(store, "fix-1") if row.result == "FAIL"]
    assert (row.details["blocking"], row.details["severity"], row.details["path"]) == (True, "critical", "/srv/io")


@pytest.mark.parametrize("flag", ["--setup-plan", "--setup-only"])
def test_a_run_that_runs_no_test_is_refused_and_records_nothing(pytester: pytest.Pytester, flag: str) -> None:
    held_task(pytester)
    pytester.makepyfile(test_x="def test_broken():\n    assert False\n")

    result = verify(pytester, flag, "test_x.py")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{flag} runs no test, so --maf-task would record no evidence*"])
    assert state_and_failures(pytester) == ("RUNNING", [])


def test_a_run_that_deselects_every_test_exits_1_as_its_task_did_not_commit(pytester: pytest.Pytester) -> None:
    held_task(pytester)
    pytester.makepyfile(test_a="def test_a():\n    pass\n")

    result = verify(pytester, "-k", "nothing_matches", "test_a.py")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert state_and_failures(pytester)[0] == "READY"


def attempts(pytester: pytest.Pytester) -> tuple[str, int]:
    with open_environment_store(pytester.path) as store:
        task = tasks.get_task(store, "fix-1")
    return task.state, task.attempts


MALFORMED_MARKERS = [  # (the marker's arguments, what the usage error says of them)
    ('id="svc.db", severity="fatal"', "severity 'fatal': use 'critical' or 'warning'"),
    ('id="svc.db", tags="database"', "tags 'database': give a list of names"),
    ('"svc.db"', "give each argument by name"),
    ('id="svc.db", sevrity="warning"', "unknown argument(s) sevrity: maf_check takes id, severity, tags"),
    ("id=42", "id 42 is not a string"),
]


@pytest.mark.parametrize(
    ("arguments", "message"), MALFORMED_MARKERS,
    ids=["severity", "tags-as-text", "id-by-position", "unknown-argument", "id-not-text"],
)
def test_a_malformed_check_marker_is_a_usage_error_that_costs_no_attempt(
    pytester: pytest.Pytester, arguments: str, message: str
) -> None:
    held_task(pytester)
    pytester.makepyfile(test_t=f"""
import pytest

def test_ok():
    pass

@pytest.mark.maf_check({arguments})
def test_db():
    pass
""")
    before = attempts(pytester)

    for _ in range(3):  # a task rolled back three times would be DEAD
        result = verify(pytester, "test_t.py")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*test_t.py::test_db: maf_check {message}*"])

    assert attempts(pytester) == before == ("RUNNING", 1)
    assert state_and_failures(pytester) == ("RUNNING", [])
    with open_environment_store(pytester.path) as store:
        assert list_evidence(store, "fix-1") == []


MALFORMED_SEVERITY = """
import pytest

def test_ok():
    pass

@pytest.mark.maf_check(id="svc.db", severity="fatal")
def test_db():
    pass
"""


def test_under_xdist_a_malformed_check_marker_is_a_usage_error_that_costs_no_attempt(pytester: pytest.Pytester) -> None:
    held_task(pytester)
    pytester.makepyfile(test_t=MALFORMED_SEVERITY)

    result = pytester.runpytest_subprocess(
        "--maf-task", "fix-1", "--maf-agent", "claude-1", "-p", "no:cacheprovider", "-n", "2", "test_t.py", timeout=120,
    )

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["ERROR: test_t.py::test_db: maf_check severity 'fatal': use 'critical' or 'warning'*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert attempts(pytester) == ("RUNNING", 1)
    assert state_and_failures(pytester) == ("RUNNING", [])


COLLECTION_USAGE_ERRORS = [  # (what the run is given, what pytest says of it)
    (["test_typo.py"], "ERROR: file or directory not found: test_typo.py"),
    (["-m", "slow and (", "test_t.py"], "ERROR: Wrong expression passed to '-m': slow and (*"),
    (["-k", "ok and (", "test_t.py"], "ERROR: Wrong expression passed to '-k': ok and (*"),
]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["in-process", "xdist"])
@pytest.mark.parametrize(("given", "says"), COLLECTION_USAGE_ERRORS, ids=["missing-path", "bad-m", "bad-k"])
def test_a_usage_error_found_while_collecting_touches_no_task_with_or_without_xdist(
    pytester: pytest.Pytester, workers: list[str], given: list[str], says: str,
) -> None:
    held_task(pytester)
    pytester.makepyfile(test_t="def test_ok():\n    pass\n")

    result = verify_in_a_subprocess(pytester, *workers, *given)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.lines + result.stderr.lines
    assert any(fnmatch.fnmatch(line, says) for line in output), "\n".join(output)
    assert "INTERNALERROR" not in "\n".join(output) and "maf verification" not in "\n".join(output)
    assert attempts(pytester) == ("RUNNING", 1)  # not rolled back: the attempt is not spent
    with open_environment_store(pytester.path) as store:
        assert list_evidence(store, "fix-1") == []


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_a_malformed_check_marker_makes_no_preflight_task(pytester: pytest.Pytester, workers: list[str]) -> None:
    pytester.mkdir("project_checks").joinpath("test_db.py").write_text(MALFORMED_SEVERITY)
    pytester.makeini("[pytest]\nmaf_checks = project_checks\n")

    result = pytester.runpytest_subprocess("--maf-preflight", "-p", "no:cacheprovider", *workers, timeout=120)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert "test_db.py::test_db: maf_check severity 'fatal'" in output and "INTERNALERROR" not in output
    if (pytester.path / ".maf" / "runtime.db").exists():
        with open_environment_store(pytester.path) as store:
            assert tasks.list_tasks(store, include_internal=True) == []


def verify_in_a_subprocess(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--maf-task", "fix-1", "--maf-agent", "claude-1", "-p", "no:cacheprovider", *args, timeout=120,
    )


NOT_JSON_DETAILS = """
import pathlib
import pytest

@pytest.mark.maf_check(id="p.path")
def test_path(maf_evidence):
    maf_evidence["where"] = pathlib.Path("/tmp")

def test_other():
    pass
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_evidence_details_that_are_not_json_keep_the_task_from_committing(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    held_task(pytester)
    pytester.makepyfile(test_p=NOT_JSON_DETAILS)

    result = verify_in_a_subprocess(pytester, *workers, "test_p.py")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["task fix-1: ROLLBACK -> READY (1 of 2 verifiers failed: verification.unrecorded)"])
    result.stdout.fnmatch_lines(["maf: evidence for p.path was not recorded: evidence details holds a PosixPath, which is not JSON"])
    assert state_and_failures(pytester) == ("READY", ["verification.unrecorded"])
    with open_environment_store(pytester.path) as store:
        (stand_in,) = [row for row in list_evidence(store, "fix-1") if row.result == "FAIL"]
    assert "p.path: evidence details holds a PosixPath" in stand_in.details["message"]


def test_under_xdist_evidence_details_reach_the_store_as_plain_json(pytester: pytest.Pytester) -> None:
    held_task(pytester)
    pytester.makepyfile(test_p="""
import collections
import enum
import pytest

class Level(enum.IntEnum):
    HIGH = 2

@pytest.mark.maf_check(id="p.plain")
def test_plain(maf_evidence):
    maf_evidence["level"] = Level.HIGH
    maf_evidence["files"] = ("a.py", "b.py")
    maf_evidence["counts"] = collections.OrderedDict(lint=3)

def test_other():
    pass
""")

    result = verify_in_a_subprocess(pytester, "-n", "2", "test_p.py")

    assert result.ret == pytest.ExitCode.OK
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    with open_environment_store(pytester.path) as store:
        assert tasks.get_task(store, "fix-1").state == "DONE"
        (row,) = [row for row in list_evidence(store, "fix-1") if row.verifier == "p.plain"]
    assert (row.details["level"], row.details["files"], row.details["counts"]) == (2, ["a.py", "b.py"], {"lint": 3})


def test_a_worker_internal_error_keeps_the_task_from_committing(pytester: pytest.Pytester) -> None:
    held_task(pytester)
    pytester.makepyfile(test_p="""
import pathlib

def test_path(record_property):
    record_property("where", pathlib.Path("/tmp"))  # xdist cannot send it: its worker stops on an internal error

def test_other():
    pass
""")

    result = verify_in_a_subprocess(pytester, "-n", "2", "test_p.py")

    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    result.stdout.fnmatch_lines(["FAIL verification.pytest: pytest hit an internal error (*DumpError*PosixPath*"])
    result.stdout.fnmatch_lines(["task fix-1: ROLLBACK -> READY*verification.pytest*"])
    assert state_and_failures(pytester) == ("READY", ["verification.pytest"])


TAKES_THE_LEASE_AWAY = """
import pytest
from pytest_maf import tasks
from pytest_maf.store import open_store

def test_another_shell_finishes_the_task_and_another_agent_claims_it():
    with open_store(".maf/runtime.db") as store:
        tasks.finish_task(store, "fix-1", "claude-1", 1)
        tasks.claim_task(store, "fix-1", "codex-2", 60_000)

@pytest.mark.parametrize("n", range(20))
def test_more(n):
    pass
"""


def test_a_lease_lost_mid_run_is_one_line_saying_whose_the_task_is_and_what_was_lost(pytester: pytest.Pytester) -> None:
    held_task(pytester)
    pytester.makepyfile(test_lost=TAKES_THE_LEASE_AWAY)

    result = verify(pytester, "test_lost.py")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    problems = [line for line in result.stdout.lines if line.startswith("maf:")]
    assert problems == [
        "maf: lost the lease on task fix-1, attempt 1 (now leased to agent 'codex-2', LEASED): 21 result(s) of this run"
        " were not recorded; the task is codex-2's now; `maf task claim` leases you another"
    ]
    with open_environment_store(pytester.path) as store:
        assert tasks.get_task(store, "fix-1").state == "LEASED"
        assert list_evidence(store, "fix-1") == []


LOSES_THE_PREFLIGHT_LEASE = """
import pytest
from pytest_maf import tasks
from pytest_maf.store import open_store

@pytest.mark.maf_check(id="lease.lost")
def test_the_preflight_loses_its_lease(maf_agent):
    with open_store(".maf/runtime.db") as store:
        (task,) = tasks.list_tasks(store, "RUNNING", include_internal=True)
        tasks.release_task(store, task.id, maf_agent, task.attempts)  # a preflight task released is DEAD

@pytest.mark.maf_check(id="lease.after")
@pytest.mark.parametrize("n", range(5))
def test_after(n):
    pass
"""


def test_a_preflight_that_lost_its_lease_says_so_once_and_promises_no_rollback(pytester: pytest.Pytester) -> None:
    pytester.mkdir("project_checks").joinpath("test_lease.py").write_text(LOSES_THE_PREFLIGHT_LEASE)
    pytester.makeini("[pytest]\nmaf_checks = project_checks\n")

    result = pytester.runpytest("--maf-preflight", "--maf-agent", "ci-1", "--maf-checks", "lease.*", "-p", "no:cacheprovider")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    (problem,) = [line for line in result.stdout.lines if line.startswith("maf:")]
    assert problem.startswith("maf: lost the lease on preflight task task-")
    assert problem.endswith(
        ", attempt 1 (now DEAD with no lease): 6 result(s) of this run were not recorded;"
        " run `pytest --maf-preflight` again for a preflight that counts"
    )
    with open_environment_store(pytester.path) as store:
        (task,) = tasks.list_tasks(store, include_internal=True)
        assert task.state == "DEAD" and list_evidence(store, task.id) == []
