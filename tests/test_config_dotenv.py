"""The repository's .env as a configuration layer, and one file per layer."""

from __future__ import annotations

import json
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given

from pytest_maf.cli import main
from pytest_maf.config import ConfigError, load_settings
from pytest_maf.config_files import parse_dotenv_line


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / ".git").mkdir()  # a repository root, without running git
    monkeypatch.chdir(tmp_path)
    for name in ("MAF_ENV", "NODE_ENV", "LOG_LEVEL", "MAF_DB_PATH", "MAF_RESERVATION_DEFAULT_TIMEOUT", "MAF_AGENT_MAIL_ROOT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.mark.parametrize(("dotenv", "file", "variable", "expected"), [
    (True, False, False, 21),
    (True, True, False, 22),
    (True, False, True, 23),
    (True, True, True, 23),
    (False, False, False, 30),
], ids=["dotenv-over-defaults", "file-over-dotenv", "environment-over-dotenv", "environment-over-all", "defaults"])
def test_dotenv_sits_just_above_the_defaults(repo: Path, dotenv: bool, file: bool, variable: bool, expected: int) -> None:
    if dotenv:
        write(repo / ".env", "# set up from .env.example\nexport MAF_RESERVATION_DEFAULT_TIMEOUT=21\nLOG_LEVEL=debug\n")
    if file:
        write(repo / "maf-config" / "default.yaml", "reservations:\n  default_ttl_minutes: 22\n")
    environ = {"MAF_RESERVATION_DEFAULT_TIMEOUT": "23"} if variable else {}

    settings = load_settings(environ=environ, cwd=repo)

    assert settings.reservation_ttl_min == expected
    source = settings.sources["reservations.default_ttl_minutes"]
    assert source == {21: str(repo / ".env"), 22: str(repo / "maf-config" / "default.yaml"), 23: "environment",
                      30: "defaults"}[expected]
    assert settings.log_level == ("debug" if dotenv else "warning")


def test_show_names_dotenv_as_the_source(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo / ".env", 'MAF_AGENT_MAIL_ROOT="mail box"  # quoted: it has a space\nDEBUG=maf:*\n')

    assert main(["config", "show", "--json"]) == 0

    shown = json.loads(capsys.readouterr().out)["values"]["agent_mail.root"]
    assert shown == {"value": "mail box", "source": str(repo / ".env")}
    assert load_settings(environ={}, cwd=repo).mail_root == repo / "mail box"  # relative to the repository root


def test_a_dotenv_saved_with_a_byte_order_mark_reads_the_same(repo: Path) -> None:
    (repo / ".env").write_bytes("\ufeffMAF_TASK_MAX_ATTEMPTS=6\r\n".encode("utf-8"))

    assert load_settings(environ={}, cwd=repo).max_attempts == 6


def test_validate_notes_maf_variables_in_dotenv_that_no_setting_reads(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo / ".env", "MAF_DB_PTH=typo.db\nMAF_AGENT_ID=claude-1\nMAF_TASK_LEASE_TTL=60\nDEBUG=maf:*\n")

    assert main(["config", "validate"]) == 0

    valid, *notes = capsys.readouterr().out.splitlines()
    assert valid.startswith("configuration is valid")
    assert [note.split(": ")[2].split()[0] for note in notes] == ["MAF_AGENT_ID", "MAF_DB_PTH"]
    assert all(note.startswith(f"note: {repo / '.env'}: ") for note in notes)


def test_validate_notes_dotenv_variables_a_configuration_file_overrides(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """maf init's starter default.yaml sets every key: a .env beside it sets nothing, and validate says so."""
    write(repo / ".env", "MAF_TASK_LEASE_TTL=60\nLOG_LEVEL=info\nMAF_DB_PATH=.maf/other.db\n")
    write(repo / "maf-config" / "default.yaml", "tasks:\n  lease_ttl_seconds: 1800\n")
    monkeypatch.setenv("LOG_LEVEL", "error")

    assert main(["config", "validate"]) == 0

    valid, *notes = capsys.readouterr().out.splitlines()
    assert notes == [
        f"note: {repo / '.env'}: LOG_LEVEL does not set logging.level: environment sets it, and wins over .env",
        f"note: {repo / '.env'}: MAF_TASK_LEASE_TTL does not set tasks.lease_ttl_seconds:"
        f" {repo / 'maf-config' / 'default.yaml'} sets it, and wins over .env",
    ]


def test_validate_says_an_empty_dotenv_value_sets_nothing(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo / ".env", "MAF_TASK_MAX_ATTEMPTS=\n")

    assert main(["config", "validate"]) == 0

    valid, *notes = capsys.readouterr().out.splitlines()
    assert notes == [  # before: "defaults sets it, and wins over .env", which defaults never do
        f"note: {repo / '.env'}: MAF_TASK_MAX_ATTEMPTS is empty, so it does not set tasks.max_attempts;"
        " give it a value or remove the line",
    ]


def test_node_env_in_dotenv_selects_the_environment_unless_the_environment_does(repo: Path) -> None:
    write(repo / ".env", "NODE_ENV=production\n")
    write(repo / "maf-config" / "production.yaml", "tasks:\n  max_attempts: 7\n")
    write(repo / "maf-config" / "staging.yaml", "tasks:\n  max_attempts: 8\n")

    assert load_settings(environ={}, cwd=repo).max_attempts == 7
    assert load_settings(environ={"MAF_ENV": "staging"}, cwd=repo).max_attempts == 8


@pytest.mark.parametrize(("line", "value"), [
    ("MAF_DB_PATH=plain", "plain"),
    ("export MAF_DB_PATH = spaced  ", "spaced"),
    ("MAF_DB_PATH=bare # a comment", "bare"),
    ("MAF_DB_PATH=a#b", "a#b"),
    ("MAF_DB_PATH='$HOME/$(rm -rf x)'", "$HOME/$(rm -rf x)"),
    ('MAF_DB_PATH="line\\nbreak \\"q\\" \\\\ $HOME"', 'line\nbreak "q" \\ $HOME'),
    ("MAF_DB_PATH=`whoami`", "`whoami`"),
    ("MAF_DB_PATH=", ""),
])
def test_values_are_read_as_written_with_no_expansion(line: str, value: str) -> None:
    assert parse_dotenv_line(line) == ("MAF_DB_PATH", value)


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40))
def test_a_double_quoted_value_comes_back_whole(value: str) -> None:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    assert parse_dotenv_line(f'KEY="{escaped}"  # note') == ("KEY", value)


@pytest.mark.parametrize(("line", "problem"), [
    ("rm -rf /", "expected KEY=VALUE"),
    ("1ABC=x", "is not a variable name"),
    ("MY KEY=x", "is not a variable name"),
    ("MAF_DB_PATH='never closed", "is never closed"),
    ('MAF_DB_PATH="secret-value" trailing', "text after the value's closing"),
    ("MAF_DB_PATH=a\x00b", "control characters"),
    ("MAF_TASK_MAX_ATTEMPTS=many", "expected a whole number"),
])
def test_a_hostile_line_is_one_error_naming_file_and_line(repo: Path, line: str, problem: str) -> None:
    write(repo / ".env", f"# first\nLOG_LEVEL=info\n{line}\n")

    with pytest.raises(ConfigError) as raised:
        load_settings(environ={}, cwd=repo)

    (message,) = raised.value.problems
    assert message.startswith(f"{repo / '.env'}: ") and problem in message
    if "whole number" not in problem:
        assert ": line 3: " in message
    assert "secret-value" not in message


def test_two_files_for_one_layer_are_an_error_naming_both(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo / "maf-config" / "default.json", '{"tasks": {"max_attempts": 4}}')
    write(repo / "maf-config" / "default.yaml", "tasks:\n  max_attempts: 5\n")

    assert main(["config", "validate"]) == 2

    (problem,) = capsys.readouterr().out.splitlines()
    assert str(repo / "maf-config" / "default.json") in problem and str(repo / "maf-config" / "default.yaml") in problem
    assert main(["task", "list"]) == 2  # every command refuses, rather than pick one silently


def test_a_folder_where_a_layer_is_read_is_an_error_not_no_layer(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo / "maf-config" / "default.yaml", "tasks:\n  max_attempts: 5\n")
    (repo / "maf-config" / "local.yaml").mkdir()  # the local overrides, made a folder by mistake

    assert main(["config", "validate"]) == 2

    (problem,) = capsys.readouterr().out.splitlines()
    assert f"{repo / 'maf-config' / 'local.yaml'}: a folder where a configuration layer is read" in problem


def test_init_never_writes_a_starter_beside_another_default(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo / "maf-config" / "default.json", '{"tasks": {"max_attempts": 4}}')

    assert main(["init"]) == 0

    assert sorted(path.name for path in (repo / "maf-config").iterdir()) == ["default.json"]
    assert f"kept {repo / 'maf-config' / 'default.json'}" in capsys.readouterr().out
