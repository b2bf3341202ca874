"""The audit trail's query, spelled for either backend: tasks' events, reservation events and
escalation events merged newest first, filtered by time, kind, task and agent in the database.

Used by :meth:`SQLiteTransaction.audit_trail <pytest_maf.store.sqlite.SQLiteTransaction.audit_trail>`
and its PostgreSQL twin; :mod:`pytest_maf.history` turns the rows into entries people read.
"""

from __future__ import annotations

from pytest_maf.records import AuditRow

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence
    from typing import Any


def json_fragment(key: str | None, value: str, before: str = "") -> str:
    """How ``"key":value`` (or ``before`` + value + ``,``) is spelled in a stored JSON column.

    The store writes JSON compact, with its text as is (not ASCII-escaped), and
    a quote inside a string is escaped, so this text appears in a row only where the row holds
    that key with that value: a case-sensitive substring test finds it exactly.
    """
    import json  # here: the guard reads no audit trail

    spelled = json.dumps(value, ensure_ascii=False)
    return f"{before}{json.dumps(key)}:{spelled}" if key is not None else f"{before}{spelled},"


_AUDIT_SELECTS = (
    "SELECT 0 AS rank, 'task' AS source, id, ts, kind, task_id, NULL AS agent_id, NULL AS escalation_id,"
    " data_json FROM events",
    "SELECT 1, 'reservation', id, ts, kind, NULL, agent_id, NULL, data_json FROM reservation_events",
    "SELECT 2, 'escalation', x.id, x.ts, x.kind, NULL, NULL, x.escalation_id, x.data_json"
    " FROM escalation_events AS x JOIN escalations AS e ON e.id = x.escalation_id",
)


def audit_query(
    *, since: int | None, kinds: Collection[str] | None, task_id: str | None, agent_id: str | None,
    limit: int | None, marker: str, contains: Callable[[str], str], one_of: Callable[[int], str],
) -> tuple[str, list[Any]]:
    """The audit trail's query (:meth:`Transaction.audit_trail`) and its parameters, in the
    backend's spelling: ``marker`` its parameter, ``contains(column)`` its case-sensitive substring
    test of the column against one parameter, ``one_of(n)`` its test of ``kind`` against n of them."""
    events: list[tuple[str, list[Any]]] = []
    reservations: list[tuple[str, list[Any]]] = []
    escalations: list[tuple[str, list[Any]]] = []
    if task_id is not None:
        events.append((f"task_id = {marker}", [task_id]))
        reservations.append((contains("data_json"), [json_fragment("task", task_id)]))
        escalations.append((f"e.bead_id = {marker}", [task_id]))
    if agent_id is not None:
        events.append((contains("data_json"), [json_fragment("agent", agent_id)]))
        # its own rows, a force-release of its reservation, an override or a conflict naming it a holder
        reservations.append((
            f"(agent_id = {marker} OR {contains('data_json')} OR {contains('data_json')} OR {contains('data_json')})",
            [agent_id, json_fragment("holder", agent_id), json_fragment(None, agent_id, "[["),
             json_fragment(None, agent_id, "],[")],
        ))
        # the escalations it opened or raised, each request sent to it (an open or a raise names its target:
        # a later raise may send the escalation on), the end of one whose last target it was, and those it closed
        escalations.append((
            f"(e.agent_id = {marker} OR {contains('x.data_json')} OR {contains('x.data_json')}"
            f" OR (e.target = {marker} AND x.kind NOT IN ('open', 'raise')))",
            [agent_id, json_fragment("target", agent_id), json_fragment("by", agent_id), agent_id],
        ))
    queries: list[str] = []
    params: list[Any] = []
    for number, (select, conditions, alias) in enumerate(
        zip(_AUDIT_SELECTS, (events, reservations, escalations), ("", "", "x."))
    ):
        given = list(conditions)
        if since is not None:
            given.append((f"{alias}ts >= {marker}", [since]))
        if kinds is not None:
            given.append((f"{alias}kind {one_of(len(kinds))}", list(kinds)))
        query = select + (" WHERE " + " AND ".join(clause for clause, _ in given) if given else "")
        params.extend(value for _, values in given for value in values)
        if limit is not None:  # each history's newest first, read backwards along its time index, then merged
            query = f"SELECT * FROM ({query} ORDER BY {alias}ts DESC, {alias}id DESC LIMIT {marker}) AS part{number}"
            params.append(limit)
        queries.append(query)
    query = (
        "SELECT source, id, ts, kind, task_id, agent_id, escalation_id, data_json FROM ("
        + " UNION ALL ".join(queries) + ") AS trail ORDER BY ts DESC, rank DESC, id DESC"
    )
    if limit is not None:
        query += f" LIMIT {marker}"
        params.append(limit)
    return query, params


def as_object(parsed: Any) -> dict[str, Any]:
    """A stored JSON column read where an object is expected: a value of another shape (a string, a
    list, null), which only damage or a hand edit leaves, comes back as ``{"value": ...}``, so a
    reader's ``.get`` finds nothing instead of failing."""
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def audit_row(row: Sequence[Any], loads: Callable[[Any, str], Any]) -> AuditRow:
    """An audit trail row from (source, id, ts, kind, task_id, agent_id, escalation_id, data_json)."""
    source, row_id, ts, kind, task_id, agent_id, escalation_id, data = row
    table = {"task": "events", "reservation": "reservation_events"}.get(source, "escalation_events")
    parsed = loads(data, f"{table}.data_json of event {row_id}")
    return AuditRow(source, row_id, ts, kind, as_object(parsed), task_id, agent_id, escalation_id)
