"""The writers' turn on one SQLite store: an advisory lock file beside the database.

Writers take ``flock`` on ``<db>.lock`` before ``BEGIN IMMEDIATE``; every wait
is bounded by the caller's deadline, so a stopped or slow writer never hangs
the others. ``BEGIN IMMEDIATE`` still decides; this lock only orders the
writers of pytest-maf.

A turn is short (a fraction of a millisecond), so a waiter first keeps
looking, giving its processor to any other process that wants it
(``sched_yield``) between looks, for up to :data:`SPIN_S`; only then does it
sleep between looks (:data:`POLL_S`). A process that sleeps and is woken for
every turn runs each turn several times slower (its caches are cold), and
SQLite's own busy handler would sleep in steps of up to 100 ms.

Whoever finds the lock free takes it, so a writer that has just finished can
take it again and again while another waits. A waiter that has waited
:data:`STARVING_AFTER_S` therefore marks itself in the lock file (bytes 16-31:
a token of its own and when it marked), and until it has had its turn (or its
mark is :data:`MARK_STALE_S` old: it died or gave up) nobody else takes the
lock: the writers that have waited longest go first, and the longest wait
stays a few turns long. The holder's pid is at bytes 0-9, for the error that
says who keeps the database busy.

Example::

    lock = WriterLock(Path(".maf/runtime.db.lock"), on_timeout=lambda waited: TimeoutError(waited))
    with lock.turn(deadline=time.monotonic() + 30):
        ...  # BEGIN IMMEDIATE ... COMMIT
    lock.close()
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import struct
import time
from _thread import allocate_lock, get_ident
from pathlib import Path

from pytest_maf.store import sharing

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterator
    from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: SQLite's own locking alone
    fcntl = None  # type: ignore[assignment]

# A waiter looks again at once, yielding its processor, for SPIN_S, then every POLL_S (MARKED_POLL_S
# once it has marked itself); it marks itself once it has waited STARVING_AFTER_S: a few turns.
SPIN_S, POLL_S = 0.02, 0.0005
STARVING_AFTER_S, MARKED_POLL_S = 0.003, 0.0001
MARK_STALE_S = 0.1
_pread = getattr(os, "pread", None)  # not on Windows
_sched_yield = getattr(os, "sched_yield", None)  # not on every platform: there the waiter sleeps at once
MARK_AT = 16
_MARK = struct.Struct("<qq")  # token, marked at (ms, CLOCK_MONOTONIC: the same clock for every process)


_NO_LOCKS_HERE = frozenset(
    getattr(errno, name) for name in ("ENOLCK", "EOPNOTSUPP", "ENOTSUP", "ENOSYS", "EINVAL") if hasattr(errno, name)
)


class _WaitedTooLong(Exception):
    """The deadline passed (args: the seconds waited); :attr:`WriterLock.on_timeout` says so to the caller."""


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class WriterLock:
    """The lock file of one store, opened on first use; :meth:`turn` holds it around a write."""

    def __init__(self, path: Path, on_timeout: Callable[[float], BaseException]) -> None:
        self.path = path
        self.on_timeout = on_timeout  # the error to raise after waiting that many seconds
        self._file: BinaryIO | bool | None = None
        self._token = int.from_bytes(os.urandom(7), "little") + 1
        # This process's use of the turn: how many it took, the seconds it waited for them and held them.
        self.turns, self.waited_s, self.held_s = 0, 0.0, 0.0
        self._taken_at = 0.0
        self._holding = False  # may hold: set as flock is tried, so no interruption leaves a turn held unknown
        sharing.close_in_children(self)

    def close_inherited(self) -> None:
        """In a forked child, the lock file inherited open is let go of and opened anew on use.

        A lock belongs to the open file, which a fork shares: the child would take a turn its parent
        holds, let go of the parent's turn with its own, and a child that never writes (a
        multiprocessing worker) would keep the turn of a parent killed in its write held for as long
        as it lives. Closing the child's copy leaves the parent's hold as it is.
        """
        self.close()

    def _open(self) -> BinaryIO | None:
        if self._file is None:
            try:
                # Not O_APPEND: the holder's pid is written at offset 0.
                descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                self._file = os.fdopen(descriptor, "r+b", buffering=0)
            except OSError:
                self._file = False
        return self._file or None  # type: ignore[return-value]

    def close(self) -> None:
        if self._file:
            self._file.close()  # type: ignore[union-attr]
        self._file = None
        self._holding = False

    def _someone_else_starving(self, fd: int) -> bool:
        data = os.pread(fd, _MARK.size, MARK_AT)
        if len(data) < _MARK.size:
            return False
        token, marked_at = _MARK.unpack(data)
        return token not in (0, self._token) and 0 <= _now_ms() - marked_at < MARK_STALE_S * 1000

    def _unmark(self, fd: int) -> None:
        data = os.pread(fd, _MARK.size, MARK_AT)
        if len(data) == _MARK.size and _MARK.unpack(data)[0] == self._token:
            os.pwrite(fd, _MARK.pack(0, 0), MARK_AT)

    @contextlib.contextmanager
    def turn(self, deadline: float) -> Iterator[None]:
        """Hold the writers' lock for the block; :attr:`on_timeout` once ``deadline`` (monotonic) passes."""
        try:
            self.acquire(deadline)
            yield
        finally:
            self.release()

    def acquire(self, deadline: float) -> None:
        """Take the writers' lock (:meth:`turn` without a block, for the store's every write); nothing
        where there is no lock file to take or the file system cannot lock it (SQLite's own locking alone).

        Whatever interrupts it (Ctrl-C included), the lock is not left held: a caller that calls
        :meth:`release` in a ``finally`` around both lets go of exactly what was taken."""
        lock_file = self._open() if fcntl is not None else None
        if lock_file is None:
            return
        fd = lock_file.fileno()
        started = time.monotonic()
        try:
            self._wait_for(fd, started, deadline)
            with contextlib.suppress(OSError):  # only for the message that names who holds the turn (a full disk)
                os.pwrite(fd, f"{os.getpid():<10}".encode(), 0)
        except _WaitedTooLong as waited:
            self.release()
            raise self.on_timeout(waited.args[0]) from None
        except OSError as error:
            if error.errno not in _NO_LOCKS_HERE:
                self.release()
                raise
            # No flock on this file system (ENOLCK on NFS without its lock daemon, EOPNOTSUPP).
            self.close()  # lets go of whatever the file held
            self._file = False  # from now on SQLite's own locking alone, as where there is no lock file
            return
        except BaseException:
            self.release()
            raise
        self._taken_at = time.monotonic()
        self.turns += 1
        self.waited_s += self._taken_at - started

    def _wait_for(self, fd: int, started: float, deadline: float) -> None:
        """Look for the lock until it is this process's (:attr:`_holding`) or ``deadline`` passes."""
        marked = False
        try:
            while True:
                if not self._someone_else_starving(fd):
                    # Set first: an interruption as flock returns must still find it. Letting go
                    # of a lock this file does not hold changes nothing.
                    self._holding = True
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        self._holding = False
                now = time.monotonic()
                if now >= deadline:
                    raise _WaitedTooLong(now - started)
                if now - started >= STARVING_AFTER_S and not self._someone_else_starving(fd):
                    os.pwrite(fd, _MARK.pack(self._token, _now_ms()), MARK_AT)  # renewed while it waits
                    marked = True
                if now - started < SPIN_S and _sched_yield is not None:
                    _sched_yield()
                else:
                    time.sleep(MARKED_POLL_S if marked else POLL_S)
        finally:
            if marked:
                self._unmark(fd)

    def release(self) -> None:
        """Let go of the lock :meth:`acquire` took; nothing when this lock holds none."""
        if not self._holding:
            return
        fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)  # type: ignore[union-attr]  # first: nothing to interrupt
        self._holding = False
        if self._taken_at:  # a turn acquire counted
            self.held_s += time.monotonic() - self._taken_at
            self._taken_at = 0.0

    def holder(self) -> int | None:
        """The pid that last held the lock, if it is still running and is not this process."""
        try:
            pid = int(self.path.read_bytes()[:10].strip() or b"0")
            if pid <= 0 or pid == os.getpid():
                return None
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid


# SQLite's WAL-index (the -shm file, https://sqlite.org/walformat.html): the last frame
# in the WAL (mxFrame) and how many frames a checkpoint has copied back (nBackfill).
_U32 = struct.Struct("=I")  # native byte order, as SQLite writes the WAL-index
MX_FRAME_AT, N_BACKFILL_AT = 16, 96
CHECKPOINT_FRAMES = 1000  # SQLite's own wal_autocheckpoint
CHECKPOINTER_IDLE_S = 5.0
CATCH_UP_WAIT_S = 0.5  # how long the checkpoint waits for the writers' turn to copy back their last frames
FORK_WAITS_FOR_ROUND_S = 2.0  # how long a fork waits for a checkpoint under way in the parent to end
# The frames a WAL holds before a checkpoint copies back the last of them in the writers' turn, so that
# the next write starts it over: 12 MB of WAL, and one such turn in three checkpoints.
RESTART_FRAMES = 3 * CHECKPOINT_FRAMES


class Checkpointer:
    """Checkpoints a store's WAL after a write, outside the writers' turn and off the writer's path.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses
    :data:`CHECKPOINT_FRAMES`, so with the lock file it would hold every other
    writer up for its copying and two fsyncs. The store's connection turns it
    off (``wal_autocheckpoint = 0``) and, once a write has let go of the lock,
    this looks at the WAL-index and, past the same threshold, asks a thread of
    its own to run a PASSIVE checkpoint on a connection of its own, while this
    process and the others write on. :meth:`close` waits for a checkpoint under
    way, so a process that exits does not leave its WAL growing. Where no
    thread can be started, the checkpoint runs in the writer's thread; where
    the WAL-index cannot be read, SQLite's automatic checkpoint is left as it is.

    The writers append while it copies, so one copy never reaches the WAL's
    end, and SQLite starts a WAL over only once all of it is copied back: the
    WAL would grow by every write, for ever (hundreds of MB in a minute of
    steady work, each frame appended to a new page of the file, each read
    looking through a WAL-index as long). So once the WAL holds
    :data:`RESTART_FRAMES`, and at close, the frames appended meanwhile are
    copied in the writers' turn (``lock_path``, with a lock of the thread's
    own): a few frames, then the next write starts the WAL over. Not after
    every checkpoint: that copy syncs the database with the writers held up.
    Not after a copy that a reader's snapshot stopped short of the WAL's end:
    once the read ended, the turn would copy and sync the whole backlog with
    the writers held up; that backlog is copied beside them first. Such a copy is
    tried again only once another :data:`CHECKPOINT_FRAMES` are written, not
    after every write: each try would find the same snapshot in its way.

    Nothing to copy, no checkpoint: in SQLite before 3.51.3 a checkpoint that
    starts as another connection's write starts a WAL copied back whole over
    can miss that it did, and a later checkpoint then skips frames (SQLite's
    "WAL-reset bug", https://sqlite.org/wal.html#walresetbug). Every
    checkpoint here starts only while frames wait to be copied back.
    """

    def __init__(self, db_path: Path, lock_path: Path | None = None) -> None:
        self.db_path = db_path
        self.lock_path = lock_path
        self.shm_path = Path(f"{db_path}-shm")
        # The process that counts this among the users of its WAL-index descriptor: from the start, so that
        # a store that only reads holds it open for its connection too.
        self._index_taken_in = 0
        self._take_index()
        self._taken_over: sqlite3.Connection | None = None
        self._wanted: threading.Event | None = None  # made with each thread
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._closing = False
        self._tried_at = 0  # the WAL's last frame as the last checkpoint started, until one reaches its end
        self._thread_connection: sqlite3.Connection | None = None  # the checkpointing thread's
        # Held by the thread for each round, and while it opens or closes its connection: a fork
        # waits for it (before_fork), so a child never finds that connection in use.
        self._round = allocate_lock()
        self._paused_for_fork: dict[int, bool] = {}  # by the forking thread: whether it holds _round
        sharing.close_in_children(self)

    def before_fork(self) -> None:
        """Let a round under way end (within :data:`FORK_WAITS_FOR_ROUND_S`), none start, until the fork is made."""
        self._paused_for_fork[get_ident()] = self._round.acquire(True, FORK_WAITS_FOR_ROUND_S)

    def after_fork(self) -> None:
        if self._paused_for_fork.pop(get_ident(), False):
            self._round.release()

    def close_inherited(self) -> str | None:
        """In a forked child, close the connection of the parent's checkpointing thread (which is not
        there): SQLite would otherwise take no lock for the child's own connections to the database.
        Forked as the thread was in SQLite (its connection's mutex held for good): left as it is, and
        the database's path returned (:func:`~pytest_maf.store.sharing.written_at_fork`)."""
        connection, self._thread_connection = self._thread_connection, None
        self._taken_over = None
        if not self._paused_for_fork.get(get_ident(), False):  # the round under way did not end in time
            self._round, self._paused_for_fork = allocate_lock(), {}  # held for good by a thread not here
            if connection is not None:
                sharing.set_aside(connection)
            return str(self.db_path)
        if connection is not None:
            connection.close()  # idle: nothing of the parent's is undone
        return None

    def _take_index(self) -> None:
        if self._index_taken_in != os.getpid():
            _index_descriptors.take(str(self.shm_path))
            self._index_taken_in = os.getpid()

    def _frames(self) -> tuple[int, int] | None:
        """The frames in the WAL and how many of them are copied back, or None when the WAL-index
        cannot be read."""
        if _pread is None:  # Windows: SQLite's automatic checkpoint stays
            return None
        try:
            self._take_index()  # in a forked child
            return wal_index_frames(_index_descriptors.read(str(self.shm_path), N_BACKFILL_AT + 4))
        except OSError:
            return None

    def _pending(self) -> int | None:
        """Frames in the WAL not yet copied back, or None when the WAL-index cannot be read."""
        frames = self._frames()
        return None if frames is None else frames[0] - frames[1]

    def _restart_due(self, closing: bool) -> bool:
        """Whether to copy back, in the writers' turn, what was appended while the checkpoint copied,
        once the WAL is long enough to start over (or the store closes)."""
        frames = self._frames()
        return frames is not None and frames[0] > frames[1] and (closing or frames[0] >= RESTART_FRAMES)

    def after_write(self, connection: sqlite3.Connection) -> None:
        """Checkpoint if the WAL holds :data:`CHECKPOINT_FRAMES` not copied back; called with the lock let go."""
        frames = self._frames()
        if frames is None:
            return
        if connection is not self._taken_over:
            connection.execute("PRAGMA wal_autocheckpoint = 0")  # the WAL-index reads: from now on, here
            self._taken_over = connection
        last, copied = frames
        if last < self._tried_at:  # the WAL started over since
            self._tried_at = 0
        if last - copied < CHECKPOINT_FRAMES or last < self._tried_at + CHECKPOINT_FRAMES:
            return
        if not self._in_background():
            self._copy_back(connection, frames)

    def _copy_back(self, connection: sqlite3.Connection, frames: tuple[int, int] | None) -> bool:
        """A PASSIVE checkpoint of the WAL as ``frames`` (:meth:`_frames`) found it; until one reaches the
        WAL's end, the next waits for another :data:`CHECKPOINT_FRAMES` to be written."""
        if frames is not None:
            self._tried_at = frames[0]
        reached_end = _checkpoint(connection)
        if reached_end:
            self._tried_at = 0
        return reached_end

    def _in_background(self) -> bool:
        """Ask the checkpointing thread for a checkpoint, starting it (again, after a fork) if need be."""
        if self._thread is None or self._thread_pid != os.getpid() or not self._thread.is_alive():
            import threading  # here: a process that never checkpoints (the guard) does without it

            # A new one with each thread: after a fork, the parent's may be held by its thread for good.
            self._wanted = threading.Event()
            thread = threading.Thread(target=self._run, name=f"maf-checkpoint {self.db_path.name}", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # the interpreter is shutting down
                return False
            self._thread, self._thread_pid, self._closing = thread, os.getpid(), False
        self._wake()
        return True

    def _wake(self) -> None:
        if self._wanted is not None:
            self._wanted.set()

    def _run(self) -> None:
        wanted = self._wanted
        assert wanted is not None  # made before the thread
        connection: sqlite3.Connection | None = None
        turn = None if self.lock_path is None else WriterLock(self.lock_path, on_timeout=TimeoutError)
        try:
            while wanted.wait(CHECKPOINTER_IDLE_S):  # idle that long: it ends, and starts again when wanted
                wanted.clear()
                with self._round:  # a fork waits for the round to end (before_fork); a C lock: Ctrl-C leaves it free
                    closing = self._closing  # read first: a close during the checkpoint below is one more round
                    if connection is None:
                        try:  # mode=rw: never creates a database where the store's went away
                            connection = sqlite3.connect(  # closed by a forked child too (close_inherited)
                                f"{self.db_path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None,
                                check_same_thread=False,
                            )
                            self._thread_connection = connection
                        except (sqlite3.Error, OSError, ValueError, RuntimeError):
                            return  # the next write that wants a checkpoint starts a thread again
                    frames = self._frames()
                    reached_end = False
                    if frames is None or frames[0] > frames[1]:  # closing too: what the last writes left goes first
                        reached_end = self._copy_back(connection, frames)  # (never a WAL copied back whole)
                    if turn is not None and reached_end and self._restart_due(closing):
                        try:
                            with turn.turn(time.monotonic() + CATCH_UP_WAIT_S):
                                if self._pending():  # still: another process's checkpoint may have copied them
                                    _checkpoint(connection)
                        except (TimeoutError, OSError):
                            pass  # the writers are that busy (or the lock file went away): the next catches up
                if closing:
                    return
        finally:
            with self._round:
                if turn is not None:
                    turn.close()
                if connection is not None:
                    self._thread_connection = None
                    connection.close()

    def close(self) -> None:
        """Stop the checkpointing thread after one last checkpoint (and the one under way); call it once
        the store's own connection is closed, since the WAL-index descriptor may go with it
        (:class:`_IndexDescriptors`). A store dropped without it keeps the descriptor open: closed then,
        it could take the locks of connections still open."""
        thread = self._thread
        if thread is not None and self._thread_pid == os.getpid():
            self._closing = True
            self._wake()
            thread.join()
            if self._wanted is not None and self._wanted.is_set():
                self._run()  # it had stopped, idle, before it saw the close: the last round here
        self._thread = None
        self._taken_over = None
        if self._index_taken_in == os.getpid():
            _index_descriptors.let_go(str(self.shm_path))
        self._index_taken_in = 0


class _IndexDescriptors:
    """One descriptor of each WAL-index (``-shm``) this process reads, shared by its stores, closed
    when the last of them closes.

    Closing a descriptor of a file lets go of every POSIX lock the process holds on that file, those
    of SQLite's own connections to it included (https://sqlite.org/howtocorrupt.html#posix_close_bug):
    a connection whose lock saying "this WAL-index is in use" went away lets the next process to open
    the database take the WAL-index for unused and start it over under it (a SIGBUS where it is
    mapped, or a WAL-index out of step). So no descriptor is closed while a store of this process may
    still use the database: not per store (the MCP server's calls each open one, side by side), never
    before the store's connection, never for a store dropped without closing, never one a forked
    parent opened. One whose file was deleted since (the last connection anywhere closed) is opened
    anew: no connection of this process can be using that file.
    """

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._open: dict[str, tuple[int, int, int]] = {}  # path: (descriptor or -1, stores using it, pid)

    def take(self, path: str) -> None:
        with self._lock:
            descriptor, users, pid = self._open.get(path, (-1, 0, 0))
            if pid != os.getpid():  # none yet; or a parent's, inherited: left open, as closing it would be
                descriptor, users = -1, 0
            self._open[path] = (descriptor, users + 1, os.getpid())

    def read(self, path: str, size: int) -> bytes:
        """The first ``size`` bytes of the WAL-index at ``path``, which this process has taken."""
        with self._lock:
            descriptor, users, pid = self._open[path]
            if descriptor >= 0 and os.fstat(descriptor).st_nlink == 0:
                os.close(descriptor)
                descriptor = -1
                self._open[path] = (descriptor, users, pid)  # at once: the open below may fail (no -shm now)
            if descriptor < 0:
                descriptor = os.open(path, os.O_RDONLY)
                self._open[path] = (descriptor, users, pid)
            return os.pread(descriptor, size, 0)  # reached only where there is one (_frames)

    def let_go(self, path: str) -> None:
        with self._lock:
            descriptor, users, pid = self._open.get(path, (-1, 0, 0))
            if pid != os.getpid():
                return
            if users > 1:
                self._open[path] = (descriptor, users - 1, pid)
                return
            del self._open[path]
            if descriptor >= 0:
                os.close(descriptor)


_index_descriptors = _IndexDescriptors()


def wal_index_frames(data: bytes) -> tuple[int, int] | None:
    """The frames in the WAL and how many of them are copied back, from the start of its WAL-index
    (the ``-shm`` file); None when ``data`` is too short to hold them."""
    if len(data) < N_BACKFILL_AT + 4:
        return None
    (frames,) = _U32.unpack_from(data, MX_FRAME_AT)
    (copied,) = _U32.unpack_from(data, N_BACKFILL_AT)
    return int(frames), int(copied)


def _checkpoint(connection: sqlite3.Connection) -> bool:
    """A PASSIVE checkpoint; whether it copied back every frame the WAL held as it started (no reader's
    snapshot, no other checkpoint under way, stopped it short)."""
    try:
        row = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error:  # busy, or the file went away: the next write tries again
        return False
    busy, frames, copied = row
    return not busy and 0 <= frames <= copied
