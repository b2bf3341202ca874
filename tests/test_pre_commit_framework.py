"""The maf-reservations hook run by the real pre-commit framework, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pytest_maf import reservations, tasks
from pytest_maf.store import open_store, setup_store
from wheelhouse import build_wheelhouse, project_requirements, snapshot_of_project

PROJECT = Path(__file__).resolve().parents[1]


def run(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=check)


def test_every_hook_id_is_documented_in_the_readme() -> None:
    manifest = yaml.safe_load((PROJECT / ".pre-commit-hooks.yaml").read_text())
    readme = (PROJECT / "README.md").read_text()
    assert manifest, "the manifest defines no hook"
    for hook in manifest:
        assert f"id: {hook['id']}" in readme, hook["id"]


def test_the_manifest_is_valid_for_pre_commit() -> None:
    result = run(PROJECT, sys.executable, "-m", "pre_commit", "validate-manifest", ".pre-commit-hooks.yaml", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_pre_commit_runs_the_guard_blocking_then_passing(tmp_path: Path) -> None:
    hook_repo = tmp_path / "pytest-maf"
    hook_repo.mkdir()
    rev = snapshot_of_project(PROJECT, hook_repo)
    wheels = build_wheelhouse(tmp_path / "wheels", [*project_requirements(), "setuptools"])

    work = tmp_path / "work"
    work.mkdir()
    run(work, "git", "init", "-q")
    (work / ".pre-commit-config.yaml").write_text(
        yaml.safe_dump({"repos": [{
            "repo": str(hook_repo), "rev": rev, "hooks": [{"id": "maf-reservations"}, {"id": "maf-preflight"}],
        }]})
    )
    (work / "src").mkdir()
    (work / "src" / "app.py").write_text("print('hi')\n")
    run(work, "git", "add", "-A")
    setup_store(work / ".maf" / "runtime.db")
    with open_store(work / ".maf" / "runtime.db") as store:
        reservations.acquire(store, ["src/**"], "agent-a", 600_000, reason="refactor")

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MAF_", "PIP_", "VIRTUALENV_"))},
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
        "MAF_AGENT_ID": "agent-b",
    }
    pre_commit = [sys.executable, "-m", "pre_commit", "run", "maf-reservations"]

    blocked = run(work, *pre_commit, env=env, check=False)
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert "src/app.py: agent-a holds src/** (exclusive)" in blocked.stdout

    # With the override and its reason, both hooks pass; the override is recorded once and told.
    override = {**env, "MAF_RESERVATION_OVERRIDE": "true", "MAF_OVERRIDE_REASON": "hotfix"}
    overridden = run(work, sys.executable, "-m", "pre_commit", "run", env=override, check=False)
    assert overridden.returncode == 0, overridden.stdout + overridden.stderr
    with open_store(work / ".maf" / "runtime.db") as store:
        (event,) = store.read(lambda t: t.reservation_events("override"))
    assert (event.agent_id, event.data["paths"], event.data["reason"]) == ("agent-b", ["src/app.py"], "hotfix")
    (notice,) = (work / ".agent-mail" / "messages" / "agent-a").glob("*.json")
    assert '"RESERVATION_OVERRIDDEN"' in notice.read_text()

    with open_store(work / ".maf" / "runtime.db") as store:
        reservations.release(store, ["src/**"], "agent-a")
    passed = run(work, *pre_commit, env=env, check=False)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Passed" in passed.stdout

    preflight = run(work, sys.executable, "-m", "pre_commit", "run", "maf-preflight", env=env, check=False)
    assert preflight.returncode == 0, preflight.stdout + preflight.stderr
    with open_store(work / ".maf" / "runtime.db") as store:
        runs = [t for t in tasks.list_tasks(store, include_internal=True) if t.payload.get("kind") == "preflight"]
    assert [task.state for task in runs] == ["DONE", "DONE"]  # the overridden run, then this one
