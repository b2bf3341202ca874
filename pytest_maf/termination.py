"""SIGTERM and SIGHUP, taken as Ctrl-C is, by the process that writes a run's evidence.

A CI time limit, ``kill`` or ``maf task run`` being stopped sends SIGTERM; a
closed terminal or a dropped SSH session sends SIGHUP. The default of either
ends the process at once: the task would stay VERIFYING, with a live lease and
nothing recorded, until the lease ran out. A :class:`TerminationHandler` turns
the first of them into :class:`Terminated`, a :class:`KeyboardInterrupt`, so
pytest stops the run as it does for Ctrl-C (the run is recorded as interrupted
and its task rolls back), and the process then exits 128 + the signal's number
(143, 129), as a process ended by it does. A second one ends it at once,
unless it comes within :data:`SAME_STOP_S` of the first: that is the same
stop come twice (sent to the whole process group, and passed on by ``maf task
run`` as well). A signal the process was started ignoring (``nohup``) stays
ignored. While the
verdict is being written, these signals and SIGINT are noted rather than
raised, so none can cut that transaction short::

    handler = TerminationHandler()
    handler.install()
    ...
    with handler.shielded():
        write_the_verdict()
    exit_code = handler.exit_status() or exit_code
    handler.restore()
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Any, Iterator

# The signals whose default ends the process without a word: SIGHUP is not on every platform.
STOPPING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
SAME_STOP_S = 1.0


class Terminated(KeyboardInterrupt):
    """The run was told to stop by ``signum`` (SIGTERM, SIGHUP): pytest stops it as it stops Ctrl-C."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")


class TerminationHandler:
    """Raises :class:`Terminated` on the first SIGTERM or SIGHUP of the main thread, and says the exit status."""

    def __init__(self) -> None:
        self.signum = 0  # the signal that stopped the run, once one did
        self._stopped_at = 0.0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread() and not self._previous:
            for signum in STOPPING:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup's choice, or a parent's, stands
                    self._previous[signum] = signal.signal(signum, self._stop)

    def _stop(self, signum: int, frame: object) -> None:
        self.signum, self._stopped_at = signum, time.monotonic()
        for stopping in self._previous:
            signal.signal(stopping, self._again)
        raise Terminated(signum)

    def _again(self, signum: int, frame: object) -> None:
        """A second stop ends the process at once, unless it is the first one come twice."""
        if time.monotonic() - self._stopped_at < SAME_STOP_S:
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """While the body writes, SIGTERM, SIGHUP and SIGINT are noted, not raised; the run ends as they asked after."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def note(signum: int, frame: object) -> None:
            self.signum = self.signum or signum

        previous = {
            signum: signal.signal(signum, note) for signum in (*STOPPING, signal.SIGINT)
            if signal.getsignal(signum) is not signal.SIG_IGN
        }
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def exit_status(self) -> int | None:
        """128 + the signal's number once a SIGTERM or SIGHUP stopped the run (143, 129); pytest's 2 for a SIGINT noted
        while the verdict was written; else None (pytest's own)."""
        if not self.signum:
            return None
        return 2 if self.signum == signal.SIGINT else 128 + self.signum

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
