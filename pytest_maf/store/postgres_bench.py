"""The SQL `benchmarks/claims.py --db postgresql://...` needs: bulk seeding, and the bare claim it is measured against.

The floor is the least a claim can cost on the same server: one statement,
``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING``, committed on its own, on a scratch table of the benchmark's
schema. pytest-maf's claim does more (fencing, a lease row, an event, the
attempt count), and the benchmark reports its figures as ratios to this one.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from pytest_maf.store.postgres import drop_schema  # noqa: F401 (the benchmarks' scratch schemas)

FLOOR_TABLE = "bench_floor"


def _connect(url: str, schema: str) -> psycopg.Connection[Any]:
    connection = psycopg.connect(url, autocommit=True)
    connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    return connection


def seed_ready_tasks(url: str, schema: str, count: int) -> None:
    """``count`` READY tasks in the store in ``schema``, inserted in one statement each for tasks and options."""
    with _connect(url, schema) as connection, connection.transaction():
        connection.execute(
            "INSERT INTO tasks (id, state, priority, payload_json, created_at, updated_at, attempts)"
            " SELECT 'ready-' || lpad(n::text, 9, '0'), 'READY', 100, '{}', n, n, 0 FROM generate_series(1, %s) AS n",
            (count,),
        )
        connection.execute(
            "INSERT INTO task_options (task_id, max_attempts, kind)"
            " SELECT 'ready-' || lpad(n::text, 9, '0'), 3, 'work' FROM generate_series(1, %s) AS n ORDER BY n",
            (count,),
        )
        connection.execute("ANALYZE")


def create_floor_table(url: str, schema: str, count: int) -> None:
    """The floor's scratch table in ``schema`` (created if need be): ``count`` rows waiting to be claimed."""
    with _connect(url, schema) as connection, connection.transaction():
        connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        connection.execute(
            f"CREATE TABLE {FLOOR_TABLE} (id BIGINT PRIMARY KEY, state TEXT NOT NULL, agent TEXT)".encode()
        )
        connection.execute(f"CREATE INDEX ON {FLOOR_TABLE} (state, id)".encode())
        connection.execute(
            f"INSERT INTO {FLOOR_TABLE} (id, state) SELECT n, 'READY' FROM generate_series(1, %s) AS n".encode(),
            (count,),
        )
        connection.execute(f"ANALYZE {FLOOR_TABLE}".encode())


def bare_claims(url: str, schema: str, agent: str, duration_s: float) -> list[float]:
    """Claim rows of the floor table with the one-statement claim for ``duration_s``; each claim's ms."""
    statement = (
        f"UPDATE {FLOOR_TABLE} SET state = 'LEASED', agent = %s WHERE id = (SELECT id FROM {FLOOR_TABLE}"
        " WHERE state = 'READY' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id"
    ).encode()
    samples = []
    with _connect(url, schema) as connection:
        end = time.perf_counter() + duration_s
        while time.perf_counter() < end:
            started = time.perf_counter()
            if connection.execute(statement, (agent,)).fetchone() is None:
                break  # the table ran out
            samples.append((time.perf_counter() - started) * 1000)
    return samples


