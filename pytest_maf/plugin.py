"""The pytest plugin: `pytest --maf-preflight` and `pytest --maf-task T --maf-agent A`.

Module-level hooks only declare options, markers and hooks. The working
object, :class:`MafRun`, is registered in ``pytest_configure`` only when a
``--maf-preflight`` or ``--maf-task`` flag is given: without them the plugin
opens no database and changes nothing.

Each test of the run is a verifier. Its outcome becomes one evidence row
``(task, attempt, verifier, PASS|FAIL, details)``, written by the one process
that holds the lease (the xdist controller); workers attach the outcome to
their reports as plain data. Only a test that ran and passed is a PASS: a
skipped, xfailed, non-strict xpassed or deselected test records no row (pytest
counts a strict xpass as failed, and so does maf).

A preflight has a time limit (preflight.timeout_seconds): each check runs under
a pytest-timeout limit of the time left, so a hung check is interrupted,
recorded as a FAIL, and no further check starts.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

from pytest_maf.light_dataclass import dataclass

if TYPE_CHECKING:
    from pytest_maf.config import Settings
    from pytest_maf.records import Reservation, Task
    from pytest_maf.store import Store
    from pytest_maf.tasks import FinishResult
    from pytest_maf.verification import MafRun

# The run of this pytest session, when a --maf-* option started one.
MAF_RUN_KEY = pytest.StashKey["MafRun"]()
# What a check adds to its evidence row through the maf_evidence fixture.
EVIDENCE_DETAILS_KEY = pytest.StashKey[dict[str, Any]]()
COLLECTION_ERRORS_PLUGIN = "maf-collection-usage-errors"


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
    from pytest_maf.config import load_settings

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
        "--maf-checks",
        metavar="IDS",
        help="run only the checks whose id (or id[param]) matches one of these ids or globs, comma-separated,"
        " such as env.*,mcp.* (default: every check); choose by tag with -m, such as -m 'services and not slow'",
    )
    group.addoption(
        "--maf-db",
        metavar="PATH",
        help="runtime database file or postgresql:// URL (default: MAF_DATABASE_URL, MAF_DB_PATH, else"
        " .maf/runtime.db at the repository root); write --maf-db=PATH: pytest takes a separate value for a"
        " path when it looks for its rootdir and ini file",
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
        "maf_check(id=..., severity='critical', tags=()): a preflight check with a stable id;"
        " a failing 'warning' check is reported but does not fail the run (unless --maf-strict)",
    )
    config.addinivalue_line("markers", "maf_task_payload(payload): the payload of the maf_task fixture's task")
    preflight, task_id = config.getoption("maf_preflight"), config.getoption("maf_task")
    for option, flag, value in (("maf_task", "--maf-task", "TASK"), ("maf_agent", "--maf-agent", "AGENT"), ("maf_db", "--maf-db", "PATH")):
        given = config.getoption(option)
        if given is not None and not given.strip():  # '' from an unset shell variable: not "no option"
            raise pytest.UsageError(f"{flag} was given an empty value: give {value}, or leave the option out")
    chosen = config.getoption("maf_checks")
    if preflight or task_id or chosen is not None:
        from pytest_maf.check_selection import CheckSelection, CollectionUsageErrors, check_patterns

        config.pluginmanager.register(CollectionUsageErrors(), COLLECTION_ERRORS_PLUGIN)
        if preflight or chosen is not None:
            patterns = None if chosen is None else check_patterns(chosen)
            config.pluginmanager.register(CheckSelection(config, patterns), "maf-check-selection")
    if not preflight and not task_id:
        return
    if preflight and task_id:
        raise pytest.UsageError("--maf-preflight and --maf-task are different runs: give one of them")
    # The run's machinery is imported only now, when a --maf-* option asks for it.
    from pytest_maf.verification import MafRun, XdistBridge, load_pytest_timeout, preflight_arguments

    if preflight:
        config.args = preflight_arguments(config)
        load_pytest_timeout(config)
    run = MafRun(config, task_id)
    config.stash[MAF_RUN_KEY] = run
    config.pluginmanager.register(run, "maf-run")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistBridge(run), "maf-xdist")
    run.begin()


def pytest_unconfigure(config: pytest.Config) -> None:
    for name in ("maf-check-selection", COLLECTION_ERRORS_PLUGIN):
        if config.pluginmanager.has_plugin(name):
            config.pluginmanager.unregister(name=name)
    run = config.stash.get(MAF_RUN_KEY, None)
    if run is not None:
        run.close()
        config.pluginmanager.unregister(name="maf-run")
        for name in ("maf-xdist", "maf-budget"):
            if config.pluginmanager.has_plugin(name):
                config.pluginmanager.unregister(name=name)
        del config.stash[MAF_RUN_KEY]


# Fixtures. Each docstring is what `pytest --fixtures` shows; without a
# --maf-* option they still work, on their own store connection.


def _run(config: pytest.Config) -> MafRun | None:
    return config.stash.get(MAF_RUN_KEY, None)


@pytest.fixture(scope="session")
def maf_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved pytest-maf settings (database path, TTLs, preflight options).
    Example: ``def test_disk(maf_settings): assert maf_settings.min_free_disk_mb >= 100``
    """
    return settings_for(pytestconfig)


@pytest.fixture(scope="session")
def maf_agent(pytestconfig: pytest.Config) -> str:
    """The agent this run acts as: --maf-agent, else MAF_AGENT_ID, else preflight-<user>.
    Example: ``def test_inbox(maf_agent, maf_settings): assert (maf_settings.mail_root / "messages" / maf_agent).is_dir()``
    """
    return agent_for(pytestconfig)


@pytest.fixture(scope="session")
def maf_store(pytestconfig: pytest.Config, maf_settings: Settings) -> Iterator[Store]:
    """The runtime store (``.maf/runtime.db``, or MAF_DB_PATH / --maf-db, or the PostgreSQL store of
    MAF_DATABASE_URL), created if missing, and then kept out of git as ``maf setup`` keeps it.
    Example: ``def test_no_rollback(maf_store): assert not tasks.list_tasks(maf_store, "ROLLBACK")``
    """
    from pytest_maf.git_exclude import open_store_out_of_git

    run = _run(pytestconfig)
    if run is not None and run.store is not None:
        yield run.store
        return
    with open_store_out_of_git(maf_settings, create=True) as store:  # made here: out of git, as maf setup keeps it
        yield store


@pytest.fixture
def maf_task(request: pytest.FixtureRequest, maf_store: Store) -> Iterator[Task]:
    """A new READY task for this test, cancelled afterwards if still READY; its payload
    comes from ``@pytest.mark.maf_task_payload({...})``.
    Example: ``def test_ready(maf_task): assert maf_task.state == "READY"``
    """
    from pytest_maf import tasks
    from pytest_maf.errors import MafError

    marker = request.node.get_closest_marker("maf_task_payload")
    payload = marker.args[0] if marker and marker.args else {"test": request.node.nodeid}
    task = tasks.add_task(maf_store, payload=payload, priority=0, kind="fixture")
    yield task
    with contextlib.suppress(MafError):
        if tasks.get_task(maf_store, task.id).state == "READY":
            tasks.cancel_task(maf_store, task.id)


@dataclass
class LeaseHandle:
    """A task leased for one test; every method is fenced on (task, agent, attempt)."""

    store: Store
    task_id: str
    agent_id: str
    attempt: int

    def start(self) -> Task:
        from pytest_maf import tasks

        return tasks.start_task(self.store, self.task_id, self.agent_id, self.attempt)

    def verify(self) -> Task:
        from pytest_maf import tasks

        return tasks.begin_verification(self.store, self.task_id, self.agent_id, self.attempt)

    def record(self, verifier: str, result: str, details: dict[str, Any] | None = None) -> None:
        from pytest_maf.evidence import record_evidence

        record_evidence(self.store, self.task_id, self.attempt, verifier, result, details, agent_id=self.agent_id)

    def finish(self) -> FinishResult:
        from pytest_maf import tasks

        return tasks.finish_task(self.store, self.task_id, self.agent_id, self.attempt)


@pytest.fixture
def maf_lease(pytestconfig: pytest.Config, maf_task: Task, maf_store: Store, maf_settings: Settings) -> Iterator[LeaseHandle]:
    """Lease ``maf_task`` for this test, renewed in the background, released afterwards;
    its methods start, verify, record and finish are fenced on the lease.
    Example: ``maf_lease.start(); maf_lease.verify(); maf_lease.record("unit", "PASS"); maf_lease.finish()``
    """
    from pytest_maf import tasks
    from pytest_maf.errors import MafError
    from pytest_maf.keeper import LeaseKeeper

    ttl_ms = maf_settings.task_lease_ttl_s * 1000
    claim = tasks.claim_task(maf_store, maf_task.id, agent_for(pytestconfig), ttl_ms)
    handle = LeaseHandle(maf_store, claim.task_id, claim.agent_id, claim.attempt)
    keeper = LeaseKeeper(maf_store, claim.task_id, claim.agent_id, claim.attempt, ttl_ms).start()
    try:
        yield handle
    finally:
        keeper.stop()
        with contextlib.suppress(MafError):
            if tasks.get_task(maf_store, claim.task_id).state in ("LEASED", "RUNNING"):
                tasks.release_task(maf_store, claim.task_id, claim.agent_id, claim.attempt)


@pytest.fixture
def maf_reservation(
    pytestconfig: pytest.Config, maf_store: Store, maf_settings: Settings
) -> Iterator[Callable[..., list[Reservation]]]:
    """Reserve paths (exclusive unless ``shared=True``) for this test's duration; released afterwards.
    Example: ``def test_migration(maf_reservation): maf_reservation("db/migrations/**", reason="schema")``
    """
    from pytest_maf import reservations
    from pytest_maf.errors import MafError

    agent = agent_for(pytestconfig)
    held: list[str] = []

    def reserve(*patterns: str, shared: bool = False, reason: str = "", ttl_minutes: float | None = None) -> list[Reservation]:
        granted = reservations.acquire(
            maf_store, patterns, agent, maf_settings.reservation_ttl_ms(ttl_minutes),
            exclusive=not shared, reason=reason,
        )
        held.extend(r.pattern for r in granted)
        return granted

    yield reserve
    for pattern in dict.fromkeys(held):
        with contextlib.suppress(MafError):
            reservations.release(maf_store, [pattern], agent)


@pytest.fixture
def maf_evidence(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A dict whose items are stored in this check's evidence row (JSON values only).
    Example: ``def test_lint(maf_evidence): maf_evidence["files_checked"] = 120``
    """
    details: dict[str, Any] = request.node.stash.setdefault(EVIDENCE_DETAILS_KEY, {})
    return details
