"""Escalation: an agent that is stuck asks a senior agent for help, through agent-mail.

A request is one ESCALATION_REQUEST message in the target's inbox (and a copy
in the outbox), tracked in the store. Escalating the same agent and bead again
while it is active raises its level instead of opening another; every
``levels_per_target`` levels it moves on to the next target of the configured
chain. The message is queued in the store with the escalation's row and
delivered after the commit, so no message exists without its row; one that
cannot be delivered stays queued for the next command.

Example::

    message = escalate(store, settings, agent_id="claude-1", bead_id="bd-42",
                       error_context="tests hang", target="codex-senior")
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_maf import health, kpi, mail
from pytest_maf.agents import seen
from pytest_maf.config import Settings
from pytest_maf.errors import MafError, NotFoundError, UsageError
from pytest_maf.leases import validate_id
from pytest_maf.logs import INFO, log_event
from pytest_maf.records import ESCALATION_STATUSES, Escalation
from pytest_maf.values import check_text

if TYPE_CHECKING:
    from pathlib import Path

    from pytest_maf.store import Store, Transaction


@dataclass(frozen=True)
class EscalationOutcome:
    escalation: Escalation
    message: dict[str, Any]
    raised: bool  # an active escalation was raised rather than a new one opened
    dry_run: bool
    undelivered: tuple[str, ...] = ()  # why the message is still queued, if it is
    note: str | None = None  # a raise went to another target than the one asked for: said, not silent


def next_target(chain: tuple[str, ...], current: str, level: int, levels_per_target: int) -> str:
    """The target for ``level``: the chain moves on every ``levels_per_target`` levels (pure)."""
    if current not in chain or level <= 1 or (level - 1) % levels_per_target:
        return current
    return chain[min(chain.index(current) + 1, len(chain) - 1)]


def escalate(
    store: Store,
    settings: Settings,
    *,
    agent_id: str,
    bead_id: str,
    error_context: str,
    target: str,
    dry_run: bool = False,
) -> EscalationOutcome:
    """Open an escalation, or raise the active one for this agent and bead."""
    validate_id("agent", agent_id)
    validate_id("bead", bead_id)
    if target not in settings.escalation_targets:
        raise UsageError(
            f"unknown escalation target {target!r}; configured targets: {', '.join(settings.escalation_targets)}"
        )
    if not error_context.strip():
        raise UsageError("--error-context must say what went wrong")
    check_text("the error context", error_context)

    def plan(transaction: Transaction) -> tuple[Escalation, bool]:
        (active,) = transaction.escalations(status="active", agent_id=agent_id, bead_id=bead_id) or (None,)
        if active is None:
            return Escalation(
                f"esc-{uuid.uuid4().hex[:12]}", agent_id, bead_id, target, 1, "active",
                error_context, transaction.now, transaction.now,
            ), False
        level = active.level + 1
        moved_to = next_target(settings.escalation_targets, active.target, level, settings.escalation_levels_per_target)
        return dataclasses.replace(
            active, level=level, target=moved_to, context=error_context, updated_at=transaction.now
        ), True

    def message_for(escalation: Escalation) -> dict[str, Any]:
        return mail.check_size({
            "id": mail.new_message_id(),
            "type": "ESCALATION_REQUEST",
            "from": agent_id,
            "to": escalation.target,
            "bead_id": bead_id,
            "error_context": error_context,
            "level": escalation.level,
            "created_at": escalation.updated_at,
            "escalation_id": escalation.id,
        }, "the error context", "put the details in a file and give its path")

    planned, raised = store.read(plan)
    # A link out of the mail root is refused before anything is written (even the writers' lock).
    mail.check_deliverable(settings.mail_root, planned.target)
    planned_message = message_for(planned)  # one no reader could open is refused here too, before any write
    if dry_run:
        inbox = health.escalation_inboxes_creatable(settings.mail_root, [planned.target])
        if not inbox.ok:
            raise UsageError(f"{inbox.message}; {inbox.hint}")
        return EscalationOutcome(planned, planned_message, raised, True, note=_kept_target(planned, raised, target))

    def record(transaction: Transaction) -> EscalationOutcome:
        escalation, raised = plan(transaction)
        if escalation.target != planned.target:  # another escalation moved it meanwhile
            mail.check_deliverable(settings.mail_root, escalation.target)
        message = message_for(escalation)
        transaction.put_escalation(escalation)
        transaction.insert_escalation_event(
            escalation.id, "raise" if raised else "open",
            {"level": escalation.level, "target": escalation.target, "message_id": message["id"]},
        )
        transaction.enqueue_mail(message)
        seen(transaction, agent_id)
        return EscalationOutcome(escalation, message, raised, False)

    outcome = store.write(record)
    outcome = dataclasses.replace(outcome, undelivered=_deliver(store, settings, outcome),
                                  note=_kept_target(outcome.escalation, outcome.raised, target))
    log_event("escalation_raise" if outcome.raised else "escalation_open", INFO,
              agent_id=agent_id, escalation_id=outcome.escalation.id, bead_id=bead_id,
              target=outcome.escalation.target, escalation_level=outcome.escalation.level, error_context=error_context)
    return outcome


def _kept_target(escalation: Escalation, raised: bool, asked_for: str) -> str | None:
    """Why a raise went to the chain's target rather than ``asked_for``, or None when they are the same."""
    if not raised or escalation.target == asked_for:
        return None
    return (
        f"{escalation.agent_id}'s escalation {escalation.id} of {escalation.bead_id} is already active, so it was"
        f" raised at level {escalation.level} to {escalation.target}, not to {asked_for}: a raise follows"
        " escalation.targets, and --target chooses only where an escalation opens (resolve this one to open"
        f" another to {asked_for})"
    )


def _deliver(store: Store, settings: Settings, outcome: EscalationOutcome) -> tuple[str, ...]:
    """Deliver the committed escalation's message; why it is still queued, if it is."""
    message_id = outcome.message["id"]
    try:
        why = mail.deliver_pending(store, settings.mail_root, [message_id]).failed.get(message_id)
    except (MafError, OSError) as error:
        why = str(error)
    if why is None:
        return ()
    return (
        f"escalation {outcome.escalation.id} is recorded, but {outcome.escalation.target} was not told by"
        f" agent-mail (message {message_id}): {why}; the message stays queued and the next maf command"
        " delivers it",
    )


@dataclass(frozen=True)
class ClosedEscalation:
    escalation: Escalation
    by: str  # the agent that closed it
    notices: tuple[dict[str, Any], ...]  # to the escalating agent and the target, but the one who closed it
    undelivered: tuple[str, ...] = ()  # why a notice is still queued, if one is


def close_escalation(
    store: Store, escalation_id: str, status: str = "resolved", *, by: str, mail_root: Path | None = None
) -> ClosedEscalation:
    """Mark an active escalation resolved (or cancelled) by the agent ``by``, recorded in its event.

    The escalating agent and the target (whose request is answered or withdrawn) are each told by an
    ``ESCALATION_RESOLVED`` (or ``ESCALATION_CANCELLED``) notice, but the one of them who closed it;
    the notices are queued with the event and delivered after the commit when ``mail_root`` is given.
    """
    validate_id("agent", by)
    if status not in ESCALATION_STATUSES or status == "active":
        raise UsageError(f"an escalation is closed as resolved or cancelled, not {status!r}")

    def close(transaction: Transaction) -> ClosedEscalation:
        (found,) = transaction.escalations(escalation_id=escalation_id) or (None,)
        if found is None:
            raise NotFoundError(f"no escalation {escalation_id!r} (see `maf escalate list`)")
        if found.status != "active":
            raise UsageError(f"escalation {escalation_id} is already {found.status}")
        closed = dataclasses.replace(found, status=status, updated_at=transaction.now)
        transaction.put_escalation(closed)
        notices = tuple(_closing_notice(closed, by, recipient, transaction.now)
                        for recipient in dict.fromkeys((found.agent_id, found.target)) if recipient != by)
        transaction.insert_escalation_event(escalation_id, status, {
            "level": found.level, "by": by, "message_ids": [notice["id"] for notice in notices],
        })
        for notice in notices:
            transaction.enqueue_mail(notice)
        if status == "resolved":
            seen(transaction, None, kpi.observation("escalation_resolution", (transaction.now - found.created_at) / 1000))
        seen(transaction, by)
        return ClosedEscalation(closed, by, notices)

    outcome = store.write(close)
    log_event("escalation_resolved" if status == "resolved" else "escalation_cancelled", INFO, agent_id=by, escalation_id=escalation_id,
              bead_id=outcome.escalation.bead_id, target=outcome.escalation.target,
              escalation_level=outcome.escalation.level)
    if mail_root is None or not outcome.notices:
        return outcome
    notice_ids = [notice["id"] for notice in outcome.notices]
    try:
        failed = mail.deliver_pending(store, mail_root, notice_ids).failed
    except (MafError, OSError) as error:
        failed = dict.fromkeys(notice_ids, str(error))
    untold = tuple(
        f"{escalation_id} is {status}, but {notice['to']} was not told by agent-mail (notice {notice['id']}):"
        f" {failed[notice['id']]}; the notice stays queued and the next maf command delivers it"
        for notice in outcome.notices if notice["id"] in failed
    )
    return dataclasses.replace(outcome, undelivered=untold)


def _closing_notice(closed: Escalation, by: str, recipient: str, now: int) -> dict[str, Any]:
    return {
        "id": mail.new_message_id(),
        "type": f"ESCALATION_{closed.status.upper()}",
        "from": by,
        "to": recipient,
        "subject": f"escalation {closed.id} of {closed.bead_id} ({closed.agent_id} to {closed.target})"
                   f" {closed.status} by {by}",
        "escalation_id": closed.id,
        "bead_id": closed.bead_id,
        "level": closed.level,
        "created_at": now,
    }


def closers(store: Store) -> dict[str, str]:
    """Who closed each closed escalation, by its id (one closed before that was recorded is absent)."""
    rows = store.read(lambda transaction: transaction.audit_trail(kinds=("resolved", "cancelled"), limit=None))
    return {row.escalation_id: row.data["by"] for row in rows
            if row.source == "escalation" and row.escalation_id and isinstance(row.data.get("by"), str)}


def list_escalations(store: Store, status: str | None = None) -> list[Escalation]:
    if status is not None and status not in ESCALATION_STATUSES:
        raise UsageError(f"unknown status {status!r}; use {', '.join(ESCALATION_STATUSES)}")
    return store.read(lambda transaction: transaction.escalations(status=status))
