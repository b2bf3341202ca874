"""A SQLite restore while agents write: no acknowledged write lost, every wait bounded, Ctrl-C and SIGTERM obeyed."""

from __future__ import annotations

import itertools
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
from typing import Any, Callable, Iterator

import pytest

from pytest_maf import tasks
from pytest_maf.cli import _terminate as cli_terminate
from pytest_maf.cli import main
from pytest_maf.errors import StoreBusyError, StoreError
from pytest_maf.store import maintenance, open_store
from pytest_maf.store import restore as restore_module
from pytest_maf.store.sqlite import _file_uri
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
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest_maf", "db", "restore", str(backup), "--db", str(db), "--force"],
            capture_output=True, text=True, timeout=40, env=environment(MAF_BUSY_TIMEOUT="2"), cwd=db.parent,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the restore waited past 40 s for a lock with a busy timeout of 2 s")  # before: for ever

    assert done.returncode == 5, done.stderr
    assert "stayed busy for" in done.stderr and "MAF_BUSY_TIMEOUT" in done.stderr
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
    try:
        # Its pid in the lock file: it holds the writers' turn, its signal handlers set, and waits for
        # SQLite's lock. (Signalled before, it would die of the signal, or stop as its modules load.)
        wait_until(lambda: restoring.poll() is not None or (
            lock_file.is_file() and lock_file.read_bytes()[:10].strip() == str(restoring.pid).encode()
        ), "the restore waiting for the lock", deadline_s=90)
        assert restoring.poll() is None, restoring.communicate()
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
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest_maf", *command, "--db", str(db)],
            capture_output=True, text=True, timeout=60, env=environment(MAF_BUSY_TIMEOUT="1"), cwd=db.parent,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"maf {command[1]} waited past 60 s for a lock with a busy timeout of 1 s")

    assert done.returncode == 5, done.stderr  # before: 2, "database is locked", after 10 s
    assert "stayed busy for" in done.stderr and "MAF_BUSY_TIMEOUT" in done.stderr


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


@pytest.fixture
def small_store_and_backup(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A store with the task ``marker``, and a backup of it without (``backup``)."""
    db = tmp_path / "runtime.db"
    with open_store(db, create=True) as store:
        tasks.add_task(store, task_id="in-backup")
    maintenance.backup(db, tmp_path / "backup.db")
    with open_store(db) as store:
        tasks.add_task(store, task_id="marker")
    yield db, tmp_path / "backup.db"


SQLITE_OK, SQLITE_DONE = 0, 101  # a backup step's status: more to copy, or all copied and committed


def watch_the_copy_into(monkeypatch: pytest.MonkeyPatch, db: Path, look: Callable[[int], None]) -> None:
    """``look(status)`` runs after each progress call of the restore's copy into ``db`` (the live store),
    where Python runs the handler of a signal that came during the step before it."""
    live = str(db.resolve())

    class Watched(sqlite3.Connection):
        def backup(self, target: sqlite3.Connection, **options: Any) -> None:
            progress = options.pop("progress")
            into_live = target.execute("PRAGMA database_list").fetchone()[2] == live

            def watched(status: int, remaining: int, total: int) -> None:
                progress(status, remaining, total)
                if into_live:
                    look(status)

            super().backup(target, progress=watched, **options)

    monkeypatch.setattr(restore_module, "connect_read_only", lambda path: sqlite3.connect(
        _file_uri(path, "mode=ro"), uri=True, factory=Watched,
    ))


@pytest.mark.parametrize("stop", ["ctrl-c-handled-there", "sigterm-sent-there"])
def test_a_stop_as_the_restore_commits_says_it_restored_and_keeps_the_previous_database(
    small_store_and_backup: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    stop: str,
) -> None:
    db, backup = small_store_and_backup

    def stop_once_committed(status: int) -> None:
        if status != SQLITE_DONE:  # the last page is in and committed
            return
        if stop == "sigterm-sent-there":
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            raise KeyboardInterrupt  # what Python does there with a Ctrl-C that came during the commit

    watch_the_copy_into(monkeypatch, db, stop_once_committed)
    monkeypatch.chdir(db.parent)
    previous = signal.signal(signal.SIGTERM, cli_terminate)  # what `maf` handles SIGTERM with
    try:
        code = main(["db", "restore", str(backup), "--db", str(db), "--force"])
    finally:
        signal.signal(signal.SIGTERM, previous)

    out, err = capsys.readouterr()
    [kept] = kept_copies(db)  # before: none, deleted though the store it held was already replaced
    assert ids_in(kept) == {"in-backup", "marker"}
    assert ids_in(db) == {"in-backup"}  # restored
    word, exit_code = ("terminated", 143) if stop == "sigterm-sent-there" else ("interrupted", 130)
    assert code == exit_code
    assert f"restored {db} from {backup}; the previous database is kept as {kept}\n" == out
    assert f"maf: {word} once the restore was done; the previous database is kept as {kept}\n" == err


@pytest.mark.parametrize("busy_reads", [3, None], ids=["busy-a-moment", "busy-throughout"])
def test_the_lease_check_waits_for_a_busy_store_and_never_takes_it_for_one_without_leases(
    small_store_and_backup: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, busy_reads: int | None,
) -> None:
    db, backup = small_store_and_backup
    with open_store(db) as store:
        tasks.claim_task(store, "marker", "agent-a", 600_000)
    reads = itertools.count(1)

    class LeasesBusy(sqlite3.Connection):  # as another process's exclusive lock makes them
        def execute(self, sql: str, *parameters: Any) -> sqlite3.Cursor:
            if "FROM leases" in sql and (busy_reads is None or next(reads) <= busy_reads):
                raise sqlite3.OperationalError("database is locked")
            return super().execute(sql, *parameters)

    monkeypatch.setattr(restore_module, "connect", lambda path, busy_timeout_ms=5: sqlite3.connect(
        str(path), isolation_level=None, timeout=busy_timeout_ms / 1000, factory=LeasesBusy,
    ))

    with pytest.raises(StoreError) as refused:  # before: restored, the lease taken for none
        maintenance.restore(db, backup, busy_timeout_s=1)

    if busy_reads is None:
        assert isinstance(refused.value, StoreBusyError) and refused.value.exit_code == 5
        assert "stayed busy for" in str(refused.value)
    else:
        assert "1 live lease(s)" in str(refused.value)
    assert unchanged(db)


SHARED_LOCK_TAKER = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_RDWR)
try:  # SQLite's SHARED lock on a database file: a read lock on these 510 bytes
    fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, 510, 0x40000002)
    print("taken")
except OSError:
    print("held")
"""


def test_keeping_an_emptied_store_aside_leaves_the_restore_s_locks_on_it(
    small_store_and_backup: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    db, backup = small_store_and_backup
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        path.unlink(missing_ok=True)
    with closing(sqlite3.connect(db)) as emptied:  # a store emptied: no table, write-ahead log on
        emptied.execute("PRAGMA journal_mode = WAL")
        emptied.execute("CREATE TABLE scratch (x)")
        emptied.execute("DROP TABLE scratch")
    seen: list[str] = []

    def lock_once_kept(status: int) -> None:
        if status == SQLITE_OK and not seen:  # the copy kept aside, the copy into it under way
            seen.append(subprocess.run(
                [sys.executable, "-c", SHARED_LOCK_TAKER, str(db)], capture_output=True, text=True, timeout=60,
            ).stdout.strip())

    watch_the_copy_into(monkeypatch, db, lock_once_kept)
    report = maintenance.restore(db, backup)

    assert seen == ["held"]  # before: "taken", its byte copy's closing had dropped the restore's lock
    assert report.kept_as is not None and report.kept_as.is_file()
    assert ids_in(db) == {"in-backup"}


def test_a_store_without_a_write_ahead_log_has_its_leases_counted_and_is_kept_aside(
    small_store_and_backup: tuple[Path, Path],
) -> None:
    db, backup = small_store_and_backup
    with open_store(db) as store:
        tasks.claim_task(store, "marker", "agent-a", 600_000)
    with closing(sqlite3.connect(db)) as connection:
        connection.execute("PRAGMA journal_mode = DELETE")  # as on a file system without shared memory

    with pytest.raises(StoreError, match="1 live lease"):  # before: restored, its leases unread
        maintenance.restore(db, backup, busy_timeout_s=5)
    assert unchanged(db)
    report = maintenance.restore(db, backup, force=True, busy_timeout_s=5)

    assert ids_in(db) == {"in-backup"}
    assert report.kept_as is not None and ids_in(report.kept_as) == {"in-backup", "marker"}
