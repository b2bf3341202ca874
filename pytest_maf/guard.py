"""The commit guard: which paths a commit or push touches, and whether another agent holds them.

Paths come from NUL-separated git plumbing, with renames split into their two
sides (``--no-renames``), so names with spaces, unicode or newlines are exact
and moving a file out of, or into, a reserved place is caught.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_maf.errors import MafError, UsageError
from pytest_maf.logs import log_event
from pytest_maf.reservations import Block, blocking_reservations, reservations_for_paths

if TYPE_CHECKING:
    from pytest_maf.store import Store, Transaction

ZERO_SHA = "0" * 40


class GitError(MafError):
    exit_code = 2


def git_output(cwd: Path, *args: str) -> bytes:
    try:
        completed = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, check=False
        )
    except FileNotFoundError:
        raise GitError("git is not installed or not on PATH") from None
    if completed.returncode != 0:
        message = completed.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(f"git {' '.join(args[:2])} failed: {message[-1] if message else completed.returncode}")
    return completed.stdout


def _split_z(output: bytes) -> list[str]:
    names = (name.decode("utf-8", "surrogateescape") for name in output.split(b"\0") if name)
    return list(dict.fromkeys(names))


def staged_paths(cwd: Path) -> list[str]:
    """Paths the staged commit adds, changes or deletes; both sides of a rename."""
    return _split_z(
        git_output(cwd, "diff", "--cached", "--name-only", "-z", "--no-renames", "--no-ext-diff")
    )


def pushed_paths(cwd: Path, hook_input: str) -> list[str]:
    """Paths changed by the commits a pre-push hook is about to push.

    ``hook_input`` is the hook's stdin: ``<local ref> <local sha> <remote ref> <remote sha>``
    per line. Deleted refs push no content and are skipped.
    """
    paths: list[str] = []
    for line in hook_input.splitlines():
        fields = line.split()
        if len(fields) != 4:
            continue
        _, local_sha, _, remote_sha = fields
        if local_sha == ZERO_SHA:
            continue
        known_remote = remote_sha != ZERO_SHA and _object_exists(cwd, remote_sha)
        exclude = [f"^{remote_sha}"] if known_remote else ["--not", "--remotes"]
        output = git_output(
            cwd, "log", "--format=", "--name-only", "-z", "--no-renames", local_sha, *exclude
        )
        paths.extend(_split_z(output))
    return list(dict.fromkeys(paths))


def _object_exists(cwd: Path, sha: str) -> bool:
    completed = subprocess.run(
        ["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=cwd, capture_output=True, check=False
    )
    return completed.returncode == 0


@dataclass(frozen=True)
class GuardVerdict:
    paths: list[str]
    blocks: list[Block]

    @property
    def blocked(self) -> bool:
        return bool(self.blocks)


def judge(store: Store, paths: list[str], agent_id: str | None) -> GuardVerdict:
    """Which of ``paths`` lie under another agent's live exclusive reservation."""
    held = reservations_for_paths(store, paths)
    return GuardVerdict(paths, blocking_reservations(held, paths, agent_id))


def record_override(store: Store, agent_id: str | None, verdict: GuardVerdict, reason: str | None) -> None:
    """Record that a blocked commit went through under MAF_RESERVATION_OVERRIDE."""

    def record(transaction: Transaction) -> None:
        transaction.insert_reservation_event(
            "override",
            agent_id or "",
            {
                "paths": sorted({block.path for block in verdict.blocks}),
                "holders": sorted(
                    {(block.holder.agent_id, block.holder.pattern) for block in verdict.blocks}
                ),
                "reason": reason or "",
            },
        )

    store.write(record)
    log_event("guard_override", logging.WARNING, agent_id=agent_id, reason=reason or "",
              paths=sorted({block.path for block in verdict.blocks}))


def parse_override(value: str | None) -> bool:
    if value is None or value.strip() == "":
        return False
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"MAF_RESERVATION_OVERRIDE={value!r}: use true or false")
