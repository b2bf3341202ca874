"""What the plugin does per test, so that its cost stays that of a report: without a
--maf-* option nothing of it runs per test, and with --maf-task each test's outcome is
kept in memory, and the run's evidence is written at the end, in the one transaction
that decides the task.

These assert behaviour (hooks registered, rows and their transaction), not time: the
time is measured by benchmarks/plugin.py.
"""

from __future__ import annotations

import pytest

from backends import open_environment_store
from pytest_maf import tasks
from pytest_maf.evidence import list_evidence

VERIFIERS = 250  # more than one batch of the old writer (200 rows), in a second or so

PER_TEST_HOOKS = """
def per_test_hooks(config):
    names = []
    for hook in ("protocol", "makereport", "logreport"):
        implementers = getattr(config.hook, "pytest_runtest_" + hook).get_hookimpls()
        names.append(hook + "=" + (",".join(sorted(i.plugin_name for i in implementers if "maf" in i.plugin_name)) or "-"))
    return " ".join(names)

def test_hooks(pytestconfig):
    print("PER-TEST HOOKS", per_test_hooks(pytestconfig))
"""


@pytest.fixture(autouse=True)
def isolated(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAF_DB_PATH", "MAF_DATABASE_URL", "MAF_DATABASE_SCHEMA", "MAF_AGENT_ID", "MAF_AGENT_MAIL_ROOT"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini("[pytest]\n")


def running_task(pytester: pytest.Pytester, task_id: str = "fix-42", agent: str = "claude-1") -> None:
    with open_environment_store(pytester.path, create=True) as store:
        tasks.add_task(store, task_id=task_id)
        claim = tasks.claim_task(store, task_id, agent, 60_000)
        tasks.start_task(store, task_id, agent, claim.attempt)


def test_without_a_maf_option_no_hook_of_the_plugin_runs_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_hooks=PER_TEST_HOOKS)

    result = pytester.runpytest("-s")

    assert result.ret == 0
    result.stdout.fnmatch_lines(["*PER-TEST HOOKS protocol=- makereport=- logreport=-"])
    assert not (pytester.path / ".maf").exists()


def test_a_verification_run_adds_no_time_limit_hook_and_a_preflight_does(
    pytester: pytest.Pytester, on_backend: str
) -> None:
    pytester.makepyfile(test_hooks=PER_TEST_HOOKS)
    running_task(pytester)

    verification = pytester.runpytest("-s", "--maf-task", "fix-42", "--maf-agent", "claude-1", "test_hooks.py")

    assert verification.ret == 0
    verification.stdout.fnmatch_lines(["*PER-TEST HOOKS protocol=- makereport=maf-run logreport=maf-run"])
    pytester.makeini("[pytest]\nmaf_checks = test_hooks.py\n")
    preflight = pytester.runpytest("-s", "--maf-preflight", "-k", "test_hooks")
    preflight.stdout.fnmatch_lines(["*PER-TEST HOOKS protocol=maf-budget makereport=maf-run logreport=maf-run"])


def test_evidence_is_kept_until_the_run_ends_then_written_with_the_verdict(
    pytester: pytest.Pytester, on_backend: str
) -> None:
    pytester.makepyfile(test_feature=f"""
import pytest
from pytest_maf.evidence import list_evidence

@pytest.mark.parametrize("n", range({VERIFIERS}))
def test_trivial(n):
    pass

def test_zz_nothing_is_stored_while_the_run_goes_on(maf_store):
    assert list_evidence(maf_store, "fix-42") == []
""")
    running_task(pytester)

    result = pytester.runpytest("--maf-task", "fix-42", "--maf-agent", "claude-1", "test_feature.py")

    assert result.ret == 0
    result.stdout.fnmatch_lines([f"{VERIFIERS + 1} passed, 0 failed*", "*fix-42: COMMITTED -> DONE*"])
    with open_environment_store(pytester.path) as store:
        rows = list_evidence(store, "fix-42")
        events = tasks.describe_task(store, "fix-42").events
    recorded = [event for event in events if event.kind == "evidence"]
    decided = [event for event in events if event.kind in ("commit", "done")]
    assert len(rows) == VERIFIERS + 1 and {row.result for row in rows} == {"PASS"}
    assert len(recorded) == VERIFIERS + 1 and len(decided) == 2
    assert len({event.ts for event in recorded}) == 1  # one transaction: one time for all of them
    if on_backend == "sqlite":  # PostgreSQL reads its clock again after waiting for a lock (the verdict's)
        assert {event.ts for event in decided} == {recorded[0].ts}
