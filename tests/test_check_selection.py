"""Choosing preflight checks: ids listed by --collect-only, --maf-checks by id or glob, -m by tag."""

from __future__ import annotations

import pytest

from backends import open_environment_store
from pytest_maf.evidence import list_evidence

TAGGED_CHECKS = """
import pytest

@pytest.mark.maf_check(id="svc.redis", tags=["services"])
def test_redis():
    pass

@pytest.mark.maf_check(id="svc.queue", severity="warning", tags=["services", "slow-ish"])
def test_queue():
    pass

@pytest.mark.maf_check(id="local.lint", tags=["skip"])
def test_lint():
    pass
"""


@pytest.fixture(autouse=True)
def isolated(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAF_DB_PATH", "MAF_DATABASE_URL", "MAF_DATABASE_SCHEMA", "MAF_AGENT_ID", "MAF_AGENT_MAIL_ROOT", "MAF_REQUIRED_ENV", "MAF_MCP_REQUIRED"):
        monkeypatch.delenv(name, raising=False)
    checks = pytester.mkdir("project_checks")
    (checks / "test_tagged.py").write_text(TAGGED_CHECKS)
    pytester.makeini("[pytest]\nmaf_checks = project_checks\n")


def recorded_verifiers(pytester: pytest.Pytester) -> list[str]:
    with open_environment_store(pytester.path) as store:
        return sorted(row.verifier for row in list_evidence(store))


def test_collect_only_lists_each_check_id_with_its_severity_and_tags(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--maf-preflight", "--collect-only", "-q")

    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "maf checks (*): id, severity, tags",
        "  env.git *critical*environment",
        "  mcp.client[[]codex] *critical*mcp",
        "  svc.queue *warning*services slow-ish",
    ])
    assert not (pytester.path / ".maf").exists()


def test_maf_checks_runs_only_the_chosen_ids_and_globs(pytester: pytest.Pytester, on_backend: str) -> None:
    result = pytester.runpytest("--maf-preflight", "--maf-checks", "env.git, svc.* ,mcp.client[codex]")

    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["collected * / 4 selected"])
    result.assert_outcomes(passed=3, skipped=1, deselected=result.parseoutcomes()["deselected"])  # no codex here
    assert recorded_verifiers(pytester) == ["env.git", "svc.queue", "svc.redis"]


def test_a_tag_is_a_registered_marker_for_minus_m(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "--maf-preflight", "-m", "(services or database) and not disk", "--strict-markers", "-W", "error::pytest.PytestUnknownMarkWarning",
        "--collect-only", "-q",
    )

    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    listed = [line.split()[0] for line in result.outlines if line.startswith("  ")]
    assert sorted(listed) == [
        "env.sqlite", "env.sqlite-wal-reset", "store.connection", "store.schema", "svc.queue", "svc.redis",
    ]
    assert "PytestUnknownMarkWarning" not in result.stdout.str() + result.stderr.str()
    # --strict-markers refuses an -m name that no marker registers: a tag nothing carries is refused
    unknown = pytester.runpytest("--maf-preflight", "-m", "no_such_tag", "--strict-markers", "--collect-only", "-q")
    assert unknown.ret == pytest.ExitCode.USAGE_ERROR


def test_a_tag_named_like_a_pytest_marker_does_not_change_the_check(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--maf-preflight", "--maf-checks", "local.lint", "-m", "not skip")

    assert result.ret == 0
    result.assert_outcomes(passed=1, deselected=result.parseoutcomes()["deselected"])  # not skipped, nor deselected


@pytest.mark.parametrize(
    "value, says",
    [
        ("", "give check ids or globs separated by commas"),
        ("env.git,,store.*", "give check ids or globs separated by commas"),
        ("nope.*", "nope.* matches no check; the check ids are: env.git, "),
        ("env.git\x1b[2J", "holds a control character"),
    ],
    ids=["empty", "empty-entry", "unknown", "control-character"],
)
def test_a_bad_maf_checks_is_one_line_and_a_usage_error(pytester: pytest.Pytester, value: str, says: str) -> None:
    result = pytester.runpytest_subprocess("--maf-preflight", "--maf-checks", value, "-p", "no:cacheprovider")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR")]
    assert len(errors) == 1 and errors[0].startswith("ERROR: --maf-checks") and says in errors[0], result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str() and "\x1b" not in result.stderr.str()
    # refused before the run begins (an unknown id once the checks are collected): no store, no DEAD preflight task
    assert not (pytester.path / ".maf").exists()


@pytest.mark.slow
def test_under_xdist_an_unmatched_pattern_is_a_usage_error_that_runs_and_records_nothing(
    pytester: pytest.Pytester,
) -> None:
    result = pytester.runpytest_subprocess(
        "--maf-preflight", "-n", "2", "-p", "no:cacheprovider", "--maf-checks", "env.git,nope.*", timeout=120,
    )

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["ERROR: --maf-checks: nope.* matches no check; the check ids are: *"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    # as without xdist: env.git, which matched, did not run either, and no preflight task was made
    assert not (pytester.path / ".maf").exists()
