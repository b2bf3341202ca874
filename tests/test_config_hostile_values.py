"""Configuration values a person can write but pytest-maf cannot use: every view shows them, or every
command refuses them alike, and nothing is written on refusal."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pytest_maf.cli import main

ACKNOWLEDGED_AT_A_TIME = (
    "preflight:\n  acknowledged_warnings:\n    env.sqlite-wal-reset: {by: dana, on: 2026-05-01 09:30:00, reason: CI box}\n"
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=Dev", "-c", "user.email=dev@example.invalid", *args],
        cwd=repo, check=True, capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository as the current directory, with no MAF_* variable from the machine."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    for name in ("MAF_ENV", "NODE_ENV", "MAF_DB_PATH", "MAF_LOG_FILE", "MAF_TASK_MAX_ATTEMPTS", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(root)
    return root


# A YAML date or time, and a mapping whose keys JSON cannot order.


@pytest.mark.parametrize(("text", "key", "shown"), [
    (ACKNOWLEDGED_AT_A_TIME, "preflight.acknowledged_warnings",
     {"env.sqlite-wal-reset": {"by": "dana", "on": "2026-05-01 09:30:00", "reason": "CI box"}}),
    ("preflight:\n  tool_versions: {1: '>= 2', node: '>= 18'}\n", "preflight.tool_versions", "{1: '>= 2', node: '>= 18'}"),
], ids=["timestamp", "mixed-keys"])
def test_show_and_report_show_a_value_json_cannot_hold_with_its_problem(
    repo: Path, capsys: pytest.CaptureFixture[str], text: str, key: str, shown: object
) -> None:
    write(repo / "maf-config/default.yaml", text)

    validated = main(["config", "validate"])
    problems = capsys.readouterr().out.splitlines()
    shown_code = main(["config", "show", "--json"])
    shown_json = json.loads(capsys.readouterr().out)
    text_code = main(["config", "show"])
    table = capsys.readouterr()
    report_code = main(["config", "report", "--output", "report.json"])
    report = json.loads((repo / "report.json").read_text())

    assert validated == shown_code == text_code == report_code == 2
    assert shown_json["values"][key]["value"] == shown == report["values"][key]["value"]
    assert shown_json["problems"] == problems == report["problems"]
    assert [line for line in table.out.splitlines() if line.startswith("problem: ")] == [f"problem: {p}" for p in problems]
    assert "internal error" not in table.err


def test_a_timestamp_in_an_acknowledgement_is_named_as_written(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo / "maf-config/default.yaml", ACKNOWLEDGED_AT_A_TIME)

    assert main(["config", "validate"]) == 2
    assert capsys.readouterr().out == (
        f"{repo}/maf-config/default.yaml: preflight.acknowledged_warnings: env.sqlite-wal-reset.on: required, the date"
        " of the acknowledgement as YYYY-MM-DD, got '2026-05-01 09:30:00'\n"
    )


def test_an_impossible_date_is_a_problem_of_its_key_not_of_the_file(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo / "maf-config/default.yaml", ACKNOWLEDGED_AT_A_TIME.replace("2026-05-01 09:30:00", "2026-02-30"))

    assert main(["config", "validate"]) == 2
    assert "env.sqlite-wal-reset.on: required, the date of the acknowledgement as YYYY-MM-DD, got '2026-02-30'" in (
        capsys.readouterr().out
    )


def test_a_date_where_text_is_expected_is_read_as_the_text_written(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo / "maf-config/default.yaml", "preflight:\n  tool_versions: {calver-tool: 2024-01-01}\n")

    assert main(["config", "validate"]) == 0
    capsys.readouterr()
    assert main(["config", "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["values"]["preflight.tool_versions"]["value"] == {"calver-tool": "2024-01-01"}


@pytest.mark.parametrize(("text", "expected"), [
    ("runtime:\n  db_path: !!binary aGVsbG8=\n", "line 2: !!binary values are not configuration; write text instead"),
    ("escalation:\n  targets: !!set {a, b}\n", "line 2: !!set values are not configuration; write a list ([a, b]) instead"),
], ids=["binary", "set"])
def test_bytes_and_sets_are_refused_by_every_view_naming_the_line(
    repo: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    layer = write(repo / "maf-config/default.yaml", text)

    for command in (["config", "validate"], ["config", "show"], ["config", "show", "--json"]):
        assert main(command) == 2, command
        captured = capsys.readouterr()
        assert f"{layer}: does not parse: {expected}" in captured.out + captured.err, command
        assert "internal error" not in captured.out + captured.err
    assert main(["config", "report", "--output", "report.json"]) == 2
    assert not (repo / "report.json").exists()


def test_diff_against_a_commit_that_holds_a_timestamp(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo / "maf-config/default.yaml", ACKNOWLEDGED_AT_A_TIME)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "acknowledged")
    write(repo / "maf-config/default.yaml", "tasks: {max_attempts: 4}\n")

    assert main(["config", "diff"]) == 0
    lines = capsys.readouterr().out.splitlines()

    assert lines[0] == (
        'preflight.acknowledged_warnings: {"env.sqlite-wal-reset": {"by": "dana", "reason": "CI box",'
        ' "on": "2026-05-01 09:30:00"}} (HEAD:maf-config/default.yaml) -> {} (defaults)'
    )
    assert lines[-1] == "2 key(s) differ from HEAD"


def test_a_database_url_of_the_wrong_type_is_never_echoed(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo / "maf-config/default.yaml", "runtime:\n  database_url: ['postgresql://maf:s3cret@db/maf']\n")

    codes = [main(["config", "validate"]), main(["config", "show"]), main(["config", "show", "--json"])]
    captured = capsys.readouterr()

    assert codes == [2, 2, 2]
    assert "runtime.database_url: expected a string, got list" in captured.out
    assert "s3cret" not in captured.out + captured.err and "internal error" not in captured.err


# A logging.file every command refuses: validate, show, snapshot and restore refuse it too.

LOG_FILES_REFUSED = {
    ".maf/runtime.db": "which this command must not overwrite",
    ".maf/runtime.db-wal": "which this command must not overwrite",
    ".maf/runtime.db.lock": "which this command must not overwrite",
    ".env": "which this command must not overwrite",
    "maf-config/x.log": "which holds the configuration",
    ".git/HEAD": "in git's own folder (.git)",
}


def snapshot_of(repo: Path, name: str, content: str) -> Path:
    """A well-formed snapshot file holding ``content`` as the local layer (as one taken elsewhere would)."""
    from pytest_maf.config_snapshot import Snapshot

    path = repo.parent / f"snapshot-{len(list(repo.parent.glob('snapshot-*')))}.json"
    path.write_text(json.dumps(Snapshot(name, content, "2026-05-01T09:30:00+00:00").to_json()), encoding="utf-8")
    return path


@pytest.mark.parametrize("log_file", sorted(LOG_FILES_REFUSED))
def test_validate_refuses_the_log_file_every_command_refuses(
    repo: Path, capsys: pytest.CaptureFixture[str], log_file: str
) -> None:
    write(repo / "maf-config/local.yaml", f"logging:\n  file: {log_file}\n")

    validated = main(["config", "validate"])
    problems = capsys.readouterr().out
    listed = main(["task", "list"])
    refused = capsys.readouterr().err
    shown = main(["config", "show", "--json"])

    assert validated == listed == shown == 2
    assert f"{repo}/maf-config/local.yaml: logging.file: " in problems and LOG_FILES_REFUSED[log_file] in problems
    assert problems.strip() in refused
    assert json.loads(capsys.readouterr().out)["problems"] == [problems.strip()]


def test_validate_refuses_a_log_file_from_the_environment_as_the_commands_do(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAF_LOG_FILE", ".env")

    assert main(["config", "validate"]) == 2
    assert capsys.readouterr().out.startswith(f"environment: logging.file: {repo}/.env is {repo}/.env, which this command")


@pytest.mark.parametrize("log_file", sorted(LOG_FILES_REFUSED))
def test_restore_refuses_a_snapshot_whose_log_file_the_commands_refuse(
    repo: Path, capsys: pytest.CaptureFixture[str], log_file: str
) -> None:
    write(repo / "maf-config/local.yaml", "tasks: {max_attempts: 4}\n")
    before = (repo / "maf-config/local.yaml").read_bytes()
    snapshot = snapshot_of(repo, "local.yml", f"logging:\n  file: {log_file}\n")

    assert main(["config", "restore", str(snapshot)]) == 2
    captured = capsys.readouterr()

    assert captured.out == "" and LOG_FILES_REFUSED[log_file] in captured.err
    assert sorted(path.name for path in (repo / "maf-config").iterdir()) == ["local.yaml"]
    assert (repo / "maf-config/local.yaml").read_bytes() == before
    assert main(["config", "validate"]) == 0


def test_restore_refuses_a_log_file_that_would_be_the_store_another_layer_names(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(repo / "maf-config/default.yaml", "runtime: {db_path: data/store.db}\n")
    snapshot = snapshot_of(repo, "local.yaml", "logging:\n  file: data/store.db-wal\n")
    harmless = snapshot_of(repo, "local.yaml", "logging:\n  file: .maf/runtime.db\n")  # not the store here

    assert main(["config", "restore", str(snapshot)]) == 2
    assert f"{repo}/data/store.db-wal, which this command must not overwrite" in capsys.readouterr().err
    assert not (repo / "maf-config/local.yaml").exists()
    assert main(["config", "restore", str(harmless)]) == 0
    assert main(["config", "validate"]) == 0


def test_restore_mends_an_invalid_configuration_but_never_with_a_refused_log_file(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(repo / "maf-config/default.yaml", "tasks: {max_attempts: 0}\n")  # what the restore is run to get past
    refused = snapshot_of(repo, "local.yaml", "logging:\n  file: .env\n")
    mending = snapshot_of(repo, "local.yaml", "logging:\n  file: logs/maf.log\n")

    assert main(["config", "restore", str(refused)]) == 2
    assert "which this command must not overwrite" in capsys.readouterr().err
    assert not (repo / "maf-config/local.yaml").exists()
    assert main(["config", "restore", str(mending)]) == 0
    assert (repo / "maf-config/local.yaml").read_text() == "logging:\n  file: logs/maf.log\n"


def test_snapshot_refuses_a_local_layer_whose_log_file_the_commands_refuse(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(repo / "maf-config/local.yaml", "logging:\n  file: .maf/runtime.db\n")

    assert main(["config", "snapshot", "--output", "../saved.json"]) == 2
    assert "logging.file: " in capsys.readouterr().err
    assert not (repo.parent / "saved.json").exists()


# The size limit the loader applies.

OVERSIZED = "tasks:\n  max_attempts: 5\n" + "# padding\n" * 110_000


def test_snapshot_refuses_a_local_layer_above_the_size_limit(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layer = write(repo / "maf-config/local.yaml", OVERSIZED)

    assert main(["config", "snapshot", "--output", "../saved.json"]) == 2
    assert capsys.readouterr().err == (
        f"maf: error: invalid configuration: {layer}: is {len(OVERSIZED)} bytes; a configuration file may be at"
        " most 1048576\n"
    )
    assert not (repo.parent / "saved.json").exists()


def test_restore_refuses_a_snapshot_above_the_size_limit(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = snapshot_of(repo, "local.yaml", OVERSIZED)

    assert main(["config", "restore", str(snapshot)]) == 2
    assert f"is {len(OVERSIZED)} bytes; a configuration file may be at most 1048576" in capsys.readouterr().err
    assert not (repo / "maf-config").exists()
    assert main(["config", "validate"]) == 0


# Messages that say what is so.


@pytest.mark.parametrize("output", ["maf-config", "maf-config/", "maf-config/report"])
def test_an_output_in_the_configuration_folder_is_refused_with_a_name_that_is_accepted(
    repo: Path, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    (repo / "maf-config").mkdir()

    assert main(["config", "snapshot", "--output", output]) == 2
    refusal = capsys.readouterr().err
    suggested = refusal.rstrip("\n").rpartition(", such as ")[2]

    assert "holds the configuration" in refusal and suggested == "config-snapshot.json"
    assert main(["config", "snapshot", "--output", suggested]) == 0
    assert json.loads((repo / suggested).read_text())["file"] is None
    assert list((repo / "maf-config").iterdir()) == []


def test_validate_names_the_environment_variables_it_read(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAF_TASK_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("MAF_DB_PATH", str(repo.parent / "elsewhere.db"))

    assert main(["config", "validate"]) == 0
    assert capsys.readouterr().out == "configuration is valid (environment variables MAF_DB_PATH, MAF_TASK_MAX_ATTEMPTS)\n"
    write(repo / "maf-config/default.yaml", "tasks: {lease_ttl_seconds: 60}\n")
    assert main(["config", "validate"]) == 0
    assert capsys.readouterr().out == (
        f"configuration is valid ({repo}/maf-config/default.yaml; environment variables MAF_DB_PATH, MAF_TASK_MAX_ATTEMPTS)\n"
    )


@pytest.mark.parametrize("value", ["٣", "1_0"])
def test_a_number_from_the_environment_is_written_in_ascii_digits(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MAF_TASK_MAX_ATTEMPTS", value)

    assert main(["config", "validate"]) == 2
    assert capsys.readouterr().out == f"environment: MAF_TASK_MAX_ATTEMPTS={value!r}: expected a whole number\n"


def test_an_environment_name_from_dotenv_is_blamed_on_dotenv(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo / ".env", "MAF_ENV=../../etc\n")

    assert main(["config", "validate"]) == 2
    assert capsys.readouterr().out == f"{repo}/.env: '../../etc' is not an environment name\n"


def test_diff_in_a_repository_without_a_commit_says_what_to_do(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo / "maf-config/default.yaml", "tasks: {max_attempts: 4}\n")

    assert main(["config", "diff"]) == 2
    assert capsys.readouterr().err == (
        "maf: error: HEAD has no commit yet; commit maf-config/ first, or compare with a snapshot (--snapshot FILE)\n"
    )


def test_a_required_mcp_client_is_named_as_maf_init_names_it_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    from pytest_maf.config import load_settings
    from pytest_maf.errors import MafError

    settings = load_settings(environ={"MAF_MCP_REQUIRED": "claude,codex"}, cwd=tmp_path)

    assert settings.mcp_required == ("claude-code", "codex")
    with pytest.raises(MafError, match="unknown MCP client 'bogus'; clients are claude-code, codex, cursor, gemini"):
        load_settings(environ={"MAF_MCP_REQUIRED": "bogus"}, cwd=tmp_path)
