"""Errors a user can act on, each carrying the exit code the `maf` command uses.

Exit codes follow DESIGN.md: 1 blocked or failed, 2 bad input, 3 nothing to
do, 4 lease lost. Library callers catch :class:`MafError`; the command line
prints ``str(error)`` as one line and exits with ``error.exit_code``.
"""

from __future__ import annotations


class MafError(Exception):
    """Base class of every error pytest-maf raises for a user to act on."""

    exit_code = 2


class UsageError(MafError):
    """Bad input: a malformed value, an out-of-range option, invalid JSON."""

    exit_code = 2


class NotFoundError(MafError):
    """An id that names nothing in the store."""

    exit_code = 2


class AlreadyExistsError(MafError):
    """An id that is already taken."""

    exit_code = 2


class IllegalTransitionError(MafError):
    """A state change the transition table does not allow."""

    exit_code = 2

    def __init__(self, task_id: str, from_state: str, action: str, allowed: str) -> None:
        self.task_id = task_id
        self.from_state = from_state
        self.action = action
        super().__init__(
            f"cannot {action} task {task_id!r}: it is {from_state}, and {action} moves {allowed}"
        )


class StoreError(MafError):
    """The runtime database is missing, unreadable, corrupt or too new."""

    exit_code = 2


class NothingToClaimError(MafError):
    """No READY task is waiting."""

    exit_code = 3


class LeaseLostError(MafError):
    """The caller is not (or no longer) the holder of the lease it presented."""

    exit_code = 4
