"""The floor of benchmarks/claims.py runs the very statements of pytest-maf's cycle.

The floor (``sql_floor``) says what a cycle of enqueue, claim and complete could
at best cost without writing less: the same SQL through bare sqlite3. It is a
floor only while it runs what pytest-maf runs, so a change to the store's
statements that the floor does not follow fails here.
"""

from __future__ import annotations

import importlib.util
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from pytest_maf import tasks
from pytest_maf.store import open_store

CLAIMS = Path(__file__).resolve().parents[1] / "benchmarks" / "claims.py"
LITERAL = re.compile(r"'(?:[^']|'')*'|\b\d+\b")


def load_claims() -> ModuleType:
    spec = importlib.util.spec_from_file_location("claims_benchmark", CLAIMS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def traced(connection: sqlite3.Connection, cycle: Callable[[], object]) -> list[str]:
    """The statements ``cycle`` runs on ``connection``, every literal value written as '?'."""
    statements: list[str] = []
    connection.set_trace_callback(lambda sql: statements.append(LITERAL.sub("?", " ".join(sql.split()))))
    try:
        cycle()
    finally:
        connection.set_trace_callback(None)
    return statements


def test_the_floor_runs_the_statements_of_a_pytest_maf_cycle(tmp_path: Path) -> None:
    claims = load_claims()
    maf_db, floor_db = tmp_path / "maf.db", tmp_path / "floor.db"
    for db in (maf_db, floor_db):
        open_store(db, create=True).close()
    maf, floor = claims.MafQueue(str(maf_db), "agent-1"), claims.SqlFloorQueue(str(floor_db), "agent-1")
    try:
        maf.cycle(), floor.cycle()  # first writes set up what every later one finds
        ours = traced(maf.store.connection, maf.cycle)
        theirs = traced(floor.connection, floor.cycle)
    finally:
        maf.close(), floor.close()
    assert ours.count("BEGIN IMMEDIATE") == 3  # add, claim and start, complete
    assert theirs == ours
    with sqlite3.connect(floor_db) as connection:  # and what the floor wrote reads as pytest-maf's own
        states = connection.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall()
        kinds = [kind for (kind,) in connection.execute("SELECT kind FROM events ORDER BY id")]
    assert states == [("DONE", 2)]
    assert kinds == ["add", "claim", "start", "verify", "evidence", "commit", "done"] * 2
    with open_store(floor_db) as store:
        assert [task.state for task in tasks.list_tasks(store)] == ["DONE", "DONE"]
