from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

from backends import BACKENDS, backend_param, backend_store, environment_store, server_url
from pytest_maf import agents
from pytest_maf.clock import ManualClock
from pytest_maf.store import Store

# pytester's in-process runs (tests/test_plugin.py) drop, when they end, the modules first imported
# during them: a psycopg first imported there would be imported again later, and the PostgreSQL
# store would no longer catch the new psycopg's errors. Imported here, once for the session.
with contextlib.suppress(ImportError):
    import pytest_maf.store.postgres  # noqa: F401

if TYPE_CHECKING:
    from workspace import Workspace


@pytest.fixture(autouse=True)
def no_client_left_by_another_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as no client (``main()`` in process names its own: maf, mcp, pytest), and
    leaves none to the next: which client an agent was last seen through depends on it."""
    monkeypatch.setattr(agents, "_client", "")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000_000)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / ".maf" / "runtime.db"


@pytest.fixture(params=[backend_param(name) for name in BACKENDS])
def backend(request: pytest.FixtureRequest) -> str:
    """The store backend a test runs on: sqlite, or postgres (skipped without MAF_TEST_DATABASE_URL)."""
    if request.param == "postgres":
        server_url()
    return str(request.param)


@pytest.fixture
def store(backend: str, tmp_path: Path, clock: ManualClock) -> Iterator[Store]:
    """A fresh store on each backend, on the test's clock: ``db_path``, or a scratch PostgreSQL schema."""
    with backend_store(backend, tmp_path, clock=clock) as opened:
        yield opened


@pytest.fixture
def workspace(tmp_path: Path) -> "Workspace":
    """A committed scratch repository with a linked worktree, set up for pytest-maf."""
    from workspace import make_workspace

    return make_workspace(tmp_path)


@pytest.fixture
def on_backend(
    backend: str, isolated: None, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """For pytester runs (the test module gives ``isolated``): the run's store on each backend: ``.maf/runtime.db``, or a scratch PostgreSQL schema MAF_DATABASE_URL names."""
    with environment_store(backend, monkeypatch):
        yield backend
    if backend == "postgres":
        assert not (pytester.path / ".maf" / "runtime.db").exists(), "the run wrote a SQLite store beside PostgreSQL"


@pytest.fixture
def store_env(backend: str, workspace: "Workspace") -> Iterator[dict[str, str]]:
    """The variables that point the workspace's ``maf`` at a store on each backend: none (its
    ``.maf/runtime.db``), or a scratch PostgreSQL schema, set up; open it with ``backends.store_of_env``."""
    from backends import scratch_schema

    if backend == "sqlite":
        yield {}
        return
    with scratch_schema(server_url()) as schema:
        env = {"MAF_DATABASE_URL": server_url(), "MAF_DATABASE_SCHEMA": schema}
        completed = workspace.maf(workspace.main, "setup", **env)
        assert completed.returncode == 0, completed.stderr
        yield env


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``-n`` with ``--dist loadgroup`` (as the README runs the suite), the slow tests, each of which starts
    several processes of its own, run one after another on one worker while the others run the rest."""
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.xdist_group("slow"))
