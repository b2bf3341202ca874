"""Public fixtures; each docstring is what `pytest --fixtures` shows."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest

from pytest_maf import reservations, tasks
from pytest_maf.config import Settings
from pytest_maf.errors import MafError
from pytest_maf.records import Reservation, Task
from pytest_maf.store import Store, open_store


def _run(config: pytest.Config) -> Any:
    from pytest_maf.plugin import MAF_RUN_KEY

    return config.stash.get(MAF_RUN_KEY, None)


@pytest.fixture(scope="session")
def maf_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved pytest-maf settings (database path, TTLs, preflight options).
    Example: ``def test_disk(maf_settings): assert maf_settings.min_free_disk_mb >= 100``
    """
    from pytest_maf.plugin import settings_for

    return settings_for(pytestconfig)


@pytest.fixture(scope="session")
def maf_store(pytestconfig: pytest.Config, maf_settings: Settings) -> Iterator[Store]:
    """The runtime store (``.maf/runtime.db``, or MAF_DB_PATH / --maf-db), created if missing.
    Example: ``def test_no_rollback(maf_store): assert not tasks.list_tasks(maf_store, "ROLLBACK")``
    """
    run = _run(pytestconfig)
    if run is not None and run.store is not None:
        yield run.store
        return
    with open_store(
        maf_settings.db_path, create=True, default_max_attempts=maf_settings.max_attempts,
        lease_ttl_ms=maf_settings.task_lease_ttl_s * 1000,
    ) as store:
        yield store


@pytest.fixture
def maf_task(request: pytest.FixtureRequest, maf_store: Store) -> Iterator[Task]:
    """A new READY task for this test, cancelled afterwards if still READY; its payload
    comes from ``@pytest.mark.maf_task_payload({...})``.
    Example: ``def test_ready(maf_task): assert maf_task.state == "READY"``
    """
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
        return tasks.start_task(self.store, self.task_id, self.agent_id, self.attempt)

    def verify(self) -> Task:
        return tasks.begin_verification(self.store, self.task_id, self.agent_id, self.attempt)

    def record(self, verifier: str, result: str, details: dict[str, Any] | None = None) -> None:
        from pytest_maf.evidence import record_evidence

        record_evidence(self.store, self.task_id, self.attempt, verifier, result, details, agent_id=self.agent_id)

    def finish(self) -> tasks.FinishResult:
        return tasks.finish_task(self.store, self.task_id, self.agent_id, self.attempt)


@pytest.fixture
def maf_lease(pytestconfig: pytest.Config, maf_task: Task, maf_store: Store, maf_settings: Settings) -> Iterator[LeaseHandle]:
    """Lease ``maf_task`` for this test, renewed in the background, released afterwards;
    its methods start, verify, record and finish are fenced on the lease.
    Example: ``maf_lease.start(); maf_lease.verify(); maf_lease.record("unit", "PASS"); maf_lease.finish()``
    """
    from pytest_maf.keeper import LeaseKeeper
    from pytest_maf.plugin import agent_for

    ttl_ms = maf_settings.task_lease_ttl_s * 1000
    claim = tasks.claim_task(maf_store, maf_task.id, agent_for(pytestconfig), ttl_ms)
    handle = LeaseHandle(maf_store, claim.task_id, claim.agent_id, claim.attempt)
    keeper = LeaseKeeper(maf_store.path, claim.task_id, claim.agent_id, claim.attempt, ttl_ms).start()
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
    from pytest_maf.plugin import agent_for

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
    from pytest_maf.plugin import EVIDENCE_DETAILS_KEY

    details: dict[str, Any] = request.node.stash.setdefault(EVIDENCE_DETAILS_KEY, {})
    return details
