"""Layered configuration: precedence of every layer, and validation that names file and key."""

from __future__ import annotations

import json
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from pytest_maf.cli import main
from pytest_maf.config import ConfigError, load_settings

KEY = "reservations.default_ttl_minutes"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()  # a repository root, without running git
    return tmp_path


# Each row: the layers present, and which one must win. Values 11..17 mark the layer.
LAYERS = {
    "default": lambda root, env: write(root / "maf-config/default.yaml", "reservations:\n  default_ttl_minutes: 11\n"),
    "env": lambda root, env: write(root / "maf-config/staging.json", '{"reservations": {"default_ttl_minutes": 12}}'),
    "environments": lambda root, env: write(root / "maf-config/environments/staging.yml", "reservations: {default_ttl_minutes: 13}\n"),
    "local": lambda root, env: write(root / "maf-config/local.yaml", "reservations:\n  default_ttl_minutes: 14\n"),
    "config_file": lambda root, env: write(root / "extra.json", '{"reservations": {"default_ttl_minutes": 15}}'),
    "environment": lambda root, env: env.__setitem__("MAF_RESERVATION_DEFAULT_TIMEOUT", "16"),
}
EXPECTED = {"none": 30, "default": 11, "env": 12, "environments": 13, "local": 14, "config_file": 15, "environment": 16}


@pytest.mark.parametrize("present", [
    [], ["default"], ["default", "env"], ["default", "env", "environments"],
    ["default", "env", "environments", "local"], ["default", "env", "environments", "local", "config_file"],
    ["default", "env", "environments", "local", "config_file", "environment"],
    ["environment", "default"], ["local", "env"], ["config_file", "default"],
], ids=lambda present: "+".join(present) or "defaults-only")
def test_each_layer_overrides_the_ones_below(repo: Path, present: list[str]) -> None:
    environ = {"MAF_ENV": "staging"}
    for name in present:
        LAYERS[name](repo, environ)
    config_file = repo / "extra.json" if "config_file" in present else None

    settings = load_settings(environ=environ, cwd=repo, config_file=config_file)

    winner = max(present, key=lambda name: EXPECTED[name]) if present else "none"
    assert settings.reservation_ttl_min == EXPECTED[winner]
    assert (settings.sources[KEY] == "defaults") == (winner == "none")


def test_command_line_beats_the_environment(repo: Path) -> None:
    settings = load_settings(environ={"MAF_DB_PATH": "env.db"}, cwd=repo, db_path="flag.db")
    assert settings.db_path == repo / "flag.db"
    assert settings.sources["runtime.db_path"] == "command line"


def test_node_env_selects_the_environment_when_maf_env_is_unset(repo: Path) -> None:
    write(repo / "maf-config/production.yaml", "tasks:\n  max_attempts: 7\n")
    assert load_settings(environ={"NODE_ENV": "production"}, cwd=repo).max_attempts == 7
    assert load_settings(environ={"NODE_ENV": "production", "MAF_ENV": "dev"}, cwd=repo).max_attempts == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reservations:\n  default_timeout: 5\n", "default.yaml: reservations.default_timeout: unknown key"),
        ("telemetry:\n  on: true\n", "default.yaml: telemetry: unknown section"),
        ("tasks:\n  max_attempts: three\n", "default.yaml: tasks.max_attempts: expected a whole number, got str 'three'"),
        ("reservations:\n  default_ttl_minutes: 200\n", "default.yaml: reservations.default_ttl_minutes: 200 minutes is above reservations.max_ttl_minutes"),
        ("runtime:\n  mode: sqlite\n", "default.yaml: runtime.mode: unknown key"),
        ("logging:\n  level: loud\n", "default.yaml: logging.level: unknown level 'loud'"),
        ("tasks: [1, 2]\n", "default.yaml: tasks: expected a mapping of keys"),
        ("tasks:\n  max_attempts: 3\n  bad: [\n", "default.yaml: does not parse"),
    ],
)
def test_every_problem_names_the_file_and_key_path(repo: Path, text: str, expected: str) -> None:
    write(repo / "maf-config/default.yaml", text)

    with pytest.raises(ConfigError) as raised:
        load_settings(environ={}, cwd=repo)

    assert any(expected in problem and str(repo / "maf-config") in problem for problem in raised.value.problems), raised.value.problems


def test_each_setting_is_declared_once_and_everything_else_derives_from_it() -> None:
    from pytest_maf import config

    declared = [setting.key for setting in config.SETTINGS]
    assert len(declared) == len(set(declared))
    leaves = {f"{section}.{key}" for section, keys in config.DEFAULTS.items() for key in keys}
    assert leaves == set(declared) == set(config.DESCRIPTIONS)
    for variable, (key, parse) in config.ENVIRONMENT_VARIABLES.items():
        assert config.SETTINGS_BY_KEY[key].env == variable
    assert config.ENVIRONMENT_VARIABLES["MAF_TASK_LEASE_TTL"][1]("60") == 60
    assert config.ENVIRONMENT_VARIABLES["MAF_REQUIRED_ENV"][1]("A, B,,") == ["A", "B"]
    assert config.default_note("tasks.lease_ttl_seconds", "tasks.lease_max_ttl_seconds") == (
        "default: 1800, MAF_TASK_LEASE_TTL; at most 14400, MAF_TASK_LEASE_MAX_TTL"
    )
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert all(f"`{variable}`" in readme for variable in config.ENVIRONMENT_VARIABLES)  # every variable documented


def test_validate_lists_every_problem_and_exits_2(repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(repo)
    monkeypatch.delenv("MAF_ENV", raising=False)
    monkeypatch.delenv("NODE_ENV", raising=False)
    write(repo / "maf-config/default.json", '{"tasks": {"max_attempts": 0}, "escalation": {"chain": []}}')
    write(repo / "maf-config/production.yaml", "logging:\n  format: xml\n")

    code = main(["config", "validate", "--env", "production"])
    out = capsys.readouterr().out.splitlines()

    assert code == 2
    assert f"{repo}/maf-config/default.json: tasks.max_attempts: must be above 0, got 0" in out
    assert any(line.startswith(f"{repo}/maf-config/default.json: escalation.chain: unknown key") for line in out)
    assert f"{repo}/maf-config/production.yaml: logging.format: unknown format 'xml'; use text or json" in out


def test_show_and_report_say_where_each_value_came_from(repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(repo)
    monkeypatch.setenv("MAF_RESERVATION_MAX_TIMEOUT", "240")
    write(repo / "maf-config/default.yaml", "tasks:\n  max_attempts: 5\n")

    assert main(["config", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["values"]
    assert main(["config", "report", "--output", "report.json"]) == 0
    report = json.loads((repo / "report.json").read_text())

    assert shown["tasks.max_attempts"] == {"value": 5, "source": f"{repo}/maf-config/default.yaml"}
    assert shown["reservations.max_ttl_minutes"] == {"value": 240, "source": "environment"}
    assert shown["tasks.lease_ttl_seconds"]["source"] == "defaults"
    assert report["values"] == shown and report["problems"] == []


def test_init_writes_a_starter_file_with_every_key_and_never_overwrites(repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from pytest_maf.config import DEFAULTS

    monkeypatch.chdir(repo)
    for name in ("MAF_AGENT_MAIL_ROOT", "MAF_ENV", "NODE_ENV", "MAF_DB_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert main(["init"]) == 0
    starter = repo / "maf-config" / "default.yaml"
    text = starter.read_text()

    assert yaml.safe_load(text) == DEFAULTS
    assert text.count("  # ") == sum(len(keys) for keys in DEFAULTS.values())
    assert (repo / ".agent-mail" / "messages" / "codex-senior").is_dir() and (repo / ".agent-mail" / "outbox").is_dir()

    starter.write_text("tasks:\n  max_attempts: 9\n")
    capsys.readouterr()
    assert main(["init"]) == 0
    assert starter.read_text() == "tasks:\n  max_attempts: 9\n"
    assert "kept" in capsys.readouterr().out


@settings(max_examples=200, deadline=None)
@given(
    layers=st.lists(
        st.dictionaries(
            st.sampled_from(["tasks.max_attempts", "tasks.lease_ttl_seconds", "escalation.levels_per_target"]),
            st.integers(1, 50),
        ),
        max_size=6,
    )
)
def test_merge_takes_each_key_from_the_highest_layer_that_sets_it(layers: list[dict[str, int]]) -> None:
    from pytest_maf.config import DEFAULTS, Layer, merge

    def nested(values: dict[str, int]) -> dict[str, dict[str, int]]:
        tree: dict[str, dict[str, int]] = {}
        for key, value in values.items():
            section, name = key.split(".")
            tree.setdefault(section, {})[name] = value
        return tree

    stack = [Layer("defaults", DEFAULTS)] + [Layer(f"layer-{n}", nested(values)) for n, values in enumerate(layers)]
    merged, sources = merge(stack)

    for key in ("tasks.max_attempts", "tasks.lease_ttl_seconds", "escalation.levels_per_target"):
        setters = [n for n, values in enumerate(layers) if key in values]
        if setters:
            assert merged[key] == layers[setters[-1]][key]
            assert sources[key] == f"layer-{setters[-1]}"
        else:
            section, name = key.split(".")
            assert merged[key] == DEFAULTS[section][name] and sources[key] == "defaults"


ACKNOWLEDGEMENT = """preflight:
  acknowledged_warnings:
    env.sqlite-wal-reset:
      by: dana
      on: 2026-05-01
      reason: single-writer CI machine; Python upgrade tracked in OPS-12
"""


def test_an_acknowledged_warning_loads_with_its_who_when_and_why(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(repo)
    for name in ("MAF_ENV", "NODE_ENV"):
        monkeypatch.delenv(name, raising=False)
    write(repo / "maf-config/default.yaml", ACKNOWLEDGEMENT)  # YAML reads `on:` as true and the date as a date

    settings = load_settings(environ={}, cwd=repo)

    assert settings.acknowledged_warnings == {
        "env.sqlite-wal-reset": {
            "by": "dana", "on": "2026-05-01", "reason": "single-writer CI machine; Python upgrade tracked in OPS-12",
        }
    }
    assert main(["config", "validate"]) == 0
    assert capsys.readouterr().out == f"configuration is valid ({repo}/maf-config/default.yaml)\n"
    assert main(["config", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["values"]["preflight.acknowledged_warnings"]
    assert shown["value"]["env.sqlite-wal-reset"]["on"] == "2026-05-01"


def test_no_warning_is_acknowledged_by_default(repo: Path) -> None:
    assert load_settings(environ={}, cwd=repo).acknowledged_warnings == {}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('{"on": "2026-05-01", "reason": "known"}', "env.sqlite-wal-reset.by: required, a non-empty string"),
        ('{"by": "  ", "on": "2026-05-01", "reason": "known"}', "env.sqlite-wal-reset.by: required, a non-empty string"),
        ('{"by": "dana", "on": "2026-05-01", "reason": ""}', "env.sqlite-wal-reset.reason: required, a non-empty string"),
        ('{"by": "dana", "reason": "known"}', "env.sqlite-wal-reset.on: required, the date of the acknowledgement as YYYY-MM-DD, got None"),
        ('{"by": "dana", "on": "May 1st", "reason": "known"}', "env.sqlite-wal-reset.on: required, the date of the acknowledgement as YYYY-MM-DD, got 'May 1st'"),
        ('{"by": "dana", "on": "2026-02-30", "reason": "known"}', "env.sqlite-wal-reset.on: required, the date"),
        ('{"by": "dana", "on": "2026-05-01", "reason": "known", "until": "2026-06-01"}', "env.sqlite-wal-reset.until: unknown key (known: by, on, reason)"),
        ('"dana said so"', "env.sqlite-wal-reset: expected a mapping, as in env.sqlite-wal-reset: {by: <who>, on: <YYYY-MM-DD>, reason: <why>}"),
    ],
    ids=["by-missing", "by-blank", "reason-empty", "on-missing", "on-not-a-date", "on-impossible", "unknown-key", "not-a-mapping"],
)
def test_an_acknowledgement_needs_who_when_and_why(repo: Path, entry: str, expected: str) -> None:
    write(repo / "maf-config/default.json", f'{{"preflight": {{"acknowledged_warnings": {{"env.sqlite-wal-reset": {entry}}}}}}}')

    with pytest.raises(ConfigError) as raised:
        load_settings(environ={}, cwd=repo)

    (problem,) = raised.value.problems
    assert problem.startswith(f"{repo}/maf-config/default.json: preflight.acknowledged_warnings: "), problem
    assert expected in problem, problem
