"""`maf setup`, `maf task ...`, `maf leases ...` and `maf evidence ...`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Callable

from pytest_maf import evidence as evidence_ops
from pytest_maf import tasks
from pytest_maf.cli.common import (
    add_agent,
    add_json,
    add_limit,
    add_output,
    agent_of,
    given,
    json_argument,
    number,
    open_configured_store,
    output_of,
    positive_int,
    print_json,
    prints_no_result,
    print_table,
    said_beside,
    when,
    whole_number,
)
from pytest_maf.clock import span
from pytest_maf.config import Settings, default_note
from pytest_maf.errors import LeaseLostError, UsageError
from pytest_maf.files import checked_text_output, store_files, write_output
from pytest_maf.records import Task
from pytest_maf.values import INT64_MAX, INT64_MIN
from pytest_maf.store import setup_store
from pytest_maf.terminal import printable

# The lease's default as every --ttl of a task command says it (from config.SETTINGS).
LEASE_TTL_NOTE = default_note("tasks.lease_ttl_seconds", "tasks.lease_max_ttl_seconds")

# Commands. Each takes the parsed arguments and the settings, and returns an exit code.


def cmd_setup(args: argparse.Namespace, settings: Settings) -> int:
    from pytest_maf.cli.common import keep_runtime_files_out_of_git

    report = setup_store(settings.store_location, busy_timeout_s=settings.busy_timeout_s, schema=settings.database_schema)
    excluded, excluded_json = keep_runtime_files_out_of_git(settings)
    if args.json:
        print_json(
            {
                "path": str(report.path),
                "created": report.created_file,
                "applied_migrations": list(report.applied_versions),
                "schema_version": report.schema_version,
                "tables": list(report.tables),
                "journal_mode": report.journal_mode,
                "backend": report.backend,
                "excluded": excluded_json,
            }
        )
        return 0
    if report.created_file:
        print(f"created {report.path}")
    elif report.applied_versions:
        print(f"upgraded {report.path}")
    else:
        print(f"found {report.path}; nothing to do")
    journal = f", journal mode {report.journal_mode}" if report.journal_mode else ""
    print(f"schema version {report.schema_version}{journal}")
    print(f"tables: {', '.join(report.tables)}")
    if excluded is not None:
        print(excluded.describe())
    return 0


def cmd_task_add(args: argparse.Namespace, settings: Settings) -> int:
    with open_configured_store(settings) as store:
        task = tasks.add_task(
            store,
            task_id=args.id,
            priority=args.priority,
            payload=args.payload,
            max_attempts=args.max_attempts,
        )
    if args.json:
        print_json(asdict(task))
    else:
        print(task.id)
    return 0


def cmd_task_claim(args: argparse.Namespace, settings: Settings) -> int:
    ttl_ms = settings.lease_ttl_ms(args.ttl)
    if args.timeout is not None and not args.wait:
        raise UsageError("--timeout says how long --wait waits: give --wait too")
    with open_configured_store(settings) as store:
        if args.wait:
            claim = tasks.claim_next_task_waiting(store, agent_of(args), ttl_ms, timeout_s=args.timeout)
        else:
            claim = tasks.claim_next_task(store, agent_of(args), ttl_ms)
    if args.json:
        print_json(asdict(claim))
    else:
        print(
            f"claimed {claim.task_id} attempt {claim.attempt} for {claim.agent_id},"
            f" lease until {when(claim.lease_expires_at)}"
        )
    return 0


def cmd_task_renew(args: argparse.Namespace, settings: Settings) -> int:
    ttl_ms = settings.lease_ttl_ms(args.ttl)
    with open_configured_store(settings) as store:
        lease = tasks.renew_lease(store, args.task, agent_of(args), args.attempt, ttl_ms, at_least=args.ttl is None)
    if args.json:
        print_json(asdict(lease))
    else:
        print(f"renewed {lease.task_id} attempt {lease.attempt} until {when(lease.lease_expires_at)}")
    return 0


def cmd_task_heartbeat(args: argparse.Namespace, settings: Settings) -> int:
    ttl_ms = settings.lease_ttl_ms(args.ttl)
    with open_configured_store(settings) as store:
        renewed = tasks.renew_held_leases(store, agent_of(args), ttl_ms, task_id=args.task, at_least=args.ttl is None)
    lost = [  # an agent whose loop is "work; heartbeat" must learn it lost its task
        f"{agent_of(args)} lost {lease.task_id} (attempt {lease.attempt}): its lease expired"
        f" {span(renewed.now - lease.lease_expires_at)} ago and another agent may claim it; stop its work"
        for lease in renewed.lost
    ]
    for line in lost:
        print(printable(f"maf: error: {line}"), file=sys.stderr)
    code = LeaseLostError.exit_code if lost else 0
    if args.json:  # a loss is the error object every failure prints, with what was renewed all the same
        held = [asdict(lease) for lease in renewed]
        print_json(held if not lost else {"error": "; ".join(lost), "exit_code": code, "renewed": held,
                                          "lost": [asdict(lease) for lease in renewed.lost]})
        return code
    if not renewed and not renewed.lost:
        print(f"{agent_of(args)} holds no live lease (see `maf task list --state LEASED`)")
    for lease in renewed:
        print(f"renewed {lease.task_id} attempt {lease.attempt} until {when(lease.lease_expires_at)}")
    return code


def cmd_task_run(args: argparse.Namespace, settings: Settings) -> int:
    from pytest_maf.keeper import run_under_lease

    command = _split_run_options(args)
    agent = agent_of(args)
    ttl_ms = settings.lease_ttl_ms(args.ttl)
    with open_configured_store(settings) as store:
        attempt = tasks.held_attempt(store, args.task, agent) if args.attempt is None else args.attempt
        outcome = run_under_lease(command, store, args.task, agent, attempt, ttl_ms)
    if outcome.lease_lost is not None:
        print(f"maf: error: the command was stopped: {outcome.lease_lost}", file=sys.stderr)
        return LeaseLostError.exit_code
    return outcome.exit_code


def _split_run_options(args: argparse.Namespace) -> list[str]:
    """``maf task run T --agent A -- CMD``: the options between TASK and ``--`` are
    the run's own (argparse hands everything after TASK to the command)."""
    if "--" not in args.command:
        return list(args.command)
    cut = args.command.index("--")
    options = argparse.ArgumentParser(prog="maf task run TASK", add_help=False, exit_on_error=False)
    options.add_argument("--agent")
    options.add_argument("--attempt", type=positive_int)
    options.add_argument("--ttl", type=number)
    try:
        given, unknown = options.parse_known_args(args.command[:cut])
    except argparse.ArgumentError as error:
        raise UsageError(f"maf task run: {error}") from None
    if unknown:
        raise UsageError(
            f"maf task run: {' '.join(unknown)!r} between TASK and `--`; only --agent, --attempt and --ttl go there"
            " (the options of every command, --db and --log-format, go before TASK: maf task run --db PATH TASK -- CMD)"
        )
    for name in ("agent", "attempt", "ttl"):
        if getattr(given, name) is not None:
            setattr(args, name, getattr(given, name))
    return list(args.command[cut + 1 :])


def _moving_command(
    operation: Callable[..., Task],
) -> Callable[[argparse.Namespace, Settings], int]:
    def command(args: argparse.Namespace, settings: Settings) -> int:
        ttl = getattr(args, "ttl", None)
        ttl_ms = None if ttl is None else settings.lease_ttl_ms(ttl)
        extra = {} if ttl_ms is None else {"ttl_ms": ttl_ms}
        with open_configured_store(settings) as store:
            task = operation(store, args.task, agent_of(args), args.attempt, **extra)
        if args.json:
            print_json(asdict(task))
        else:
            print(f"{task.id} is {task.state}")
        return 0

    return command


def cmd_task_finish(args: argparse.Namespace, settings: Settings) -> int:
    with open_configured_store(settings) as store:
        result = tasks.finish_task(store, args.task, agent_of(args), args.attempt)
    if args.json:
        print_json(asdict(result))
    else:
        print(f"{result.verdict}: {result.reason}; {result.task_id} is {result.final_state}")
    return 0


def cmd_task_cancel(args: argparse.Namespace, settings: Settings) -> int:
    with open_configured_store(settings) as store:
        task = tasks.cancel_task(store, args.task)
    if args.json:
        print_json(asdict(task))
        return 0
    print(f"{task.id} is {task.state}")
    return 0


def cmd_task_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_configured_store(settings) as store:
        found = tasks.list_tasks(store, args.state, include_internal=args.all)[: args.limit]
    if args.json:
        print_json([asdict(task) for task in found])
        return 0
    if not found:
        print("no tasks" + (f" in state {args.state.upper()}" if args.state else ""))
        return 0
    header = ["ID", "STATE", "PRIORITY", "ATTEMPTS", "CREATED"] + (["KIND"] if args.all else [])
    print_table(
        header,
        [
            [t.id, t.state, t.priority, f"{t.attempts}/{t.max_attempts}", when(t.created_at)] + ([t.kind] if args.all else [])
            for t in found
        ],
    )
    return 0


def cmd_task_show(args: argparse.Namespace, settings: Settings) -> int:
    with open_configured_store(settings) as store:
        detail = tasks.describe_task(store, args.task)
    if args.json:
        print_json(asdict(detail))
        return 0
    task = detail.task
    print(f"task {task.id}: {task.state}, priority {task.priority}")
    print(f"  attempts {task.attempts} of {task.max_attempts}, created {when(task.created_at)}")
    print(f"  payload {json.dumps(task.payload, sort_keys=True)}")
    if detail.lease:
        lease = detail.lease
        print(
            f"  lease: {lease.agent_id}, attempt {lease.attempt},"
            f" until {when(lease.lease_expires_at)}"
        )
    print("  events:")
    for event in detail.events:
        print(f"    {when(event.ts)}  {event.kind:<8} {json.dumps(event.data, sort_keys=True)}")
    if detail.evidence:
        print("  evidence:")
        for row in detail.evidence:
            print(f"    attempt {row.attempt}  {row.result}  {row.verifier}")
    return 0


def cmd_leases_reclaim(args: argparse.Namespace, settings: Settings) -> int:
    with open_configured_store(settings) as store:
        reclaimed = tasks.reclaim_expired_leases(store)
    moved: dict[str, int] = {}
    for item in reclaimed:
        moved[item.final_state] = moved.get(item.final_state, 0) + 1
    if args.json:
        print_json(
            {"reclaimed": len(reclaimed), "moved_to": moved, "tasks": [asdict(r) for r in reclaimed]}
        )
        return 0
    summary = ", ".join(f"{count} to {state}" for state, count in sorted(moved.items()))
    print(f"reclaimed {len(reclaimed)} expired lease(s)" + (f": {summary}" if summary else ""))
    for item in reclaimed:
        print(f"  {item.task_id}: {item.from_state} -> {item.final_state} (was {item.agent_id})")
    return 0


def cmd_evidence_add(args: argparse.Namespace, settings: Settings) -> int:
    with open_configured_store(settings) as store:
        row = evidence_ops.record_evidence(
            store,
            args.task,
            args.attempt,
            args.verifier,
            args.result,
            args.details,
            agent_id=agent_of(args),
        )
    if args.json:
        print_json(asdict(row))
    else:
        print(f"recorded {row.result} from {row.verifier} for {row.task_id} attempt {row.attempt}")
    return 0


def cmd_evidence_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_configured_store(settings) as store:
        if args.task:
            tasks.get_task(store, args.task)  # an unknown id is an error, as in `evidence export`, not "no evidence"
        rows = evidence_ops.list_recorded_evidence(store, args.task, args.limit)
    if args.json:
        print_json([{**asdict(row.evidence), "recorded_at": row.recorded_at} for row in rows])
        return 0
    if not rows:
        print("no evidence" + (f" for task {args.task}" if args.task else ""))
        return 0
    print_table(
        ["RECORDED", "TASK", "ATTEMPT", "VERIFIER", "RESULT", "SEVERITY"],
        [[when(r.recorded_at) if r.recorded_at is not None else "?", r.evidence.task_id, r.evidence.attempt,
          r.evidence.verifier, r.evidence.result, r.evidence.details.get("severity", "")] for r in rows],
    )
    return 0


def cmd_evidence_export(args: argparse.Namespace, settings: Settings) -> int:
    from pytest_maf.junit import evidence_report

    output = checked_text_output(output_of(args), store_files(settings.db_path), "the JUnit report")
    with open_configured_store(settings) as store:
        if args.task:
            tasks.get_task(store, args.task)  # an unknown id is an error, not an empty report
        rows = evidence_ops.list_evidence(store, args.task)
    write_output(output, evidence_report(rows).encode("utf-8"))
    with said_beside(output):
        if args.json:
            print_json({"output": str(output), "rows": len(rows)})
        else:
            print(printable(f"wrote {len(rows)} evidence row(s) to {output_of(args)}"))
    return 0


# Parser.


def _add_holder(parser: argparse.ArgumentParser, ttl: bool) -> None:
    parser.add_argument("task", metavar="TASK", help="task id")
    add_agent(parser, "the agent holding the lease")
    parser.add_argument(
        "--attempt", required=True, type=positive_int, help="the attempt the lease was granted for"
    )
    if ttl:
        parser.add_argument(
            "--ttl", type=number, metavar="SECONDS", help="also extend the lease to SECONDS from now (default: its expiry stays as it is)"
        )
    add_json(parser)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    setup = commands.add_parser(
        "setup", help="create or upgrade the runtime database", description="Create the runtime"
        " database with the canonical schema, or bring an existing one to the current schema."
        " Safe to run again."
    )
    add_json(setup)
    setup.set_defaults(handler=cmd_setup)

    task = commands.add_parser("task", help="add, claim and drive tasks").add_subparsers(
        dest="task_command", metavar="ACTION", required=True
    )
    add = task.add_parser("add", help="add a READY task and print its id")
    add.add_argument("--id", type=given, help="task id (default: generated)")
    add.add_argument(
        "--priority", type=whole_number(INT64_MIN, INT64_MAX), default=tasks.DEFAULT_PRIORITY,
        help="a whole number; lower is claimed first (default: %(default)s)",
    )
    add.add_argument("--payload", type=json_argument, metavar="JSON", help="task payload, a JSON value (default: {})")
    add.add_argument("--max-attempts", type=positive_int, metavar="N", help=f"claims before the task is DEAD ({default_note('tasks.max_attempts')})")
    add_json(add)
    add.set_defaults(handler=cmd_task_add)

    claim = task.add_parser(
        "claim", help="lease the next READY task", description="Lease the READY task with the lowest"
        " priority, then the oldest. Exits 3 when no task is READY (with --wait: none became READY"
        " within --timeout). Every later operation of the holder (start, verify, evidence add,"
        " renew, heartbeat) extends the lease."
    )
    add_agent(claim, "the claiming agent")
    claim.add_argument(
        "--wait", action="store_true",
        help="wait until a task is READY instead of exiting 3 (on PostgreSQL woken at once by the commit"
        " that makes it READY; on SQLite polled, at most a second apart)",
    )
    claim.add_argument("--timeout", type=number, metavar="SECONDS", help="with --wait, give up after this long (exit 3; default: wait until a task is ready)")
    claim.add_argument(
        "--ttl", type=number, metavar="SECONDS",
        help=f"lease length until the holder's next operation, which extends it to the default ({LEASE_TTL_NOTE})",
    )
    add_json(claim)
    claim.set_defaults(handler=cmd_task_claim)

    renew = task.add_parser("renew", help="extend a lease you hold (exit 4 if you do not)")
    _add_holder(renew, ttl=False)
    renew.add_argument("--ttl", type=number, metavar="SECONDS", help=f"new lease length from now; without it, a longer lease is kept ({LEASE_TTL_NOTE})")
    renew.set_defaults(handler=cmd_task_renew)

    heartbeat = task.add_parser(
        "heartbeat", help="renew every live lease you hold (or TASK's)",
        description="Extend every live lease the agent holds, or only TASK's, to the lease length"
        " from now (a lease that runs longer already is kept as long). An expired lease is not revived:"
        " each of yours found expired is named on stderr and given back, as its expiry gives it back, and the"
        " exit is 4 (the others are renewed all the same), so a loop of `work; maf task heartbeat` learns,"
        " once, that it lost its task.",
    )
    heartbeat.add_argument("task", metavar="TASK", nargs="?", help="only this task's lease")
    add_agent(heartbeat, "the agent holding the leases")
    heartbeat.add_argument("--ttl", type=number, metavar="SECONDS", help=f"new lease length from now; without it, a longer lease is kept ({LEASE_TTL_NOTE})")
    add_json(heartbeat)
    heartbeat.set_defaults(handler=cmd_task_heartbeat)

    run = task.add_parser(
        "run", help="run a command while keeping your lease on TASK alive",
        description="Run COMMAND, renewing the lease on TASK in the background, and exit with"
        " COMMAND's exit code. If the lease is lost while COMMAND runs (another agent took the"
        " task), COMMAND and the processes it started are stopped (SIGTERM, then SIGKILL after 5 s;"
        " those below it are found in /proc, on Linux) and maf exits 4; one that decides its task"
        " itself (commits or rolls it back, as pytest --maf-task does) runs on to its end. COMMAND"
        " gets MAF_AGENT_ID, MAF_TASK_ID and MAF_TASK_ATTEMPT in its environment.",
    )
    run.add_argument("task", metavar="TASK", help="a task you hold")
    add_agent(run, "the agent holding the lease")
    run.add_argument("--attempt", type=positive_int, help="the attempt you hold (default: the one your lease is for)")
    run.add_argument("--ttl", type=number, metavar="SECONDS", help=f"lease length kept, never shortening a longer lease ({LEASE_TTL_NOTE})")
    run.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="[OPTIONS] -- COMMAND ...",
        help="the command and its arguments, after `--`; the options above may also come before the `--`",
    )
    prints_no_result(run, "its output and exit code are COMMAND's")
    run.set_defaults(handler=cmd_task_run)

    for name, operation, summary in (
        ("start", tasks.start_task, "LEASED -> RUNNING"),
        ("verify", tasks.begin_verification, "RUNNING -> VERIFYING"),
    ):
        sub = task.add_parser(name, help=f"{summary} (exit 4 if you do not hold the lease)")
        _add_holder(sub, ttl=True)
        sub.set_defaults(handler=_moving_command(operation))

    release = task.add_parser(
        "release", help="give a LEASED or RUNNING task back (READY, or DEAD when out of attempts)"
    )
    _add_holder(release, ttl=False)
    release.set_defaults(handler=_moving_command(tasks.release_task))

    finish = task.add_parser(
        "finish", help="decide a VERIFYING task from its evidence", description="All evidence of"
        " the attempt PASS: COMMITTED -> DONE. Any FAIL, or none: ROLLBACK -> READY, or DEAD when"
        " attempts are used up."
    )
    _add_holder(finish, ttl=False)
    finish.set_defaults(handler=cmd_task_finish)

    cancel = task.add_parser("cancel", help="READY -> DEAD", description="Cancel a READY task: it becomes DEAD and is never claimed.")
    cancel.add_argument("task", metavar="TASK", help="a READY task's id")
    add_json(cancel)
    cancel.set_defaults(handler=cmd_task_cancel)

    listing = task.add_parser("list", help="list tasks in claim order")
    listing.add_argument("--state", type=given, help="only tasks in this state (default: every state)")
    listing.add_argument(
        "--all", action="store_true",
        help="also the tasks pytest-maf makes for itself (preflight runs, fixture and load-test tasks)",
    )
    add_limit(listing, "tasks, the first in claim order")
    add_json(listing)
    listing.set_defaults(handler=cmd_task_list)

    show = task.add_parser("show", help="a task with its lease, events and evidence")
    show.add_argument("task", metavar="TASK", help="task id")
    add_json(show)
    show.set_defaults(handler=cmd_task_show)

    leases = commands.add_parser("leases", help="lease maintenance").add_subparsers(
        dest="leases_command", metavar="ACTION", required=True
    )
    reclaim = leases.add_parser("reclaim", help="reclaim every expired lease")
    add_json(reclaim)
    reclaim.set_defaults(handler=cmd_leases_reclaim)

    evidence = commands.add_parser("evidence", help="verification evidence").add_subparsers(
        dest="evidence_command", metavar="ACTION", required=True
    )
    evidence_add = evidence.add_parser(
        "add", help="record a verifier's PASS or FAIL for a task attempt"
    )
    evidence_add.add_argument("task", metavar="TASK")
    evidence_add.add_argument("--attempt", required=True, type=positive_int, help="the attempt the evidence is for")
    evidence_add.add_argument("--verifier", required=True, help="the verifier's name, once per attempt")
    evidence_add.add_argument("--result", required=True, type=str.upper, choices=("PASS", "FAIL"), help="the verdict")
    evidence_add.add_argument("--details", type=json_argument, metavar="JSON", help="a JSON object")
    add_agent(evidence_add, "the agent holding the task's lease")
    add_json(evidence_add)
    evidence_add.set_defaults(handler=cmd_evidence_add)

    evidence_list = evidence.add_parser("list", help="list recorded evidence, newest first")
    evidence_list.add_argument("--task", type=given, metavar="TASK", help="only this task's (default: every task's)")
    add_limit(evidence_list, "rows, the newest")
    add_json(evidence_list)
    evidence_list.set_defaults(handler=cmd_evidence_list)

    export = evidence.add_parser(
        "export", help="write stored evidence as a JUnit XML report",
        description="One test suite per task attempt, one test case per verifier; for CI jobs"
        " that publish evidence gathered by several runs.",
    )
    add_output(export, "the JUnit XML report to write", required=True, hidden_aliases=("--junit",))
    export.add_argument("--task", type=given, metavar="TASK", help="only this task's evidence (default: every task's)")
    add_json(export)
    export.set_defaults(handler=cmd_evidence_export)
