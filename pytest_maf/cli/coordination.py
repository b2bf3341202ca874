"""`maf escalate ...` and `maf mail ...`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from typing import Any

from pytest_maf import escalation, mail
from pytest_maf.cli.common import (
    add_agent,
    add_json,
    add_limit,
    agent_of,
    given,
    keep_runtime_files_out_of_git,
    open_configured_store,
    print_json,
    print_table,
    when,
)
from pytest_maf.clock import system_clock
from pytest_maf.config import Settings
from pytest_maf.errors import MafError, UsageError
from pytest_maf.ids import validate_id
from pytest_maf.terminal import brief, printable, printable_json


def cmd_escalate(args: argparse.Namespace, settings: Settings) -> int:
    if args.escalate_command is not None:
        given_for_opening = [flag for flag, value in (
            ("--agent", args.agent if args.escalate_command != "resolve" else None),  # resolve: who closes it
            ("--error-context", args.error_context), ("--bead-id", args.bead_id),
            ("--target", args.target), ("--dry-run", args.dry_run),
        ) if value]
        if given_for_opening:
            raise UsageError(
                f"escalate {args.escalate_command} takes no {', '.join(given_for_opening)}: those open or raise"
                " an escalation (`maf escalate` without an action)"
            )
    if args.escalate_command == "resolve":
        by = agent_of(args)
        with open_configured_store(settings) as store:
            closed = escalation.close_escalation(
                store, args.id, "cancelled" if args.cancel else "resolved", by=by, mail_root=settings.mail_root
            )
        for warning in closed.undelivered:
            print(f"maf: warning: {printable(warning)}", file=sys.stderr)
        if args.json:
            print_json({**asdict(closed.escalation), "closed_by": by,
                        "notified": [notice["to"] for notice in closed.notices]})
        else:
            told = ", ".join(notice["to"] for notice in closed.notices)
            print(printable(f"{closed.escalation.id} is {closed.escalation.status} by {by}"
                            + (f"; told {told} by agent-mail" if told else "")))
        return 0
    if args.escalate_command == "list":
        with open_configured_store(settings) as store:
            found = escalation.list_escalations(store, args.status)
            closed_by = escalation.closers(store) if any(e.status != "active" for e in found) else {}
        if args.json:
            print_json([{**asdict(e), "closed_by": closed_by.get(e.id)} for e in found])
        elif not found:
            print("no escalations")
        else:
            print_table(  # the context cut to one line: --json and the request's message have it whole
                ["ID", "STATUS", "LEVEL", "AGENT", "TARGET", "BEAD", "UPDATED", "CLOSED BY", "CONTEXT"],
                [[e.id, e.status, e.level, e.agent_id, e.target, e.bead_id, when(e.updated_at),
                  "-" if e.status == "active" else closed_by.get(e.id, "?"), brief(e.context)] for e in found],
            )
        return 0
    agent = agent_of(args)
    missing = [flag for flag, value in (("--error-context", args.error_context),
               ("--bead-id", args.bead_id), ("--target", args.target)) if not value]
    if missing:
        raise UsageError(f"escalate needs {', '.join(missing)}")
    with open_configured_store(settings, deliver_queued_mail=not args.dry_run) as store:
        outcome = escalation.escalate(
            store, settings, agent_id=agent, bead_id=args.bead_id,
            error_context=args.error_context, target=args.target, dry_run=args.dry_run,
        )
    for warning in outcome.undelivered:
        print(f"maf: warning: {printable(warning)}", file=sys.stderr)
    if outcome.note is not None:
        print(f"maf: note: {printable(outcome.note)}", file=sys.stderr)
    if args.json:
        print_json({"escalation_id": outcome.escalation.id, "level": outcome.escalation.level,
                    "target": outcome.escalation.target, "raised": outcome.raised,
                    "dry_run": outcome.dry_run, "message": outcome.message, "note": outcome.note})
    elif outcome.dry_run:
        print("dry run: nothing written; this message would go to "
              f"{settings.mail_root / 'messages' / outcome.escalation.target}/")
        print(json.dumps(outcome.message, indent=2, sort_keys=True))
    else:
        verb = "raised" if outcome.raised else "opened"
        print(f"{verb} {outcome.escalation.id} at level {outcome.escalation.level} to {outcome.escalation.target}"
              f" (message {outcome.message['id']})")
    return 0


def _deliver_queued_mail(settings: Settings) -> None:
    """Before mail is read: deliver what store operations queued, when there is a store."""
    if settings.database_url is None and not settings.db_path.is_file():
        return
    try:
        open_configured_store(settings).close()
    except (MafError, OSError) as error:
        print(f"maf: warning: queued agent-mail was not delivered: {printable(error)}", file=sys.stderr)


def _seen_by_mail(settings: Settings, agent: str) -> None:
    """After agent-mail was read or sent: mark ``agent`` seen, at most once a minute, when there is a store."""
    if settings.database_url is None and not settings.db_path.is_file():
        return
    from pytest_maf.agents import seen_without_a_write

    try:
        with open_configured_store(settings, deliver_queued_mail=False) as store:
            seen_without_a_write(store, agent)
    except (MafError, OSError) as error:  # the mail went through; only the sighting is lost
        print(f"maf: warning: {agent} was not recorded as seen: {printable(error)}", file=sys.stderr)


def cmd_mail_list(args: argparse.Namespace, settings: Settings) -> int:
    agent = agent_of(args)
    _deliver_queued_mail(settings)
    unreadable: list[str] = []
    messages = mail.list_messages(settings.mail_root, agent, args.unread, unreadable)[::-1][: args.limit]  # newest first
    for problem in unreadable:  # on stderr: --json stays one JSON document
        print(f"maf: warning: {printable(problem)}", file=sys.stderr)
    _seen_by_mail(settings, agent)
    if args.json:
        print_json(messages)
        return 0
    if not messages:
        print(f"no {'unread ' if args.unread else ''}messages for {agent}")
    for message in messages:
        flag = " " if message.get("read_at") else "*"
        subject = message.get("subject") or message.get("error_context") or _notice_summary(message)
        print(printable(
            f"{flag} {message.get('id', '?')}  {_sent(message)}  {message.get('type', '')}"
            f"  from {message.get('from', '?')}: {subject}"
        ))
    return 0


def _sent(message: dict[str, object]) -> str:
    created = message.get("created_at")
    try:
        return when(created if isinstance(created, int) else 0)
    except (OverflowError, OSError, ValueError):
        return "?"


def cmd_mail_show(args: argparse.Namespace, settings: Settings) -> int:
    mail.validate_message_id(args.id)
    _deliver_queued_mail(settings)
    _, message = mail.find_message(settings.mail_root, args.id)
    print(json.dumps(message, indent=2, sort_keys=True, ensure_ascii=False) if args.json else printable_json(message))
    return 0


def cmd_mail_ack(args: argparse.Namespace, settings: Settings) -> int:
    agent = agent_of(args)
    mail.validate_message_id(args.id)
    _deliver_queued_mail(settings)
    message = mail.acknowledge(settings.mail_root, args.id, agent, system_clock())
    _seen_by_mail(settings, agent)
    if args.json:
        print_json(message)
    else:
        print(f"{message['id']} read by {agent}")
    return 0


def _notice_summary(message: dict[str, Any]) -> str:
    """What a notice without a subject is about: a force-release names its pattern and reason."""
    if message.get("pattern"):
        path = f" ({message['path']})" if message.get("path") else ""
        return f"released {message['pattern']}{path}: {message.get('reason', '')}"
    return ""


def cmd_mail_send(args: argparse.Namespace, settings: Settings) -> int:
    sender = validate_id("agent", args.sender) if args.sender is not None else agent_of(args)
    new_root = not os.path.lexists(settings.mail_root)
    message = mail.send(settings.mail_root, sender, args.to, args.subject, args.body, system_clock())
    if new_root:  # made by this message: kept out of git, as `maf setup` and `maf init` do
        keep_runtime_files_out_of_git(settings)
    _seen_by_mail(settings, sender)
    if args.json:
        print_json(message)
    else:
        print(message["id"])
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    escalate = commands.add_parser(
        "escalate", help="ask a senior agent for help (agent-mail), or list and resolve escalations",
        description="Writes an ESCALATION_REQUEST into the target's inbox and the outbox, tracked in"
        " the store. Escalating the same agent and bead again raises the active escalation's level"
        " (moving along the configured targets) instead of opening another.",
    )
    add_agent(escalate, "the agent that is stuck", hidden_aliases=("--agent-id",))
    escalate.add_argument("--error-context", help="what went wrong")
    escalate.add_argument("--bead-id", type=given, help="the work item (bead) concerned")
    escalate.add_argument("--target", type=given, help="a configured escalation target")
    escalate.add_argument("--dry-run", action="store_true", help="check everything, print the message, write nothing")
    add_json(escalate)
    actions = escalate.add_subparsers(dest="escalate_command", metavar="ACTION")
    resolve = actions.add_parser("resolve", help="close an active escalation")
    resolve.add_argument("id", metavar="ID")
    resolve.add_argument("--cancel", action="store_true", help="close it as cancelled instead of resolved")
    resolve.add_argument("--agent", dest="agent", metavar="ID", default=argparse.SUPPRESS,  # keeps `escalate --agent`
                         help="the agent closing it, recorded and named to the others (default: MAF_AGENT_ID)")
    add_json(resolve, also_before=True)
    listing = actions.add_parser("list", help="list escalations")
    listing.add_argument(
        "--status", choices=("active", "resolved", "cancelled"), help="only escalations in this state (default: all)"
    )
    add_json(listing, also_before=True)
    escalate.set_defaults(handler=cmd_escalate)

    mail_parser = commands.add_parser("mail", help="read and send agent-mail").add_subparsers(
        dest="mail_command", metavar="ACTION", required=True
    )
    listing = mail_parser.add_parser("list", help="an agent's inbox, newest first (* marks unread)")
    add_agent(listing, "whose inbox")
    listing.add_argument("--unread", action="store_true", help="only the messages not yet acknowledged")
    add_limit(listing, "messages, the newest")
    add_json(listing)
    listing.set_defaults(handler=cmd_mail_list)
    show = mail_parser.add_parser(
        "show", help="one message, as JSON",
        description="One message as JSON; control characters in its text are shown as \\u escapes"
        " unless --json asks for the exact JSON.",
    )
    show.add_argument("id", metavar="ID")
    add_json(show)
    show.set_defaults(handler=cmd_mail_show)
    ack = mail_parser.add_parser("ack", help="mark a message read (it stays in the archive)")
    ack.add_argument("id", metavar="ID")
    add_agent(ack, "whose inbox holds the message")
    add_json(ack)
    ack.set_defaults(handler=cmd_mail_ack)
    send = mail_parser.add_parser("send", help="send a message")
    send.add_argument("--from", dest="sender", metavar="ID", help="the sender (default: --agent, else MAF_AGENT_ID)")
    add_agent(send, "the agent sending, when --from is not given")
    send.add_argument("--to", required=True, metavar="ID", help="the agent whose inbox receives it")
    send.add_argument("--subject", required=True, help="the subject line")
    send.add_argument("--body", required=True, help="the message text")
    add_json(send)
    send.set_defaults(handler=cmd_mail_send)
