"""A scratch repository as agents meet it: a main worktree and a linked one,
each with its own agent, driving the installed ``maf`` command and ``pytest``.

Every process gets an environment with no ``MAF_*`` variable and no user git
configuration of the machine's, so no test leaks the machine's state.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.invalid",
    "GIT_COMMITTER_NAME": "Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}
# Variables that change what maf or git does; none of them comes from the machine.
LEAKY_PREFIXES = ("MAF_", "GIT_", "PYTEST_ADDOPTS", "LOG_LEVEL", "NODE_ENV")
DEADLINE_S = 120


def isolated_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY_PREFIXES)}
    env.update(GIT_IDENTITY)
    env["HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.update(extra or {})
    return env


def maf_command() -> list[str]:
    """The installed ``maf`` script beside this Python, else ``python -m pytest_maf``."""
    script = Path(sys.executable).parent / "maf"
    if script.is_file():
        return [str(script)]
    found = shutil.which("maf")
    return [found] if found else [sys.executable, "-m", "pytest_maf"]


def git(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    completed = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=dict(env) if env else None,
        timeout=DEADLINE_S,
    )
    if completed.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {completed.stderr}")
    return completed.stdout


@dataclass
class Workspace:
    """``main`` is the repository's main worktree, ``second`` a linked worktree of it."""

    main: Path
    second: Path
    home: Path

    def env(self, agent: str | None = None, **extra: str) -> dict[str, str]:
        values = dict(extra)
        if agent is not None:
            values["MAF_AGENT_ID"] = agent
        return isolated_env(self.home, values)

    def maf(
        self, cwd: Path, *args: str, agent: str | None = None, stdin: str = "",
        timeout: float = DEADLINE_S, **extra: str,
    ) -> subprocess.CompletedProcess[str]:
        """Run the installed ``maf`` in ``cwd`` as ``agent`` (its MAF_AGENT_ID)."""
        return subprocess.run(
            [*maf_command(), *args], cwd=cwd, input=stdin, capture_output=True, text=True, errors="backslashreplace",
            env=self.env(agent, **extra), timeout=timeout,
        )

    def pytest(
        self, cwd: Path, *args: str, agent: str | None = None, timeout: float = DEADLINE_S, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m pytest`` in ``cwd`` as ``agent``, with plugin autoloading as a user has it."""
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd,
            capture_output=True, text=True, errors="backslashreplace", env=self.env(agent, **extra), timeout=timeout,
        )

    def git(self, cwd: Path, *args: str) -> str:
        return git(cwd, *args, env=self.env())

    def write(self, cwd: Path, name: str, text: str = "changed\n") -> Path:
        path = cwd / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def stage(self, cwd: Path, name: str, text: str = "changed\n") -> None:
        self.write(cwd, name, text)
        self.git(cwd, "add", "--", name)


def make_workspace(base: Path, files: Sequence[str] = ("README.md", "src/app/models.py", "docs/api.md")) -> Workspace:
    """A committed repository with ``files``, set up for pytest-maf, and a linked worktree."""
    home = base / "home"
    home.mkdir()
    main = base / "repo"
    main.mkdir()
    env = isolated_env(home)
    git(main, "init", "-q", "-b", "main", env=env)
    for name in files:
        path = main / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{name}\n", encoding="utf-8")
    git(main, "add", "-A", env=env)
    git(main, "commit", "-q", "-m", "initial", env=env)
    second = base / "second"
    git(main, "worktree", "add", "-q", "-b", "second", str(second), env=env)
    workspace = Workspace(main, second, home)
    completed = workspace.maf(main, "setup")
    assert completed.returncode == 0, completed.stderr
    return workspace
