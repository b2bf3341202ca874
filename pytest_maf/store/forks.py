"""A store's connection in a forked child: the parent's, never used or closed there.

A fork copies a store's open connection into the child, but not what it stands
for. On SQLite the locks stay the parent's: the child writes as if nobody else
had the database open, and its writes go to a WAL that the parent's close
deletes (every one of them lost, each reported done). On PostgreSQL the child
shares the parent's socket: the replies of one process reach the other, and
closing the connection ends the parent's session.

So a store notes :func:`generation` as it opens its connection; when the
number has changed, it is in a child: :func:`let_go` sets the parent's
connection aside (referenced, never closed, for as long as the child lives)
and the store opens one of its own.
"""

from __future__ import annotations

import os

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


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)
