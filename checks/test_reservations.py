"""Would committing now touch files another agent has reserved?"""

from __future__ import annotations

import os

import pytest

from pytest_maf import health
from pytest_maf.config import Settings
from pytest_maf.health import require


@pytest.mark.maf_check(id="reservations.staged", severity="critical", tags=["reservations", "git"])
def test_no_staged_path_is_reserved_by_another_agent(maf_settings: Settings, pytestconfig: pytest.Config) -> None:
    # The committer as `maf guard` sees it: --maf-agent, else MAF_AGENT_ID, else none
    # (not the preflight's own default id), in the worktree pytest was started in.
    committer = pytestconfig.getoption("maf_agent") or os.environ.get("MAF_AGENT_ID") or None
    require(health.staged_paths_unreserved(maf_settings, pytestconfig.invocation_params.dir, committer))
