"""Settings pytest-maf runs with, and where its files live.

Precedence, lowest to highest: built-in defaults, ``MAF_*`` environment
variables, then explicit arguments (command-line flags). Every value is
validated here, and a bad one names its source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from pytest_maf.errors import UsageError

DEFAULT_TASK_LEASE_TTL_S = 30
DEFAULT_TASK_LEASE_MAX_TTL_S = 3600
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_RESERVATION_TTL_MIN = 30
DEFAULT_RESERVATION_MAX_TTL_MIN = 120
DB_RELATIVE_PATH = Path(".maf") / "runtime.db"
MAIL_RELATIVE_PATH = Path(".agent-mail")
DEFAULT_MCP_CLIENTS = (
    ("claude-code", ".mcp.json"),
    ("codex", ".codex/config.toml"),
    ("cursor", ".cursor/mcp.json"),
    ("gemini", ".gemini/settings.json"),
)
DEFAULT_ESCALATION_TARGETS = ("minimax-debug-1", "codex-senior")


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Build with :func:`load_settings`."""

    db_path: Path
    mail_root: Path
    repo_root: Path | None = None
    task_lease_ttl_s: int = DEFAULT_TASK_LEASE_TTL_S
    task_lease_max_ttl_s: int = DEFAULT_TASK_LEASE_MAX_TTL_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    reservation_ttl_min: int = DEFAULT_RESERVATION_TTL_MIN
    reservation_max_ttl_min: int = DEFAULT_RESERVATION_MAX_TTL_MIN
    min_python: str = "3.8"
    recommended_python: str = "3.11"
    min_sqlite: str = "3.35.0"
    required_env: tuple[str, ...] = ()
    tool_versions: tuple[tuple[str, str], ...] = ()  # (tool, requirement such as ">= 18.17")
    mcp_clients: tuple[tuple[str, str], ...] = DEFAULT_MCP_CLIENTS  # (client, repo-relative file)
    mcp_required: tuple[str, ...] = ()
    escalation_targets: tuple[str, ...] = DEFAULT_ESCALATION_TARGETS
    min_free_disk_mb: int = 100

    def lease_ttl_ms(self, ttl_s: float | None) -> int:
        """Validate a requested task lease TTL (seconds) and return it in ms.

        ``None`` means the configured default.
        """
        if ttl_s is None:
            ttl_s = self.task_lease_ttl_s
        if not ttl_s > 0:
            raise UsageError(f"--ttl must be above 0 seconds, got {ttl_s:g}")
        if ttl_s > self.task_lease_max_ttl_s:
            raise UsageError(
                f"--ttl {ttl_s:g} is above the maximum of {self.task_lease_max_ttl_s} seconds"
                " (raise MAF_TASK_LEASE_MAX_TTL to allow it)"
            )
        return int(ttl_s * 1000)

    def reservation_ttl_ms(self, ttl_min: float | None) -> int:
        """Validate a requested reservation TTL (minutes) and return it in ms."""
        if ttl_min is None:
            ttl_min = self.reservation_ttl_min
        if not ttl_min > 0:
            raise UsageError(f"--ttl must be above 0 minutes, got {ttl_min:g}")
        if ttl_min > self.reservation_max_ttl_min:
            raise UsageError(
                f"--ttl {ttl_min:g} is above the maximum of {self.reservation_max_ttl_min} minutes"
                " (MAF_RESERVATION_MAX_TIMEOUT)"
            )
        return int(ttl_min * 60_000)


def find_repository_root(start: Path) -> Path | None:
    """Return the root of the git work tree holding ``start``, or None.

    For a linked worktree (``git worktree add``) the main work tree's root is
    returned, so every worktree of one repository shares one runtime store.
    Reads ``.git`` files directly instead of running git: it is called on
    every command, including the pre-commit guard.
    """
    for directory in (start, *start.parents):
        dot_git = directory / ".git"
        if dot_git.is_dir():
            return directory
        if dot_git.is_file():
            return _main_worktree_root(directory, dot_git)
    return None


def _main_worktree_root(directory: Path, dot_git_file: Path) -> Path:
    try:
        first_line = dot_git_file.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return directory
    if not first_line.startswith("gitdir:"):
        return directory
    git_dir = (directory / first_line[len("gitdir:") :].strip()).resolve()
    commondir_file = git_dir / "commondir"
    if not commondir_file.is_file():
        return directory  # a submodule: its own repository
    common_dir = (git_dir / commondir_file.read_text(encoding="utf-8").strip()).resolve()
    return common_dir.parent if common_dir.name == ".git" else directory




def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r}: expected a whole number") from None
    if value <= 0:
        raise UsageError(f"{name}={raw!r}: expected a number above 0")
    return value


def _names(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list from the environment."""
    return tuple(part.strip() for part in environ.get(name, "").split(",") if part.strip())


def load_settings(
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    db_path: str | os.PathLike[str] | None = None,
) -> Settings:
    """Resolve settings from defaults, the environment and explicit arguments."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    if db_path is None and environ.get("MAF_DB_PATH"):
        db_path = environ["MAF_DB_PATH"]
    repo_root = find_repository_root(cwd)
    base = repo_root or cwd
    mail_root = environ.get("MAF_AGENT_MAIL_ROOT")
    settings = Settings(
        db_path=cwd / Path(db_path) if db_path is not None else base / DB_RELATIVE_PATH,
        mail_root=cwd / Path(mail_root) if mail_root else base / MAIL_RELATIVE_PATH,
        repo_root=repo_root,
        task_lease_ttl_s=_positive_int(environ, "MAF_TASK_LEASE_TTL", DEFAULT_TASK_LEASE_TTL_S),
        task_lease_max_ttl_s=_positive_int(
            environ, "MAF_TASK_LEASE_MAX_TTL", DEFAULT_TASK_LEASE_MAX_TTL_S
        ),
        max_attempts=_positive_int(environ, "MAF_TASK_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS),
        reservation_ttl_min=_positive_int(
            environ, "MAF_RESERVATION_DEFAULT_TIMEOUT", DEFAULT_RESERVATION_TTL_MIN
        ),
        reservation_max_ttl_min=_positive_int(
            environ, "MAF_RESERVATION_MAX_TIMEOUT", DEFAULT_RESERVATION_MAX_TTL_MIN
        ),
        required_env=_names(environ, "MAF_REQUIRED_ENV"),
        mcp_required=_names(environ, "MAF_MCP_REQUIRED"),
        min_free_disk_mb=_positive_int(environ, "MAF_MIN_FREE_DISK_MB", 100),
    )
    if settings.reservation_ttl_min > settings.reservation_max_ttl_min:
        raise UsageError(
            f"MAF_RESERVATION_DEFAULT_TIMEOUT ({settings.reservation_ttl_min}) is above"
            f" MAF_RESERVATION_MAX_TIMEOUT ({settings.reservation_max_ttl_min})"
        )
    if settings.task_lease_ttl_s > settings.task_lease_max_ttl_s:
        raise UsageError(
            f"MAF_TASK_LEASE_TTL ({settings.task_lease_ttl_s}) is above"
            f" MAF_TASK_LEASE_MAX_TTL ({settings.task_lease_max_ttl_s})"
        )
    return settings
