"""The commit guard: which paths a commit or push touches, and whether another agent holds them.

Paths come from NUL-separated git plumbing, with renames split into their two
sides (``--no-renames``), so names with spaces, unicode or newlines are exact
and moving a file out of, or into, a reserved place is caught.

:func:`guard_verdict` is the guard's whole policy, called by `maf guard` (and
so by the git hooks) and by the preflight's ``reservations.staged`` check::

    verdict = guard_verdict(settings, Path.cwd(), "claude-1", os.environ)
    if verdict.status == BLOCKED:
        print(verdict.summary)
"""

from __future__ import annotations

import os
import re
import select
import time
from pathlib import Path

from pytest_maf import kpi
from pytest_maf.agents import seen
from pytest_maf.clock import iso_utc
from pytest_maf.config import DB_RELATIVE_PATH
from pytest_maf.errors import MafError, StoreError, UsageError
from pytest_maf.ids import validate_id
from pytest_maf.light_dataclass import dataclass, field
from pytest_maf.logs import WARNING, log_event
from pytest_maf.reservations import Block, check_paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from pytest_maf.config import Settings
    from pytest_maf.records import Observation, Reservation
    from pytest_maf.store import Store, Transaction

ZERO_SHA = "0" * 40
RECORD_WAIT_S = 1.0  # the most a commit waits for a busy store to take the guard's own metric
_OBJECT_NAME = r"[0-9a-f]{40}|[0-9a-f]{64}"  # SHA-1 or SHA-256; compiled by a pre-push only

if TYPE_CHECKING:
    import signal as _signals
else:
    try:  # signal's C half: its Python half makes enums, which the guard has no use for
        import _signal as _signals
    except ImportError:  # another Python than CPython
        import signal as _signals
# Without posix_spawn (Windows), git runs through subprocess.
_SPAWNS = hasattr(os, "posix_spawnp") and hasattr(select, "poll")


class GitError(MafError):
    exit_code = 2


def run_git(cwd: Path, *args: str) -> tuple[int, bytes, bytes]:
    """``git ARGS`` run in ``cwd``: its exit status, standard output and standard error.

    What ``subprocess.run(["git", *args], cwd=cwd, capture_output=True)`` does
    (the signals Python ignores are git's defaults again; killed and waited for
    when interrupted), with os.posix_spawnp instead of subprocess, whose import
    would cost every commit's guard more than its git does; ``-C`` stands for
    ``cwd``. No git on PATH: FileNotFoundError, as from subprocess.
    """
    if not _SPAWNS:
        import subprocess

        completed = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
        return completed.returncode, completed.stdout, completed.stderr
    ignoring_children = _signals.getsignal(_signals.SIGCHLD) == _signals.SIG_IGN
    if ignoring_children:  # inherited from whoever started us: git would be reaped unseen, its exit status lost
        try:
            _signals.signal(_signals.SIGCHLD, _signals.SIG_DFL)
        except ValueError:  # not the main thread: git's exit status is lost, a GitError (fails closed)
            ignoring_children = False
    try:
        return _spawn_git(cwd, args)
    finally:
        if ignoring_children:
            _signals.signal(_signals.SIGCHLD, _signals.SIG_IGN)


def _spawn_git(cwd: Path, args: tuple[str, ...]) -> tuple[int, bytes, bytes]:
    output_read, output_write = os.pipe()
    errors_read, errors_write = os.pipe()
    try:
        pid = os.posix_spawnp(
            "git", ["git", "-C", os.fspath(cwd), *args], os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, output_write, 1), (os.POSIX_SPAWN_DUP2, errors_write, 2)],
            setsigdef=(_signals.SIGPIPE, _signals.SIGXFSZ),  # ignored by Python; subprocess sets them back too
        )
    except BaseException:
        for descriptor in (output_read, errors_read):
            os.close(descriptor)
        raise
    finally:
        for descriptor in (output_write, errors_write):
            os.close(descriptor)
    try:
        output, errors = _read_both(output_read, errors_read)
        status = os.waitpid(pid, 0)[1]  # git may outlive its output: interrupted here, it is killed too
    except ChildProcessError:  # reaped by the system: SIGCHLD ignored, and we could not set it back
        raise GitError(f"git {' '.join(args[:2])}: its exit status was lost (SIGCHLD is ignored)") from None
    except BaseException:
        os.kill(pid, _signals.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # already reaped by the system (SIGCHLD ignored)
            pass
        raise
    finally:
        for descriptor in (output_read, errors_read):
            os.close(descriptor)
    return os.waitstatus_to_exitcode(status), output, errors


def _read_both(*descriptors: int) -> list[bytes]:
    """Everything written to each pipe until its writers close it, read as it comes (no writer waits on a full pipe)."""
    chunks: dict[int, list[bytes]] = {descriptor: [] for descriptor in descriptors}
    poller = select.poll()
    for descriptor in descriptors:
        poller.register(descriptor, select.POLLIN)
    remaining = len(descriptors)
    while remaining:
        for descriptor, _ in poller.poll():
            data = os.read(descriptor, 65536)
            if data:
                chunks[descriptor].append(data)
            else:
                poller.unregister(descriptor)
                remaining -= 1
    return [b"".join(chunks[descriptor]) for descriptor in descriptors]


def git_output(cwd: Path, *args: str, config: tuple[str, ...] = ()) -> bytes:
    """``git ARGS`` run in ``cwd``, each of ``config`` (``key=value``) given as ``-c``; :class:`GitError` when it fails."""
    settings = [flag for pair in config for flag in ("-c", pair)]
    try:
        returncode, output, errors = run_git(cwd, *settings, *args)
    except FileNotFoundError:
        raise GitError("git is not installed or not on PATH") from None
    if returncode != 0:
        raise GitError(f"git {' '.join(args[:2])} failed: {_why_git_failed(cwd, returncode, errors)}")
    return output


def _why_git_failed(cwd: Path, returncode: int, errors: bytes) -> str:
    """git's own reason: that there is no repository where GIT_DIR or the directory says (git
    outside a repository takes ``diff`` for ``diff --no-index`` and prints that one's usage), else
    its first ``fatal:`` or ``error:`` line, else its last line, else its exit status."""
    repository_returncode, _, repository_errors = run_git(cwd, "rev-parse", "--git-dir")
    if repository_returncode != 0:
        errors = repository_errors
    lines = errors.decode("utf-8", "replace").strip().splitlines()
    reasons = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return (reasons or lines or [str(returncode)])[0 if reasons else -1]


def _split_z(output: bytes) -> list[str]:
    names = (name.decode("utf-8", "surrogateescape") for name in output.split(b"\0") if name)
    return list(dict.fromkeys(names))


# Paths from the repository root, from any directory: diff.relative=true would print only those
# under the current directory, relative to it. A -c setting rather than --no-relative (git 2.28):
# an older git, which has no diff.relative, ignores it.
REPOSITORY_RELATIVE = ("diff.relative=false",)


# A submodule bump is a staged change whatever diff.ignoreSubmodules or a .gitmodules ``ignore`` says:
# git commits it either way.
EVERY_SUBMODULE = "--ignore-submodules=none"


def staged_paths(cwd: Path) -> list[str]:
    """Paths the staged commit adds, changes or deletes, from the repository root; both sides of a rename.

    Staged for a merge (``git commit`` after a conflict), every path it changes on the current branch,
    what it takes whole from the other branch too: whose edit that was, git cannot tell.
    """
    return _split_z(git_output(
        cwd, "diff", "--cached", "--name-only", "-z", "--no-renames", "--no-ext-diff", EVERY_SUBMODULE,
        config=REPOSITORY_RELATIVE,
    ))


def pushed_paths(cwd: Path, hook_input: str) -> list[str]:
    """Paths changed by the commits a pre-push hook is about to push.

    ``hook_input`` is the hook's stdin: ``<local ref> <local sha> <remote ref> <remote sha>``
    per line. Deleted refs push no content and are skipped.
    """
    paths: list[str] = []
    for line in hook_input.splitlines():
        fields = line.split()
        if not fields:
            continue
        # Anything else than git's own four fields fails closed, and no field reaches git as an option.
        if len(fields) != 4 or not all(re.fullmatch(_OBJECT_NAME, sha) for sha in (fields[1], fields[3])):
            raise UsageError(
                f"maf guard --pre-push reads git's pre-push input (<local ref> <local sha> <remote ref>"
                f" <remote sha> per line), got {line[:80]!r}"
            )
        _, local_sha, _, remote_sha = fields
        if local_sha.strip("0") == "":
            continue
        known_remote = remote_sha.strip("0") != "" and _object_exists(cwd, remote_sha)
        # Every commit the destination does not have, one pushed elsewhere before a reservation too.
        exclude = [f"^{remote_sha}"] if known_remote else ["--not", "--remotes"]
        paths.extend(_split_z(_changed_by_commits(cwd, local_sha, exclude)))
    return list(dict.fromkeys(paths))


def _changed_by_commits(cwd: Path, local_sha: str, exclude: list[str]) -> bytes:
    """The paths each commit of ``local_sha`` not in ``exclude`` changes; for a merge, also those whose
    content differs from every parent's (``--cc``): a conflict resolved by hand or a change made in the
    merge itself, which ``git log`` lists for no merge (the merged branch's commits list their own)."""
    return git_output(
        cwd, "log", "--format=", "--name-only", "-z", "--no-renames", "--cc", EVERY_SUBMODULE, local_sha, *exclude,
        config=REPOSITORY_RELATIVE,
    )


def _object_exists(cwd: Path, sha: str) -> bool:
    return run_git(cwd, "cat-file", "-e", f"{sha}^{{commit}}")[0] == 0



# The policy.

PASSED, BLOCKED, OVERRIDDEN = "passed", "blocked", "overridden"
OVERRIDE_VARIABLE = "MAF_RESERVATION_OVERRIDE"
REASON_VARIABLE = "MAF_OVERRIDE_REASON"
NOTICE_TYPE = "RESERVATION_OVERRIDDEN"
WAYS_OUT = """\
Ways out:
  - wait for the reservation to expire (maf reservation status --file PATH)
  - ask the holder to release it (maf reservation release PATTERN --agent HOLDER)
  - override, which is recorded and tells the holder:
      MAF_RESERVATION_OVERRIDE=true MAF_OVERRIDE_REASON="why" git {what} ..."""


@dataclass(frozen=True)
class GuardVerdict:
    """What the guard decided about a commit (or push).

    ``status`` is passed, blocked or overridden; ``summary`` says it in one
    line, ``details`` names each blocked path and its holder, and ``warnings``
    lists override notices that could not be delivered.
    """

    status: str
    summary: str
    paths: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    recorded: bool = False  # this call wrote the override event (and sent the notices)

    @property
    def blocked(self) -> bool:
        return self.status == BLOCKED

    @property
    def exit_code(self) -> int:
        return 1 if self.status == BLOCKED else 0


def guard_verdict(
    settings: Settings,
    cwd: Path,
    agent_id: str | None,
    environ: Mapping[str, str],
    *,
    pushed: str | None = None,
) -> GuardVerdict:
    """Decide whether the staged commit (or, given a pre-push hook's stdin, the push) may go ahead.

    * No repository, or no store where the default puts it (nor a link to nothing): passed, quietly.
    * No path under another agent's exclusive reservation: passed.
    * Otherwise blocked, unless ``MAF_RESERVATION_OVERRIDE`` is true: then the
      override needs ``MAF_OVERRIDE_REASON`` (else :class:`UsageError`, nothing
      recorded), is recorded once per agent, staged content and holders (so
      `maf guard` and the preflight's check in one commit record it once),
      and, after the record commits, each holder is told by agent-mail.
    * A store that is named but missing, or unreadable, and a PostgreSQL store
      (``MAF_DATABASE_URL``) whose server cannot be reached: :class:`StoreError`
      (fails closed).

    ``agent_id`` None is a committer without an agent id, blocked by every
    exclusive reservation.
    """
    started = time.perf_counter()
    if agent_id is not None:
        validate_id("agent", agent_id)
    what = "push" if pushed is not None else "commit"
    if settings.repo_root is None:
        return GuardVerdict(PASSED, "not inside a git repository")
    # lexists: a link to nothing there is a store that went away, and fails closed below
    if settings.database_url is None and not os.path.lexists(settings.db_path) and is_default_location(settings):
        if not _was_set_up_here(settings.repo_root):
            return GuardVerdict(PASSED, "no runtime database: nothing is reserved")
        raise StoreError(
            f"the runtime database {settings.db_path} is gone, though it was set up here (git clean -x and"
            " git stash --all remove it, an ignored file): the guard fails closed; run `maf setup` for a new"
            " one, `maf db restore BACKUP` from a backup kept elsewhere, or `maf install-hooks --uninstall` where"
            " pytest-maf is no longer used"
        )
    override = parse_override(environ.get(OVERRIDE_VARIABLE))
    paths = pushed_paths(cwd, pushed) if pushed is not None else staged_paths(cwd)
    if not paths:
        return GuardVerdict(PASSED, f"nothing to {what}" if pushed is not None else "nothing staged")
    from pytest_maf.store import open_store_for

    try:
        with open_store_for(settings) as store:
            verdict = _verdict_from_store(store, settings, cwd, agent_id, environ, pushed, paths, override)
            _record_guard_run(store, agent_id, kpi.since(started, "guard", verdict.status))
    except StoreError as error:
        raise StoreError(
            f"{error}. The guard fails closed: repair the store (maf setup, maf db recover)"
            f" or point {'MAF_DATABASE_URL' if settings.database_url else 'MAF_DB_PATH'} at the right one"
        ) from None
    return verdict


def _verdict_from_store(
    store: Store, settings: Settings, cwd: Path, agent_id: str | None, environ: Mapping[str, str],
    pushed: str | None, paths: list[str], override: bool,
) -> GuardVerdict:
    what = "push" if pushed is not None else "commit"
    blocks = check_paths(store, paths, agent_id)
    if not blocks:
        return GuardVerdict(PASSED, f"{len(paths)} path(s), none reserved by another agent", paths)
    details = [f"{block.path}: {describe_holder(block.holder)}" for block in blocks]
    count = len({block.path for block in blocks})
    if not override:
        who = f"agent {agent_id!r}" if agent_id else "a committer without an agent id (set MAF_AGENT_ID)"
        return GuardVerdict(
            BLOCKED, f"{what} blocked for {who}: {count} path(s) reserved by other agents",
            paths, blocks, details,
        )
    reason = override_reason(environ)
    notices = record_override(store, agent_id, blocks, reason, _content_key(cwd, pushed))
    warnings = tell_holders(store, settings.mail_root, notices or [])
    return GuardVerdict(
        OVERRIDDEN,
        f"{what} touches {count} path(s) reserved by other agents; {OVERRIDE_VARIABLE}=true lets it"
        f" through, and the override is recorded (reason: {reason})",
        paths, blocks, details, warnings, notices is not None,
    )


def _record_guard_run(store: Store, agent_id: str | None, observation: Observation) -> None:
    """The guard run's duration, and its agent seen, in one small transaction of its own (the guard
    otherwise only reads); a store that cannot take it (busy, read-only) costs the metric, never the
    verdict, and never holds the commit longer than :data:`RECORD_WAIT_S` (a backup or another
    agent's long transaction under way)."""
    waits = store.busy_timeout_s
    store.busy_timeout_s = min(waits, RECORD_WAIT_S)
    try:
        store.write(lambda transaction: seen(transaction, agent_id, observation))
    except MafError as error:
        log_event("guard_duration_not_recorded", WARNING, agent_id=agent_id, error=str(error))
    finally:
        store.busy_timeout_s = waits


def _was_set_up_here(root: Path) -> bool:
    """Whether `maf setup` (or a first preflight) made the store at ``root``'s default place."""
    from pytest_maf.repository import common_git_dir, noted_root

    common = common_git_dir(root)
    return common is not None and noted_root(common) == root.absolute()


def is_default_location(settings: Settings) -> bool:
    """Whether the SQLite store is where the default puts it (``.maf/runtime.db`` at the repository root)."""
    assert settings.repo_root is not None
    return settings.db_path.absolute() == (settings.repo_root / DB_RELATIVE_PATH).absolute()


def parse_override(value: str | None) -> bool:
    if value is None or value.strip() == "":
        return False
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{OVERRIDE_VARIABLE}={value!r}: use true or false")


def override_reason(environ: Mapping[str, str]) -> str:
    reason = (environ.get(REASON_VARIABLE) or "").strip()
    if not reason:
        raise UsageError(
            f"{OVERRIDE_VARIABLE}=true needs a reason, which is recorded and sent to the holders:"
            f' {OVERRIDE_VARIABLE}=true {REASON_VARIABLE}="why" git commit ...'
        )
    return reason


def _content_key(cwd: Path, pushed: str | None) -> str | None:
    """What is being let through: the staged tree, or the pushed commits (None if git cannot say)."""
    if pushed is not None:
        shas = sorted({line.split()[1] for line in pushed.splitlines() if len(line.split()) == 4})
        return "push:" + ",".join(shas)
    try:
        return "tree:" + git_output(cwd, "write-tree").decode().strip()
    except GitError:
        return None


def record_override(
    store: Store, agent_id: str | None, blocks: list[Block], reason: str, content: str | None
) -> list[dict[str, Any]] | None:
    """Record that a blocked commit went through under the override, with a notice queued for each
    holder in the same transaction; return the notices, or None when it was already recorded.

    The same agent letting the same content past the same holders again (the
    guard hook, then the preflight's check, of one commit) is one override.
    """
    paths = sorted({block.path for block in blocks})
    holders = sorted([holder, pattern] for holder, pattern in {(b.holder.agent_id, b.holder.pattern) for b in blocks})
    data: dict[str, Any] = {"paths": paths, "holders": holders, "reason": reason, "content": content}
    tied = sorted({b.holder.task_id for b in blocks if b.holder.task_id is not None})
    if len(tied) == 1:  # the task whose reservation was set aside: `maf history --task` finds it
        data["task"] = tied[0]
    elif tied:
        data["tasks"] = tied

    def record(transaction: Transaction) -> list[dict[str, Any]] | None:
        if content is not None and any(
            event.agent_id == (agent_id or "") and event.data.get("content") == content
            and event.data.get("holders") == holders
            for event in transaction.reservation_events("override")
        ):
            return None
        transaction.insert_reservation_event("override", agent_id or "", data)
        notices = override_notices(agent_id, blocks, reason, transaction.now)
        for notice in notices:
            transaction.enqueue_mail(notice)
        return notices

    notices = store.write(record)
    if notices is not None:
        log_event("guard_override", WARNING, agent_id=agent_id, reason=reason, paths=paths)
    return notices


def override_notices(agent_id: str | None, blocks: list[Block], reason: str, now_ms: int) -> list[dict[str, Any]]:
    """One RESERVATION_OVERRIDDEN notice per overridden holder, each with a new id."""
    from pytest_maf import mail  # only an override needs agent-mail: off the guard's usual path

    by_holder: dict[str, list[Block]] = {}
    for block in blocks:
        by_holder.setdefault(block.holder.agent_id, []).append(block)
    sender = agent_id or "unknown"
    notices = []
    for holder, held in sorted(by_holder.items()):
        paths = sorted({block.path for block in held})
        notice: dict[str, Any] = {
            "id": mail.new_message_id(),
            "type": NOTICE_TYPE,
            "from": sender,
            "to": holder,
            "subject": f"{sender} overrode your reservation: {len(paths)} path(s) you reserved let through the guard",
            "paths": paths,
            "patterns": sorted({block.holder.pattern for block in held}),
            "reason": reason,
            "created_at": now_ms,
        }
        kept = paths
        while not mail.fits(notice) and len(kept) > 1:  # the first paths, and how many more
            kept = kept[: len(kept) // 2]
            notice.update(paths=kept, more_paths=len(paths) - len(kept))
        notices.append(mail.check_size(notice, "the override's reason", "say it in fewer words"))
    return notices


def tell_holders(store: Store, mail_root: Path, notices: list[dict[str, Any]]) -> list[str]:
    """Deliver the override's queued notices; return what could not be delivered (it stays queued)."""
    if not notices:
        return []
    from pytest_maf import mail

    ids = [notice["id"] for notice in notices]
    try:
        failed = mail.deliver_pending(store, mail_root, ids).failed
    except (MafError, OSError) as error:
        failed = dict.fromkeys(ids, str(error))
    return [
        f"the override is recorded, but {notice['to']} was not told by agent-mail: {failed[notice['id']]};"
        " the notice stays queued and the next maf command delivers it"
        for notice in notices if notice["id"] in failed
    ]


def describe_holder(reservation: Reservation) -> str:
    """``alice holds docs/** (exclusive) until 2026-01-01T10:00:00Z, reason: docs``."""
    mode = "exclusive" if reservation.exclusive else "shared"
    reason = f", reason: {reservation.reason}" if reservation.reason else ""
    return (
        f"{reservation.agent_id} holds {reservation.pattern} ({mode})"
        f" until {iso_utc(reservation.expires_at, 'seconds')}{reason}"
    )
