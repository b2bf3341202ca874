"""A store shared by threads, or inherited by a forked child.

**Threads.** A store has one connection, and a transaction is a run of
statements on it: two threads in a transaction at once would run in one
another's (a rollback by one undoes what the other wrote, and the rest of that
write is then committed statement by statement, half of it). So each store
lets one thread at a time run a transaction (:class:`OneAtATime`); the others
wait, within the store's busy timeout.

**Forks.** A fork copies a store's open connection into the child, but not
what it stands for. On SQLite the locks stay the parent's: the child writes as
if nobody else had the database open, and its writes go to a WAL that the
parent's close deletes (every one of them lost, each reported done). On
PostgreSQL the child shares the parent's socket: the replies of one process
reach the other, and closing the connection ends the parent's session. So a
store notes :func:`generation` as it opens its connection; when the number has
changed, it is in a child: :func:`let_go` sets the parent's connection aside
(referenced, never closed, for as long as the child lives) and the store opens
one of its own. A thread of the parent may have been in a transaction at the
fork: the child's :class:`OneAtATime` starts free.
"""

from __future__ import annotations

import os
from _thread import RLock  # threading's own, without importing threading at start-up

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_forks = 0  # how many forks separate this process from the one that imported this module
_abandoned: list[object] = []  # the parents' connections a child set aside: closing one would harm its parent


def generation() -> int:
    """A number that changes in a forked child (cheap: no system call)."""
    return _forks


def _forked() -> None:
    global _forks
    _forks += 1


def let_go(connection: Any, opened_in: int) -> None:
    """Close ``connection``, opened in fork generation ``opened_in``; in a forked child, a parent's
    is set aside instead: neither used nor closed by the child."""
    if opened_in == _forks:
        connection.close()
    else:
        _abandoned.append(connection)


class OneAtATime:
    """One thread at a time in a store's transactions. Reentrant: an operation that uses its store
    again from inside a transaction goes on as it did."""

    __slots__ = ("_lock", "_generation")

    def __init__(self) -> None:
        self._lock = RLock()
        self._generation = _forks

    def acquire(self, timeout_s: float) -> bool:
        """Whether this thread now holds it; False once ``timeout_s`` passed with another thread in."""
        if self._generation != _forks:  # a forked child: the parent's thread that held it is not here
            self._lock, self._generation = RLock(), _forks
        return bool(self._lock.acquire(True, max(timeout_s, 0.0)))

    def release(self) -> None:
        self._lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)
