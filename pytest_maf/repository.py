"""Where a repository's root is: the directory that holds ``maf-config/``, ``.env`` and the runtime store."""

from __future__ import annotations

from pathlib import Path


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
