"""`maf status` (who holds what, on one screen) and `maf history` (the audit trail).

Both only read the store. On a terminal `maf status` is laid out with colour
and `--watch` redraws it in place on the terminal's alternate screen; piped,
it is plain text (and `--watch` prints one snapshot after another). Ctrl-C
ends a watch with exit 0: it is how a watch is meant to end.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator, NoReturn, Sequence, TextIO

from pytest_maf.cli.common import (
    add_json, add_limit, duration, given, number, open_configured_store, print_json, table_lines, when,
)
from pytest_maf.config import Settings
from pytest_maf.errors import MafError, UsageError
from pytest_maf.terminal import brief, on_a_terminal, printable, printable_json

if TYPE_CHECKING:
    from pytest_maf.history import HistoryEntry
    from pytest_maf.status import StatusSnapshot
    from pytest_maf.store import Store

DEFAULT_WATCH_S = 2.0
DEFAULT_HISTORY_LIMIT = 100  # pytest_maf.history.DEFAULT_LIMIT, not imported here: that module is heavier
MIN_WATCH_S, MAX_WATCH_S = 0.1, 3600.0  # watch(1)'s floor: faster only re-reads the store in a busy loop
# The terminal's alternate screen and cursor: entered once, each redraw from the top left, left on exit.
ENTER_SCREEN, LEAVE_SCREEN = "\x1b[?1049h\x1b[?25l", "\x1b[?25h\x1b[?1049l"
HOME, CLEAR_LINE_END, CLEAR_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"
PREFLIGHT_COLOURS = {"COMMITTED": "green", "DONE": "green", "ROLLBACK": "red", "DEAD": "red"}


class Paint:
    """ANSI colour for a terminal (unless NO_COLOR is set); plain text otherwise."""

    CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, style: str, text: str) -> str:
        return f"\x1b[{self.CODES[style]}m{text}\x1b[0m" if self.enabled and text else text


def wants_colour(stream: TextIO) -> bool:
    """Colour only for a terminal, and not when NO_COLOR is set (to anything but empty) or TERM is dumb."""
    return on_a_terminal(stream) and not os.environ.get("NO_COLOR")


# maf status


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    interval = _watch_interval(args.watch)
    with open_configured_store(settings, deliver_queued_mail=False) as store:  # a view: it writes nothing
        if interval is None:
            snapshot = _snapshot(store, settings)
            if args.json:
                print_json(snapshot.to_json())
            else:
                print("\n".join(render_status(snapshot, Paint(wants_colour(sys.stdout)))))
            return 0
        return watch(store, settings, interval, json_lines=args.json, stream=sys.stdout)


def _watch_interval(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and MIN_WATCH_S <= value <= MAX_WATCH_S):
        raise UsageError(
            f"--watch takes seconds between redraws, at least {MIN_WATCH_S:g} and at most {MAX_WATCH_S:g}; got {value:g}"
        )
    return value


def _snapshot(store: Store, settings: Settings) -> StatusSnapshot:
    from pytest_maf.status import status_snapshot

    return status_snapshot(store, settings.mail_root)


def watch(store: Store, settings: Settings, interval: float, *, json_lines: bool, stream: TextIO) -> int:
    """Redraw the status every ``interval`` seconds until Ctrl-C (exit 0). On a terminal: in place, on
    the alternate screen, cut to its height; piped: each snapshot after the last (or one JSON per line)."""
    on_screen = on_a_terminal(stream) and not json_lines  # TERM=dumb cannot move the cursor: it gets the piped form
    paint = Paint(wants_colour(stream))
    if on_screen:
        stream.write(ENTER_SCREEN)
    try:
        with _ended_through_finally() if on_screen else contextlib.nullcontext():
            return _redraw(store, settings, interval, json_lines, stream, on_screen, paint)
    except KeyboardInterrupt:  # Ctrl-C is how a watch ends
        return 0
    finally:
        if on_screen:
            stream.write(LEAVE_SCREEN)
            stream.flush()


@contextlib.contextmanager
def _ended_through_finally() -> Iterator[None]:
    """While the screen is taken: SIGTERM and SIGHUP end the watch as an exception (exit 128 + the
    signal's number), so the terminal is given back before the process ends."""

    def stop(number: int, frame: object) -> None:
        raise SystemExit(128 + number)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
        for name in ("SIGTERM", "SIGHUP"):
            number = getattr(signal, name, None)
            if number is not None:
                previous[number] = signal.signal(number, stop)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _redraw(
    store: Store, settings: Settings, interval: float, json_lines: bool, stream: TextIO, on_screen: bool, paint: Paint
) -> NoReturn:
    """Draw the status every ``interval`` seconds, for as long as nothing stops it."""
    while True:
        try:
            snapshot = _snapshot(store, settings)
        except MafError as error:  # a busy or unreachable store: say so, and look again
            lines = [f"maf: the store could not be read ({printable(error)}); trying again in {interval:g}s"]
            if json_lines:
                lines = [printable_json({"error": str(error)}, indent=None)]
        else:
            if json_lines:
                lines = [printable_json(snapshot.to_json(), indent=None)]
            else:
                lines = render_status(snapshot, paint)
        if on_screen:
            size = os.get_terminal_size(stream.fileno())
            # A terminal that reports no size (0 x 0: a pseudo-terminal nobody sized) is taken as 80 x 24.
            lines = fit_screen(lines, size.lines or 24, size.columns or 80)
            stream.write(HOME + "".join(f"{line}{CLEAR_LINE_END}\n" for line in lines) + CLEAR_BELOW)
        else:
            stream.write("\n".join(lines) + ("\n" if json_lines else "\n\n"))
        stream.flush()
        time.sleep(interval)




def fit_screen(lines: list[str], height: int, width: int) -> list[str]:
    """What fits a screen of ``height`` by ``width``: each line cut to the width (a wrapped line would
    push the rest down), at most ``height - 1`` lines (the last row stays free, so nothing scrolls)."""
    room = max(1, height - 1)
    if len(lines) > room:
        lines = [*lines[: room - 1], f"... {len(lines) - room + 1} more line(s): enlarge the terminal, or run maf status"]
    return [clip(line, width) for line in lines]


def clip(line: str, width: int) -> str:
    """``line`` cut to ``width`` columns of the terminal (a wide character takes two); colour sequences
    are kept and do not count."""
    from pytest_maf.terminal import cells

    shown, visible, position = [], 0, 0
    while position < len(line):
        if line.startswith("\x1b[", position):
            end = position + 2
            while end < len(line) and not line[end].isalpha():
                end += 1
            shown.append(line[position : end + 1])
            position = end + 1
            continue
        taken = cells(line[position])
        if visible + taken > max(1, width):
            return "".join(shown) + "\x1b[0m"
        shown.append(line[position])
        visible += taken
        position += 1
    return line


def render_status(snapshot: StatusSnapshot, paint: Paint) -> list[str]:
    """The status screen's lines (escaped for a terminal; coloured by ``paint``)."""
    from pytest_maf.clock import span
    from pytest_maf.status import relative_time

    def heading(title: str) -> list[str]:
        return ["", paint("bold", title)]

    lines = [
        paint("bold", "maf status") + f"  {when(snapshot.now)}  {snapshot.backend} {printable(snapshot.location)}",
        "tasks: " + "  ".join(
            (paint("red", f"{state} {count}") if state == "DEAD" and count else f"{state} {count}")
            for state, count in snapshot.tasks_by_state.items()
        ),
    ]
    if snapshot.preflight_by_state:
        lines.append("  of which preflight runs: " + "  ".join(
            f"{state} {count}" for state, count in snapshot.preflight_by_state.items()
        ))
    lines += heading(f"leases ({len(snapshot.leases)})")
    lines += _table(
        ["TASK", "AGENT", "ATTEMPT", "STATE", "EXPIRES"],
        [[lease.task_id, lease.agent_id, lease.attempt, lease.state, relative_time(lease.expires_in_ms)]
         for lease in snapshot.leases],
        paint, [lease.expires_in_ms <= 0 for lease in snapshot.leases], "no task is leased",
    )
    lines += heading(f"reservations ({len(snapshot.reservations)})")
    lines += _table(
        ["PATTERN", "AGENT", "MODE", "TASK", "EXPIRES", "REASON"],
        [[r.pattern, r.agent_id, "exclusive" if r.exclusive else "shared", r.task_id or "-",
          relative_time(r.expires_in_ms), brief(r.reason)]
         for r in snapshot.reservations],
        paint, [], "no file is reserved",
    )
    lines += heading(f"escalations open ({len(snapshot.escalations)})")
    lines += _table(
        ["ID", "LEVEL", "AGENT", "TARGET", "BEAD", "OPEN FOR", "CONTEXT"],
        [[e.id, e.level, e.agent_id, e.target, e.bead_id, span(snapshot.now - e.created_at), brief(e.context)]
         for e in snapshot.escalations],
        paint, [], "no escalation is open",
    )
    lines += heading("unread agent-mail")
    if snapshot.mail_problem:
        lines.append(paint("yellow", printable(snapshot.mail_problem)))
    problems = any(count.problem for count in snapshot.mail)
    lines += _table(
        ["AGENT", "UNREAD", "QUEUED", *(["PROBLEM"] if problems else [])],
        [[count.agent, count.unread, count.queued, *([count.problem or ""] if problems else [])]
         for count in snapshot.mail],
        paint, [bool(count.problem) for count in snapshot.mail], "no inbox",
    )
    lines += heading("last preflight")
    run = snapshot.preflight
    if run is None:
        lines.append("no preflight has run (pytest --maf-preflight)")
    else:
        # red only for a run that failed: one still running (or committing) has not failed yet
        verdict = paint(PREFLIGHT_COLOURS.get(run.state, "yellow"), run.state)
        warnings = sum(failure.details.get("blocking") is False for failure in run.failures)
        lines.append(printable(
            f"{run.task_id} by {run.agent or '?'}, {span(snapshot.now - run.started_at)} ago: "
        ) + verdict + f", {run.passed} passed, {run.failed - warnings} failed"
          + (f", {warnings} warning(s)" if warnings else ""))
        for failure in run.failures:  # a check that failed without blocking the run is a warning
            label = paint("yellow", "WARN") if failure.details.get("blocking") is False else paint("red", "FAIL")
            message = str(failure.details.get("message", "")).strip().splitlines()
            # the first line, as the preflight's summary and the report show it: what is wrong and what to do
            lines.append(f"  {label} {printable(failure.verifier)}" + (f": {brief(message[0])}" if message else ""))
    lines += heading(f"overrides and force-releases, last 24h ({len(snapshot.overrides)})")
    if not snapshot.overrides:
        lines.append("none")
    for entry in snapshot.overrides:
        lines.append(f"{when(entry.ts)}  " + paint("yellow", brief(entry.summary)))
    return lines


def _table(
    header: Sequence[str], rows: Sequence[Sequence[object]], paint: Paint, alarming: Sequence[bool], empty: str,
    colour: str = "red",
) -> list[str]:
    """A table's lines, the header dimmed and each row marked ``alarming`` in ``colour`` (an expired lease)."""
    if not rows:
        return [empty]
    header_line, *row_lines = table_lines(header, rows)
    alarming = [*alarming, *[False] * (len(row_lines) - len(alarming))]
    return [paint("dim", header_line), *(paint(colour, line) if alarm else line for line, alarm in zip(row_lines, alarming))]


# maf history


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    from pytest_maf.history import history, parse_kinds
    kinds = parse_kinds(args.kind) if args.kind is not None else None
    with open_configured_store(settings, deliver_queued_mail=False) as store:
        found = history(store, agent=args.agent, task=args.task, kinds=kinds, within_ms=args.since, limit=args.limit + 1)
    shown, more = found[: args.limit], len(found) > args.limit
    if args.json:
        print_json([entry.to_json() for entry in shown])
        return 0
    print_history(shown, more, args.limit, Paint(wants_colour(sys.stdout)))
    return 0


def print_history(shown: Sequence[HistoryEntry], more: bool, limit: int, paint: Paint) -> None:
    if not shown:
        print("nothing happened that matches")
        return
    from pytest_maf.history import OVERRIDE_KINDS

    for line in _table(
        ["TIME", "KIND", "AGENT", "TASK", "WHAT"],
        [[when(entry.ts), entry.kind, entry.agent or "-", entry.task_id or "-", brief(entry.summary)] for entry in shown],
        paint, [entry.kind in OVERRIDE_KINDS for entry in shown], "", colour="yellow",
    ):
        print(line)
    if more:
        print(f"(the newest {limit} shown; --limit N shows more, --since narrows)")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status", help="who holds which task and files, what failed, who overrode what: one screen",
        description="Tasks by state; every lease (holder, attempt, state, expiry); every live reservation;"
        " open escalations; unread agent-mail per inbox; the last preflight run and its failures; overrides"
        " and force-releases of the last 24 hours. Only reads the store (queued mail is counted, not delivered).",
    )
    status.add_argument(
        "--watch", nargs="?", type=number, const=DEFAULT_WATCH_S, metavar="SECONDS",
        help=f"redraw every SECONDS ({MIN_WATCH_S:g} to {MAX_WATCH_S:g}; default when given: {DEFAULT_WATCH_S:g})"
        " until Ctrl-C, which exits 0;"
        " in place on a terminal, one snapshot after another when piped (default: show once)",
    )
    add_json(status)
    status.set_defaults(handler=cmd_status)

    trail = commands.add_parser(
        "history", help="the audit trail: claims, expiries, overrides, force-releases, escalations; newest first",
        description="Task events, reservation events and escalation events merged in time order, newest first.",
    )
    trail.add_argument("--agent", type=given, metavar="ID", help="only what this agent did or had done to it (default: every agent)")
    trail.add_argument("--task", type=given, metavar="TASK", help="only this task (its events, tied reservations, escalations of"
                       " that bead) (default: every task)")
    trail.add_argument("--kind", type=given, metavar="KIND[,KIND]", help="only these event kinds, e.g. claim,expire,override,"
                       "force_release (default: every kind)")
    trail.add_argument("--since", type=duration, metavar="DURATION", help="only the last DURATION: 30m, 2h, 1d, 1h30m (default: all time)")
    add_limit(trail, "entries, the newest", default=DEFAULT_HISTORY_LIMIT)
    add_json(trail)
    trail.set_defaults(handler=cmd_history)

