"""`maf init`, `maf config ...` and `maf health-check`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_maf import config as config_module
from pytest_maf import health, mail
from pytest_maf.cli.common import add_json, add_output, given, keep_runtime_files_out_of_git, print_json, said_beside
from pytest_maf.config import ConfigError, Settings
from pytest_maf.config_files import DOTENV_NAME
from pytest_maf.errors import UsageError
from pytest_maf.files import checked_text_output, folder_outside, json_file_bytes, store_files, write_output, write_text_atomic
from pytest_maf.terminal import printable

if TYPE_CHECKING:
    from pytest_maf.mcp_clients import ClientFilePlan


def _base() -> Path:
    cwd = Path.cwd()
    return config_module.find_repository_root(cwd) or cwd


def _unread_worktree_config() -> list[str]:
    """A note when the current directory is in a linked worktree whose own maf-config/ is not the one read."""
    from pytest_maf.repository import find_work_tree

    here, base = find_work_tree(Path.cwd()), _base()
    if here is None or os.path.realpath(here) == os.path.realpath(base):
        return []
    own = here / config_module.CONFIG_DIRECTORY
    if not own.is_dir():
        return []
    return [f"{own} is not read: every worktree of this repository reads {base / config_module.CONFIG_DIRECTORY}"
            " (the main worktree's), so a change here counts once it is there"]


def starter_config() -> str:
    """Every key with its default, each under a comment saying what it does."""
    lines = [
        "# pytest-maf configuration. Layers, lowest first: these defaults, .env, default.yaml,",
        "# <env>.yaml and environments/<env>.yaml (MAF_ENV, else NODE_ENV), local.yaml,",
        "# --config FILE, MAF_* environment variables, command-line flags.",
    ]
    for section, keys in config_module.DEFAULTS.items():
        lines.append("")
        lines.append(f"{section}:")
        for key, value in keys.items():
            lines.append(f"  # {config_module.DESCRIPTIONS[f'{section}.{key}']}")
            lines.append(f"  {key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    starter = _base() / config_module.CONFIG_DIRECTORY / "default.yaml"
    mcp_plans = _mcp_plans(args.mcp, settings) if args.mcp is not None else []
    for folder in (settings.mail_root, settings.mail_root / "messages", settings.mail_root / "outbox", starter.parent):
        if folder.exists() and not folder.is_dir():  # checked first: nothing is written on refusal
            raise UsageError(f"{folder} is a file where maf init lays out a folder; move it away and run maf init again")
    existing = [starter.with_suffix(suffix) for suffix in config_module.CONFIG_SUFFIXES if starter.with_suffix(suffix).exists()]
    outside = None if existing else folder_outside(starter, _base())
    if outside is not None:
        raise UsageError(
            f"{starter.parent} is a symbolic link out of the repository, to {outside}: maf init writes"
            f" {starter.name} only inside it; nothing was written"
        )
    created = mail.initialise(settings.mail_root, settings.escalation_targets)
    if not existing:
        write_text_atomic(starter, starter_config())
        created.append(starter)
    for plan in mcp_plans:
        plan.write()
    excluded, excluded_json = keep_runtime_files_out_of_git(settings)
    if args.json:
        print_json({"created": [str(path) for path in created], "kept": [str(path) for path in existing],
                    "excluded": excluded_json, "mcp": [_mcp_json(plan) for plan in mcp_plans]})
        return 0
    for path in created:
        print(f"created {path}")
    for path in existing:
        print(f"kept {path} (never overwritten)")
    if not created:
        print(f"found {settings.mail_root} laid out; nothing to do")
    if excluded is not None:
        print(excluded.describe())
    _print_mcp(mcp_plans)
    return 0


def _mcp_plans(clients: str, settings: Settings) -> list[ClientFilePlan]:
    """Each MCP client file's plan, every one checked before anything at all is written."""
    from pytest_maf import mcp_clients

    names = mcp_clients.client_names(clients, dict(settings.mcp_clients))
    return mcp_clients.plan_client_files(settings.repo_root or Path.cwd(), settings.mcp_clients, names)


def _mcp_json(plan: ClientFilePlan) -> dict[str, Any]:
    return {"client": plan.client, "path": str(plan.path), "action": plan.action, "agent_id": plan.agent_id}


def _print_mcp(plans: list[ClientFilePlan]) -> None:
    for plan in plans:
        if plan.action == "kept":
            print(f"kept the pytest-maf entry of {plan.path} (MAF_AGENT_ID={plan.agent_id or 'not set'})")
        else:
            verb = "created" if plan.action == "created" else "added pytest-maf to"
            print(f"{verb} {plan.path}: runs `maf mcp` as agent {plan.agent_id} (MAF_AGENT_ID)")
    if any(plan.action != "kept" for plan in plans):
        print(
            "change MAF_AGENT_ID in each new entry to the id of the agent that client runs: the server"
            " acts as that agent only, and two agents sharing an id are one agent to pytest-maf"
        )


def _layers(args: argparse.Namespace) -> list[config_module.Layer]:
    config_file = Path(args.config) if getattr(args, "config", None) else None
    flags = config_module.store_flags(args.db)
    return config_module.config_layers(_base(), os.environ, args.env, config_file, flags)


def cmd_config_validate(args: argparse.Namespace, settings: None) -> int:
    sources: dict[str, str] = {}
    try:
        layers = _layers(args)
        _, sources, problems = config_module.resolve_checked(layers, _base(), Path.cwd())
    except ConfigError as error:
        problems, layers = error.problems, []
    files = [layer.source for layer in layers if layer.source not in ("defaults", "environment", "command line")]
    dotenv = _base() / DOTENV_NAME
    unread = [] if problems else config_module.unread_dotenv_variables(_base())
    notes = _unread_worktree_config() + [f"{dotenv}: {name} is no setting, so .env does not set it (a typo? variables such as MAF_AGENT_ID"
             " are read from the real environment only)" for name in unread]
    if not problems:
        notes += [f"{dotenv}: {name} does not set {key}: {source} sets it, and wins over .env"
                  for name, key, source in config_module.shadowed_dotenv_variables(_base(), sources)]
        notes += [f"{dotenv}: {name} is empty, so it does not set {key}; give it a value or remove the line"
                  for name, key in config_module.empty_dotenv_variables(_base())]
    if args.json:
        print_json({"valid": not problems, "problems": problems, "files": files, "notes": notes})
    if problems:
        if not args.json:
            for problem in problems:
                print(problem)
            for note in notes:
                print(printable(f"note: {note}"))
        print(f"maf: {len(problems)} configuration problem(s)", file=sys.stderr)
        return 2
    if args.json:
        return 0
    variables = sorted(name for name in config_module.ENVIRONMENT_VARIABLES if os.environ.get(name, "").strip())
    read = [*([", ".join(files)] if files else []), *([f"environment variables {', '.join(variables)}"] if variables else []),
            *(["--db"] if args.db is not None else [])]
    print(printable(f"configuration is valid ({'; '.join(read) if read else 'built-in defaults only'})"))
    for note in notes:
        print(printable(f"note: {note}"))
    return 0


def _report(args: argparse.Namespace) -> dict[str, Any]:
    layers = _layers(args)
    values, sources, problems = config_module.resolve_checked(layers, _base(), Path.cwd())
    return {
        "environment": config_module.config_environment(_base(), os.environ, args.env),
        "layers": [layer.source for layer in layers],
        "values": {
            key: {"value": config_module.shown_value(key, values[key]), "source": sources[key]} for key in sorted(values)
        },
        "problems": problems,
    }


def cmd_config_show(args: argparse.Namespace, settings: None) -> int:
    report = _report(args)
    if args.json:
        print_json(report)
    else:
        width = max(len(key) for key in report["values"])
        lines = [f"{key:<{width}}  {json.dumps(entry['value'])}  ({entry['source']})" for key, entry in report["values"].items()]
        print("\n".join([*lines, *(f"problem: {problem}" for problem in report["problems"])]))  # whole, or not at all
    return 2 if report["problems"] else 0


def _checked_output(text: str, db: str | None, what: str, example: str) -> Path:
    """``--output`` checked before anything runs: never the store nor a configuration file, whatever they say.
    ``example`` is a file name at the repository root that a refusal suggests instead."""
    try:
        db_path = config_module.load_settings(db_path=db).db_path
    except ConfigError:  # the report is about that; protect the default store
        db_path = _base() / config_module.DB_RELATIVE_PATH
    directory = _base() / config_module.CONFIG_DIRECTORY
    real = os.path.realpath(text) if text.strip() and "\0" not in text else None
    # a new file there can be a layer of its own (local.json beside local.yaml breaks every command)
    refusal = UsageError(
        f"{text} is {'' if real == os.path.realpath(directory) else 'in '}{directory}, which holds the configuration;"
        f" choose a file outside it for {what}, such as {os.path.relpath(_base() / example)}"
    )
    inside = real is not None and Path(real).is_relative_to(os.path.realpath(directory))
    if inside and (text.endswith(("/", os.sep)) or Path(text).is_dir()):  # not answered with a file in it to try
        raise refusal
    layers = [path for path in directory.rglob("*") if path.is_file()] if directory.is_dir() else []
    output = checked_text_output(text, [*store_files(db_path), *layers, _base() / DOTENV_NAME], what)
    if inside:
        raise refusal
    return output


def cmd_config_report(args: argparse.Namespace, settings: None) -> int:
    output = _checked_output(args.output, args.db, "the report", "config-report.json")
    report = _report(args)
    write_output(output, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    with said_beside(output):
        if args.json:
            print_json({"output": str(output), "keys": len(report["values"]), "problems": report["problems"]})
        else:
            print(printable(f"wrote {args.output} ({len(report['values'])} keys, {len(report['problems'])} problem(s))"))
    return 2 if report["problems"] else 0


def _side(key: str, value: Any, source: str | None) -> str:
    return "(not set)" if source is None else f"{json.dumps(config_module.shown_value(key, value))} ({source})"


def cmd_config_diff(args: argparse.Namespace, settings: None) -> int:
    from pytest_maf import config_snapshot

    base = _base()
    if args.snapshot is not None and args.revision is not None:
        raise UsageError("give a git revision or --snapshot FILE, not both")
    if args.snapshot is not None:
        snapshot = config_snapshot.read_snapshot(Path(args.snapshot), base)
        reader = config_snapshot.snapshot_layers(base, snapshot, Path(args.snapshot))
        against = f"snapshot {args.snapshot}"
    else:
        against = "HEAD" if args.revision is None else args.revision  # '' from an unset variable: refused, not HEAD
        reader = config_snapshot.git_revision_layers(base, against)
    config_file = Path(args.config) if args.config else None
    before = config_module.config_layers(
        base, os.environ, args.env, config_file, config_module.store_flags(args.db), read_layer=reader
    )
    changes = config_snapshot.diff(before, _layers(args))
    notes = _unread_worktree_config()
    if args.json:
        print_json({"against": against, "changes": [change.to_json() for change in changes], "notes": notes})
        return 0
    for note in notes:
        print(printable(f"note: {note}"), file=sys.stderr)
    for change in changes:
        before_side = _side(change.key, change.before, change.before_source)
        print(printable(f"{change.key}: {before_side} -> {_side(change.key, change.now, change.now_source)}"))
    print(printable(f"{len(changes)} key(s) differ from {against}" if changes else f"no difference from {against}"))
    return 0


def cmd_config_snapshot(args: argparse.Namespace, settings: None) -> int:
    from pytest_maf import config_snapshot

    output = None if args.output is None else _checked_output(args.output, args.db, "the snapshot", "config-snapshot.json")
    snapshot = config_snapshot.take_snapshot(_base())
    if output is None:
        print_json(snapshot.to_json())
        return 0
    write_output(output, json_file_bytes(snapshot.to_json()))
    with said_beside(output):
        if args.json:
            print_json({"output": str(output), "file": snapshot.name, "sha256": snapshot.checksum})
            return 0
        saved = (f"{config_module.CONFIG_DIRECTORY}/{snapshot.name} ({len((snapshot.content or '').encode())} bytes)"
                 if snapshot.name else f"the absence of {config_module.CONFIG_DIRECTORY}/local.*")
        print(printable(f"saved {saved} to {args.output}; bring it back with `maf config restore {args.output}`"))
    return 0


def cmd_config_restore(args: argparse.Namespace, settings: None) -> int:
    from pytest_maf import config_snapshot

    try:  # checked whole before anything is written
        snapshot = config_snapshot.read_snapshot(Path(args.snapshot), _base())
    except ConfigError:
        raise
    except UsageError as error:
        raise UsageError(f"{error}; nothing was restored") from None
    outcome = config_snapshot.restore_snapshot(_base(), snapshot)
    if args.json:
        print_json({"snapshot": args.snapshot, "written": None if outcome.written is None else str(outcome.written),
                    "removed": [str(path) for path in outcome.removed], "unchanged": outcome.unchanged})
        return 0
    if outcome.unchanged:
        print(printable(f"the local layer is already as in {args.snapshot}; nothing written"))
    if outcome.written is not None:
        print(printable(f"restored {outcome.written} from {args.snapshot} (taken {snapshot.created_at or 'at an unknown time'})"))
    for path in outcome.removed:
        print(printable(f"removed {path} (not in the snapshot)"))
    return 0


def cmd_health_check(args: argparse.Namespace, settings: None) -> int:
    output = None if args.output is None else _checked_output(args.output, args.db, "the report", "health.json")
    items: list[health.HealthItem] = []
    try:
        resolved = config_module.load_settings(db_path=args.db)
        items.append(health.HealthItem("config.valid", health.CRITICAL, health.passed("configuration is valid")))
    except ConfigError as error:
        resolved = None
        items.append(health.HealthItem(
            "config.valid", health.CRITICAL,
            health.failed("; ".join(error.problems), "run `maf config validate` and fix each problem"),
        ))
    if resolved is not None and not args.config_only:
        items += health.database_health(resolved)
        if not args.database_only:
            items += health.environment_health(resolved)
    code = health.health_exit_code(items)
    report = {
        "status": {0: "healthy", 1: "critical", 2: "warning"}[code],
        "checks": [
            {"name": i.name, "severity": i.severity, "ok": i.result.ok, "message": i.result.message,
             "hint": i.result.hint, "details": i.result.details}
            for i in items
        ],
    }
    if output is not None:
        write_output(output, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    with said_beside(output) if output is not None else contextlib.nullcontext():
        if args.json:
            print_json(report)
        else:
            for item in items:
                mark = "ok  " if item.result.ok else ("FAIL" if item.severity == health.CRITICAL else "WARN")
                hint = f" -> {item.result.hint}" if not item.result.ok and item.result.hint else ""
                print(printable(f"{mark}  {item.name}: {item.result.message}{hint}"))
            print(f"status: {report['status']}")
    return code


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = commands.add_parser(
        "init", help="lay out the agent-mail root and write a starter maf-config/default.yaml",
        description="Creates messages/ and outbox/ under the mail root, an inbox per escalation"
        " target, and maf-config/default.yaml with every key present and commented. Safe to run"
        " again; never overwrites a file. Keeps the mail root and the database's directory out of"
        " git through the repository's info/exclude (never a tracked file).",
    )
    init.add_argument(
        "--mcp", metavar="CLIENTS",
        help="also add a pytest-maf server (`maf mcp`) to these MCP clients' files, comma-separated:"
        " claude (.mcp.json), cursor (.cursor/mcp.json), codex (.codex/config.toml), gemini"
        " (.gemini/settings.json); merged into an existing file, never replacing its other servers;"
        " a file that does not parse is refused (exit 2) and nothing is written",
    )
    add_json(init)
    init.set_defaults(handler=cmd_init)

    config = commands.add_parser(
        "config", help="validate, show, diff, snapshot and restore the layered configuration"
    ).add_subparsers(
        dest="config_command", metavar="ACTION", required=True
    )

    def layered(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = config.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--env", type=given, help="environment name (default: MAF_ENV, else NODE_ENV)")
        sub.add_argument("--config", type=given, metavar="FILE", help="one more file, above local.yaml")
        sub.set_defaults(needs_settings=False)
        return sub

    validate = layered("validate", "check every layer; print each problem as file: key.path: message (exit 2)")
    add_json(validate)
    validate.set_defaults(handler=cmd_config_validate)
    show = layered("show", "the resolved values and where each came from")
    add_json(show)
    show.set_defaults(handler=cmd_config_show)
    report = layered("report", "write the resolved values, their sources and any problems as JSON")
    add_output(report, "the JSON file to write", required=True)
    add_json(report)
    report.set_defaults(handler=cmd_config_report)
    diff = layered(
        "diff", "how the effective configuration differs from maf-config/ at a git revision (default: HEAD),"
        " or from a snapshot's local layer: each key that differs, its value and source on each side",
    )
    diff.add_argument("revision", nargs="?", metavar="REF", help="the git revision to compare with (default: HEAD)")
    diff.add_argument("--snapshot", type=given, metavar="FILE", help="compare with the local layer saved in FILE instead")
    add_json(diff)
    diff.set_defaults(handler=cmd_config_diff)
    snapshot_help = (
        "save the local (untracked) layer, maf-config/local.*, with a checksum: to FILE, else as JSON on stdout"
    )
    snapshot = config.add_parser("snapshot", help=snapshot_help, description=snapshot_help)
    add_output(snapshot, "write the snapshot to FILE", default_note="standard output")
    add_json(snapshot)
    snapshot.set_defaults(handler=cmd_config_snapshot, needs_settings=False)
    restore_help = (
        "bring the local layer back byte for byte from a snapshot, checked first (checksum and configuration):"
        " a damaged or edited snapshot is refused (exit 2) and nothing is written"
    )
    restore = config.add_parser("restore", help=restore_help, description=restore_help)
    restore.add_argument("snapshot", metavar="SNAPSHOT", help="a file written by `maf config snapshot`")
    add_json(restore)
    restore.set_defaults(handler=cmd_config_restore, needs_settings=False)

    check = commands.add_parser(
        "health-check", help="is the system healthy? exit 0 healthy, 1 critical, 2 warnings",
        description="Database reachable, schema and integrity, expired leases not yet reclaimed,"
        " a timed probe query; configuration valid; mail root writable; escalation targets"
        " reachable; disk space.",
    )
    scope = check.add_mutually_exclusive_group()
    scope.add_argument("--comprehensive", action="store_true", help="every check (the default)")
    scope.add_argument("--database-only", action="store_true", help="only the database checks (and config.valid: the configuration names the database)")
    scope.add_argument("--config-only", action="store_true", help="only the configuration checks")
    add_output(check, "also write the report as JSON to FILE", default_note="not written")
    add_json(check)
    check.set_defaults(handler=cmd_health_check, needs_settings=False)
