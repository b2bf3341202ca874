"""`maf health-check` and the preflight's store.connection check: server, schema version and latency."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from backends import shared_store
from pytest_maf import health
from pytest_maf.cli import main
from pytest_maf.config import load_settings
from pytest_maf.store import SCHEMA_VERSION


@pytest.fixture
def configured(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`maf` commands run in ``tmp_path`` use a new store on ``backend``; the server's name in reports."""
    monkeypatch.chdir(tmp_path)
    for name in ("MAF_DB_PATH", "MAF_DATABASE_URL", "MAF_DATABASE_SCHEMA", "MAF_AGENT_MAIL_ROOT", "MAF_ENV"):
        monkeypatch.delenv(name, raising=False)
    with shared_store(backend, tmp_path) as (location, environment):
        if backend == "sqlite":
            monkeypatch.setenv("MAF_DB_PATH", location)
        else:
            monkeypatch.setenv("MAF_DATABASE_URL", location)
            monkeypatch.setenv("MAF_DATABASE_SCHEMA", environment["MAF_TEST_SCHEMA"])
        yield "SQLite" if backend == "sqlite" else "PostgreSQL"


def test_the_health_check_reports_server_schema_version_and_latency(
    configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["health-check", "--json", "--database-only"])
    report = json.loads(capsys.readouterr().out)
    reached = next(check for check in report["checks"] if check["name"] == "database.reachable")

    assert reached["ok"]
    details = reached["details"]
    assert details["schema_version"] == SCHEMA_VERSION
    assert isinstance(details["connect_ms"], float) and isinstance(details["latency_ms"], float)
    assert f"{configured} {details['server_version']}, schema version {SCHEMA_VERSION}" in reached["message"]
    assert f"a round trip took {details['latency_ms']} ms" in reached["message"]
    if configured == "PostgreSQL":
        assert int(details["server_version"].split(".")[0]) >= 12


def test_the_preflight_check_reaches_the_store_as_the_health_check_does(configured: str, tmp_path: Path) -> None:
    result = health.configured_store_connection(load_settings(cwd=tmp_path))
    assert result.ok and result.details["backend"] == ("sqlite" if configured == "SQLite" else "postgresql")
    assert result.details["schema_version"] == SCHEMA_VERSION


def test_an_unreachable_server_fails_the_check_without_its_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAF_DATABASE_URL", "postgresql://maf:s3cret@127.0.0.1:1/none")
    result = health.configured_store_connection(load_settings(cwd=tmp_path))
    assert not result.ok and "s3cret" not in result.message and "****" in result.message
