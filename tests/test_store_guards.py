"""The store refuses what is not its own and never waits forever: a foreign or
emptied database is left untouched, a new store is never seen half made, and
a writer stopped while holding the lock costs the others one busy timeout."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pytest_maf import tasks
from pytest_maf.errors import StoreBusyError, StoreError
from pytest_maf.store import open_store, setup_store
from pytest_maf.store.schema import APPLICATION_ID
from backends import store_with_damaged_rows
from workspace import DEADLINE_S, Workspace


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def foreign_database(path: Path) -> Path:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER)")
        connection.execute("INSERT INTO invoices (total) VALUES (42)")
    return path


def test_a_new_store_is_marked_as_ours(tmp_path: Path) -> None:
    setup_store(tmp_path / "runtime.db")
    with sqlite3.connect(tmp_path / "runtime.db") as connection:
        assert connection.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_another_applications_database_is_refused_untouched(tmp_path: Path) -> None:
    other = foreign_database(tmp_path / "other-app.db")
    before = digest(other)

    for attempt in (lambda: open_store(other), lambda: open_store(other, create=True), lambda: setup_store(other)):
        with pytest.raises(StoreError, match="not a pytest-maf database.*invoices.*left untouched"):
            attempt()

    assert digest(other) == before


def test_maf_refuses_a_foreign_database_from_the_command_line(workspace: Workspace) -> None:
    other = foreign_database(workspace.home / "other-app.db")
    before = digest(other)

    for argv in (("--db", str(other), "task", "list"), ("--db", str(other), "setup")):
        refused = workspace.maf(workspace.main, *argv)
        assert refused.returncode == 2, refused.stderr
        assert "not a pytest-maf database" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert digest(other) == before


def test_a_store_from_before_marking_is_still_opened_and_then_marked(tmp_path: Path) -> None:
    path = tmp_path / "runtime.db"
    setup_store(path)
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA application_id = 0")
    with open_store(path) as store:
        tasks.add_task(store, task_id="t1")
    setup_store(path)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_an_emptied_store_is_damaged_not_fresh(workspace: Workspace) -> None:
    database = workspace.main / ".maf" / "runtime.db"
    ok = workspace.maf(workspace.main, "reservation", "acquire", "docs/api.md", agent="alice")
    assert ok.returncode == 0, ok.stderr
    database.write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    workspace.stage(workspace.second, "docs/api.md")

    guard = workspace.maf(workspace.second, "guard", agent="bob")
    setup = workspace.maf(workspace.main, "setup")
    listing = workspace.maf(workspace.main, "task", "list")

    assert guard.returncode != 0, "the guard let a commit through an emptied store"
    for refused in (setup, listing):
        assert refused.returncode == 2, refused.stdout
        assert "is empty" in refused.stderr and "maf db restore" in refused.stderr
    assert database.read_bytes() == b""


def test_two_processes_creating_one_store_both_see_it_whole(tmp_path: Path) -> None:
    script = (
        "import sys; from pytest_maf.store import open_store; from pytest_maf import tasks\n"
        "with open_store(sys.argv[1], create=True) as store:\n"
        "    tasks.add_task(store)\n"
    )
    for round_ in range(5):
        path = tmp_path / f"r{round_}" / "runtime.db"
        runs = [
            subprocess.Popen([sys.executable, "-c", script, str(path)], stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        errors = [run.communicate(timeout=DEADLINE_S)[1] for run in runs]
        assert [run.returncode for run in runs] == [0] * 4, errors
        with open_store(path) as store:
            assert len(tasks.list_tasks(store)) == 4
        assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".new")]


HOLDER = """
import os, signal, sys
from pytest_maf.store import open_store

with open_store(sys.argv[1]) as store:
    def hold(transaction):
        print("holding", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)  # stopped inside its write, holding every lock
    store.write(hold)
"""


def test_a_writer_stopped_while_holding_the_lock_costs_one_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "runtime.db"
    setup_store(path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        with open_store(path, busy_timeout_s=1.0) as store:
            with pytest.raises(StoreBusyError, match=f"stayed busy.*pid {holder.pid} holds the writer lock"):
                tasks.add_task(store, task_id="t1")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=DEADLINE_S)
    with open_store(path) as store:  # the lock died with its holder
        tasks.add_task(store, task_id="t1")


def test_maf_says_the_store_is_busy_with_exit_5(workspace: Workspace) -> None:
    database = workspace.main / ".maf" / "runtime.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(database)], stdout=subprocess.PIPE, text=True, env=workspace.env()
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        busy = workspace.maf(workspace.second, "task", "add", "--id", "t1", MAF_BUSY_TIMEOUT="1")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=DEADLINE_S)

    assert busy.returncode == 5, busy.stderr
    assert "stayed busy" in busy.stderr and "MAF_BUSY_TIMEOUT" in busy.stderr
    assert "Traceback" not in busy.stderr


def test_a_long_wait_for_sqlites_own_lock_neither_overflows_nor_leaks_an_error(tmp_path: Path) -> None:
    # A plain sqlite3 client (not a pytest-maf writer) holds the write lock for 1.5 s;
    # pytest-maf's writer retries thousands of times without failing.
    path = tmp_path / "runtime.db"
    setup_store(path)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.5, lambda: blocker.execute("COMMIT"))
    release.start()
    try:
        with open_store(path, busy_timeout_s=20) as store:
            tasks.add_task(store, task_id="t1")
    finally:
        release.join()
        blocker.close()
    with open_store(path) as store:
        assert tasks.get_task(store, "t1").state == "READY"


def test_retry_backoff_stays_bounded_over_many_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_maf.store import sqlite as backend

    monkeypatch.setattr(backend.time, "sleep", lambda seconds: None)  # retry as fast as possible

    attempts = 0

    def always_busy() -> None:
        nonlocal attempts
        attempts += 1
        raise sqlite3.OperationalError("database is locked")

    store = backend.SQLiteStore(Path("unused.db"), busy_timeout_s=0.5)
    with pytest.raises(StoreBusyError, match="stayed busy"):
        store._retrying_busy(always_busy, time.monotonic() + 0.5)
    assert attempts > 2_000  # 2**n past n = 1024 no longer fits a float


def test_setup_on_a_damaged_store_says_so_and_how_out(tmp_path: Path) -> None:
    path = tmp_path / "runtime.db"
    store_with_damaged_rows(path)
    before = digest(path)

    with pytest.raises(StoreError, match="is damaged.*maf db recover.*maf db restore"):
        setup_store(path)
    assert digest(path) == before
    path.write_bytes(b"this is not a database, just text that is long enough to have a header" * 20)
    with pytest.raises(StoreError, match="it is damaged: run `maf db recover`"):
        setup_store(path)


def test_a_store_path_that_is_a_dangling_link_is_refused_not_created_through(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "runtime.db"
    link = tmp_path / ".maf" / "runtime.db"
    link.parent.mkdir()
    link.symlink_to(target)

    for attempt in (lambda: setup_store(link), lambda: open_store(link, create=True)):
        with pytest.raises(StoreError, match="symbolic link to .* which does not exist"):
            attempt()
    assert not target.parent.exists()


def test_a_read_only_file_beside_the_store_is_named_in_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A read of a read-only store leaves a read-only -shm behind: once the store is writable again
    # every write still fails, and the error must say which file is in the way, not "check the file".
    # (Permissions bind no one here if the tests run as root: the user's view of them is faked.)
    import os

    from pytest_maf.store import sqlite as sqlite_store

    db = tmp_path / "runtime.db"
    with open_store(db, create=True) as store:
        tasks.add_task(store, task_id="t1")
        shm = Path(f"{db}-shm")
        assert shm.exists()
        real_access = os.access
        monkeypatch.setattr(sqlite_store.os, "access", lambda path, mode: real_access(path, mode) and Path(path) != shm)

        error = store._unreadable(sqlite3.OperationalError("attempt to write a readonly database"))

    assert f"{shm} cannot be written by this user" in str(error) and "check the file" not in str(error)


def test_a_read_only_file_beside_a_store_opened_through_a_link_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite keeps the -wal and -shm beside the file the link names, not beside the link.
    import os

    from pytest_maf.store import sqlite as sqlite_store

    real_db = tmp_path / "elsewhere" / "runtime.db"
    real_db.parent.mkdir()
    open_store(real_db, create=True).close()
    link = tmp_path / "runtime.db"
    link.symlink_to(real_db)
    with open_store(link) as store:
        tasks.add_task(store, task_id="t1")
        shm = Path(f"{real_db}-shm")
        assert shm.exists() and not Path(f"{link}-shm").exists()
        real_access = os.access
        monkeypatch.setattr(sqlite_store.os, "access", lambda path, mode: real_access(path, mode) and Path(path) != shm)

        error = store._unreadable(sqlite3.OperationalError("attempt to write a readonly database"))

    assert f"{shm} cannot be written by this user" in str(error)
