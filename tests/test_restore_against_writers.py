"""A SQLite restore while agents write: no acknowledged write lost, every wait bounded, Ctrl-C and SIGTERM obeyed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Callable, Iterator

import pytest

from pytest_maf import tasks
from pytest_maf.store import maintenance, open_store
from pytest_maf.tasks import _insert_task

ADDER = """
import os, sys
from pytest_maf import tasks
from pytest_maf.errors import StoreBusyError
from pytest_maf.store import open_store
db, agent, stop = sys.argv[1], sys.argv[2], sys.argv[3]
with open_store(db) as store:
    number = 0
    while not os.path.exists(stop):
        number += 1
        try:
            tasks.add_task(store, task_id=f"{agent}-{number}")
        except StoreBusyError:
            continue  # refused, not acknowledged
        print(f"{agent}-{number}", flush=True)  # acknowledged: committed
"""


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {deadline_s} s"
        time.sleep(0.02)


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **extra}


def ids_in(db: Path) -> set[str]:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as connection:
        return {row[0] for row in connection.execute("SELECT id FROM tasks")}


def kept_copies(db: Path) -> list[Path]:
    return [path for path in db.parent.glob(f"{db.name}.before-restore-*") if not path.name.endswith(("-wal", "-shm"))]


@pytest.fixture
def store_and_backup(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A store of a few MB (its copy kept aside takes a while) with the task ``marker``, and a backup of it without."""
    db = tmp_path / "runtime.db"
    with open_store(db, create=True) as store:
        store.write(lambda tx: [_insert_task(tx, f"pad-{n}", 0, {"pad": "p" * 2000}, 3, "work") for n in range(2000)])
    maintenance.backup(db, tmp_path / "backup.db")
    with open_store(db) as store:
        tasks.add_task(store, task_id="marker")
    yield db, tmp_path / "backup.db"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_every_write_acknowledged_during_restores_is_in_the_restored_store_or_a_kept_copy(
    store_and_backup: tuple[Path, Path],
) -> None:
    db, backup = store_and_backup
    stop = db.parent / "stop"
    writers = [
        subprocess.Popen([sys.executable, "-c", ADDER, str(db), f"w{n}", str(stop)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=environment())
        for n in range(3)
    ]
    acknowledged: list[list[str]] = [[] for _ in writers]

    def collect(writer: subprocess.Popen[bytes], into: list[str]) -> None:
        assert writer.stdout is not None
        into.extend(line.decode().strip() for line in writer.stdout)

    readers = [threading.Thread(target=collect, args=pair, daemon=True) for pair in zip(writers, acknowledged)]
    for reader in readers:
        reader.start()
    try:
        wait_until(lambda: all(acknowledged), "a first acknowledged write of each writer")
        for _ in range(8):  # each restore with writes before, during and after it
            count = len(sum(acknowledged, []))
            maintenance.restore(db, backup, force=True, busy_timeout_s=30)
            wait_until(lambda: len(sum(acknowledged, [])) > count + 30, "writes between the restores")
    finally:
        stop.touch()
        for writer in writers:
            try:
                writer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                writer.kill()
                writer.wait()
        for reader in readers:
            reader.join(timeout=10)

    assert all(writer.returncode == 0 for writer in writers), [w.stderr.read() for w in writers if w.stderr]
    found = ids_in(db).union(*(ids_in(kept) for kept in kept_copies(db)))
    every = set(sum(acknowledged, []))
    assert len(kept_copies(db)) == 8
    assert sorted(every - found) == []  # before: runs of a few dozen per restore were nowhere


@pytest.fixture
def locked(store_and_backup: tuple[Path, Path]) -> Iterator[tuple[Path, Path]]:
    """The store held by another program's write transaction (SQLite's lock, not the writers' lock file)."""
    db, backup = store_and_backup
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE tasks SET priority = priority WHERE id = 'marker'")
    try:
        yield db, backup
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def unchanged(db: Path) -> bool:
    return "marker" in ids_in(db) and not kept_copies(db)


@pytest.mark.timeout(120)
def test_a_restore_behind_a_held_lock_gives_up_after_the_busy_timeout_with_nothing_changed(
    locked: tuple[Path, Path],
) -> None:
    db, backup = locked
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest_maf", "db", "restore", str(backup), "--db", str(db), "--force"],
            capture_output=True, text=True, timeout=40, env=environment(MAF_BUSY_TIMEOUT="2"), cwd=db.parent,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the restore waited past 40 s for a lock with a busy timeout of 2 s")  # before: for ever

    assert done.returncode == 5, done.stderr
    assert "stayed busy for" in done.stderr and "MAF_BUSY_TIMEOUT" in done.stderr
    assert time.monotonic() - started < 30
    assert unchanged(db)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("sent", "code", "said"), [
    (signal.SIGTERM, 143, "maf: terminated"), (signal.SIGINT, 130, "maf: interrupted"),
], ids=["sigterm", "sigint"])
def test_a_restore_waiting_for_a_lock_stops_on_a_signal_with_nothing_changed(
    locked: tuple[Path, Path], sent: signal.Signals, code: int, said: str,
) -> None:
    db, backup = locked
    restoring = subprocess.Popen(
        [sys.executable, "-m", "pytest_maf", "db", "restore", str(backup), "--db", str(db), "--force"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(MAF_BUSY_TIMEOUT="60"),
        cwd=db.parent, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lock_file = Path(f"{db}.lock")
    started = time.monotonic()
    try:
        # Waiting once it holds the writers' turn (its pid in the lock file); a few seconds in any case.
        wait_until(lambda: time.monotonic() - started > 3 or (
            lock_file.is_file() and lock_file.read_bytes()[:10].strip() == str(restoring.pid).encode()
        ), "the restore waiting for the lock")
        restoring.send_signal(sent)
        try:
            _, err = restoring.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the restore went on for 20 s after {sent.name}")  # before: until the lock went
    finally:
        if restoring.poll() is None:
            restoring.kill()
            restoring.communicate()

    assert restoring.returncode == code, err
    assert said in err
    assert unchanged(db)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", [["db", "optimize"], ["db", "cleanup", "--days", "0", "--apply"]],
                         ids=["optimize", "cleanup"])
def test_optimize_and_cleanup_of_a_busy_store_exit_5_after_the_busy_timeout(
    locked: tuple[Path, Path], command: list[str],
) -> None:
    db, _ = locked
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest_maf", *command, "--db", str(db)],
        capture_output=True, text=True, timeout=60, env=environment(MAF_BUSY_TIMEOUT="1"), cwd=db.parent,
    )

    assert done.returncode == 5, done.stderr  # before: 2, "database is locked", after 10 s
    assert "stayed busy for" in done.stderr and "MAF_BUSY_TIMEOUT" in done.stderr
    assert time.monotonic() - started < 8


def test_verify_backup_of_an_empty_file_is_a_bad_backup_like_any_other(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")

    done = subprocess.run(
        [sys.executable, "-m", "pytest_maf", "db", "verify-backup", str(empty), "--json"],
        capture_output=True, text=True, timeout=60, env=environment(), cwd=tmp_path,
    )

    assert done.returncode == 1, done.stderr  # before: 2, {"error": ...}
    verdict = json.loads(done.stdout)
    assert verdict["ok"] is False and verdict["file"] == str(empty)
    assert any("empty (0 bytes)" in problem for problem in verdict["problems"])
