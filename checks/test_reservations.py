"""Would committing now touch files another agent has reserved?"""

from __future__ import annotations

import pytest

from pytest_maf import health
from pytest_maf.config import Settings
from pytest_maf.health import require


@pytest.mark.maf_check(id="reservations.staged", severity="critical", tags=["reservations", "git"])
def test_no_staged_path_is_reserved_by_another_agent(maf_settings: Settings, pytestconfig: pytest.Config) -> None:
    from pytest_maf.plugin import agent_for

    require(health.staged_paths_unreserved(maf_settings.repo_root, maf_settings.db_path, agent_for(pytestconfig)))
