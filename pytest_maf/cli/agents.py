"""`maf agents`: which agents are alive, when each was last seen, and what it holds."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict

from pytest_maf.cli.common import add_json, open_configured_store, print_json, print_table
from pytest_maf.config import Settings, default_note
from pytest_maf.terminal import printable


def cmd_agents(args: argparse.Namespace, settings: Settings) -> int:
    from pytest_maf.agents import STALE, agent_statuses, ago, forget

    stale_after_s = settings.agent_stale_after_s
    with open_configured_store(settings) as store:
        if args.forget:
            forgotten = forget(store, args.forget, stale_after_s * 1000)
            if args.json:
                print_json({"forgotten": [status.agent_id for status in forgotten]})
            else:
                for status in forgotten:
                    print(printable(f"forgot {status.agent_id} (last seen {ago(status.silent_ms)})"))
            return 0
        found = agent_statuses(store, stale_after_s * 1000)
    if args.json:
        print_json([{**asdict(status), "stale_after_seconds": stale_after_s} for status in found])
        return 0
    if not found:
        print("no agent seen yet: an agent is recorded by its first claim, reservation, evidence or guard run")
        return 0
    print_table(
        ["AGENT", "CLIENT", "LAST SEEN", "STATE", "TASKS", "RESERVATIONS"],
        [
            [
                status.agent_id, status.client or "-", ago(status.silent_ms), status.state,
                _first([f"{task.task_id} ({task.state})" for task in status.tasks]),
                _first(status.reservations),
            ]
            for status in found
        ],
    )
    stale = sum(1 for status in found if status.state == STALE)
    print(f"{len(found)} agent(s), {stale} stale (silent for more than {stale_after_s} s)")
    return 0


SHOWN_PER_CELL = 3  # tasks or reservations named in one cell of the table; --json has them all


def _first(items: Sequence[str]) -> str:
    """The first :data:`SHOWN_PER_CELL` of ``items``, saying how many more there are: one agent
    holding fifty tasks keeps its row, and every other row, narrow."""
    shown = ", ".join(items[:SHOWN_PER_CELL]) or "-"
    return f"{shown} +{len(items) - SHOWN_PER_CELL} more" if len(items) > SHOWN_PER_CELL else shown


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agents = commands.add_parser(
        "agents", help="the agents the store has seen: last seen, what each holds, which are stale",
        description="Every agent that has claimed, started, verified or finished a task, recorded evidence,"
        " renewed a lease, acquired, renewed or released a reservation, escalated, run the guard or"
        " read or sent agent-mail is"
        " recorded with the client it came through (maf, pytest, mcp) and when it was first and last seen;"
        " what it holds is read from its live leases and reservations. An agent silent for longer than"
        f" agents.stale_after_seconds ({default_note('agents.stale_after_seconds')}) is stale.",
    )
    agents.add_argument(
        "--forget", nargs="+", metavar="ID",
        help="remove stale agents that hold nothing (gone for good) from the record, all or none;"
        " an agent that comes back is recorded afresh",
    )
    add_json(agents)
    agents.set_defaults(handler=cmd_agents)
