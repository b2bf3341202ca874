"""The pytest side of a preflight or verification run: outcomes, the summary, xdist, the time limit.

:class:`MafRun` is registered by the plugin's ``pytest_configure`` only when
``--maf-preflight`` or ``--maf-task`` is given; importing this module is the
cost a run pays and a plain pytest session does not. The task, its lease and
its evidence are the library's :class:`pytest_maf.session.VerificationSession`;
this module turns pytest's reports into its rows.

Per test, the hooks only gather plain data (an outcome on the item, a row
appended to a list); the rows are written when the run ends, in the one
transaction that also decides the task, so a verification run costs about
what ``--junitxml`` does (``benchmarks/plugin.py``). The preflight's time
limit is a hook of its own (:class:`BudgetKeeper`), registered for a
preflight only.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator

import pytest

from pytest_maf import tasks
from pytest_maf.agents import set_client
from pytest_maf.check_selection import SEVERITIES, marker_tags
from pytest_maf.config import Settings, load_settings
from pytest_maf.errors import LeaseLostError, MafError
from pytest_maf.evidence import NO_EVIDENCE_REASON
from pytest_maf.files import checked_text_output, store_files
from pytest_maf.ids import validate_id
from pytest_maf.light_dataclass import dataclass, field
from pytest_maf.plugin import COLLECTION_ERRORS_PLUGIN, EVIDENCE_DETAILS_KEY, checks_directory, default_agent_id
from pytest_maf.session import VerificationSession
from pytest_maf.store import Store, open_store_for
from pytest_maf.terminal import cut, printable
from pytest_maf.termination import Terminated, TerminationHandler
from pytest_maf.values import plain_json

if TYPE_CHECKING:
    from pytest_maf.records import Evidence

OUTCOME_KEY = pytest.StashKey["ItemOutcome"]()
BUDGET_TIMEOUT_KEY = pytest.StashKey[float]()  # the pytest-timeout limit a preflight check ran under
WARNING_PREFIX = "maf warning: "
ACKNOWLEDGED_PREFIX = "maf acknowledged warning: "
# What a verifier came to, in the order the summary counts them; only "passed" is PASS evidence.
KINDS = ("passed", "failed", "skipped", "xfailed", "xpassed", "deselected", "warning", "acknowledged")
NOT_EVIDENCE = ("skipped", "xfailed", "xpassed", "deselected")
# What stopped a run that pytest failed although no check failed, by pytest's exit code.
_STOPPED_BY = {
    int(pytest.ExitCode.TESTS_FAILED): "pytest failed the run outside any check (a module that did not import,"
    " a crashed worker)",
    int(pytest.ExitCode.INTERRUPTED): "the run was interrupted",
    int(pytest.ExitCode.INTERNAL_ERROR): "pytest stopped on an internal error",
    int(pytest.ExitCode.USAGE_ERROR): "pytest stopped on a usage error",
}
# The details the plugin decides (the verdict among them); what a test or a hook adds never replaces them.
DECIDED_DETAILS = ("nodeid", "severity", "blocking", "outcome", "message", "acknowledged", "timed_out")
# Evidence rows are kept in memory as tests end and written when the run ends, in the
# transaction that decides the task; a suite of more than FLUSH_ROWS verifiers writes
# one transaction more per FLUSH_ROWS rows.
FLUSH_ROWS = 10_000



def load_pytest_timeout(config: pytest.Config) -> None:
    """The preflight interrupts a hung check through pytest-timeout, loaded here even when
    plugin autoloading is off (PYTEST_DISABLE_PLUGIN_AUTOLOAD); ``-p no:timeout`` still wins."""
    manager = config.pluginmanager
    if not (manager.has_plugin("timeout") or manager.has_plugin("pytest_timeout")):
        manager.import_plugin("pytest_timeout")  # by name: imported first, it could not be assertion-rewritten


def preflight_arguments(config: pytest.Config) -> list[str]:
    """The built-in checks, the ``maf_checks`` paths, and paths given on the command line."""
    arguments = [str(checks_directory())]
    arguments += [str(path) for path in config.getini("maf_checks")]
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        arguments += config.args
    return arguments


@dataclass
class CheckOutcome:
    verifier: str
    kind: str  # one of KINDS
    message: str
    acknowledged: dict[str, str] | None = None


@dataclass
class ItemOutcome:
    """What one test's phases came to, gathered as its reports are made."""

    marker: pytest.Mark | None
    severity: str
    verifier: str
    failures: dict[str, str] = field(default_factory=dict)  # phase -> first line of the failure
    skipped: str = ""  # "skipped", "xfailed" or "xpassed": it ran to no verdict
    timed_out: bool = False  # interrupted at the preflight's time limit
    acknowledged: dict[str, str] | None = None  # {by, on, reason} of a failing warning someone accepted


@dataclass
class PreflightBudget:
    """The preflight's time limit, ``seconds`` long and over at ``deadline`` (``time.time()``).

    Each check runs under a pytest-timeout limit of the time left (the signal
    method where there is SIGALRM: the check is interrupted and recorded), and
    no check starts once the limit is reached.
    """

    seconds: int
    deadline: float

    @property
    def reason(self) -> str:
        return f"maf preflight took over {self.seconds} s (MAF_PREFLIGHT_TIMEOUT)"

    @property
    def check_message(self) -> str:
        return (
            f"timed out at the preflight's limit of {self.seconds} s (MAF_PREFLIGHT_TIMEOUT);"
            " make the check finish sooner, or raise preflight.timeout_seconds"
        )

    def spent(self) -> bool:
        return time.time() >= self.deadline

    def limit(self, item: pytest.Item) -> None:
        """Let the check run for the time left, unless the user's own pytest-timeout limit is shorter."""
        if not _interrupts_checks(item.config):
            return  # pytest-timeout is blocked (-p no:timeout): the preflight stops between checks only
        left = max(self.deadline - time.time(), 0.01)  # 0 would mean "no limit" to pytest-timeout
        own = _own_timeout(item)
        if own is not None and 0 < own <= left:
            return  # the user's limit fires first, and is an ordinary failure of the check
        method = {"method": "signal"} if hasattr(signal, "SIGALRM") else {}
        item.add_marker(pytest.mark.timeout(left, func_only=False, **method), append=False)
        item.stash[BUDGET_TIMEOUT_KEY] = left

    def interrupted(self, item: pytest.Item, call: pytest.CallInfo[None]) -> bool:
        """Whether this failure is pytest-timeout interrupting the check at the preflight's limit."""
        import pytest_timeout  # type: ignore[import-untyped]

        limit = item.stash.get(BUDGET_TIMEOUT_KEY, None)
        return (
            limit is not None and call.excinfo is not None and call.excinfo.errisinstance(pytest.fail.Exception)
            and str(call.excinfo.value) == pytest_timeout.PYTEST_FAILURE_MESSAGE % limit
        )

    def cancel(self, item: pytest.Item) -> None:
        """Stop the check's timer once its teardown is over, before its evidence is handled."""
        if BUDGET_TIMEOUT_KEY in item.stash:
            item.config.hook.pytest_timeout_cancel_timer(item=item)


@dataclass(eq=False)  # registered as a plugin: must stay hashable
class MafRun:
    """One preflight or verification run: its task, lease and evidence.

    The task is made (a preflight) or claimed (``--maf-task``) when the tests
    start, once collection has chosen them: a run refused before then writes
    nothing. Under xdist, whose controller collects nothing, that is when the
    first worker has collected its tests, before any of them is run.
    """

    config: pytest.Config
    task_id: str | None
    settings: Settings | None = None
    store: Store | None = None
    agent_id: str = ""
    attempt: int = 0
    session: VerificationSession | None = None
    budget: PreflightBudget | None = None
    acknowledged: dict[str, dict[str, str]] = field(default_factory=dict)  # preflight.acknowledged_warnings
    outcomes: list[CheckOutcome] = field(default_factory=list)
    tally: Counter[str] = field(default_factory=Counter)  # KINDS -> how many verifiers came to it
    verdict: tasks.FinishResult | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interrupted: str = ""  # how the run was stopped before its end (Ctrl-C, SIGTERM, SIGHUP, pytest.exit()), if it was
    internal_error: str = ""  # the last line of an internal error of this process or of an xdist worker
    _pending: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    @property
    def preflight(self) -> bool:
        return bool(self.config.getoption("maf_preflight"))

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    def __post_init__(self) -> None:
        # Only the controller of a real run (not --collect-only) touches the store.
        self.writes = not self.is_worker and not self.config.getoption("collectonly")
        self.distributed = _distributed(self.config)
        self.strict = bool(self.config.getoption("maf_strict"))
        self.termination = TerminationHandler()
        self._details_hook = self.config.hook.pytest_maf_evidence_details

    def begin(self) -> None:
        if self.is_worker:
            shared = self.config.workerinput.get("maf", {})  # type: ignore[attr-defined]
            self.task_id, self.attempt, self.agent_id = shared.get("task_id"), shared.get("attempt", 0), shared.get("agent_id", "")
            self.acknowledged = shared.get("acknowledged", {})
            if shared.get("budget"):
                self._keep_to(PreflightBudget(*shared["budget"]))
            return
        for option, flag in (("setupplan", "--setup-plan"), ("setuponly", "--setup-only")):
            if getattr(self.config.option, option, False):
                mode = "--maf-preflight" if self.preflight else "--maf-task"
                raise pytest.UsageError(f"{flag} runs no test, so {mode} would record no evidence: run without {flag}")
        self.agent_id = self.config.getoption("maf_agent") or default_agent_id()
        set_client("pytest")
        try:
            validate_id("agent", self.agent_id)  # before any store is asked who holds what
            self.settings = load_settings(db_path=self.config.getoption("maf_db"))
        except MafError as error:
            raise pytest.UsageError(str(error)) from None
        self.acknowledged = {check: dict(entry) for check, entry in self.settings.acknowledged_warnings.items()}
        self._refuse_outputs_over_the_store()
        if self.preflight:
            seconds = self.settings.preflight_timeout_s
            self._keep_to(PreflightBudget(seconds, time.time() + seconds))
        if self.writes:  # SIGTERM (a CI time limit, kill) or SIGHUP stops the run as Ctrl-C does: recorded, rolled back
            self.termination.install()
        if self.writes and not self.preflight:  # the task must be in a store: say so before collecting
            try:
                self.store = open_store_for(self.settings)
            except MafError as error:
                raise pytest.UsageError(str(error)) from None
        if self.writes and not self.preflight and self.distributed:
            # Under xdist the task is verified once a worker has collected; a task the agent does not
            # hold is refused now, before any worker starts. The workers are handed its attempt.
            assert self.store is not None and self.task_id is not None
            try:
                self.attempt = VerificationSession.held_attempt(self.store, self.task_id, self.agent_id)
            except MafError as error:
                self.close()
                raise pytest.UsageError(str(error)) from None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        """The checks are collected and chosen: only now is the run's task made or claimed, so a
        usage error found while collecting (``--maf-checks`` matching nothing, a bad ``-m``, a
        malformed ``maf_check``) writes nothing. Under xdist the workers collect, and this is too soon."""
        if self.writes and not self.distributed:
            self.start()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under xdist: a worker has collected and chosen its tests, and none has run yet. The workers
        collect alike, so one that met a usage error (a malformed marker, a path that is not there, a
        bad ``-m``) sends no ids and starts nothing."""
        if self.writes and ids:
            self.start()

    def _start_at_the_end(self, session: pytest.Session) -> bool:
        """Under xdist, a run in which no worker collected a test (a module that did not import, every
        test deselected) still finishes its task, unless a usage error stopped it first: the workers'
        collection errors are told before this (their sessions end before the controller's)."""
        errors = self.config.pluginmanager.get_plugin(COLLECTION_ERRORS_PLUGIN)
        if session.exitstatus == pytest.ExitCode.USAGE_ERROR or (errors is not None and errors.on_workers):
            return False
        try:
            self.start()
        except pytest.UsageError as error:
            self.problems.append(str(error))
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            return False
        return True

    def start(self) -> None:
        """Make and claim the preflight's task, or claim the verified one, and keep its lease."""
        if self.session is not None:
            return
        assert self.settings is not None
        ttl_ms = self.settings.task_lease_ttl_s * 1000
        try:
            if self.store is None:
                from pytest_maf.git_exclude import open_store_out_of_git  # a preflight may make the store

                self.store = open_store_out_of_git(self.settings, create=self.preflight)
            if self.preflight:
                payload = {"kind": "preflight", "agent": self.agent_id, "cwd": str(Path.cwd())}
                self.session = VerificationSession.start_preflight(self.store, self.agent_id, ttl_ms, payload)
            else:
                assert self.task_id is not None
                self.session = VerificationSession.start_verification(self.store, self.task_id, self.agent_id, ttl_ms)
        except MafError as error:
            self.close()
            raise pytest.UsageError(str(error)) from None
        self.task_id, self.attempt = self.session.task_id, self.session.attempt
        self.session.keep_lease()

    def _keep_to(self, budget: PreflightBudget) -> None:
        """Hold each test to the preflight's time limit (a hook registered for a preflight only)."""
        self.budget = budget
        self.config.pluginmanager.register(BudgetKeeper(budget), BUDGET_PLUGIN)

    def _refuse_outputs_over_the_store(self) -> None:
        """pytest's own report files (--junitxml, --log-file, --report-log) must not name the store."""
        assert self.settings is not None
        if self.settings.database_url is not None:
            return
        for option, flag in (("xmlpath", "--junitxml"), ("log_file", "--log-file"), ("report_log", "--report-log")):
            value = getattr(self.config.option, option, None)
            if not value:
                continue
            try:
                checked_text_output(str(value), store_files(self.settings.db_path), flag)
            except MafError as error:
                raise pytest.UsageError(str(error)) from None

    def close(self) -> None:
        self.termination.restore()
        if self.session is not None:
            self.session.close()
        if self.store is not None:
            self.store.close()
            self.store = None

    # Outcomes, in every process.

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report: pytest.TestReport = yield
        outcome, when = report.outcome, report.when
        if outcome == "passed" and not hasattr(report, "wasxfail"):
            if when == "call":
                return report  # a call that passed adds nothing to what the setup found and the teardown attaches
            if when == "setup":
                marker = item.get_closest_marker("maf_check")
                if marker is None:
                    return report  # nothing to keep until the teardown: a plain test that has passed so far
                item.stash[OUTCOME_KEY] = ItemOutcome(marker, _severity(marker), _verifier_id(item, marker))
                return report
            if OUTCOME_KEY not in item.stash:  # a plain test (no maf_check marker) that passed every phase
                self._attach_passed(item, report)
                return report
        seen = item.stash.get(OUTCOME_KEY, None)
        if seen is None:
            # After a setup that passed, the item has no maf_check marker (its setup report looked).
            marker = item.get_closest_marker("maf_check") if when == "setup" else None
            seen = item.stash[OUTCOME_KEY] = ItemOutcome(marker, _severity(marker), _verifier_id(item, marker))
        if outcome == "passed":
            if when == "call" and hasattr(report, "wasxfail"):
                seen.skipped = "xpassed"  # non-strict: pytest counts it apart from passed, and so does maf
        elif outcome == "failed":
            if self.budget is not None and self.budget.interrupted(item, call):
                seen.timed_out = True
                seen.failures.setdefault(when, self.budget.check_message)
            else:
                seen.failures.setdefault(when, _failure_message(call, report))
            if when == "call" and seen.severity == "warning" and not seen.timed_out:
                seen.acknowledged = self._acknowledgement(seen)
                if seen.acknowledged or not self.strict:
                    # Reported as xfailed: visible, but it does not fail the run.
                    report.outcome = "skipped"
                    prefix = ACKNOWLEDGED_PREFIX if seen.acknowledged else WARNING_PREFIX
                    report.wasxfail = prefix + seen.failures["call"]
        else:
            seen.skipped = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        if when == "teardown":
            if self.budget is not None:
                self.budget.cancel(item)
            self._attach_evidence(item, report, seen)
        return report

    def _attach_passed(self, item: pytest.Item, report: pytest.TestReport) -> None:
        """What :meth:`_attach_evidence` attaches for a test without a ``maf_check`` marker whose
        every phase passed, made without an :class:`ItemOutcome`: what most verifiers come to."""
        if self.budget is not None:
            self.budget.cancel(item)
        verifier = item.nodeid
        details: dict[str, Any] = {
            "nodeid": verifier, "severity": "critical", "blocking": True, "tags": [], "message": "", "outcome": "passed",
        }
        named = bool(self.acknowledged) and self._acknowledged_as(verifier, "") is not None
        self._put_evidence(item, report, verifier, "PASS", "passed", "critical", details, named)

    def _acknowledgement(self, seen: ItemOutcome) -> dict[str, str] | None:
        """The acknowledgement of a warning check, by its verifier id (``mcp.client[codex]``) or check id."""
        check = str(seen.marker.kwargs.get("id", "")) if seen.marker else ""
        return self._acknowledged_as(seen.verifier, check)

    def _acknowledged_as(self, verifier: str, check: str) -> dict[str, str] | None:
        found = self.acknowledged.get(verifier) or self.acknowledged.get(check)
        return dict(found) if found else None

    def _attach_evidence(self, item: pytest.Item, report: pytest.TestReport, seen: ItemOutcome) -> None:
        """Put the item's evidence on its last report, as plain data that survives xdist.

        ``result`` is None for a verifier that ran to no verdict (skipped,
        xfailed, xpassed): it records no evidence row.
        """
        severity = seen.severity
        warning_only = (
            severity == "warning" and set(seen.failures) == {"call"} and not seen.timed_out
            and (not self.strict or seen.acknowledged is not None)
        )
        if seen.failures:
            result: str | None = "FAIL"
            kind = ("acknowledged" if seen.acknowledged else "warning") if warning_only else "failed"
        else:
            result, kind = (None, seen.skipped) if seen.skipped else ("PASS", "passed")
        details: dict[str, Any] = {
            "nodeid": item.nodeid,
            "severity": severity,
            "blocking": not warning_only,
            "tags": marker_tags(seen.marker),
            "message": next(iter(seen.failures.values()), ""),
            "outcome": "failed" if seen.failures else seen.skipped or "passed",
        }
        if seen.acknowledged and warning_only:
            details["acknowledged"] = seen.acknowledged
        if seen.timed_out:
            details["timed_out"] = True
        named = bool(self.acknowledged) and self._acknowledgement(seen) is not None
        self._put_evidence(item, report, seen.verifier, result, kind, severity, details, named)

    def _put_evidence(
        self, item: pytest.Item, report: pytest.TestReport, verifier: str, result: str | None, kind: str,
        severity: str, details: dict[str, Any], acknowledgement_named: bool,
    ) -> None:
        """Put the evidence on the item's last report as plain data that survives xdist, with what the
        test added through ``maf_evidence`` in its details, and the JUnit XML properties."""
        added = item.stash.get(EVIDENCE_DETAILS_KEY, None)
        unrecordable = ""
        if added:
            try:  # here, in the process that ran the test: under xdist the report must carry plain data
                details.update(plain_json("evidence details", {
                    key: value for key, value in added.items() if key not in DECIDED_DETAILS
                }))
            except MafError as error:
                unrecordable = str(error)
        report.maf_evidence = {  # type: ignore[attr-defined]
            "verifier": verifier, "result": result, "kind": kind, "details": details,
            "acknowledgement_named": acknowledgement_named, "unrecordable": unrecordable,
        }
        report.user_properties += [
            ("maf.task_id", self.task_id or ""),
            ("maf.attempt", self.attempt),
            ("maf.verifier", verifier),
            ("maf.result", result or kind.upper()),
            ("maf.severity", severity),
        ]

    # Evidence, written by the controller only.

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.tally["deselected"] += len(items)

    @pytest.hookimpl(tryfirst=True)  # before --junitxml writes the report's properties
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown" or not self.writes or self.store is None:
            return
        evidence = getattr(report, "maf_evidence", None)
        if evidence is None:
            return
        if self.preflight and self.distributed:  # its workers started before its task was made
            report.user_properties = [
                (name, {"maf.task_id": self.task_id or "", "maf.attempt": self.attempt}.get(name, value))
                for name, value in report.user_properties
            ]
        verifier, result, kind, details = evidence["verifier"], evidence["result"], evidence["kind"], evidence["details"]
        self.tally[kind] += 1
        if kind != "passed":  # the summary names each verifier that did not simply pass
            self.outcomes.append(CheckOutcome(verifier, kind, details["message"], details.get("acknowledged")))
        if evidence["acknowledgement_named"]:
            self._note_acknowledgement(verifier, kind, details["severity"])
        if result is None:
            return  # skipped, xfailed or xpassed: no evidence either way
        if evidence["unrecordable"]:
            if self.session is not None:
                self.session.refuse(verifier, evidence["unrecordable"])  # and the task does not commit
            return
        if self._details_hook.get_hookimpls():
            decided = {key: details[key] for key in DECIDED_DETAILS if key in details}
            details = dict(details)  # the hook's changes are the row's, not the report's
            self._details_hook(
                config=self.config, nodeid=report.nodeid, verifier=verifier, result=result, details=details,
            )
            for key in DECIDED_DETAILS:  # the verdict stays the plugin's
                details.pop(key, None)
            details.update(decided)
        self._pending.append((verifier, result, details))
        if len(self._pending) >= FLUSH_ROWS:
            self.flush_evidence()

    def _note_acknowledgement(self, verifier: str, kind: str, severity: str) -> None:
        """Notes on a verifier that preflight.acknowledged_warnings names."""
        if severity != "warning":
            self.notes.append(
                f"preflight.acknowledged_warnings names {verifier}, a {severity} check: only a warning"
                " can be acknowledged, so it still fails the run when it fails; fix it instead"
            )
        elif kind == "passed":
            self.notes.append(f"{verifier} passes now: its entry in preflight.acknowledged_warnings can go")

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        """Ctrl-C, or a test or plugin calling ``pytest.exit()``: the run stops before its end."""
        reason = str(excinfo.value).strip().splitlines()[0] if str(excinfo.value).strip() else ""
        if excinfo.errisinstance(pytest.Session.Interrupted):  # pytest stopping itself: "1 error during collection"
            self.interrupted = reason or "stopped by pytest"
        elif excinfo.errisinstance(Terminated):
            self.interrupted = excinfo.value.name  # type: ignore[attr-defined]
        elif excinfo.errisinstance(KeyboardInterrupt):
            self.interrupted = "Ctrl-C"
        else:
            self.interrupted = f"pytest.exit(){': ' + reason if reason else ''}"

    def pytest_internalerror(self, excrepr: object, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        """An internal error of this process or, under xdist, of a worker (whose run xdist may still
        count as passed): a check's outcome may never have reached the controller."""
        # xdist raises a worker's traceback as the message of an `assert False`: its last line is the error.
        lines = [line.strip() for line in str(excinfo.value).splitlines() if line.strip() not in ("", "assert False")]
        self.internal_error = cut(lines[-1] if lines else excinfo.typename, 300)

    def _record_unfinished_run(self, session: pytest.Session) -> None:
        """A run stopped at the preflight's time limit, or interrupted, must not commit: the checks it
        did not run (the one it was in among them) count as a failure, and the task rolls back."""
        not_run = session.testscollected - sum(self.tally[kind] for kind in KINDS if kind != "deselected")
        run = "preflight" if self.preflight else "verification"
        unfinished = f": {not_run} check(s) did not finish" if not_run > 0 else ""
        if self.budget is not None and self.budget.spent() and not_run > 0:
            verifier, message = "preflight.timeout", f"{self.budget.reason}: {not_run} check(s) were not run"
        elif self.budget is not None and self.budget.spent() and not _interrupts_checks(self.config):
            # pytest-timeout blocked (-p no:timeout): the check that overran the limit was not interrupted
            verifier = "preflight.timeout"
            message = f"{self.budget.reason}; with pytest-timeout blocked (-p no:timeout) no check was interrupted"
        elif self.interrupted:
            verifier, message = f"{run}.interrupted", f"the run was interrupted ({self.interrupted}){unfinished}"
        elif self.internal_error:
            verifier, message = f"{run}.pytest", f"pytest hit an internal error ({self.internal_error}){unfinished}"
            if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
                session.exitstatus = pytest.ExitCode.INTERNAL_ERROR  # xdist reports a worker's as a pass
        elif session.exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED) and not (
            session.exitstatus == pytest.ExitCode.TESTS_FAILED and self.tally["failed"]
        ):
            # pytest failed the run, but no check's row says so: a module that did not import (under xdist, or
            # --continue-on-collection-errors), a crashed xdist worker, a usage or internal error mid-run
            stopped_by = _STOPPED_BY.get(int(session.exitstatus), "pytest failed the run")
            verifier, message = f"{run}.pytest", f"{stopped_by}{unfinished} (exit code {int(session.exitstatus)})"
        elif not_run > 0 and not self.tally["failed"]:
            # Stopped with nothing said: a second Ctrl-C cut pytest's own handling of the first short
            verifier, message = f"{run}.interrupted", f"the run stopped before its end{unfinished}"
        else:
            return
        self._pending.append((
            verifier, "FAIL",
            {"severity": "critical", "blocking": True, "message": message, "outcome": "failed", "tags": []},
        ))
        # Shown with the failures, but not counted: it is no test, and the counts are pytest's.
        self.outcomes.append(CheckOutcome(verifier, "failed", message))

    def flush_evidence(self) -> None:
        """Write the buffered rows in one transaction (one by one if that is refused)."""
        pending, self._pending = self._pending, []
        if not pending or self.session is None:
            return
        self._tell_recorded(self.session.record(pending))

    def _tell_recorded(self, rows: list[Evidence]) -> None:
        recorded = self.config.hook.pytest_maf_evidence_recorded
        if recorded.get_hookimpls():
            for row in rows:
                recorded(config=self.config, evidence=row)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.writes:
            return
        with self.termination.shielded():  # a signal now would leave the task VERIFYING, half decided
            self._finish(session)
        stopped = self.termination.exit_status()
        if stopped is not None:
            session.exitstatus = stopped  # 143 after SIGTERM, 129 after SIGHUP, as a process they end exits

    def _finish(self, session: pytest.Session) -> None:
        """Record the run's evidence and decide its task (made or claimed at the end under xdist if need be)."""
        if self.session is None and not (self.distributed and self._start_at_the_end(session)):
            return
        assert self.session is not None
        self._record_unfinished_run(session)
        pending, self._pending = self._pending, []
        try:
            self.verdict, rows = self.session.complete(pending)  # the rows and the verdict: one transaction
            self._tell_recorded(rows)
        except LeaseLostError as error:  # one line: whose the task is now, what was lost, what to do
            self.problems.append(str(error))
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            return
        except MafError as error:
            self.problems.append(f"task {self.task_id} could not be finished: {error}")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            return
        if self.verdict.verdict != "COMMITTED" and session.exitstatus in (
            pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # nothing failed, but the task did not commit

    def counts(self) -> str:
        """``13 passed, 0 failed, 1 skipped, 2 xfailed, 1 warning(s)``: each kind apart, as pytest counts them."""
        tally = self.tally
        parts = [f"{tally['passed']} passed", f"{tally['failed']} failed"]
        parts += [f"{tally[kind]} {kind}" for kind in NOT_EVIDENCE if tally[kind]]
        parts.append(f"{tally['warning']} warning(s)")
        if tally["acknowledged"]:
            parts.append(f"{tally['acknowledged']} acknowledged")
        return ", ".join(parts)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.writes or self.session is None:  # refused before its task was made or claimed
            for problem in self.problems:
                terminalreporter.write_line(f"ERROR: {problem}", red=True)
            return
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", "maf preflight" if self.preflight else "maf verification")
        write(f"{self.counts()}; task {self.task_id} attempt {self.attempt}")
        for prefix, kind, colour in (("FAIL", "failed", "red"), ("WARN", "warning", "yellow"), ("ACK", "acknowledged", "")):
            for outcome in (o for o in self.outcomes if o.kind == kind):
                by = outcome.acknowledged
                note = f" (acknowledged by {by['by']} on {by['on']}: {by['reason']})" if by else ""
                write(f"{prefix} {printable(outcome.verifier)}: {printable(outcome.message)}{note}", **({colour: True} if colour else {}))
        if self.verdict is not None:
            reason = self.verdict.reason
            if reason == NO_EVIDENCE_REASON:
                not_run = ", ".join(f"{self.tally[kind]} {kind}" for kind in NOT_EVIDENCE if self.tally[kind])
                reason = (
                    f"no verifier passed or failed ({not_run or 'none ran'}):"
                    " skipped, xfailed and deselected verifiers are not evidence, so the task is not done"
                )
            write(f"task {self.task_id}: {self.verdict.verdict} -> {self.verdict.final_state} ({reason})")
        for note in self.notes:
            write(f"maf: {note}", yellow=True)
        for problem in [*(self.session.problems if self.session else []), *self.problems]:
            write(f"maf: {problem}", red=True)


BUDGET_PLUGIN = "maf-budget"


class BudgetKeeper:
    """Holds each check of a preflight to the time left, and starts none once it is spent."""

    def __init__(self, budget: PreflightBudget) -> None:
        self.budget = budget

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # outside pytest-timeout's wrapper, which reads the marker
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
        self.budget.limit(item)
        result = yield
        if nextitem is not None and self.budget.spent() and not item.session.shouldstop:
            item.session.shouldstop = self.budget.reason  # no further check starts
        return result


class XdistBridge:
    """Hands the run's task to xdist workers, so their reports carry it."""

    def __init__(self, run: MafRun) -> None:
        self.run = run

    def pytest_configure_node(self, node: Any) -> None:
        budget = self.run.budget
        node.workerinput["maf"] = {
            "task_id": self.run.task_id,
            "attempt": self.run.attempt,
            "agent_id": self.run.agent_id,
            "acknowledged": self.run.acknowledged,
            "budget": [budget.seconds, budget.deadline] if budget else None,
        }


def _distributed(config: pytest.Config) -> bool:
    """Whether xdist runs the tests on workers (``-n 2``, ``--tx``): its controller collects nothing."""
    return (
        config.pluginmanager.hasplugin("xdist") and config.getoption("dist", "no") != "no"
        and bool(config.getoption("numprocesses", None) or config.getoption("tx", None))
    )


def _severity(marker: pytest.Mark | None) -> str:
    """The marker's severity; checked again here for a marker a test adds while it runs (collection
    checked the others: check_selection.marker_problem)."""
    severity = marker.kwargs.get("severity", "critical") if marker else "critical"
    if severity not in SEVERITIES:
        raise pytest.UsageError(f"maf_check severity {severity!r}: use 'critical' or 'warning'")
    return str(severity)


def _verifier_id(item: pytest.Item, marker: pytest.Mark | None) -> str:
    if marker is None or not marker.kwargs.get("id"):
        return item.nodeid
    callspec = getattr(item, "callspec", None)
    return f"{marker.kwargs['id']}[{callspec.id}]" if callspec else str(marker.kwargs["id"])


def _interrupts_checks(config: pytest.Config) -> bool:
    """pytest-timeout is there to stop a check that overruns the preflight's limit (not -p no:timeout)."""
    return hasattr(config.hook, "pytest_timeout_set_timer")


def _own_timeout(item: pytest.Item) -> float | None:
    """The pytest-timeout limit the user gave this check (its marker, else --timeout, PYTEST_TIMEOUT, ini)."""
    import pytest_timeout

    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.kwargs.get("timeout", marker.args[0] if marker.args else None)
        return float(value) if value is not None else None
    timeout = pytest_timeout.get_env_settings(item.config).timeout
    return float(timeout) if timeout is not None else None


def _failure_message(call: pytest.CallInfo[None], report: pytest.TestReport) -> str:
    if call.excinfo is None:  # a strict xpass: pytest says why in the report
        text = report.longrepr if isinstance(report.longrepr, str) else ""
        return text.strip().splitlines()[0] if text.strip() else "failed"
    text = str(call.excinfo.value).strip() or call.excinfo.typename
    return text.splitlines()[0]
