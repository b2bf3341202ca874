"""`maf db stats` and `maf db optimize --reindex`, on both backends, through the installed ``maf``."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator

import pytest

from backends import backend_store, maf_on_store
from pytest_maf import escalation, reservations, tasks
from pytest_maf.config import load_settings
from pytest_maf.store import Store
from pytest_maf.store.stats import DURATIONS_TABLE


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()
    return tmp_path


@pytest.fixture
def filled(backend: str, root: Path) -> Iterator[Store]:
    """A store holding 7 tasks, 3 reservations and 1 escalation, made through the library."""
    settings = load_settings(environ={}, cwd=root)
    with backend_store(backend, root / "store") as store:
        for n in range(7):
            tasks.add_task(store, task_id=f"t{n}")
        for pattern in ("src/**", "docs/**", "lib/**"):
            reservations.acquire(store, [pattern], "alice", 60_000)
        escalation.escalate(store, settings, agent_id="alice", bead_id="b1", error_context="x", target="codex-senior")
        yield store


# What `filled` wrote, per table: each task is a tasks, task_options and events row; each
# reservation a reservations and reservation_events row; the escalation its row, its event and its mail.
EXPECTED_ROWS = {
    "tasks": 7, "task_options": 7, "events": 7, "evidence": 0, "leases": 0,
    "reservations": 3, "reservation_events": 3,
    "escalations": 1, "escalation_events": 1, "mail_outbox": 1, "counters": 0,
}


def run_json(root: Path, store: Store, *args: str) -> Any:
    completed = maf_on_store(root, store, *args, "--json")
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_stats_lists_every_table_with_the_rows_inserted(filled: Store, root: Path) -> None:
    report = run_json(root, filled, "db", "stats")

    rows = {table["name"]: table["rows"] for table in report["tables"]}
    assert set(rows) == set(filled.table_names())  # every table of the store, no other
    assert {name: rows[name] for name in EXPECTED_ROWS} == EXPECTED_ROWS
    assert all(table["bytes"] > 0 for table in report["tables"])
    assert report["bytes"] >= sum(table["bytes"] for table in report["tables"]) > 0
    indexed = {index["table"] for index in report["indexes"]}
    assert {"tasks", "reservations", "escalations", "events"} <= indexed
    if filled.backend == "postgresql":
        assert all(index["scans"] is not None for index in report["indexes"])
    else:
        assert all(index["scans"] is None for index in report["indexes"])

    text = maf_on_store(root, filled, "db", "stats")
    assert text.returncode == 0, text.stderr
    table_lines = {line.split()[0]: line.split() for line in text.stdout.splitlines() if line.strip()}
    assert table_lines["tasks"][1] == "7" and table_lines["reservations"][1] == "3"


def test_stats_shows_no_slowest_operations_with_a_note_when_none_are_recorded(filled: Store, root: Path) -> None:
    def forget(connection: Any) -> None:
        connection.execute(f"DELETE FROM {DURATIONS_TABLE}")

    if filled.backend == "sqlite":
        with closing(sqlite3.connect(filled.location)) as connection:
            forget(connection)
            connection.commit()
    else:
        filled.run_on_connection(forget, writing=True)  # type: ignore[attr-defined]

    report = run_json(root, filled, "db", "stats")

    assert report["slowest"] == [] and "no operation has been recorded yet" in report["notes"]
    text = maf_on_store(root, filled, "db", "stats")
    assert "slowest recorded operations: none" in text.stdout


DURATION_ROWS = [
    ("claim", "", 1000, 0, 3, 1500, 900), ("claim", "", 5000, 1, 1, 4000, 4000),
    ("guard", "blocked", 50000, 0, 2, 60000, 45000), ("preflight", "passed", 10, 0, 0, 0, 0),
]


def record_durations(store: Store) -> None:
    """Write :data:`DURATION_ROWS` straight into the store's durations table (as the KPI recording would)."""
    insert = f"INSERT INTO {DURATIONS_TABLE} (operation, outcome, le_us, shard, count, sum_us, max_us) VALUES "
    if store.backend == "sqlite":
        with closing(sqlite3.connect(store.location)) as connection:
            connection.execute(f"DELETE FROM {DURATIONS_TABLE}")
            connection.executemany(insert + "(?, ?, ?, ?, ?, ?, ?)", DURATION_ROWS)
            connection.commit()
        return

    def write(connection: Any) -> None:
        connection.execute(f"DELETE FROM {DURATIONS_TABLE}")
        for row in DURATION_ROWS:
            connection.execute(insert + "(%s, %s, %s, %s, %s, %s, %s)", row)

    store.run_on_connection(write, writing=True)  # type: ignore[attr-defined]


def test_stats_lists_the_slowest_recorded_operations_longest_first(filled: Store, root: Path) -> None:
    record_durations(filled)

    report = run_json(root, filled, "db", "stats")

    assert [(item["operation"], item["outcome"], item["count"], item["max_ms"], item["mean_ms"])
            for item in report["slowest"]] == [("guard", "blocked", 2, 45.0, 30.0), ("claim", "", 4, 4.0, 1.375)]
    text = maf_on_store(root, filled, "db", "stats").stdout.splitlines()
    heading = text.index("slowest recorded operations:")
    assert text[heading + 2].split() == ["guard", "blocked", "2", "30.0", "45.0"]


def test_optimize_reindex_reports_each_step_and_what_it_changed(filled: Store, root: Path) -> None:
    bloat(filled)

    report = run_json(root, filled, "db", "optimize", "--reindex", "--vacuum")

    names = [step["name"] for step in report["steps"]]
    assert names[0] == "ANALYZE" and "REINDEX" in names and "VACUUM" in names
    assert names.index("REINDEX") < names.index("VACUUM")
    for step in report["steps"]:
        assert set(step["before"]) == set(step["after"]) == set(step["changed"]) and step["before"]
        assert step["changed"] == {key: step["after"][key] - step["before"][key] for key in step["before"]}
    steps = {step["name"]: step for step in report["steps"]}
    if filled.backend == "sqlite":
        assert steps["VACUUM"]["before"]["free_pages"] > 0 and steps["VACUUM"]["after"]["free_pages"] == 0
        assert steps["VACUUM"]["changed"]["pages"] < 0
    else:  # the emptied table's primary key index is rebuilt from no row
        assert steps["REINDEX"]["changed"]["index_bytes"] < 0

    text = maf_on_store(root, filled, "db", "optimize", "--reindex")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("optimised ")
    assert any(line.startswith("  REINDEX: ") and " -> " in line for line in lines)


def bloat(store: Store) -> None:
    """Fill reservation_events with 3000 rows and delete them: free pages, and an index grown for nothing."""
    if store.backend == "sqlite":
        with closing(sqlite3.connect(store.location)) as connection:
            connection.executemany(
                "INSERT INTO reservation_events (ts, kind, agent_id, data_json) VALUES (1, 'acquire', 'x', ?)",
                [(json.dumps({"pad": "x" * 200}),) for _ in range(3000)],
            )
            connection.execute("DELETE FROM reservation_events WHERE agent_id = 'x'")
            connection.commit()
        return

    def fill(connection: Any) -> None:
        connection.execute(
            "INSERT INTO reservation_events (ts, kind, agent_id, data_json)"
            " SELECT 1, 'acquire', 'x', repeat('x', 200) FROM generate_series(1, 3000)"
        )
        connection.execute("DELETE FROM reservation_events WHERE agent_id = 'x'")

    store.run_on_connection(fill, writing=True)  # type: ignore[attr-defined]


def test_stats_shows_the_claims_a_real_maf_command_recorded(filled: Store, root: Path) -> None:
    for agent in ("alice", "bob"):
        claimed = maf_on_store(root, filled, "task", "claim", "--agent", agent)
        assert claimed.returncode == 0, claimed.stderr

    report = run_json(root, filled, "db", "stats")

    (claims,) = [item for item in report["slowest"] if item["operation"] == "claim"]
    assert claims["count"] == 2 and claims["max_ms"] >= claims["mean_ms"] > 0
