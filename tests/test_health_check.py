"""`maf health-check` against a real database: healthy, warning and critical."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from pytest_maf import tasks
from pytest_maf.cli import main
from pytest_maf.clock import ManualClock, system_clock
from pytest_maf.store import open_store


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("MAF_DB_PATH", "MAF_AGENT_MAIL_ROOT", "MAF_ENV", "NODE_ENV", "MAF_MIN_FREE_DISK_MB"):
        monkeypatch.delenv(name, raising=False)
    assert main(["setup"]) == 0
    assert main(["init"]) == 0
    return tmp_path


def health(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["health-check", "--json", *flags])
    return code, json.loads(capsys.readouterr().out)


def failing(report: dict) -> list[str]:
    return [check["name"] for check in report["checks"] if not check["ok"]]


def test_healthy(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = health(capsys)

    assert (code, report["status"], failing(report)) == (0, "healthy", [])
    names = {check["name"] for check in report["checks"]}
    assert {"config.valid", "database.schema", "database.expired-leases", "database.probe", "disk.free"} <= names
    probe = next(check for check in report["checks"] if check["name"] == "database.probe")
    # The report says what it measured: the figure in the details is the one in the message.
    assert isinstance(probe["details"]["probe_ms"], float)
    assert probe["message"] == f"probe query took {probe['details']['probe_ms']} ms"


def test_an_unreclaimed_expired_lease_is_a_warning(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open_store(repo / ".maf" / "runtime.db", clock=ManualClock(system_clock() - 600_000)) as store:
        tasks.add_task(store, task_id="t1")
        tasks.claim_next_task(store, "agent-a", 30_000)

    code, report = health(capsys)

    assert (code, report["status"], failing(report)) == (2, "warning", ["database.expired-leases"])
    main(["leases", "reclaim"])
    assert health(capsys)[0] == 0


def test_a_corrupt_database_is_critical(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = repo / ".maf" / "runtime.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"not a database" * 300)

    code, report = health(capsys, "--database-only")

    assert (code, report["status"]) == (1, "critical")
    assert failing(report) == ["database.reachable"]


def test_invalid_configuration_is_critical_and_config_only_checks_just_that(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "maf-config" / "local.yaml").write_text("tasks:\n  max_attempts: -1\n")

    code, report = health(capsys, "--config-only")

    assert code == 1
    assert [check["name"] for check in report["checks"]] == ["config.valid"]
    assert "local.yaml: tasks.max_attempts: must be above 0" in report["checks"][0]["message"]


def test_too_little_disk_is_critical_and_the_report_is_written(repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAF_MIN_FREE_DISK_MB", str(10**9))  # a petabyte: the most the setting allows

    code, report = health(capsys, "--comprehensive", "--output", "health.json")

    assert code == 1 and failing(report) == ["disk.free"]
    assert json.loads((repo / "health.json").read_text()) == report


def test_a_damaged_database_is_sent_to_recover_or_restore_not_to_setup(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = repo / ".maf" / "runtime.db"
    with open_store(db) as store:
        for number in range(50):
            tasks.add_task(store, task_id=f"t{number}")
    connection = sqlite3.connect(db)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself
    connection.close()
    with open(db, "r+b") as damaged:  # pages 4-6 overwritten, as a failing disk does
        damaged.seek(4096 * 3)
        damaged.write(b"\xff" * 4096 * 3)

    code, report = health(capsys, "--database-only")

    (reachable,) = [check for check in report["checks"] if check["name"] == "database.reachable"]
    assert (code, reachable["ok"]) == (1, False)
    assert "maf db recover" in reachable["hint"] and "maf setup" not in reachable["hint"]


@pytest.mark.parametrize("link", [".agent-mail", ".agent-mail/messages/codex-senior"])
def test_a_mail_root_every_mail_command_refuses_is_critical_naming_the_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], link: str
) -> None:
    import shutil
    import subprocess

    repo, outside = tmp_path / "repo", tmp_path / "outside"
    repo.mkdir(), outside.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.chdir(repo)
    for name in ("MAF_DB_PATH", "MAF_AGENT_MAIL_ROOT", "MAF_ENV", "NODE_ENV", "MAF_MIN_FREE_DISK_MB"):
        monkeypatch.delenv(name, raising=False)
    assert main(["setup"]) == 0 and main(["init"]) == 0
    shutil.rmtree(repo / link)
    (repo / link).symlink_to(outside)

    code, report = health(capsys)

    # Before: "healthy", while every mail command and escalation refused the link.
    assert (code, report["status"]) == (1, "critical")
    problems = {check["name"]: check["message"] for check in report["checks"] if not check["ok"]}
    assert f"{link} is a symbolic link to {outside}, outside the" in problems["agent-mail.escalation-targets"]
    if link == ".agent-mail":
        assert f"outside the repository {repo};" in problems["agent-mail.root"]  # not "the repository ."
    assert main(["escalate", "--agent", "claude-1", "--error-context", "x", "--bead-id", "b", "--target", "codex-senior"]) == 2
    assert not any(outside.iterdir())


def test_a_store_a_newer_pytest_maf_wrote_is_sent_to_an_upgrade_not_to_setup(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with closing(sqlite3.connect(repo / ".maf" / "runtime.db")) as connection:
        connection.execute("PRAGMA user_version = 99")

    code, report = health(capsys, "--database-only")

    (reachable,) = [check for check in report["checks"] if check["name"] == "database.reachable"]
    # Before: "upgrade pytest-maf -> run `maf setup` or fix MAF_DB_PATH"; setup refuses such a store.
    assert (code, reachable["ok"]) == (1, False)
    assert "upgrade pytest-maf" in reachable["hint"] and "maf setup" not in reachable["hint"]


def test_a_store_with_a_damaged_index_is_sent_to_recover_or_restore_not_to_setup(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = repo / ".maf" / "runtime.db"
    with open_store(db) as store:
        for number in range(300):
            tasks.add_task(store, task_id=f"t{number}")
    with closing(sqlite3.connect(db)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        root = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'idx_events_task'").fetchone()[0]
    with open(db, "r+b") as damaged:  # one index page overwritten: the store opens, its check fails
        damaged.seek(page_size * (root - 1))
        damaged.write(b"\xff" * page_size)

    code, report = health(capsys, "--database-only")

    (schema_check,) = [check for check in report["checks"] if check["name"] == "database.schema"]
    # Before: "run `maf setup`, or restore a backup", where setup refuses a damaged store.
    assert (code, schema_check["ok"]) == (1, False)
    assert "maf db recover" in schema_check["hint"] and "maf setup" not in schema_check["hint"]
