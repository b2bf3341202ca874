"""Lease fencing: an operation made under a lease presents (task, agent, attempt).

A holder is live only while its lease row names the same agent and attempt,
that attempt is the task's latest, and the lease has not expired. Anything
else is a stale holder and is refused with :class:`LeaseLostError`, which is
what makes a slow or paused agent harmless.
"""

from __future__ import annotations

from pytest_maf import ids
from pytest_maf.errors import LeaseLostError, NotFoundError
from pytest_maf.records import Lease, Task

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pytest_maf.store import Transaction

MAX_ID_LENGTH = ids.MAX_ID_LENGTH


def validate_id(kind: str, value: str) -> str:
    """Check an agent, task, bead or verifier id by the one id rule of :mod:`pytest_maf.ids`."""
    return ids.validate_id(kind, value)


def _no_task(task_id: str) -> NotFoundError:
    return NotFoundError(f"no task with id {task_id!r} (see `maf task list`)")


def require_task(transaction: Transaction, task_id: str) -> Task:
    task = transaction.get_task(task_id)
    if task is None:
        raise _no_task(task_id)
    return task


def require_task_and_lease(transaction: Transaction, task_id: str) -> tuple[Task, Lease | None]:
    """:func:`require_task` and the task's lease, if it has one."""
    task, lease = transaction.task_and_lease(task_id)
    if task is None:
        raise _no_task(task_id)
    return task, lease


def fenced_lease(
    transaction: Transaction, task_id: str, agent_id: str, attempt: int, *, extend: bool = True
) -> tuple[Task, Lease]:
    """Return the task and its lease if ``agent_id`` holds attempt ``attempt`` live.

    With ``extend`` (the default) the live holder's lease is extended to the
    store's lease length from now (never shortened), so an agent that keeps
    working keeps its lease; the lease returned is the extended one, and
    callers put its ``lease_expires_at`` in their event.
    """
    task, lease = require_task_and_lease(transaction, task_id)
    if lease is None:
        raise LeaseLostError(
            f"task {task_id!r} has no lease (it is {task.state});"
            " claim a task again with `maf task claim`"
        )
    if lease.agent_id != agent_id:
        raise LeaseLostError(
            f"task {task_id!r} is leased to agent {lease.agent_id!r}, not {agent_id!r};"
            " claim a task again with `maf task claim`"
        )
    if lease.attempt != attempt or task.attempts != attempt:
        raise LeaseLostError(
            f"attempt {attempt} of task {task_id!r} is {'stale' if attempt < task.attempts else 'not one it has had'}:"
            f" the current attempt is {task.attempts}; claim a task again with `maf task claim`"
        )
    if not lease.is_live(transaction.now):
        raise LeaseLostError(
            f"the lease of agent {lease.agent_id!r} on task {task_id!r} (attempt {attempt})"
            f" expired {transaction.now - lease.lease_expires_at} ms ago;"
            " claim a task again with `maf task claim`"
        )
    if extend and lease.lease_expires_at < transaction.now + transaction.lease_ttl_ms:
        lease = Lease(lease.task_id, lease.agent_id, transaction.now + transaction.lease_ttl_ms, lease.attempt)
        transaction.extend_lease(lease)
    return task, lease


def held_lease(transaction: Transaction, task_id: str, agent_id: str) -> Lease:
    """The live lease ``agent_id`` holds on ``task_id``, whatever its attempt; else
    :class:`LeaseLostError` saying who has it instead."""
    task, lease = require_task_and_lease(transaction, task_id)
    if lease is not None and lease.agent_id == agent_id and lease.is_live(transaction.now):
        return lease
    if lease is not None and lease.agent_id != agent_id:
        holder, way = f"it is leased to {lease.agent_id!r}", "it is theirs until they finish or release it, or it expires"
    else:
        holder = "its lease expired" if lease else f"it is {task.state} with no lease"
        way = "`maf task claim` leases the next READY task" if lease or task.state == "READY" else "nobody may work on it now"
    raise LeaseLostError(f"agent {agent_id!r} does not hold task {task_id!r} ({holder}); {way}")
