"""The pytest plugin: `pytest --maf-preflight` and `pytest --maf-task T --maf-agent A`.

Module-level hooks only declare options, markers and hooks. The working
object, :class:`MafRun`, is registered in ``pytest_configure`` only when a
``--maf-preflight`` or ``--maf-task`` flag is given: without them the plugin
opens no database and changes nothing.

Each test of the run is a verifier. Its outcome becomes one evidence row
``(task, attempt, verifier, PASS|FAIL, details)``, written by the one process
that holds the lease (the xdist controller); workers attach the outcome to
their reports as plain data.
"""

from __future__ import annotations

import getpass
import importlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generator

import pytest

from pytest_maf import tasks
from pytest_maf.config import Settings, load_settings
from pytest_maf.errors import LeaseLostError, MafError
from pytest_maf.evidence import record_evidence_batch
from pytest_maf.leases import require_task
from pytest_maf.fixtures import (  # noqa: F401  (pytest finds fixtures on the plugin module)
    maf_evidence,
    maf_lease,
    maf_reservation,
    maf_settings,
    maf_store,
    maf_task,
)
from pytest_maf.store import Store, open_store

MAF_RUN_KEY = pytest.StashKey["MafRun"]()
EVIDENCE_DETAILS_KEY = pytest.StashKey[dict[str, Any]]()
OUTCOME_KEY = pytest.StashKey["ItemOutcome"]()
SEVERITIES = ("critical", "warning")
WARNING_PREFIX = "maf warning: "
# Evidence is written in batches: one transaction per FLUSH_ROWS rows or FLUSH_SECONDS.
FLUSH_ROWS = 200
FLUSH_SECONDS = 1.0


def checks_directory() -> Path:
    """Where the built-in checks are: ``pytest_maf/checks`` when installed,
    ``checks/`` beside the package in a source checkout."""
    try:
        checks = importlib.import_module("pytest_maf.checks")
    except ImportError:  # the source tree, imported ahead of an installed copy
        return Path(__file__).resolve().parent.parent / "checks"
    return Path(str(checks.__file__)).parent


def default_agent_id() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return os.environ.get("MAF_AGENT_ID") or f"preflight-{user}"


def settings_for(config: pytest.Config) -> Settings:
    """The settings of this pytest run (the active run's, else resolved afresh)."""
    run = config.stash.get(MAF_RUN_KEY, None)
    if run is not None and run.settings is not None:
        return run.settings
    return load_settings(db_path=config.getoption("maf_db"))


def agent_for(config: pytest.Config) -> str:
    """The agent id of this pytest run: --maf-agent, else MAF_AGENT_ID, else preflight-<user>."""
    run = config.stash.get(MAF_RUN_KEY, None)
    return (run.agent_id if run else "") or config.getoption("maf_agent") or default_agent_id()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_maf import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("maf", "pytest-maf: preflight checks and verification evidence")
    group.addoption(
        "--maf-preflight",
        action="store_true",
        help="run the built-in preflight checks and those in the maf_checks ini paths"
        " (not the project's tests), recording each outcome as evidence of a preflight task",
    )
    group.addoption(
        "--maf-task",
        metavar="TASK",
        help="run the given tests as verifiers of TASK, which --maf-agent must hold RUNNING;"
        " the task is finished from their evidence",
    )
    group.addoption(
        "--maf-agent",
        metavar="AGENT",
        help="the agent id (default: MAF_AGENT_ID, else preflight-<user>)",
    )
    group.addoption(
        "--maf-strict",
        action="store_true",
        help="treat failing warning-severity checks as failures",
    )
    group.addoption(
        "--maf-db",
        metavar="PATH",
        help="runtime database (default: MAF_DB_PATH, else .maf/runtime.db at the repository root)",
    )
    parser.addini(
        "maf_checks",
        type="paths",
        default=[],
        help="more check paths collected by --maf-preflight, besides the built-in checks",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "maf_check(id, severity='critical', tags=()): a preflight check with a stable id;"
        " a failing 'warning' check is reported but does not fail the run (unless --maf-strict)",
    )
    config.addinivalue_line("markers", "maf_task_payload(payload): the payload of the maf_task fixture's task")
    preflight, task_id = config.getoption("maf_preflight"), config.getoption("maf_task")
    if not preflight and not task_id:
        return
    if preflight and task_id:
        raise pytest.UsageError("--maf-preflight and --maf-task are different runs: give one of them")
    if preflight:
        config.args = preflight_arguments(config)
    run = MafRun(config, task_id)
    config.stash[MAF_RUN_KEY] = run
    config.pluginmanager.register(run, "maf-run")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistBridge(run), "maf-xdist")
    run.begin()


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(MAF_RUN_KEY, None)
    if run is not None:
        run.close()
        config.pluginmanager.unregister(name="maf-run")
        if config.pluginmanager.has_plugin("maf-xdist"):
            config.pluginmanager.unregister(name="maf-xdist")
        del config.stash[MAF_RUN_KEY]


def preflight_arguments(config: pytest.Config) -> list[str]:
    """The built-in checks, the ``maf_checks`` paths, and paths given on the command line."""
    arguments = [str(checks_directory())]
    arguments += [str(path) for path in config.getini("maf_checks")]
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        arguments += config.args
    return arguments


class LeaseKeeper:
    """Renews a lease from a background thread, on its own connection, until stopped."""

    def __init__(self, db_path: Path, task_id: str, agent_id: str, attempt: int, ttl_ms: int) -> None:
        self.db_path, self.task_id, self.agent_id, self.attempt, self.ttl_ms = (
            db_path, task_id, agent_id, attempt, ttl_ms,
        )
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"maf-lease-{task_id}", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with open_store(self.db_path) as store:
            while not self._stop.wait(self.ttl_ms / 3000):
                try:
                    tasks.renew_lease(store, self.task_id, self.agent_id, self.attempt, self.ttl_ms)
                except LeaseLostError as error:
                    self.lost = str(error)
                    return
                except MafError:
                    continue  # transient (a busy or briefly unreadable store): try again next tick


@dataclass
class CheckOutcome:
    verifier: str
    result: str
    blocking: bool
    message: str


@dataclass
class ItemOutcome:
    """What one test's phases came to, gathered as its reports are made."""

    marker: pytest.Mark | None
    severity: str
    failures: dict[str, str] = field(default_factory=dict)  # phase -> first line of the failure
    skipped: str = ""  # "skipped" or "xfailed"


@dataclass(eq=False)  # registered as a plugin: must stay hashable
class MafRun:
    """One preflight or verification run: its task, lease and evidence."""

    config: pytest.Config
    task_id: str | None
    settings: Settings | None = None
    store: Store | None = None
    agent_id: str = ""
    attempt: int = 0
    keeper: LeaseKeeper | None = None
    outcomes: list[CheckOutcome] = field(default_factory=list)
    verdict: tasks.FinishResult | None = None
    problems: list[str] = field(default_factory=list)
    _pending: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    _flushed_at: float = field(default_factory=time.monotonic)
    _started_at: float = field(default_factory=time.monotonic)
    session: pytest.Session | None = None

    @property
    def preflight(self) -> bool:
        return bool(self.config.getoption("maf_preflight"))

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    def __post_init__(self) -> None:
        # Only the controller of a real run (not --collect-only) touches the store.
        self.writes = not self.is_worker and not self.config.getoption("collectonly")
        self.strict = bool(self.config.getoption("maf_strict"))
        self._details_hook = self.config.hook.pytest_maf_evidence_details

    def begin(self) -> None:
        if self.is_worker:
            shared = self.config.workerinput.get("maf", {})  # type: ignore[attr-defined]
            self.task_id, self.attempt, self.agent_id = shared.get("task_id"), shared.get("attempt", 0), shared.get("agent_id", "")
            return
        self.agent_id = self.config.getoption("maf_agent") or default_agent_id()
        try:
            self.settings = load_settings(db_path=self.config.getoption("maf_db"))
        except MafError as error:
            raise pytest.UsageError(str(error)) from None
        if not self.writes:
            return
        try:
            self.store = open_store(
                self.settings.db_path, create=self.preflight, default_max_attempts=self.settings.max_attempts,
                lease_ttl_ms=self.settings.task_lease_ttl_s * 1000,
            )
            if self.preflight:
                self._start_preflight_task()
            else:
                self._start_verification()
        except MafError as error:
            self.close()
            raise pytest.UsageError(str(error)) from None
        self.keeper = LeaseKeeper(
            self.settings.db_path, self.task_id, self.agent_id, self.attempt,  # type: ignore[arg-type]
            self.settings.task_lease_ttl_s * 1000,
        ).start()

    def _start_preflight_task(self) -> None:
        assert self.store is not None and self.settings is not None
        # Added, claimed and started in one transaction: no agent's claim can take it.
        claim = tasks.add_and_claim_task(
            self.store, self.agent_id, self.settings.task_lease_ttl_s * 1000, kind="preflight",
            payload={"kind": "preflight", "agent": self.agent_id, "cwd": str(Path.cwd())}, start=True,
        )
        self.task_id, self.attempt = claim.task_id, claim.attempt

    def _start_verification(self) -> None:
        assert self.store is not None and self.task_id is not None
        task_id = self.task_id
        task, lease = self.store.read(lambda t: (require_task(t, task_id), t.get_lease(task_id)))
        if lease is None or lease.agent_id != self.agent_id:
            holder = f"it is leased to {lease.agent_id!r}" if lease else f"it is {task.state} with no lease"
            raise LeaseLostError(
                f"--maf-task {self.task_id}: agent {self.agent_id!r} does not hold it ({holder});"
                " claim and start it first (maf task claim, maf task start)"
            )
        self.attempt = lease.attempt
        tasks.begin_verification(self.store, self.task_id, self.agent_id, self.attempt)

    def close(self) -> None:
        if self.keeper is not None:
            self.keeper.stop()
            self.keeper = None
        if self.store is not None:
            self.store.close()
            self.store = None

    # Outcomes, in every process.

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report: pytest.TestReport = yield
        seen = item.stash.get(OUTCOME_KEY, None)
        if seen is None:
            marker = item.get_closest_marker("maf_check")
            seen = item.stash[OUTCOME_KEY] = ItemOutcome(marker, _severity(marker))
        marker, severity = seen.marker, seen.severity
        if report.failed:
            seen.failures[report.when] = _failure_message(call)
            if report.when == "call" and severity == "warning" and not self.strict:
                # Reported as xfailed: visible, but it does not fail the run.
                report.outcome = "skipped"
                report.wasxfail = WARNING_PREFIX + seen.failures["call"]
        elif report.skipped:
            seen.skipped = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        if report.when == "teardown":
            self._attach_evidence(item, report, marker, severity, seen)
        return report

    def _attach_evidence(
        self, item: pytest.Item, report: pytest.TestReport, marker: pytest.Mark | None,
        severity: str, seen: ItemOutcome,
    ) -> None:
        """Put the item's evidence on its last report, as plain data that survives xdist."""
        result = "FAIL" if seen.failures else "PASS"
        warning_only = severity == "warning" and not self.strict and set(seen.failures) == {"call"}
        verifier = _verifier_id(item, marker)
        details: dict[str, Any] = {
            "nodeid": item.nodeid,
            "severity": severity,
            "blocking": not warning_only,
            "tags": sorted(marker.kwargs.get("tags", ())) if marker else [],
            "message": next(iter(seen.failures.values()), ""),
            "outcome": "failed" if seen.failures else seen.skipped or "passed",
        }
        added: dict[str, Any] = item.stash.get(EVIDENCE_DETAILS_KEY, {})  # through maf_evidence
        details.update(added)
        report.maf_evidence = {"verifier": verifier, "result": result, "details": details}  # type: ignore[attr-defined]
        report.user_properties += [
            ("maf.task_id", self.task_id or ""),
            ("maf.attempt", self.attempt),
            ("maf.verifier", verifier),
            ("maf.result", result),
            ("maf.severity", severity),
        ]

    # Evidence, written by the controller only.

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        evidence = getattr(report, "maf_evidence", None)
        if not self.writes or report.when != "teardown" or evidence is None or self.store is None:
            return
        details = dict(evidence["details"])
        if self._details_hook.get_hookimpls():
            self._details_hook(
                config=self.config, nodeid=report.nodeid, verifier=evidence["verifier"],
                result=evidence["result"], details=details,
            )
        self._pending.append((evidence["verifier"], evidence["result"], details))
        if len(self._pending) >= FLUSH_ROWS or time.monotonic() - self._flushed_at > FLUSH_SECONDS:
            self.flush_evidence()
        self._stop_at_timeout()

    def _stop_at_timeout(self) -> None:
        """A preflight run stops once it has taken preflight.timeout_seconds (MAF_PREFLIGHT_TIMEOUT)."""
        if not self.preflight or self.settings is None or self.session is None:
            return
        elapsed = time.monotonic() - self._started_at
        if elapsed > self.settings.preflight_timeout_s and not self.session.shouldstop:
            reason = f"maf preflight took over {self.settings.preflight_timeout_s} s (MAF_PREFLIGHT_TIMEOUT)"
            self.problems.append(f"{reason}: the remaining checks were not run")
            self.session.shouldstop = reason
            # An unfinished preflight must not commit: its missing checks count as a failure.
            self._pending.append((
                "preflight.timeout", "FAIL",
                {"severity": "critical", "blocking": True, "message": reason, "outcome": "failed", "tags": []},
            ))

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session
        self._started_at = time.monotonic()

    def flush_evidence(self) -> None:
        """Write the buffered rows in one transaction (one by one if that is refused)."""
        pending, self._pending, self._flushed_at = self._pending, [], time.monotonic()
        if not pending or self.store is None:
            return
        try:
            rows = record_evidence_batch(
                self.store, self.task_id, self.attempt, pending, agent_id=self.agent_id  # type: ignore[arg-type]
            )
        except MafError:
            rows = []
            for entry in pending:  # keep every row that can be kept, say which cannot
                try:
                    rows += record_evidence_batch(
                        self.store, self.task_id, self.attempt, [entry], agent_id=self.agent_id  # type: ignore[arg-type]
                    )
                except MafError as error:
                    self.problems.append(f"evidence for {entry[0]} was not recorded: {error}")
        for row in rows:
            self.outcomes.append(
                CheckOutcome(row.verifier, row.result, row.details["blocking"], row.details["message"])
            )
            self.config.hook.pytest_maf_evidence_recorded(config=self.config, evidence=row)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.writes or self.store is None or self.task_id is None:
            return
        self.flush_evidence()
        if self.keeper is not None:
            self.keeper.stop()
            if self.keeper.lost:
                self.problems.append(self.keeper.lost)
            self.keeper = None
        try:
            if self.preflight:
                tasks.begin_verification(self.store, self.task_id, self.agent_id, self.attempt)
            self.verdict = tasks.finish_task(self.store, self.task_id, self.agent_id, self.attempt)
        except MafError as error:
            self.problems.append(f"task {self.task_id} could not be finished: {error}")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.writes or self.task_id is None:
            return
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", "maf preflight" if self.preflight else "maf verification")
        passed = sum(1 for o in self.outcomes if o.result == "PASS")
        failed = [o for o in self.outcomes if o.result == "FAIL" and o.blocking]
        warned = [o for o in self.outcomes if o.result == "FAIL" and not o.blocking]
        write(f"{passed} passed, {len(failed)} failed, {len(warned)} warning(s); task {self.task_id} attempt {self.attempt}")
        for outcome in failed:
            write(f"FAIL {outcome.verifier}: {outcome.message}", red=True)
        for outcome in warned:
            write(f"WARN {outcome.verifier}: {outcome.message}", yellow=True)
        if self.verdict is not None:
            write(f"task {self.task_id}: {self.verdict.verdict} -> {self.verdict.final_state} ({self.verdict.reason})")
        for problem in self.problems:
            write(f"maf: {problem}", red=True)


class XdistBridge:
    """Hands the run's task to xdist workers, so their reports carry it."""

    def __init__(self, run: MafRun) -> None:
        self.run = run

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["maf"] = {
            "task_id": self.run.task_id,
            "attempt": self.run.attempt,
            "agent_id": self.run.agent_id,
        }


def _severity(marker: pytest.Mark | None) -> str:
    severity = marker.kwargs.get("severity", "critical") if marker else "critical"
    if severity not in SEVERITIES:
        raise pytest.UsageError(f"maf_check severity {severity!r}: use 'critical' or 'warning'")
    return str(severity)


def _verifier_id(item: pytest.Item, marker: pytest.Mark | None) -> str:
    if marker is None or not marker.kwargs.get("id"):
        return item.nodeid
    callspec = getattr(item, "callspec", None)
    return f"{marker.kwargs['id']}[{callspec.id}]" if callspec else str(marker.kwargs["id"])


def _failure_message(call: pytest.CallInfo[None]) -> str:
    if call.excinfo is None:
        return "failed"
    text = str(call.excinfo.value).strip() or call.excinfo.typename
    return text.splitlines()[0]
