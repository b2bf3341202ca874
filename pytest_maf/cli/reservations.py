"""`maf reservation ...` and `maf install-hooks` (`maf guard` is :mod:`pytest_maf.cli.guard`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pytest_maf import guard
from pytest_maf import reservations as reservation_ops
from pytest_maf.cli.common import (
    add_agent,
    add_json,
    given,
    number,
    open_configured_store,
    print_json,
    print_table,
    resolving_agent,
    when,
)
from pytest_maf.config import Settings, default_note
from pytest_maf.errors import UsageError
from pytest_maf.gitignore_lines import drop_trailing_spaces
from pytest_maf.paths import WorkingDirectory
from pytest_maf.patterns import GLOB_CHARACTERS
from pytest_maf.records import Reservation
from pytest_maf.reservations import ReservationConflictError
from pytest_maf.terminal import brief, printable


def _as_json(reservation: Reservation) -> dict[str, object]:
    from dataclasses import asdict  # kept off the guard's path, which imports this module

    return asdict(reservation)


def _describe(reservation: Reservation) -> str:
    return printable(guard.describe_holder(reservation))


def _repo_relative() -> WorkingDirectory:
    """The current directory, to read paths and patterns relative to it as git does."""
    return WorkingDirectory.of(Path.cwd())


def cmd_acquire(args: argparse.Namespace, settings: Settings) -> int:
    ttl_ms = settings.reservation_ttl_ms(args.ttl)
    here = _repo_relative()
    patterns = [here.pattern(pattern, through_links=False) for pattern in args.patterns]
    if args.timeout is not None and not args.wait:
        raise UsageError("--timeout says how long --wait waits: give --wait too")
    with open_configured_store(settings) as store:
        try:
            if args.wait:
                granted = reservation_ops.acquire_waiting(
                    store, patterns, args.agent, ttl_ms, timeout_s=args.timeout, exclusive=not args.shared,
                    reason=args.reason, task_id=args.task,
                )
            else:
                granted = reservation_ops.acquire(
                    store, patterns, args.agent, ttl_ms, exclusive=not args.shared, reason=args.reason,
                    task_id=args.task,
                )
        except ReservationConflictError as error:
            if args.json:
                print_json({
                    "error": str(error), "exit_code": error.exit_code,  # a failure, as every command's --json says it
                    "granted": [], "conflicts": [c.as_json() for c in error.conflicts],
                })
            print(f"maf: {error}", file=sys.stderr)
            for conflict in error.conflicts:
                print(
                    f"  {conflict.requested}: {_describe(conflict.holder)}"
                    f" (both match {conflict.witness})",
                    file=sys.stderr,
                )
                if hint := conflict.hint():
                    print(f"    hint: {printable(hint)}", file=sys.stderr)
            return error.exit_code
    if args.json:
        print_json({"granted": [_as_json(r) for r in granted], "conflicts": []})
    else:
        for reservation in granted:
            mode = "exclusive" if reservation.exclusive else "shared"
            print(f"reserved {reservation.pattern} ({mode}) for {reservation.agent_id} until {when(reservation.expires_at)}")
    return 0


def cmd_renew(args: argparse.Namespace, settings: Settings) -> int:
    ttl_ms = settings.reservation_ttl_ms(args.ttl)
    here = _repo_relative()
    patterns = [here.pattern(pattern) for pattern in args.patterns]
    with open_configured_store(settings) as store:
        renewed = reservation_ops.renew(store, patterns, args.agent, ttl_ms)
    if args.json:
        print_json([_as_json(r) for r in renewed])
        return 0
    for reservation in renewed:
        print(f"renewed {reservation.pattern} until {when(reservation.expires_at)}")
    return 0


def _untold(released: list[Reservation]) -> list[Reservation]:
    """Force-released reservations whose holder was not told; a warning on stderr for each."""
    if not isinstance(released, reservation_ops.ForceReleased):
        return []
    for warning in released.undelivered:
        print(f"maf: warning: {warning}", file=sys.stderr)
    return [reservation for reservation in released if not released.was_told(reservation)]


def _release_target(here: WorkingDirectory, text: str) -> reservation_ops.ReleaseTarget:
    """A force-release's name: its pattern, and when it has no glob character, the path it names."""
    text = drop_trailing_spaces(text)  # 'src/a.py ' names src/a.py, as the pattern does
    pattern = here.pattern(text)
    if GLOB_CHARACTERS.intersection(text):
        return reservation_ops.ReleaseTarget(pattern)
    return reservation_ops.ReleaseTarget(pattern, here.place(text))


def cmd_release(args: argparse.Namespace, settings: Settings) -> int:
    released: list[Reservation]
    here = _repo_relative()
    if args.force:
        if not args.reason:
            raise UsageError("--force needs --reason: the holders are told why")
        targets = [_release_target(here, text) for text in args.patterns]  # refused before the store is opened
        with open_configured_store(settings) as store:
            released = reservation_ops.force_release(store, targets, args.agent, args.reason, settings.mail_root)
    else:
        patterns = [here.pattern(pattern) for pattern in args.patterns]
        with open_configured_store(settings) as store:
            released = reservation_ops.release(store, patterns, args.agent)
    untold = _untold(released)
    if args.json:
        print_json([_as_json(r) for r in released])
        return 0
    for reservation in released:
        told = f" ({reservation.agent_id} was told by agent-mail)" if args.force and reservation not in untold else ""
        print(f"released {printable(reservation.pattern)} held by {printable(reservation.agent_id)}{told}")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_configured_store(settings) as store:
        found = reservation_ops.list_reservations(store, args.agent, include_expired=args.all)
    if args.json:
        print_json([_as_json(r) for r in found])
        return 0
    if not found:
        print("no reservations")
        return 0
    print_table(
        ["PATTERN", "AGENT", "MODE", "EXPIRES", "TASK", "REASON"],
        [
            [r.pattern, r.agent_id, "exclusive" if r.exclusive else "shared", when(r.expires_at), r.task_id or "",
             brief(r.reason)]  # one line however long, as in maf status; --json has it whole
            for r in found
        ],
    )
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    here = _repo_relative()
    paths = [here.place(path, through_links=False) for path in args.paths]
    with open_configured_store(settings) as store:
        blocks = reservation_ops.check_paths(store, paths, args.agent)
    if args.json:
        print_json({"blocked": [b.as_json() for b in blocks]})
    else:
        blocked_paths = {b.path for b in blocks}
        for block in blocks:
            beneath = f" (it covers {printable(block.example)})" if block.example else ""
            print(f"{printable(block.path)}: blocked, {_describe(block.holder)}{beneath}")
        for path in paths:
            if path not in blocked_paths:
                print(f"{printable(path)}: free")
    return 1 if blocks else 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    path = _repo_relative().place(args.file, through_links=False)
    with open_configured_store(settings) as store:
        covering = reservation_ops.reservations_covering(store, path)
    if args.json:
        print_json({"path": path, "reservations": [_as_json(r) for r in covering]})
    elif not covering:
        print(f"{printable(path)}: no live reservation")
    else:
        for reservation in covering:
            print(f"{printable(path)}: {_describe(reservation)}")
    return 0


def cmd_install_hooks(args: argparse.Namespace, settings: Settings) -> int:
    from pytest_maf import git_hooks  # not imported by the guard, which every commit runs

    if settings.repo_root is None:
        raise UsageError("not inside a git repository")
    cwd = Path.cwd()
    store = None
    if args.db is not None and not args.uninstall:  # the hooks guard the store named here, not the one found when committing
        store = (
            git_hooks.GuardedStore(settings.database_url, settings.database_schema) if settings.database_url is not None
            else git_hooks.GuardedStore(str(settings.db_path.absolute()))
        )
        if settings.database_url is None and not settings.db_path.is_file():  # else every commit would fail
            raise UsageError(
                f"no runtime database at {settings.db_path}: run `maf setup --db {args.db}` first, or give the"
                " store's path; no hook was written"
            )
    changes = git_hooks.uninstall(cwd) if args.uninstall else git_hooks.install(cwd, store=store)
    if args.json:
        print_json([{"hook": change.hook, "action": change.action, "path": str(change.path)} for change in changes])
        return 0
    for change in changes:
        print(f"{change.hook}: {change.action} ({change.path})")
    scope = None if args.uninstall else git_hooks.hooks_path_scope(cwd)
    if scope in ("global", "system"):
        print(
            f"note: core.hooksPath is set in your {scope} git configuration: these hooks run for every repository"
            f" {'of this user' if scope == 'global' else 'on this machine'}; where no store is set up, the guard"
            " passes quietly", file=sys.stderr,
        )
    if store is not None:
        print(f"the hooks guard commits and pushes with the store {settings.store_shown}")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reservation = commands.add_parser(
        "reservation", help="reserve files for an agent", description="Reserve paths or"
        " gitignore-style globs (*, **, ?, [...]), given relative to the current directory as in"
        " git: a pattern reads as if written in a .gitignore there. Without a '/' (but a trailing"
        " one) it matches at any depth below; with one it is anchored there; a leading '/' anchors"
        " at the repository root (an absolute path inside the repository is that path). A pattern"
        " covers what it matches and everything beneath: 'docs' covers docs/api.md.",
    ).add_subparsers(dest="reservation_command", metavar="ACTION", required=True)

    def with_patterns(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = reservation.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("patterns", nargs="+", metavar="PATTERN")
        add_agent(sub, "the agent acting")
        add_json(sub)
        return sub

    acquire = with_patterns("acquire", "reserve patterns, all or nothing (exit 1 on conflict)")
    acquire.add_argument("--ttl", type=number, metavar="MINUTES", help=f"reservation length ({default_note('reservations.default_ttl_minutes', 'reservations.max_ttl_minutes')})")
    acquire.add_argument("--shared", action="store_true", help="shared: conflicts only with others' exclusive reservations")
    acquire.add_argument("--reason", default="", help="why, shown to anyone blocked (at most 2,000 characters; default: none)")
    acquire.add_argument(
        "--task", metavar="TASK",
        help="tie the reservations to TASK, whose lease you hold: they last exactly as long as its lease (--ttl"
        " does not apply; each extension of the lease extends them) and are released when it ends (finish,"
        " release or expiry)",
    )
    acquire.add_argument(
        "--wait", action="store_true",
        help="while the request conflicts, wait until it can be granted instead of exiting 1 (looks again"
        " after 0.05 s, the pause doubling up to 1 s)",
    )
    acquire.add_argument(
        "--timeout", type=number, metavar="SECONDS", help="with --wait, give up after this long (exit 1, with the conflicts; default: wait until granted)"
    )
    acquire.set_defaults(handler=resolving_agent(cmd_acquire))

    renew = with_patterns("renew", "extend reservations you hold (exit 4 if another agent holds them)")
    renew.add_argument(
        "--ttl", type=number, metavar="MINUTES",
        help=f"new reservation length from now ({default_note('reservations.default_ttl_minutes', 'reservations.max_ttl_minutes')})",
    )
    renew.set_defaults(handler=resolving_agent(cmd_renew))

    release = with_patterns("release", "release reservations you hold; --force releases anyone's")
    release.description = (
        "Release reservations you hold, by their patterns. With --force and --reason, release whoever holds"
        " them: a PATTERN releases its holders, and a file or folder (no glob character) also releases every"
        " reservation that covers it (src/** and src/app.py for src/app.py; for a folder, every one over or inside"
        " it: src/, src/** and src/app.py for src), naming each; recorded, and each"
        " holder is told by agent-mail. Nothing held: exit 2, nothing released."
    )
    release.add_argument("--force", action="store_true", help="release whoever holds it, or covers the file; recorded, and each holder is told by agent-mail")
    release.add_argument("--reason", help="required with --force, sent to each holder (at most 2,000 characters)")
    release.set_defaults(handler=resolving_agent(cmd_release))

    listing = reservation.add_parser("list", help="live reservations")
    listing.add_argument("--agent", type=given, metavar="ID", help="only this agent's (default: every agent's)")
    listing.add_argument("--all", action="store_true", help="include expired ones not yet cleaned up")
    add_json(listing)
    listing.set_defaults(handler=cmd_list)

    check = reservation.add_parser(
        "check", help="exit 1 if any path is under another agent's exclusive reservation (a folder: any"
        " reservation over a path beneath it)",
    )
    check.add_argument("paths", nargs="+", metavar="PATH")
    add_agent(check, "the asking agent (its own reservations never block it)")
    add_json(check)
    check.set_defaults(handler=resolving_agent(cmd_check, required=False))

    status = reservation.add_parser("status", help="every reservation covering a file, or a path beneath a folder")
    status.add_argument("--file", required=True, metavar="PATH", help="the file or folder, relative to the current directory")
    add_json(status)
    status.set_defaults(handler=cmd_status)


def register_install_hooks(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    install = commands.add_parser(
        "install-hooks", help="install git pre-commit and pre-push hooks running the guard",
        description="For repositories without the pre-commit framework. Honours core.hooksPath"
        " and worktrees; an existing hook is kept and run first; --uninstall restores it. With"
        " --db, the hooks guard that store (a URL without its password) rather than the one found"
        " when committing.",
    )
    install.add_argument("--uninstall", action="store_true", help="remove the hooks, restoring any kept one")
    add_json(install)
    install.set_defaults(handler=cmd_install_hooks)
