from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

from pytest_maf.clock import ManualClock
from pytest_maf.store import Store, open_store

if TYPE_CHECKING:
    from workspace import Workspace


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000_000)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / ".maf" / "runtime.db"


@pytest.fixture
def store(db_path: Path, clock: ManualClock) -> Iterator[Store]:
    with open_store(db_path, clock=clock, create=True) as opened:
        yield opened


@pytest.fixture
def workspace(tmp_path: Path) -> "Workspace":
    """A committed scratch repository with a linked worktree, set up for pytest-maf."""
    from workspace import make_workspace

    return make_workspace(tmp_path)
