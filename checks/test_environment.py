"""Is this machine fit for an agent to work on the repository?"""

from __future__ import annotations

import pytest

from pytest_maf import health
from pytest_maf.config import Settings
from pytest_maf.health import require


@pytest.mark.maf_check(id="env.python", severity="critical", tags=["environment"])
def test_python_meets_the_minimum(maf_settings: Settings) -> None:
    require(health.python_at_least(maf_settings.min_python))


@pytest.mark.maf_check(id="env.python-recommended", severity="warning", tags=["environment"])
def test_python_is_recommended(maf_settings: Settings) -> None:
    require(health.python_at_least(maf_settings.recommended_python))


@pytest.mark.maf_check(id="env.sqlite", severity="critical", tags=["environment", "database"])
def test_sqlite_meets_the_minimum(maf_settings: Settings) -> None:
    require(health.sqlite_at_least(maf_settings.min_sqlite))


@pytest.mark.maf_check(id="env.sqlite-wal-reset", severity="warning", tags=["environment", "database"])
def test_sqlite_is_clear_of_the_wal_reset_race() -> None:
    require(health.sqlite_wal_reset_safe())


@pytest.mark.maf_check(id="env.git", severity="critical", tags=["environment"])
def test_git_is_available() -> None:
    require(health.git_available())


@pytest.mark.maf_check(id="env.variables", severity="critical", tags=["environment"])
def test_required_environment_variables_are_set(maf_settings: Settings) -> None:
    require(health.environment_variables_present(maf_settings.required_env))


@pytest.mark.maf_check(id="env.tools", severity="critical", tags=["environment"])
def test_configured_tools_meet_their_versions(maf_settings: Settings) -> None:
    for tool, requirement in maf_settings.tool_versions:
        require(health.tool_version(tool, requirement))
