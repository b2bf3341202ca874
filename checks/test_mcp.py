"""Do the coding agents' MCP client configurations parse and name their servers?"""

from __future__ import annotations

import pytest

from pytest_maf import health
from pytest_maf.config import Settings
from pytest_maf.health import require


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "client" in metafunc.fixturenames:
        from pytest_maf.plugin import settings_for

        clients = sorted(settings_for(metafunc.config).mcp_clients)
        metafunc.parametrize(("client", "relative_path"), clients, ids=[name for name, _ in clients])


@pytest.mark.maf_check(id="mcp.client", severity="critical", tags=["mcp"])
def test_mcp_client_configuration(client: str, relative_path: str, maf_settings: Settings) -> None:
    base = maf_settings.repo_root or maf_settings.db_path.parent.parent
    if not (base / relative_path).is_file() and client not in maf_settings.mcp_required:
        pytest.skip(f"{client}: {relative_path} not present and not required")
    require(health.mcp_client_config(client, base / relative_path, client in maf_settings.mcp_required))
