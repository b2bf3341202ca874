"""A store shared by threads, or inherited by a forked child.

**Threads.** A store has one connection, and a transaction is a run of
statements on it: two threads in a transaction at once would run in one
another's (a rollback by one undoes what the other wrote, and the rest of that
write is then committed statement by statement, half of it). So each store
lets one thread at a time run a transaction (:class:`OneAtATime`); the others
wait for it. A thread that uses the store again from inside one of its own
operations is refused, and the operation it is in goes on whole.

**Forks.** A fork copies a store's open connection into the child, but not
what it stands for. On SQLite the locks stay the parent's, and SQLite keeps
per process which locks its connections to a file hold: while a connection
inherited from the parent is open in the child, every connection the child
opens to that file takes no lock at all, so the others take the database for
unused (a close deletes the WAL the child writes to: its writes are lost, each
reported done, and the database can be damaged). So every holder of a SQLite
connection registers with :func:`close_in_children`, and a forked child
closes the inherited connections at once (``close_inherited()``), before it
opens any; a fork waits (a moment) for the store's own checkpoint under way
to end, and one a thread of the parent was writing in at the fork is not
closed (its rollback would undo the parent's commit in the shared WAL index),
and its file is not used by the child (:func:`written_at_fork`). On
PostgreSQL the child shares the parent's socket: the replies of one process
reach the other, and closing the connection ends the parent's session; the
store notes :func:`generation` as it opens its connection and, when the
number has changed, :func:`let_go` sets the parent's connection aside
(referenced, never closed, for as long as the child lives) and opens one of
its own. A thread of the parent may have been in a transaction at the fork:
the child's :class:`OneAtATime` starts free.
"""

from __future__ import annotations

import os
from _thread import RLock  # threading's own, without importing threading at start-up
from _weakref import ref  # weakref's own, without importing weakref at start-up

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

_forks = 0  # how many forks separate this process from the one that imported this module
_abandoned: list[object] = []  # the parents' connections a child set aside: closing one would harm its parent


def generation() -> int:
    """A number that changes in a forked child (cheap: no system call)."""
    return _forks


_holders: dict[int, ref[Any]] = {}  # what holds a connection or a lock file in this process, by its id
_written_at_fork: set[str] = set()  # files a thread of the parent was writing to as this process was forked


def close_in_children(holder: Any) -> None:
    """Have a forked child call ``holder.close_inherited()`` at once: it lets go of what the holder
    has open that is its parent's (a SQLite connection, the writers' lock file), unless a write is
    under way in it (then it returns that database's path).
    A holder with ``before_fork()`` and ``after_fork()`` has them called around each fork, the latter
    in both processes: one whose own thread uses its connection lets that thread finish first."""
    key = id(holder)
    _holders[key] = ref(holder, lambda _: _holders.pop(key, None))


def _each_holder() -> list[Any]:
    return [holder for holder in (each() for each in list(_holders.values())) if holder is not None]


def _call(holder: Any, method: str) -> Any:
    """``holder.method()`` if it has one: whatever it raises, a fork is never stopped by it."""
    try:
        return getattr(holder, method, lambda: None)()
    except Exception:  # noqa: BLE001
        return None


def _before_fork() -> None:
    for holder in _each_holder():
        _call(holder, "before_fork")


def _after_fork_in_parent() -> None:
    for holder in _each_holder():
        _call(holder, "after_fork")


def written_at_fork(path: str) -> bool:
    """Whether a thread of the parent was writing to the database ``path`` (its real path) at the fork."""
    return path in _written_at_fork


def _forked() -> None:
    global _forks
    _forks += 1
    for holder in _each_holder():
        try:
            writing = _call(holder, "close_inherited")  # a child starts whatever its parent left
        finally:
            _call(holder, "after_fork")
        if writing:
            _written_at_fork.add(writing)


def forked_inside(where: object) -> Exception:
    """The error of a forked child that returns through a store operation its parent was in: that
    transaction is the parent's, neither committed nor rolled back by the child."""
    from pytest_maf.errors import StoreError

    return StoreError(
        f"this process was forked inside an operation on the store {where}: the transaction is its"
        " parent's, so it is neither committed nor rolled back here; fork outside the store's operations"
    )


def set_aside(connection: Any) -> None:
    """Keep a parent's connection in a forked child, neither used nor closed (nor rolled back) by it."""
    _abandoned.append(connection)


def let_go(connection: Any, opened_in: int) -> None:
    """Close ``connection``, opened in fork generation ``opened_in``; in a forked child, a parent's
    is set aside instead."""
    if opened_in == _forks:
        connection.close()
    else:
        set_aside(connection)


class OneAtATime:
    """One thread at a time in a store's transactions: :meth:`run` runs each, another thread's
    waited for. A ``with`` on the lock itself, a C lock: Ctrl-C cannot leave it held. Reentrant, so
    a thread that uses its store again from inside one of its own operations is told so instead of
    waiting for itself; ``inside`` counts only when the thread held the lock before (a flag left set
    by an interruption misleads nobody).
    """

    __slots__ = ("_lock", "_generation", "inside")

    def __init__(self) -> None:
        self._lock = RLock()
        self._generation = _forks
        self.inside = False  # a transaction is under way: in a forked child, one of the parent's threads'

    def reset(self) -> None:
        """In a forked child, before it starts a thread: free, whatever the parent's threads held."""
        self._lock, self._generation, self.inside = RLock(), _forks, False

    def _current(self) -> Any:
        if self._generation != _forks:  # a forked child: the parent's thread that held it is not here
            self.reset()
        return self._lock

    def run(self, body: Callable[[], T]) -> T:
        """``body()`` once no other thread runs one; a second from inside one is refused."""
        lock = self._current()
        held_before = bool(lock._is_owned())
        with lock:
            if held_before and self.inside:
                from pytest_maf.errors import UsageError

                raise UsageError(
                    "the store was used again from inside one of its own operations (a transaction is under"
                    " way on its connection); do it after that operation, or on a connection of its own"
                    " (store.reopen())"
                )
            try:
                self.inside = True
                return body()
            finally:
                self.inside = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_forked)
