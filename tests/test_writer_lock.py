"""The SQLite writers' turn: no waiter starves, nobody waits past its deadline, the WAL stays checkpointed."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pytest_maf import tasks
from pytest_maf.errors import StoreBusyError
from pytest_maf.store import open_store, sqlite, writer_lock
from pytest_maf.store.writer_lock import MARK_AT, MARK_STALE_S, WriterLock, _MARK, _now_ms

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator


class Waited(Exception):
    pass


def lock_at(path: Path) -> WriterLock:
    def refuse(waited: float) -> Waited:
        return Waited(waited)

    return WriterLock(path, refuse)


def mark(path: Path, token: int, age_s: float) -> None:
    """A waiter of another process that has waited too long and marked itself ``age_s`` ago."""
    with path.open("r+b") as file:
        file.seek(MARK_AT)
        file.write(_MARK.pack(token, _now_ms() - int(age_s * 1000)))


def test_a_waiter_that_has_waited_too_long_goes_first(tmp_path: Path) -> None:
    path = tmp_path / "runtime.db.lock"
    other = lock_at(path)
    with other.turn(time.monotonic() + 5):  # creates the file
        pass
    mark(path, token=42, age_s=0)

    with pytest.raises(Waited):  # the lock is free, but a starving waiter's turn comes first
        with other.turn(time.monotonic() + 0.03):
            pass
    mark(path, token=42, age_s=2 * MARK_STALE_S)  # the waiter died or gave up long ago
    with other.turn(time.monotonic() + 5):
        pass
    other.close()


def marked_token(path: Path) -> int:
    data = path.read_bytes()[MARK_AT : MARK_AT + _MARK.size]
    return _MARK.unpack(data)[0] if len(data) == _MARK.size else 0


def test_a_waiter_marks_itself_and_leaves_no_mark_when_it_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "runtime.db.lock"
    holder, waiter = lock_at(path), lock_at(path)
    outcome: list[BaseException] = []

    def wait_in_vain() -> None:
        try:
            with waiter.turn(time.monotonic() + 40 * writer_lock.STARVING_AFTER_S):
                pass
        except BaseException as error:  # noqa: BLE001 - read by the test below
            outcome.append(error)

    with holder.turn(time.monotonic() + 5):
        waiting = threading.Thread(target=wait_in_vain)
        waiting.start()
        deadline = time.monotonic() + 5
        while marked_token(path) == 0 and waiting.is_alive():  # it marks itself once it has waited too long
            assert time.monotonic() < deadline, "the waiter never marked itself"
            time.sleep(0.005)
        seen = marked_token(path)
        waiting.join(timeout=5)
        assert not waiting.is_alive()
    assert seen != 0  # marked while it waited
    assert len(outcome) == 1 and isinstance(outcome[0], Waited)
    assert marked_token(path) == 0  # and gave up without leaving the mark behind
    with waiter.turn(time.monotonic() + 5):  # and once the holder is done, it writes at once
        pass
    holder.close()
    waiter.close()


def test_a_store_whose_writer_lock_is_held_says_busy_and_who_holds_it(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    with open_store(db, create=True, busy_timeout_s=0.05) as store:
        holder = lock_at(Path(f"{db}.lock"))
        with holder.turn(time.monotonic() + 5):
            with pytest.raises(StoreBusyError, match="stayed busy"):
                tasks.add_task(store)
        holder.close()
        tasks.add_task(store, task_id="after")
        assert tasks.get_task(store, "after").state == "READY"


def test_a_store_counts_the_turns_its_writes_took_and_how_long_they_waited_for_and_held_them(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    path = Path(f"{db}.lock")
    with open_store(db, create=True) as store:
        before = store.writer_turns()
        holder = lock_at(path)
        holder.acquire(time.monotonic() + 5)
        adding = threading.Thread(target=tasks.add_task, args=(store,), kwargs={"task_id": "waited"})
        adding.start()
        deadline = time.monotonic() + 5
        while marked_token(path) == 0:  # it has waited STARVING_AFTER_S at least
            assert time.monotonic() < deadline, "the write never waited for the holder"
            time.sleep(0.001)
        holder.release()
        adding.join(timeout=5)
        assert not adding.is_alive()
        store.write(lambda transaction: time.sleep(0.05))
        store.read(lambda transaction: transaction.get_task("waited"))  # a read takes no turn
        after = store.writer_turns()
        holder.close()

    assert after["turns"] - before["turns"] == 2
    assert after["waited_s"] - before["waited_s"] >= writer_lock.STARVING_AFTER_S
    assert after["held_s"] - before["held_s"] >= 0.05


def lock_is_free(path: Path) -> bool:
    """Whether a writer of another process could take the writers' lock at ``path`` now."""
    descriptor = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)  # lets go of it too


def test_ctrl_c_as_the_writers_lock_is_taken_leaves_it_free(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "runtime.db"
    real_flock = fcntl.flock

    def interrupted_once_taken(descriptor: int, operation: int) -> None:
        real_flock(descriptor, operation)
        if operation & fcntl.LOCK_EX:
            raise KeyboardInterrupt  # Ctrl-C as flock returns

    with open_store(db, create=True) as store:
        monkeypatch.setattr(writer_lock.fcntl, "flock", interrupted_once_taken)
        with pytest.raises(KeyboardInterrupt):
            tasks.add_task(store, task_id="interrupted")
        monkeypatch.setattr(writer_lock.fcntl, "flock", real_flock)

        assert lock_is_free(Path(f"{db}.lock"))  # no other process is held up
        tasks.add_task(store, task_id="after")
        assert [task.id for task in tasks.list_tasks(store)] == ["after"]


class InterruptedAfterBegin:
    """The store's connection, with Ctrl-C arriving as its transaction has just begun."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def execute(self, sql: str, *parameters: object) -> sqlite3.Cursor:
        cursor = self.connection.execute(sql, *parameters)
        if sql.startswith("BEGIN"):
            raise KeyboardInterrupt
        return cursor

    def __getattr__(self, name: str) -> object:
        return getattr(self.connection, name)


def test_ctrl_c_as_a_write_begins_rolls_it_back(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    with open_store(db, create=True) as store:
        connection = store.connection
        store._connection = InterruptedAfterBegin(connection)  # type: ignore[assignment]
        with pytest.raises(KeyboardInterrupt):
            tasks.add_task(store, task_id="interrupted")
        store._connection = connection

        assert not connection.in_transaction  # else every other writer waits, and this store's next write fails
        tasks.add_task(store, task_id="after")
        with open_store(db, busy_timeout_s=1) as other:
            tasks.add_task(other, task_id="other")
        assert sorted(task.id for task in tasks.list_tasks(store)) == ["after", "other"]


WRITER_WITH_A_FORKED_WORKER = textwrap.dedent("""
    import multiprocessing, sys, time
    from pytest_maf import tasks
    from pytest_maf.store import open_store

    store = open_store(sys.argv[1])
    tasks.add_task(store)  # its lock file is open from here on
    worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,), daemon=True)
    worker.start()  # a worker that never writes
    print(worker.pid, flush=True)

    def stuck(transaction):
        print("writing", flush=True)
        time.sleep(60)

    store.write(stuck)
""")


@pytest.mark.timeout(60)
def test_a_writer_killed_in_its_write_holds_nobody_up_though_a_worker_it_forked_lives_on(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    open_store(db, create=True).close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER_WITH_A_FORKED_WORKER, str(db)], stdout=subprocess.PIPE, text=True)
    worker = 0
    try:
        assert writer.stdout is not None
        worker = int(writer.stdout.readline())
        assert writer.stdout.readline().strip() == "writing"
        writer.kill()
        writer.wait(timeout=10)
        os.kill(worker, 0)  # still alive, with the file descriptors it was forked with

        with open_store(db, busy_timeout_s=2) as store:
            tasks.add_task(store, task_id="after")  # before: "stayed busy (pid ... holds the writer lock)"
            assert tasks.get_task(store, "after") is not None
    finally:
        writer.kill()
        writer.wait(timeout=10)
        if worker:
            os.kill(worker, signal.SIGKILL)


def test_a_forked_child_waits_for_the_writers_turn_its_parent_holds(tmp_path: Path) -> None:
    import multiprocessing

    db = tmp_path / "runtime.db"
    context = multiprocessing.get_context("fork")
    with open_store(db, create=True, busy_timeout_s=0.2) as store:
        tasks.add_task(store)  # its lock file is open from here on
        outcome = context.Queue()

        def child() -> None:
            try:
                tasks.add_task(store, task_id="child")
                outcome.put("wrote")
            except StoreBusyError:
                outcome.put("busy")
            store.close()

        def holding(transaction: object) -> str:
            process = context.Process(target=child)
            process.start()
            process.join(timeout=30)
            assert lock_is_free(Path(f"{db}.lock")) is False  # the child's try let go of nothing of the parent's
            return str(outcome.get(timeout=5))

        assert store.write(holding) == "busy"


def test_a_store_writes_where_the_system_has_no_pread_and_no_flock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows: no os.pread, no fcntl; SQLite's own locking and checkpoints alone."""
    monkeypatch.setattr(writer_lock, "fcntl", None)
    monkeypatch.setattr(writer_lock, "_pread", None, raising=False)
    monkeypatch.delattr(os, "pread")
    db = tmp_path / "runtime.db"

    with open_store(db, create=True) as store:
        for number in range(3):
            tasks.add_task(store, task_id=f"task-{number}")  # before: AttributeError after committing
        assert [task.id for task in tasks.list_tasks(store)] == ["task-0", "task-1", "task-2"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc/self/fd")
def test_stores_dropped_without_closing_leave_one_descriptor_open_not_one_each(tmp_path: Path) -> None:
    import gc

    db = tmp_path / "runtime.db"
    open_store(db, create=True).close()

    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    gc.collect()
    before = descriptors()
    for _ in range(10):
        store = open_store(db)
        tasks.add_task(store)  # the write reads the WAL-index (-shm) through the process's descriptor of it
        del store
    gc.collect()

    assert descriptors() - before <= 1  # that one: closing it could take locks of a connection still open


# SQLite's lock byte on the WAL-index that each connection holds shared while it is open ("in use").
WAL_INDEX_IN_USE_AT = 128


def in_use_by_others(db: Path) -> bool:
    """Whether a process other than this one holds the database's WAL-index as in use: asked by a
    process of its own, since POSIX locks never stand in the way of their own process."""
    asked = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os, sys
            try:
                descriptor = os.open({f"{db}-shm"!r}, os.O_RDWR)
            except FileNotFoundError:  # the last connection to close removed it
                sys.exit(0)
            try:
                fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, {WAL_INDEX_IN_USE_AT})
            except OSError:
                sys.exit(1)
        """)], timeout=60,
    )
    return asked.returncode == 1


@pytest.mark.skipif(sys.platform != "linux", reason="SQLite's lock bytes as its Unix VFS places them")
@pytest.mark.parametrize("closed_first", ["the other store", "its checkpointing"])
def test_closing_one_store_leaves_another_of_the_process_holding_the_wal_index(tmp_path: Path, closed_first: str) -> None:
    """The MCP server opens a store per call, side by side: one closing must not let go of the locks of
    the others' connections, or the next process to open the database starts the WAL-index over under
    them (a SIGBUS where it is mapped)."""
    db = tmp_path / "runtime.db"
    open_store(db, create=True).close()
    first, second = open_store(db), open_store(db)
    tasks.add_task(first)  # it reads the WAL-index through the checkpointer; the second only reads
    assert [task.id for task in tasks.list_tasks(second)]
    assert in_use_by_others(db)

    if closed_first == "the other store":
        first.close()
    else:
        first._checkpointer.close()  # as SQLiteStore.close did before it closed the connection

    assert in_use_by_others(db)
    assert [task.id for task in tasks.list_tasks(second)]
    second.close()
    first.close()
    assert not in_use_by_others(db)


@pytest.fixture
def often_checkpointed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A new store whose WAL is checkpointed past 20 frames, not 1,000, and is made to start over by
    every checkpoint, not past 3,000 frames: a few writes make a checkpoint."""
    monkeypatch.setattr(writer_lock, "CHECKPOINT_FRAMES", 20)
    monkeypatch.setattr(writer_lock, "RESTART_FRAMES", 1)
    db = tmp_path / "runtime.db"
    open_store(db, create=True).close()
    return db


def test_the_store_checkpoints_its_wal_after_writes_not_inside_them(often_checkpointed: Path) -> None:
    with open_store(often_checkpointed) as store:
        for _ in range(100):  # several frames each: without a checkpoint, hundreds would pile up
            tasks.add_task(store)
        deadline = time.monotonic() + 10  # the checkpoint runs beside the writer, not in its way
        while (pending := store._checkpointer._pending()) is None or pending >= 40:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, f"{pending} frames still pending"
            time.sleep(0.01)
        autocheckpoint = store.pragma("wal_autocheckpoint")[0][0]  # type: ignore[attr-defined]

    assert autocheckpoint == 0  # SQLite's own, inside COMMIT, is off on the store's connection


def wal_frames(db: Path) -> int:
    """Frames the WAL file has room for: its size, which SQLite never shrinks by itself."""
    return Path(f"{db}-wal").stat().st_size // (4096 + 24)


def wal_index(db: Path) -> tuple[int, int]:
    """The frames in the WAL now and how many of them are copied back, from its WAL-index."""
    frames = writer_lock.wal_index_frames(Path(f"{db}-shm").read_bytes())
    assert frames is not None, "no WAL-index"
    return frames


def wal_header_frames(db: Path) -> int:
    """The frames in the WAL now: a WAL started over holds only the writes since."""
    return wal_index(db)[0]


def write_elsewhere(db: Path) -> None:
    """A write by another process: a frame or two appended to the WAL."""
    other = sqlite3.connect(db, isolation_level=None)
    other.execute(
        "INSERT INTO counters (name, label, value) VALUES ('elsewhere', '', 1)"
        " ON CONFLICT (name, label) DO UPDATE SET value = value + 1"
    )
    other.close()


def test_what_writers_append_while_the_checkpoint_copies_is_copied_back_too(
    often_checkpointed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Or the WAL is never copied back whole, never starts over, and grows by every write under steady work."""
    db = often_checkpointed
    copy = writer_lock._checkpoint
    appended = threading.Event()

    def another_writer_meanwhile(connection: sqlite3.Connection) -> bool:
        reached_end = copy(connection)
        if not appended.is_set():  # another process writes while the first copy ends
            write_elsewhere(db)
            appended.set()
        return reached_end

    monkeypatch.setattr(writer_lock, "_checkpoint", another_writer_meanwhile)
    with open_store(db) as store:
        deadline = time.monotonic() + 10
        while (store._checkpointer._pending() or 0) < 20:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "no write ever asked for a checkpoint"
            tasks.add_task(store)  # until a write asks for a checkpoint; then no more from here
        assert appended.wait(10)
        deadline = time.monotonic() + 10
        while store._checkpointer._pending() != 0:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the frames written during the checkpoint were never copied back"
            time.sleep(0.01)
        tasks.add_task(store)
        frames = wal_header_frames(db)
    assert frames < 20  # this write started the WAL over


def pending_frames(db: Path) -> int:
    """Frames in the WAL not yet copied back."""
    last, copied = wal_index(db)
    return last - copied


def checkpointing_stopped(store: object, db: Path) -> None:
    """Once the store's checkpointing thread has stopped for want of work, and another connection has
    copied back what it left: nothing of the store's runs a checkpoint until it is asked again."""
    __tracebackhide__ = True
    thread = store._checkpointer._thread  # type: ignore[attr-defined]
    if thread is not None:
        thread.join(10)
        assert not thread.is_alive(), "the checkpointing thread never stopped"
    other = sqlite3.connect(db)
    deadline = time.monotonic() + 10
    try:
        while pending_frames(db) != 0:
            assert time.monotonic() < deadline, "the WAL was never copied back whole"
            other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        other.close()


@pytest.fixture
def soon_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpointing thread stops once it has had nothing to do for 10 ms, not 5 s."""
    monkeypatch.setattr(writer_lock, "CHECKPOINTER_IDLE_S", 0.01)


@pytest.mark.usefixtures("soon_idle")
def test_closing_the_store_copies_back_what_was_written_while_its_last_checkpoint_copied(
    often_checkpointed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However few frames the WAL holds, and its checkpointing thread stopped for want of work: the next
    process to write starts it over."""
    monkeypatch.setattr(writer_lock, "RESTART_FRAMES", 1_000_000)  # steady work would not start it over yet
    db = often_checkpointed
    reader = sqlite3.connect(db)  # another connection open: closing the store is not SQLite's last close
    reader.execute("SELECT COUNT(*) FROM tasks").fetchall()
    store = open_store(db)
    for _ in range(100):
        tasks.add_task(store)
    checkpointing_stopped(store, db)
    write_elsewhere(db)  # frames to copy back at close, none asking for a checkpoint
    copy = writer_lock._checkpoint
    appended = threading.Event()

    def another_writer_during_the_last(connection: sqlite3.Connection) -> bool:
        """Another writer writes after every copy of the closing store, outside the writers' turn."""
        reached_end = copy(connection)
        with open(f"{db}.lock", "a+b") as turn:
            try:
                fcntl.flock(turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return reached_end  # the checkpoint holds the writers' turn
            write_elsewhere(db)
            appended.set()
        return reached_end

    monkeypatch.setattr(writer_lock, "_checkpoint", another_writer_during_the_last)
    store.close()
    pending = pending_frames(db)
    reader.close()

    assert appended.is_set()
    assert pending == 0


@pytest.mark.usefixtures("soon_idle")
def test_closing_a_store_whose_wal_is_copied_back_whole_starts_no_checkpoint(
    often_checkpointed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One started there could race the write that starts the WAL over (SQLite's WAL-reset bug)."""
    db = often_checkpointed
    reader = sqlite3.connect(db)  # another connection open: closing the store is not SQLite's last close
    reader.execute("SELECT COUNT(*) FROM tasks").fetchall()
    store = open_store(db)
    for _ in range(100):  # a checkpointing thread started
        tasks.add_task(store)
    checkpointing_stopped(store, db)
    started = []
    copy = writer_lock._checkpoint

    def counted(connection: sqlite3.Connection) -> bool:
        started.append(connection)
        return copy(connection)

    monkeypatch.setattr(writer_lock, "_checkpoint", counted)
    store.close()
    reader.close()

    assert started == []


def test_a_long_read_holds_no_writer_up_behind_the_checkpoint(
    often_checkpointed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy that a reader's snapshot stopped short is not finished in the writers' turn: once the read
    ended, the writers would wait for the whole backlog to be copied and synced."""
    db = often_checkpointed
    waiting: list[int] = []  # frames not copied back as the checkpoint took the writers' turn
    take = WriterLock.turn

    @contextlib.contextmanager
    def recorded(self: WriterLock, deadline: float) -> Iterator[None]:
        with take(self, deadline):
            waiting.append(pending_frames(db))
            yield

    monkeypatch.setattr(WriterLock, "turn", recorded)
    reader = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM tasks").fetchall()  # a snapshot no checkpoint may pass
    copy = writer_lock._checkpoint
    copies = []
    turns_while_reading = []
    backlog = []  # frames not copied back as the read ends

    def the_read_ends_after_the_third(connection: sqlite3.Connection) -> bool:
        reached_end = copy(connection)
        copies.append(reached_end)
        if len(copies) == 3:  # the read ends between this copy and what follows it
            turns_while_reading.extend(waiting)
            backlog.append(pending_frames(db))
            reader.execute("COMMIT")
        return reached_end

    monkeypatch.setattr(writer_lock, "_checkpoint", the_read_ends_after_the_third)
    with open_store(db) as store:
        deadline = time.monotonic() + 10
        while len(copies) < 3:  # then no more writes but the one under way as the third copy ends
            assert time.monotonic() < deadline, "no checkpoint ran"
            tasks.add_task(store)
    left = pending_frames(db)
    reader.close()

    assert turns_while_reading == []
    assert copies[:3] == [False, False, False]  # the reader stopped each short
    # The backlog was copied beside the writers. A turn finds at most what the write under way as
    # the read ended appended meanwhile (its frames copied in the turn, as after any copy that reached
    # the WAL's end), never the backlog.
    assert backlog[0] >= 2 * 20  # each short copy was tried again only after another 20 frames
    assert all(frames < backlog[0] / 2 for frames in waiting), (waiting, backlog)
    assert left == 0


def test_a_checkpoint_that_a_long_read_stopped_short_is_not_tried_again_after_every_write(
    often_checkpointed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each try would find the same snapshot in its way: only once as many frames again are written."""
    monkeypatch.setattr(writer_lock, "CHECKPOINT_FRAMES", 100)
    db = often_checkpointed
    copy = writer_lock._checkpoint
    copies = []

    def counted(connection: sqlite3.Connection) -> bool:
        copies.append(connection)
        return copy(connection)

    monkeypatch.setattr(writer_lock, "_checkpoint", counted)
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM tasks").fetchall()  # a snapshot no checkpoint may pass
    with open_store(db) as store:
        for _ in range(200):
            tasks.add_task(store)
        written = wal_header_frames(db)
        tried = len(copies)
    reader.close()

    assert written > 1000  # a write is some 9 frames: one try per write would be 200
    assert tried <= 2 * (written // 100) + 2, f"{tried} checkpoints for {written} frames"


def test_a_wal_grown_behind_a_long_read_shrinks_once_it_starts_over(
    often_checkpointed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "WAL_SIZE_LIMIT_BYTES", 200 * (4096 + 24))
    db = often_checkpointed
    reader = sqlite3.connect(db, isolation_level=None)
    with open_store(db) as store:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM tasks").fetchall()  # a snapshot no checkpoint may pass
        for _ in range(100):
            tasks.add_task(store)
        grown = wal_frames(db)
        reader.execute("COMMIT")
        for _ in range(300):  # checkpoints that reach the WAL's end, then a write that starts it over
            tasks.add_task(store)
            if wal_frames(db) <= 200:
                break
        shrunk = wal_frames(db)
    reader.close()
    assert grown > 500
    assert shrunk <= 200


def test_closing_the_store_waits_for_its_checkpoint_and_leaves_no_thread(often_checkpointed: Path) -> None:
    db = often_checkpointed
    reader = sqlite3.connect(db)  # another connection open: closing the store is not SQLite's last close
    try:
        reader.execute("SELECT COUNT(*) FROM tasks").fetchall()
        store = open_store(db)
        for _ in range(100):
            tasks.add_task(store)
        store.close()
        left = [thread.name for thread in threading.enumerate() if thread.name.startswith("maf-checkpoint")]
        pending = pending_frames(db)
    finally:
        reader.close()
    assert left == []
    assert pending is not None and pending < 40


def test_a_store_opened_through_a_symlink_takes_the_same_writers_lock(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    open_store(db, create=True).close()
    (tmp_path / "link.db").symlink_to(db)
    holder = WriterLock(Path(f"{db}.lock"), on_timeout=lambda waited: Waited(waited))
    with holder.turn(time.monotonic() + 5):
        with open_store(tmp_path / "link.db", busy_timeout_s=0.3) as through_link:
            with pytest.raises(StoreBusyError):
                tasks.add_task(through_link)
    holder.close()
    assert not (tmp_path / "link.db.lock").exists()


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP], ids=["ENOLCK", "EOPNOTSUPP"])
def test_a_store_writes_where_the_file_system_cannot_lock_the_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """NFS without its lock daemon, a file system without flock: SQLite's own locking alone, as on Windows."""

    def cannot_lock(fd: int, operation: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(writer_lock.fcntl, "flock", cannot_lock)
    db = tmp_path / "runtime.db"
    with open_store(db, create=True) as store:  # before: "No locks available" from every write, setup's first
        for number in range(3):
            tasks.add_task(store, task_id=f"task-{number}")
        assert [task.id for task in tasks.list_tasks(store)] == ["task-0", "task-1", "task-2"]


def test_a_writer_that_waited_past_its_deadline_is_told_so_whatever_the_error_it_raises(tmp_path: Path) -> None:
    """The checkpointer's turn times out with TimeoutError, an OSError: it is still a timeout, the lock still used."""
    path = tmp_path / "runtime.db.lock"
    holder, waiter = lock_at(path), WriterLock(path, on_timeout=TimeoutError)
    with holder.turn(time.monotonic() + 5):
        with pytest.raises(TimeoutError):
            with waiter.turn(time.monotonic() + 0.02):
                pass
    with waiter.turn(time.monotonic() + 5):
        assert lock_is_free(path) is False  # the waiter took the lock file, not SQLite's locking alone
    holder.close()
    waiter.close()
