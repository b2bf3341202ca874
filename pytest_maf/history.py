"""The audit trail: who claimed, lost, overrode and force-released what, newest first.

Tasks' events, reservation events and escalation events are merged in time
order into :class:`HistoryEntry` records: plain data with a one-line
``summary`` a person reads and the stored ``data`` a script reads. `maf
history` prints them; `maf status` shows the overrides and force-releases of
the last day; a report can reuse them as they are. Example::

    for entry in history(store, agent="claude-1", within_ms=parse_duration("--since", "2h")):
        print(entry.ts, entry.summary)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Collection, Sequence

from pytest_maf.clock import iso_utc
from pytest_maf.errors import NotFoundError, UsageError
from pytest_maf.ids import validate_id
from pytest_maf.tasks import TRANSITIONS
from pytest_maf.values import INT64_MAX, check_integer

if TYPE_CHECKING:
    from pytest_maf.records import AuditRow, Escalation
    from pytest_maf.store import Store, Transaction

# Every kind of event each history holds: what --kind accepts.
TASK_EVENT_KINDS = ("add", *sorted({action for _, action in TRANSITIONS}), "renew", "evidence")
RESERVATION_EVENT_KINDS = ("acquire", "renew", "release", "expire", "conflict", "override", "force_release")
ESCALATION_EVENT_KINDS = ("open", "raise", "resolved", "cancelled")
EVENT_KINDS = tuple(sorted({*TASK_EVENT_KINDS, *RESERVATION_EVENT_KINDS, *ESCALATION_EVENT_KINDS}))
# The times someone set a holder aside: what `maf status` shows from the last day.
OVERRIDE_KINDS = ("override", "force_release")
DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class HistoryEntry:
    """One thing that happened. ``source`` is ``task``, ``reservation`` or ``escalation``; ``agent``
    is who acted (None when nobody did, as when a task is added); ``summary`` says it in one line."""

    ts: int
    source: str
    kind: str
    agent: str | None
    task_id: str | None
    summary: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The entry for ``--json``: ``ts`` as ISO-8601 UTC, ``ts_ms`` as stored."""
        return {
            "ts": iso_utc(self.ts), "ts_ms": self.ts, "source": self.source, "kind": self.kind,
            "agent": self.agent, "task": self.task_id, "summary": self.summary, "data": self.data,
        }


def parse_kinds(text: str) -> list[str]:
    """``--kind``: one event kind or several, comma-separated; an unknown one is a :class:`UsageError`."""
    kinds = [kind.strip().lower().replace("-", "_") for kind in text.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in EVENT_KINDS]
    if not kinds or unknown:
        shown = repr(unknown[0]) if unknown else repr(text)
        raise UsageError(f"unknown event kind {shown}; kinds are {', '.join(EVENT_KINDS)}")
    return kinds


def history(
    store: Store,
    *,
    agent: str | None = None,
    task: str | None = None,
    kinds: Collection[str] | None = None,
    within_ms: int | None = None,
    limit: int | None = DEFAULT_LIMIT,
) -> list[HistoryEntry]:
    """The newest ``limit`` entries (None: all) involving ``agent`` and ``task``, of ``kinds``, from the
    last ``within_ms``; newest first. An agent or task the store has never seen is a
    :class:`NotFoundError`, so a misspelt id is not mistaken for a quiet one."""
    if agent is not None:
        validate_id("agent", agent)
    if task is not None:
        validate_id("task", task)
    if kinds is not None:
        kinds = parse_kinds(",".join(kinds))
    if limit is not None:
        check_integer("the limit", limit, 1, INT64_MAX)
    if within_ms is not None:
        check_integer("the time span", within_ms, 0, INT64_MAX)

    def read(transaction: Transaction) -> list[HistoryEntry]:
        since = None if within_ms is None else transaction.now - within_ms
        rows = transaction.audit_trail(since=since, kinds=kinds, task_id=task, agent_id=agent, limit=limit)
        if not rows:
            _check_known(transaction, agent, task)
        return entries(transaction, rows)

    return store.read(read)


def entries(transaction: Transaction, rows: Sequence[AuditRow]) -> list[HistoryEntry]:
    """The audit rows as entries (escalations' rows with their escalation's agent, bead and target)."""
    escalations: dict[str, Escalation] = {}
    if any(row.source == "escalation" for row in rows):
        escalations = {escalation.id: escalation for escalation in transaction.escalations()}
    return [entry(row, escalations.get(row.escalation_id or "")) for row in rows]


def _check_known(transaction: Transaction, agent: str | None, task: str | None) -> None:
    if agent is not None and not transaction.audit_trail(agent_id=agent, limit=1):
        raise NotFoundError(
            f"agent {agent!r} appears nowhere in the store's history; check the spelling"
            " (`maf status` shows who holds what)"
        )
    if task is not None and transaction.get_task(task) is None and not transaction.audit_trail(task_id=task, limit=1):
        raise NotFoundError(f"no task {task!r} in the store (see `maf task list --all`)")


def entry(row: AuditRow, escalation: Escalation | None = None) -> HistoryEntry:
    """One audit row as a :class:`HistoryEntry` (``escalation``: the row's escalation, when it has one)."""
    data = dict(row.data)
    if row.source == "task":
        agent = data.get("agent")
        return HistoryEntry(row.ts, "task", row.kind, agent if isinstance(agent, str) else None, row.task_id,
                            _summary(_TASK_SUMMARIES, row.kind, {**data, "task": row.task_id, "agent": agent}), data)
    if row.source == "reservation":
        tied = data.get("task")
        return HistoryEntry(row.ts, "reservation", row.kind, row.agent_id or None, tied if isinstance(tied, str) else None,
                            _summary(_RESERVATION_SUMMARIES, row.kind, {**data, "agent": row.agent_id}), data)
    if escalation is not None:
        data = {"escalation": escalation.id, "bead": escalation.bead_id, "target": escalation.target,
                "context": escalation.context, **data}
    else:
        data = {"escalation": row.escalation_id, **data}
    by = data.get("by")  # who closed it, when that was recorded: the one who acted
    return HistoryEntry(row.ts, "escalation", row.kind,
                        by if isinstance(by, str) else escalation.agent_id if escalation else None, None,
                        _summary(_ESCALATION_SUMMARIES, row.kind, {**data, "agent": escalation.agent_id if escalation else None}),
                        data)


def _summary(table: dict[str, Callable[[_Fields], str]], kind: str, data: dict[str, Any]) -> str:
    fields = _Fields(data)
    describe = table.get(kind)
    if describe is None:
        return f"{kind}: " + ", ".join(f"{key}={value}" for key, value in sorted(data.items()) if value is not None)
    return describe(fields)


class _Fields:
    """A row's stored data, read forgivingly: a value that is missing reads as ``?``."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def __getattr__(self, name: str) -> str:
        value = self.data.get(name)
        if value is None or value == "":
            return "someone" if name == "agent" else "?"
        return str(value)

    def reason(self) -> str:
        reason = self.data.get("reason")
        return f": {reason}" if reason else ""

    def holders(self) -> str:
        """An override's or a conflict's holders, ``[[agent, pattern], ...]``, as ``a's src/**, b's docs/*``."""
        holders = self.data.get("holders")
        if not isinstance(holders, list):
            return "?"
        return ", ".join(
            f"{pair[0]}'s {pair[1]}" if isinstance(pair, list) and len(pair) == 2 else str(pair) for pair in holders
        )

    def closed(self, how: str) -> str:
        """An escalation's end: ``a2 resolved a1's escalation esc-1 of bd-1 at level 2``, naming who closed
        it when that was recorded."""
        by = self.data.get("by")
        if not by:
            return f"escalation {self.escalation} of {self.bead} {how} at level {self.level}"
        return f"{by} {how} {self.agent}'s escalation {self.escalation} of {self.bead} at level {self.level}"

    def paths(self) -> str:
        paths = self.data.get("paths")
        return ", ".join(str(path) for path in paths) if isinstance(paths, list) else "?"

    def requested(self) -> str:
        requested = self.data.get("requested")
        return ", ".join(str(pattern) for pattern in requested) if isinstance(requested, list) else "?"


_TASK_SUMMARIES: dict[str, Callable[[_Fields], str]] = {
    "add": lambda f: f"task {f.task} added, priority {f.priority}",
    "claim": lambda f: f"{f.agent} claimed {f.task}, attempt {f.attempt}",
    "start": lambda f: f"{f.agent} started {f.task}, attempt {f.attempt}",
    "verify": lambda f: f"{f.agent} is verifying {f.task}, attempt {f.attempt}",
    "evidence": lambda f: f"{f.agent} recorded {f.verifier} {f.result} on {f.task}, attempt {f.attempt}",
    "renew": lambda f: f"{f.agent} renewed the lease on {f.task}, attempt {f.attempt}",
    "commit": lambda f: f"{f.agent} committed {f.task}, attempt {f.attempt}",
    "rollback": lambda f: f"{f.agent} rolled back {f.task}, attempt {f.attempt}",
    "release": lambda f: f"{f.agent} released {f.task}, attempt {f.attempt}",
    "expire": lambda f: f"{f.agent}'s lease on {f.task} expired, attempt {f.attempt} ({f.data.get('from', '?')} -> {f.to})",
    "done": lambda f: f"{f.task} is DONE",
    "retry": lambda f: f"{f.task} is READY again after attempt {f.attempt}",
    "exhaust": lambda f: f"{f.task} is DEAD: {f.attempt} of {f.max_attempts} attempts used",
    "cancel": lambda f: f"{f.task} cancelled",
}
_RESERVATION_SUMMARIES: dict[str, Callable[[_Fields], str]] = {
    "acquire": lambda f: (
        f"{f.agent} reserved {f.pattern} ({'exclusive' if f.data.get('exclusive', True) else 'shared'})"
        + (f" for {f.task}" if f.data.get("task") else "") + f.reason()
    ),
    "renew": lambda f: f"{f.agent} renewed {f.pattern}",
    "release": lambda f: f"{f.agent} released {f.pattern}" + f.reason(),
    "expire": lambda f: f"{f.agent}'s reservation on {f.pattern} expired",
    "conflict": lambda f: f"{f.agent} was refused {f.requested()}: held as {f.holders()}",
    "override": lambda f: f"{f.agent} overrode {f.holders()} to commit {f.paths()}" + f.reason(),
    "force_release": lambda f: f"{f.agent} force-released {f.holder}'s {f.pattern}" + f.reason(),
}
_ESCALATION_SUMMARIES: dict[str, Callable[[_Fields], str]] = {
    "open": lambda f: f"{f.agent} escalated {f.bead} to {f.target}, level {f.level}",
    "raise": lambda f: f"{f.agent} raised the escalation of {f.bead} to level {f.level}, to {f.target}",
    "resolved": lambda f: f.closed("resolved"),
    "cancelled": lambda f: f.closed("cancelled"),
}
