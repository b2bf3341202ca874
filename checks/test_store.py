"""Is the runtime store sound, and is there room for it to grow?"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_maf import health
from pytest_maf.config import Settings
from pytest_maf.health import require


@pytest.mark.maf_check(id="store.connection", severity="critical", tags=["database"])
def test_runtime_store_is_reachable(maf_settings: Settings, maf_evidence: dict[str, Any]) -> None:
    """The evidence carries the server and schema versions, and the connection and round-trip times."""
    result = health.configured_store_connection(maf_settings)
    maf_evidence.update(result.details, reached=result.message)
    require(result)


@pytest.mark.maf_check(id="store.schema", severity="critical", tags=["database"])
def test_runtime_database_matches_the_canonical_schema(maf_settings: Settings) -> None:
    require(health.configured_store_schema(maf_settings))


@pytest.mark.maf_check(id="store.disk", severity="critical", tags=["database", "disk"])
def test_free_disk_space(maf_settings: Settings) -> None:
    require(health.store_disk_space(maf_settings))
