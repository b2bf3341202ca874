"""The built wheel, installed into a new virtualenv, runs `pytest --maf-preflight`
in a new git repository (offline: dependencies come from this environment)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_maf import tasks
from pytest_maf.store import open_store
from wheelhouse import build_wheelhouse, project_requirements, snapshot_of_project

PROJECT = Path(__file__).resolve().parents[1]


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_wheel_runs_preflight_in_a_new_repository(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    snapshot_of_project(PROJECT, source)
    wheels = build_wheelhouse(tmp_path / "wheels", project_requirements())
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, ".", cwd=source)
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("pytest_maf-*.whl")

    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv, cwd=tmp_path).returncode == 0
    installed = run(venv / "bin" / "pip", "install", "-q", "--no-index", "--find-links", wheels, wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr

    repo = tmp_path / "fresh-repo"
    repo.mkdir()
    assert run("git", "init", "-q", cwd=repo).returncode == 0
    (repo / "test_unrelated.py").write_text("def test_project():\n    assert False\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAF_", "PYTHON"))}
    preflight = run(venv / "bin" / "pytest", "--maf-preflight", "-p", "no:cacheprovider", cwd=repo, env=env)

    assert preflight.returncode == 0, preflight.stdout + preflight.stderr
    assert "maf preflight" in preflight.stdout and "COMMITTED -> DONE" in preflight.stdout
    assert str(venv) in run(venv / "bin" / "python", "-c", "import pytest_maf.checks as c; print(c.__file__)", cwd=repo).stdout
    typed = run(venv / "bin" / "python", "-c", "import pathlib, pytest_maf; print((pathlib.Path(pytest_maf.__file__).parent / 'py.typed').is_file())", cwd=repo)
    assert typed.stdout.strip() == "True"  # a type checker reads the package's annotations (PEP 561)
    with open_store(repo / ".maf" / "runtime.db") as store:
        (task,) = tasks.list_tasks(store, include_internal=True)
        rows = store.read(lambda t: t.evidence(task.id))
    assert task.state == "DONE"
    assert {"env.git", "store.schema", "reservations.staged"} <= {row.verifier for row in rows}
    # The pre-commit hook's command, in a project that makes every warning an error.
    (repo / "pytest.ini").write_text("[pytest]\nfilterwarnings =\n    error\n")
    hook = run(venv / "bin" / "maf-preflight", "-q", cwd=repo, env=env)
    assert hook.returncode == 0, hook.stdout + hook.stderr
    assert "PytestAssertRewriteWarning" not in hook.stdout + hook.stderr
