"""Where a repository's root is: the directory that holds ``maf-config/``, ``.env`` and the runtime store."""

from __future__ import annotations

import os
from pathlib import Path

# In the repository's common git directory: the root whose .maf/runtime.db `maf setup` (or a first
# preflight) made, so that a linked worktree finds it where git keeps no record of the main work tree
# (a git directory kept apart), and the guard tells a store that went away from one never made.
STORE_NOTE = "maf-root"


def find_repository_root(start: Path) -> Path | None:
    """Return the root of the git work tree holding ``start``, or None.

    For a linked worktree (``git worktree add``) the main work tree's root is
    returned, so every worktree of one repository shares one runtime store.
    A repository with no main work tree beside its git directory (a bare
    repository's worktrees, or a git directory kept apart) has its root where
    git lists its first worktree: the folder whose ``.git`` file names that git
    directory (``project/.git`` of ``project/.bare``), else the git directory
    itself. Reads ``.git`` files directly instead of running git: it is called
    on every command, including the pre-commit guard. Only where no ``.git``
    is found and ``GIT_DIR`` or ``GIT_WORK_TREE`` names the repository is git
    asked for its work tree, as every git command there finds it.
    """
    for directory in (start, *start.parents):
        dot_git = directory / ".git"
        if dot_git.is_dir():
            return directory
        if dot_git.is_file():
            return _main_worktree_root(directory, dot_git)
    if os.environ.get("GIT_DIR") or os.environ.get("GIT_WORK_TREE"):
        return _work_tree_by_git(start)
    return None


def _work_tree_by_git(start: Path) -> Path | None:
    """The work tree git finds from ``start`` (``git rev-parse --show-toplevel``), or None."""
    from pytest_maf.guard import run_git  # here: only where GIT_DIR or GIT_WORK_TREE leaves no .git to find

    try:
        returncode, output, _ = run_git(start, "rev-parse", "--show-toplevel")
    except OSError:  # no git on PATH
        return None
    top = os.fsdecode(output.rstrip(b"\n"))
    return Path(top) if returncode == 0 and top else None


def find_work_tree(start: Path) -> Path | None:
    """The root of the work tree holding ``start`` itself (a linked worktree's own), or None."""
    for directory in (start, *start.parents):
        if os.path.lexists(directory / ".git"):
            return directory
    return None


def git_folders(start: Path) -> list[Path]:
    """The real folders git keeps the repository holding ``start`` in (none outside git): the work
    tree's ``.git``, where a ``.git`` link or ``gitdir:`` file leads, and a linked worktree's common
    git directory."""
    tree = find_work_tree(start)
    if tree is None:
        return []
    dot_git = tree / ".git"
    git_dir = _git_dir_named(dot_git) if dot_git.is_file() else dot_git.resolve()
    if git_dir is None:
        return []
    folders = [git_dir]
    try:
        commondir = (git_dir / "commondir").read_text(encoding="utf-8").strip()
        folders.append((git_dir / commondir).resolve())
    except (OSError, UnicodeDecodeError, RuntimeError, ValueError):
        pass  # no common directory: the git directory is the whole of it
    return folders


def _git_dir_named(dot_git_file: Path) -> Path | None:
    """The git directory a ``.git`` file names (``gitdir: PATH``), or None."""
    try:
        first_line = dot_git_file.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    if not first_line.startswith("gitdir:"):
        return None
    try:
        return (dot_git_file.parent / first_line[len("gitdir:") :].strip()).resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def _main_worktree_root(directory: Path, dot_git_file: Path) -> Path:
    git_dir = _git_dir_named(dot_git_file)
    if git_dir is None:
        return directory
    commondir_file = git_dir / "commondir"
    try:
        if not commondir_file.is_file():
            return directory  # a main work tree with its git directory elsewhere, or a submodule
        common_dir = (git_dir / commondir_file.read_text(encoding="utf-8").strip()).resolve()
    except (OSError, RuntimeError, UnicodeDecodeError, ValueError):
        return directory
    if common_dir.name == ".git":
        return common_dir.parent
    holder = common_dir.parent  # project/ of project/.bare, when project/.git names it
    if (holder / ".git").is_file() and _git_dir_named(holder / ".git") == common_dir:
        return holder
    return noted_root(common_dir) or common_dir


def common_git_dir(root: Path) -> Path | None:
    """The common git directory of the work tree at ``root`` (shared by its worktrees), or None."""
    folders = git_folders(root)
    return folders[-1] if folders else None


def noted_root(common_dir: Path) -> Path | None:
    """The root :data:`STORE_NOTE` in ``common_dir`` names, when its ``.git`` still leads there."""
    try:
        root = Path(os.fsdecode((common_dir / STORE_NOTE).read_bytes().rstrip(b"\n")))
        dot_git = root / ".git"
        leads_here = dot_git.resolve() == common_dir if dot_git.is_dir() else _git_dir_named(dot_git) == common_dir
    except (OSError, RuntimeError, ValueError):
        return None
    return root if root.is_absolute() and leads_here else None


def note_store_root(root: Path) -> None:
    """Write :data:`STORE_NOTE`: the store of this repository is at ``root``; nothing if git cannot say
    where its common directory is."""
    common = common_git_dir(root)
    if common is not None and noted_root(common) != root:
        from pytest_maf.files import write_bytes_atomic  # only when a store is made here

        write_bytes_atomic(common / STORE_NOTE, os.fsencode(root) + b"\n")
