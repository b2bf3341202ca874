"""Errors a user can act on, and the one table of the `maf` command's exit codes.

:data:`EXIT_CODES` is the table the README and ``maf --help`` cite. Each
error class carries its code; library callers catch :class:`MafError`, and
the command line prints ``str(error)`` as one line and exits with
``error.exit_code``. Anything else that escapes a command is an internal
error (:data:`INTERNAL_ERROR`): one line, and the traceback only with
``--debug`` (or ``MAF_DEBUG=1``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

DONE = 0
FAILED = 1
BAD_INPUT = 2
NOTHING_TO_DO = 3
LEASE_LOST = 4
STORE_BUSY = 5
INTERNAL_ERROR = 70  # EX_SOFTWARE in sysexits.h
COMMAND_NOT_FOUND = 127
INTERRUPTED = 130

EXIT_CODES: dict[int, str] = {
    DONE: "done, or a check passed",
    FAILED: "a check failed, a conflict blocked, a commit is refused",
    BAD_INPUT: "bad input: usage, invalid value or configuration, unknown id, illegal transition,"
    " unreadable or foreign database",
    NOTHING_TO_DO: "nothing to do: no READY task to claim",
    LEASE_LOST: "lease lost: the caller is not, or no longer, the holder",
    STORE_BUSY: "the store stayed busy (locked by another writer) past the busy timeout",
    INTERNAL_ERROR: "internal error: a bug in pytest-maf; rerun with --debug for the traceback",
    COMMAND_NOT_FOUND: "`maf task run`: the command could not be started",
    INTERRUPTED: "interrupted (Ctrl-C)",
}


class MafError(Exception):
    """Base class of every error pytest-maf raises for a user to act on."""

    exit_code = 2


class UsageError(MafError):
    """Bad input: a malformed value, an out-of-range option, invalid JSON."""

    exit_code = 2


class SystemRefusalError(UsageError):
    """What the system refused (no permission, no space, a path too long): not the caller's arguments,
    which an agent would otherwise change and try again."""


def refused_by_the_system(error: OSError) -> SystemRefusalError:
    """What the system refused (a path too long, no permission, no space) as the command's error line
    says it: ``Permission denied: <the path>``, a long path cut in its middle."""
    name = str(error.filename) if error.filename else ""
    if len(name) > 120:
        name = f"{name[:60]}...{name[-60:]}"
    return SystemRefusalError(f"{error.strerror or type(error).__name__}{': ' + name if name else ''}")


class NotFoundError(MafError):
    """An id that names nothing in the store."""

    exit_code = 2


class AlreadyExistsError(MafError):
    """An id that is already taken."""

    exit_code = 2


def evidence_already_recorded(task_id: str, attempt: int, verifiers: Sequence[str]) -> AlreadyExistsError:
    """A verifier reporting twice in one attempt; named when ``verifiers`` is one, the batch's first otherwise."""
    who = f"verifier {verifiers[0]!r}" if len(verifiers) == 1 else f"one of {len(verifiers)} verifiers ({verifiers[0]!r}, ...)"
    return AlreadyExistsError(f"evidence from {who} is already recorded for task {task_id!r} attempt {attempt}")


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


class NotVerifiableError(MafError):
    """The agent holds the task, but it is not RUNNING (not started, or VERIFYING after a run that was
    stopped), so it cannot be verified now; the message names what moves it on."""

    exit_code = 2


class StoreError(MafError):
    """The runtime database is missing, unreadable, corrupt or too new."""

    exit_code = BAD_INPUT


class DamagedStoreError(StoreError):
    """The runtime database is damaged (malformed): `maf db recover` or `maf db restore` mend it, `maf setup` refuses it."""


class NewerStoreError(StoreError):
    """A newer pytest-maf wrote the store (its schema version is past this one's): upgrade pytest-maf."""


class StoreUnreachableError(StoreError):
    """The PostgreSQL server cannot be reached (not running, or a wrong host, port, database or user):
    nothing about the store or a backup was learnt."""


class StoreBusyError(StoreError):
    """Another writer held the store past the busy timeout."""

    exit_code = STORE_BUSY


class NothingToClaimError(MafError):
    """No READY task is waiting."""

    exit_code = NOTHING_TO_DO


class LeaseLostError(MafError):
    """The caller is not (or no longer) the holder of the lease it presented."""

    exit_code = LEASE_LOST
