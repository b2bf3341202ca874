"""Keeping a lease alive while work runs: a background renewer, and `maf task run`.

:class:`LeaseKeeper` renews one lease from a thread of its own, on its own
store connection, every third of the lease length, until stopped or until the
lease is lost (another agent holds it, or it expired while the process was
paused). :func:`run_under_lease` runs a command under a kept lease and stops
the command when the lease is lost.

Example::

    with LeaseKeeper(store, "fix-42", "claude-1", 1, ttl_ms=1_800_000) as keeper:
        run_the_work()
    assert keeper.lost is None
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from typing import TYPE_CHECKING, Any, Sequence

from pytest_maf import tasks
from pytest_maf.errors import COMMAND_NOT_FOUND, LeaseLostError, MafError, UsageError
from pytest_maf.light_dataclass import dataclass

if TYPE_CHECKING:
    from pytest_maf.store import Store

# How long a command that lost its lease, or that maf passed a signal on to, gets to stop.
TERMINATE_GRACE_S = 5.0
MIN_KEPT_TTL_MS = 1_000  # renewed every third of it: a shorter lease would be written more often than that


class LeaseKeeper:
    """Renews a lease in the background, on a connection of its own to ``store``'s database, until stopped."""

    def __init__(self, store: Store, task_id: str, agent_id: str, attempt: int, ttl_ms: int) -> None:
        """Each renewal extends the lease to ``ttl_ms`` from now, never shortening a longer one."""
        self.store, self.task_id, self.agent_id, self.attempt, self.ttl_ms = (
            store.reopen(), task_id, agent_id, attempt, ttl_ms,
        )
        self.lost: str | None = None
        self.lost_event = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"maf-lease-{task_id}", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _finished_by_holder(self, store: Store) -> bool:
        try:
            return tasks.finished_by_holder(store, self.task_id, self.agent_id, self.attempt)
        except MafError:
            return False  # not readable now: the lease is taken as lost, as the renewal said

    def _run(self) -> None:
        with self.store as store:
            while not self._stop.wait(self.ttl_ms / 3000):
                try:
                    tasks.renew_lease(store, self.task_id, self.agent_id, self.attempt, self.ttl_ms, at_least=True)
                except LeaseLostError as error:
                    if self._finished_by_holder(store):
                        return  # the work itself finished the task (pytest --maf-task): nothing left to keep
                    self.lost = str(error)
                    self.lost_event.set()
                    return
                except MafError:
                    continue  # transient (a busy or briefly unreadable store): try again next tick


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int
    lease_lost: str | None


def run_under_lease(
    command: Sequence[str],
    store: Store,
    task_id: str,
    agent_id: str,
    attempt: int,
    ttl_ms: int,
) -> RunOutcome:
    """Run ``command`` while a :class:`LeaseKeeper` keeps the lease alive.

    The command gets ``MAF_AGENT_ID``, ``MAF_TASK_ID`` and ``MAF_TASK_ATTEMPT``
    in its environment. Its exit code is returned (128 + N when signal N ended
    it); when the lease is lost the command is stopped (SIGTERM, then SIGKILL
    after a grace period) and ``lease_lost`` says why. When maf itself is told
    to stop (SIGTERM, SIGHUP, Ctrl-C), the command is told the same and gets
    the grace period to finish (a ``pytest --maf-task`` records its run).
    """
    if not command:
        raise UsageError("give the command to run after `--`, such as: maf task run T -- make test")
    if ttl_ms < MIN_KEPT_TTL_MS:  # a renewal every third of it: one write and one event each
        raise UsageError(
            f"--ttl {ttl_ms / 1000:g} is too short for a lease kept while a command runs (it is renewed every"
            f" third of it): give at least {MIN_KEPT_TTL_MS / 1000:g} s"
        )
    if not command[0]:
        raise UsageError("the command after `--` is empty; give the program to run, such as: maf task run T -- make test")
    # fails before anything starts when the lease is not ours
    tasks.renew_lease(store, task_id, agent_id, attempt, ttl_ms, at_least=True)
    environment = {
        **os.environ, "MAF_AGENT_ID": agent_id, "MAF_TASK_ID": task_id, "MAF_TASK_ATTEMPT": str(attempt),
    }
    try:
        process = subprocess.Popen(list(command), env=environment)
    except OSError as error:
        raise CommandNotStartedError(f"cannot run {command[0]!r}: {error.strerror or error}") from None
    keeper = LeaseKeeper(store, task_id, agent_id, attempt, ttl_ms).start()
    previous = _stop_on_termination()
    try:
        while process.poll() is None:
            if keeper.lost_event.wait(0.1):
                _stop(process)
                break
    except KeyboardInterrupt:
        # A Ctrl-C at the terminal reached the command too; a lone SIGINT sent to maf is passed on.
        _pass_on(process, signal.SIGINT, delivered=_ctrl_c_reached_it())
        raise
    except _Terminated as terminated:  # maf itself was told to stop: the command is told too, and stops
        _pass_on(process, terminated.signum, delivered=False)
        return RunOutcome(128 + terminated.signum, keeper.lost)
    finally:
        keeper.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    code = process.wait()
    return RunOutcome(128 - code if code < 0 else code, keeper.lost)


class _Terminated(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def _stop_on_termination() -> dict[int, Any]:
    """SIGTERM and SIGHUP stop the command too (no command left running without its lease)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def terminate(signum: int, frame: object) -> None:
        raise _Terminated(signum)

    return {signum: signal.signal(signum, terminate) for signum in (signal.SIGTERM, signal.SIGHUP)}


def _pass_on(process: subprocess.Popen[bytes], signum: int, *, delivered: bool) -> None:
    """Tell the command what maf was told (SIGTERM, SIGHUP, SIGINT) and give it the grace period to end
    as it would (``pytest --maf-task`` records the run as interrupted and rolls its task back, with the
    lease still kept), then stop it and what it left running as :func:`_stop` does."""
    if process.poll() is not None:
        return
    below = descendants(process.pid)
    if not delivered:
        process.send_signal(signum)
    try:
        process.wait(TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        _stop(process)
        return
    _signal_each([pid for pid in below if _running(pid)], signal.SIGTERM)  # left behind by it


def _ctrl_c_reached_it() -> bool:
    """Whether maf runs in the foreground of a terminal, whose Ctrl-C goes to the command as well (one
    process group): passing it on would interrupt the command twice."""
    try:  # the controlling terminal, whatever stdin is (redirected, the terminal's Ctrl-C still reached it)
        terminal = os.open("/dev/tty", os.O_RDONLY | getattr(os, "O_NOCTTY", 0))
    except OSError:  # none (a daemon, CI), or not on this platform
        return False
    try:
        return os.tcgetpgrp(terminal) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(terminal)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the command and the processes it started (SIGTERM, then SIGKILL after the grace period):
    none of them works on without the lease. Those below it are found before any is signalled, while
    they are still its descendants."""
    if process.poll() is not None:
        return
    below = descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    _signal_each(below, signal.SIGTERM)
    try:
        process.wait(TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    _signal_each([pid for pid in below if _running(pid)], signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """The processes below ``pid``, read from ``/proc`` (Linux); [] where there is none to read."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit():
            parent = _parent(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found, waiting = [], [pid]
    while waiting:
        for child in children.get(waiting.pop(), ()):
            found.append(child)
            waiting.append(child)
    return found


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first, then the parent's pid)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    return text[text.rfind(b")") + 2 :].split()  # the name, in parentheses, may hold spaces and ')'


def _parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields and len(fields) > 1 else None


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, ended but not yet reaped, does not)."""
    fields = _stat_fields(pid)
    return fields is not None and bool(fields) and fields[0] != b"Z"


def _signal_each(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except OSError:  # gone already, or no longer ours to signal
            pass


class CommandNotStartedError(MafError):
    """The command given to `maf task run` could not be started (as a shell says: 127)."""

    exit_code = COMMAND_NOT_FOUND
