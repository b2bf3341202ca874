"""Is the runtime store sound, and is there room for it to grow?"""

from __future__ import annotations

import pytest

from pytest_maf import health
from pytest_maf.config import Settings
from pytest_maf.health import require


@pytest.mark.maf_check(id="store.schema", severity="critical", tags=["database"])
def test_runtime_database_matches_the_canonical_schema(maf_settings: Settings) -> None:
    require(health.configured_store_schema(maf_settings))


@pytest.mark.maf_check(id="store.disk", severity="critical", tags=["database", "disk"])
def test_free_disk_space(maf_settings: Settings) -> None:
    require(health.store_disk_space(maf_settings))
