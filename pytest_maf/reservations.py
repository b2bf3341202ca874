"""File reservations: who may change which paths, and for how long.

An agent reserves patterns (see :mod:`pytest_maf.patterns`) for a TTL,
exclusive by default or shared. An exclusive request conflicts with anything
another agent holds that can match a common path; a shared one only with
another agent's exclusive reservation. A request is all or nothing.

Example::

    acquire(store, ["src/**"], "agent-a", ttl_ms=30 * 60_000, reason="refactor")
    blocking_reservations(store.read(...), ["src/app.py"], "agent-b")  # -> the block
"""

from __future__ import annotations

import time
from pathlib import Path

from pytest_maf.agents import seen
from pytest_maf.errors import MafError, NotFoundError, UsageError
from pytest_maf.folders import folder_pattern, is_folder, over_or_inside
from pytest_maf.leases import held_lease, validate_id
from pytest_maf.light_dataclass import dataclass, light_replace
from pytest_maf.logs import INFO, WARNING, log_event
from pytest_maf.patterns import (
    anchor,
    compile_pattern,
    literal_prefix,
    normalize_path,
    check_new_pattern,
    normalize_pattern,
    overlap_witness,
)
from pytest_maf.records import Reservation
from pytest_maf.values import check_text, is_utf8

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any

    from pytest_maf.store import Store, Transaction

# A reason is a sentence or a few: shown to everyone a reservation blocks, and sent in force-release notices.
MAX_REASON_CHARS = 2_000


@dataclass(frozen=True)
class Conflict:
    requested: str
    holder: Reservation
    witness: str

    def hint(self) -> str:
        """How to reserve the root one only, where either side matches at any depth; '' otherwise
        (:func:`~pytest_maf.folders.any_depth_hint`)."""
        from pytest_maf.folders import any_depth_hint

        return any_depth_hint(self.requested, self.holder.pattern, self.holder.agent_id)

    def as_json(self) -> dict[str, Any]:
        """The conflict as `maf reservation acquire --json` and the MCP tools give it."""
        holder = self.holder
        return {
            "requested": self.requested, "holder": holder.agent_id, "holder_pattern": holder.pattern,
            "expires_at": holder.expires_at, "reason": holder.reason, "exclusive": holder.exclusive,
            "example_path": self.witness, "hint": self.hint() or None,
        }


class ReservationConflictError(MafError):
    """A request overlapped another agent's reservation; nothing was granted."""

    exit_code = 1

    def __init__(self, conflicts: list[Conflict], waited_s: float | None = None) -> None:
        self.conflicts = conflicts
        waited = "" if waited_s is None else f" after waiting {waited_s:g} s"
        super().__init__(
            f"{len(conflicts)} conflict(s){waited}; nothing was reserved"
            " (see `maf reservation list`, or wait for the holder's expiry)"
        )


class NotHolderError(MafError):
    """The agent does not hold the reservation it tried to change."""

    exit_code = 4


@dataclass(frozen=True)
class Block:
    """A path that lies under another agent's exclusive reservation; for a folder (``src/``),
    ``example`` is a path beneath it that the reservation covers."""

    path: str
    holder: Reservation
    example: str = ""

    def as_json(self) -> dict[str, Any]:
        """The block as `maf reservation check --json` and the MCP tools give it."""
        holder = self.holder
        return {
            "path": self.path, "holder": holder.agent_id, "pattern": holder.pattern, "expires_at": holder.expires_at,
            "reason": holder.reason, "example_path": self.example or None,  # for a folder: a path beneath it
        }


def _normalized(patterns: Iterable[str]) -> list[str]:
    result = list(dict.fromkeys(normalize_pattern(pattern) for pattern in patterns))
    if not result:
        raise UsageError("give at least one pattern")
    return result


def find_conflicts(
    requested: Sequence[str], exclusive: bool, agent_id: str, held: Iterable[Reservation]
) -> list[Conflict]:
    """The live reservations of other agents that a request would overlap (pure)."""
    index = ReservationIndex(
        r for r in held if r.agent_id != agent_id and (exclusive or r.exclusive)
    )
    return [
        Conflict(pattern, holder, witness)
        for pattern in requested
        for holder, witness in index.overlapping(pattern)
    ]


def _live_conflicts(transaction: Transaction, requested: Sequence[str], exclusive: bool, agent_id: str) -> list[Conflict]:
    anchors = {anchor(pattern) for pattern in requested}
    # A request that can match at any depth (anchor '': *.md, README.md)
    # can meet any reservation; else only those with its anchor or none.
    relevant = transaction.reservations(anchors=None if "" in anchors else anchors | {""})
    return find_conflicts(requested, exclusive, agent_id, relevant)


def acquire(
    store: Store,
    patterns: Iterable[str],
    agent_id: str,
    ttl_ms: int,
    *,
    exclusive: bool = True,
    reason: str = "",
    task_id: str | None = None,
) -> list[Reservation]:
    """Reserve every pattern, or none: raises :class:`ReservationConflictError`.

    Re-acquiring a pattern the agent holds extends it. With ``task_id`` the
    reservations are tied to that task, whose live lease the agent must hold
    (else :class:`~pytest_maf.errors.LeaseLostError`): they are released in
    the same transaction as the lease ends (finish, release or expiry).
    """
    validate_id("agent", agent_id)
    requested = _normalized(check_new_pattern(pattern) for pattern in patterns)  # as given: '!x' is refused
    check_text("the reason", reason, MAX_REASON_CHARS)
    if ttl_ms <= 0:
        raise UsageError(f"a reservation TTL must be above 0, got {ttl_ms} ms")

    def reserve(transaction: Transaction) -> tuple[list[Reservation], list[Conflict]]:
        if task_id is not None:
            held_lease(transaction, task_id, agent_id)
        for expired in transaction.delete_expired_reservations():
            transaction.insert_reservation_event(
                "expire", expired.agent_id, _tied({"pattern": expired.pattern, "expires_at": expired.expires_at}, expired)
            )
        conflicts = _live_conflicts(transaction, requested, exclusive, agent_id)
        if conflicts:
            transaction.insert_reservation_event(
                "conflict",
                agent_id,
                {
                    "requested": requested,
                    "exclusive": exclusive,
                    "holders": sorted({(c.holder.agent_id, c.holder.pattern) for c in conflicts}),
                },
            )
            seen(transaction, agent_id)
            return [], conflicts
        granted = []
        for pattern in requested:
            existing = transaction.reservations(agent_id=agent_id, pattern=pattern)
            tied = task_id if task_id is not None or not existing else existing[0].task_id
            reservation = Reservation(
                agent_id,
                pattern,
                exclusive,
                reason,
                existing[0].created_at if existing else transaction.now,
                _expiry(transaction, agent_id, tied, transaction.now + ttl_ms),
                tied,
            )
            transaction.put_reservation(reservation, anchor(pattern))
            data = {"pattern": pattern, "exclusive": exclusive, "expires_at": reservation.expires_at, "reason": reason}
            transaction.insert_reservation_event("renew" if existing else "acquire", agent_id, _tied(data, reservation))
            granted.append(reservation)
        seen(transaction, agent_id)
        return granted, []

    # The conflict is recorded, so it is returned rather than raised inside
    # the transaction (which would roll the record back).
    granted, conflicts = store.write(reserve)
    if conflicts:
        log_event("reservation_conflict", INFO, agent_id=agent_id, requested=requested,
                  holders=sorted({c.holder.agent_id for c in conflicts}))
        raise ReservationConflictError(conflicts)
    log_event("reservation_acquire", agent_id=agent_id, patterns=requested, exclusive=exclusive)
    return granted


# A waiting request looks again after FIRST_WAIT_S, the pause doubling up to
# LONGEST_WAIT_S: how late it notices a release (no commit announces one).
FIRST_WAIT_S, LONGEST_WAIT_S = 0.05, 1.0


def acquire_waiting(
    store: Store,
    patterns: Iterable[str],
    agent_id: str,
    ttl_ms: int,
    *,
    timeout_s: float | None = None,
    exclusive: bool = True,
    reason: str = "",
    task_id: str | None = None,
) -> list[Reservation]:
    """:func:`acquire`, waiting up to ``timeout_s`` (None: without end) while the request conflicts.

    It looks again with a read-only check, the pause doubling from 0.05 s up
    to a second (on PostgreSQL a release ends the pause at once: LISTEN/NOTIFY),
    and asks again once nothing conflicts, so a wait records one conflict, not
    one per look. Raises :class:`ReservationConflictError`, with
    the conflicts still standing, when the time is up. Example::

        acquire_waiting(store, ["src/**"], "agent-b", 30 * 60_000, timeout_s=120)
    """
    if timeout_s is not None and not 0 <= timeout_s < float("inf"):
        raise UsageError(f"a wait of {timeout_s!r} s: give a number of seconds, 0 or more")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    requested = _normalized(check_new_pattern(pattern) for pattern in patterns)  # as given: '!x' is refused
    pause = FIRST_WAIT_S
    while True:
        try:
            return acquire(
                store, requested, agent_id, ttl_ms, exclusive=exclusive, reason=reason, task_id=task_id
            )
        except ReservationConflictError as error:
            conflicts = error.conflicts
        while conflicts:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ReservationConflictError(conflicts, waited_s=timeout_s)
            # PostgreSQL wakes this at once when a reservation is released; SQLite just waits.
            store.wait_for_work(pause if remaining is None else min(pause, remaining), "released")
            pause = min(pause * 2, LONGEST_WAIT_S)
            conflicts = store.read(
                lambda transaction: _live_conflicts(transaction, requested, exclusive, agent_id)
            )


def _held(transaction: Transaction, agent_id: str, pattern: str) -> Reservation:
    mine = transaction.reservations(agent_id=agent_id, pattern=pattern)
    if mine:
        return mine[0]
    others = transaction.reservations(pattern=pattern)
    if others:
        holders = ", ".join(sorted(r.agent_id for r in others))
        raise NotHolderError(
            f"{pattern!r} is reserved by {holders}, not {agent_id!r};"
            " only the holder may change it (or use --force with --reason)"
        )
    raise NotFoundError(f"agent {agent_id!r} holds no live reservation on {pattern!r}")


def _expiry(transaction: Transaction, agent_id: str, task_id: str | None, until: int) -> int:
    """``until``, or the lease's expiry where the reservation is tied to a task whose live lease
    ``agent_id`` holds: a tied reservation lasts exactly as long as the lease (it ends with it, and
    each extension of the lease extends it), so that is the time every view shows."""
    if task_id is None:
        return until
    lease = transaction.get_lease(task_id)
    if lease is None or lease.agent_id != agent_id or not lease.is_live(transaction.now):
        return until
    return lease.lease_expires_at


def renew(store: Store, patterns: Iterable[str], agent_id: str, ttl_ms: int) -> list[Reservation]:
    """Extend the agent's live reservations to ``ttl_ms`` from now (one tied to a task's lease: to the
    lease's expiry)."""
    requested = _normalized(patterns)

    def extend(transaction: Transaction) -> list[Reservation]:
        renewed = []
        for pattern in requested:
            held = _held(transaction, agent_id, pattern)
            until = _expiry(transaction, agent_id, held.task_id, transaction.now + ttl_ms)
            reservation = light_replace(held, expires_at=until)
            transaction.put_reservation(reservation, anchor(pattern))
            transaction.insert_reservation_event(
                "renew", agent_id, _tied({"pattern": pattern, "expires_at": reservation.expires_at}, reservation)
            )
            renewed.append(reservation)
        seen(transaction, agent_id)
        return renewed

    return store.write(extend)


def release(store: Store, patterns: Iterable[str], agent_id: str) -> list[Reservation]:
    """Release the agent's own reservations."""
    requested = _normalized(patterns)

    def drop(transaction: Transaction) -> list[Reservation]:
        released = []
        for pattern in requested:
            reservation = _held(transaction, agent_id, pattern)
            transaction.delete_reservation(agent_id, pattern)
            transaction.insert_reservation_event("release", agent_id, _tied({"pattern": pattern}, reservation))
            released.append(reservation)
        seen(transaction, agent_id)
        return released

    return store.write(drop)


class ForceReleased(list[Reservation]):
    """The reservations a force-release took away; ``undelivered`` says, one line each, which
    notices could not be delivered (the release stands either way)."""

    def __init__(self, released: Iterable[Reservation], untold: Iterable[tuple[Reservation, str]] = ()) -> None:
        super().__init__(released)
        self._untold = {(reservation.agent_id, reservation.pattern) for reservation, _ in untold}
        self.undelivered = [line for _, line in untold]

    def was_told(self, reservation: Reservation) -> bool:
        return (reservation.agent_id, reservation.pattern) not in self._untold


@dataclass(frozen=True)
class ReleaseTarget:
    """What a force-release names: a pattern, released exactly as held, and, when the name is a
    plain file or folder, its repository-relative ``path``: every reservation covering it goes too.
    A folder's path ends with '/' (``src/``): every reservation over or inside it goes
    (:func:`~pytest_maf.folders.over_or_inside`), not one that only reaches into it (``*.md``)."""

    pattern: str
    path: str | None = None

    def __str__(self) -> str:
        return self.path if self.path is not None and self.path != self.pattern.lstrip("/") else self.pattern


def _tied(data: dict[str, Any], reservation: Reservation) -> dict[str, Any]:
    """An event's data with the task the reservation is tied to, if any: `maf history --task` finds it."""
    return {**data, "task": reservation.task_id} if reservation.task_id is not None else data


def _force_release_holders(transaction: Transaction, target: ReleaseTarget) -> list[Reservation]:
    """The live reservations a force-release of ``target`` takes: its exact pattern's, and those covering its path."""
    found = {(r.agent_id, r.pattern): r for r in transaction.reservations(pattern=target.pattern)}
    if target.path is not None:
        candidates = transaction.reservations(anchors={target.path.split("/", 1)[0], ""})
        if is_folder(target.path):
            covering = [r for r in candidates if over_or_inside(r.pattern, target.path)]
        else:
            covering = ReservationIndex(candidates).covering(target.path)
        for reservation in covering:
            found.setdefault((reservation.agent_id, reservation.pattern), reservation)
    return sorted(found.values(), key=lambda r: (r.pattern, r.agent_id))


def force_release(
    store: Store, patterns: Iterable[str | ReleaseTarget], agent_id: str, reason: str, mail_root: Path
) -> ForceReleased:
    """Release every holder's reservation on the patterns, recorded, each holder told by mail.

    A :class:`ReleaseTarget` with a ``path`` also releases every reservation
    that covers that path (``src/**`` and ``src/app.py`` for ``src/app.py``).
    All or nothing: a target nobody holds releases none and sends nothing.
    Each notice is queued in the store with the release and delivered after
    it commits, so a mail root that cannot be written never undoes or hides a
    release: each notice not delivered stays queued for the next command and
    is listed in the result's ``undelivered``.
    """
    from pytest_maf import mail  # kept off the guard's path, which imports this module

    validate_id("agent", agent_id)
    if not reason.strip():
        raise UsageError("--force needs --reason: the holders are told why")
    check_text("the reason", reason, MAX_REASON_CHARS)
    targets = list(dict.fromkeys(
        item if isinstance(item, ReleaseTarget) else ReleaseTarget(normalize_pattern(item)) for item in patterns
    ))
    if not targets:
        raise UsageError("give at least one pattern")
    requested = [str(target) for target in targets]

    def drop(transaction: Transaction) -> list[tuple[Reservation, dict[str, Any]]]:
        released: list[tuple[Reservation, dict[str, Any]]] = []
        taken: set[tuple[str, str]] = set()
        for target in targets:
            holders = _force_release_holders(transaction, target)
            if not holders:
                raise NotFoundError(f"nobody holds a live reservation on {str(target)!r}")
            for holder in holders:
                if (holder.agent_id, holder.pattern) in taken:
                    continue  # named by two targets: released and told once
                taken.add((holder.agent_id, holder.pattern))
                transaction.delete_reservation(holder.agent_id, holder.pattern)
                data = {"pattern": holder.pattern, "holder": holder.agent_id, "reason": reason}
                if target.path is not None and holder.pattern != target.pattern:
                    data["path"] = target.path
                transaction.insert_reservation_event("force_release", agent_id, _tied(data, holder))
                notice = {
                    "id": mail.new_message_id(),
                    "type": "RESERVATION_FORCE_RELEASED",
                    "from": agent_id,
                    "to": holder.agent_id,
                    "pattern": holder.pattern,
                    "reason": reason,
                    "created_at": transaction.now,
                }
                if "path" in data:
                    notice["path"] = target.path
                transaction.enqueue_mail(mail.check_size(notice, "the reason", "say it in fewer words"))
                released.append((holder, notice))
        seen(transaction, agent_id)
        return released

    released = store.write(drop)
    log_event("reservation_force_release", WARNING, agent_id=agent_id, reason=reason,
              holders=sorted({r.agent_id for r, _ in released}), patterns=requested)
    notice_ids = [notice["id"] for _, notice in released]
    try:
        failed = mail.deliver_pending(store, mail_root, notice_ids).failed
    except (MafError, OSError) as error:
        failed = dict.fromkeys(notice_ids, str(error))
    untold = [
        (holder, f"{holder.pattern} was released, but {holder.agent_id} was not told by agent-mail"
                 f" (notice {notice['id']}): {failed[notice['id']]}; the notice stays queued and the next"
                 " maf command delivers it")
        for holder, notice in released if notice["id"] in failed
    ]
    return ForceReleased([holder for holder, _ in released], untold)


def list_reservations(
    store: Store, agent_id: str | None = None, include_expired: bool = False
) -> list[Reservation]:
    return store.read(
        lambda transaction: transaction.reservations(agent_id=agent_id, live_only=not include_expired)
    )


class _Node:
    """Reservations whose patterns share the same leading plain segments."""

    __slots__ = ("children", "plain", "by_ending", "others")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.plain: list[Reservation] = []  # plain paths: they cover every path through this node
        self.by_ending: dict[str, list[Reservation]] = {}  # by the text a matched segment must end with
        self.others: list[Reservation] = []

    def add(self, reservation: Reservation) -> None:
        compiled = compile_pattern(reservation.pattern)
        affixes = compiled.last_affixes
        if compiled.literal:
            self.plain.append(reservation)
        elif affixes and affixes[1]:
            self.by_ending.setdefault(affixes[1], []).append(reservation)
        else:
            self.others.append(reservation)

    def everything(self) -> Iterator[Reservation]:
        yield from self.plain
        for bucket in self.by_ending.values():
            yield from bucket
        yield from self.others

    def for_names(self, names: Sequence[str]) -> Iterator[Reservation]:
        """Those that could match a path ending in one of ``names`` (the directory rule covers the rest)."""
        yield from self.others
        if self.by_ending:
            for name in names:
                for start in range(len(name)):
                    yield from self.by_ending.get(name[start:], ())


class ReservationIndex:
    """Reservations arranged so that a path or pattern is tried only against those that can match.

    Two patterns whose leading plain segments differ somewhere can never
    cover a common path, so reservations sit in a tree of those segments; a
    plain path covers every path through its node; and a pattern whose last
    segment must end with some text (``*.py``) is only tried against paths
    with a segment, below its node, that ends with it (the directory rule:
    ``*.py`` covers ``a.py/x``).
    """

    def __init__(self, reservations: Iterable[Reservation]) -> None:
        self._root = _Node()
        for reservation in reservations:
            node = self._root
            for segment in literal_prefix(reservation.pattern):
                child = node.children.get(segment)
                if child is None:  # made only when missing: most segments are shared
                    child = node.children[segment] = _Node()
                node = child
            node.add(reservation)

    def _nodes_along(self, segments: Sequence[str]) -> Iterator[_Node]:
        node: _Node | None = self._root
        for segment in ("", *segments):
            node = node.children.get(segment) if segment else node  # type: ignore[union-attr]
            if node is None:
                return
            yield node

    def _nodes_below(self, segments: Sequence[str]) -> Iterator[_Node]:
        nodes = list(self._nodes_along(segments))
        if len(nodes) != len(segments) + 1:
            return
        stack = list(nodes[-1].children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    def covering(self, path: str) -> list[Reservation]:
        """Every reservation whose pattern covers the concrete ``path``."""
        segments = path.split("/")
        found: dict[int, Reservation] = {}
        for depth, node in enumerate(self._nodes_along(segments)):
            for reservation in node.plain:
                found[id(reservation)] = reservation
            # A glob at this depth matches a path of more segments than `depth`.
            for reservation in node.for_names(segments[depth:]):
                if id(reservation) not in found and compile_pattern(reservation.pattern).matches(path):
                    found[id(reservation)] = reservation
        return list(found.values())

    def overlapping(self, pattern: str) -> list[tuple[Reservation, str]]:
        """Every reservation some path shares with ``pattern``, with that path."""
        prefix = literal_prefix(pattern)
        found = []
        for node in (*self._nodes_along(prefix), *self._nodes_below(prefix)):
            for reservation in node.everything():
                witness = overlap_witness(pattern, reservation.pattern)
                if witness is not None:
                    found.append((reservation, witness))
        return found


def blocking_reservations(
    reservations: Iterable[Reservation], paths: Iterable[str], agent_id: str | None
) -> list[Block]:
    """Paths under another agent's exclusive reservation (pure). A folder (a path ending in '/')
    is under every one that covers some path beneath it.

    ``agent_id=None`` is a committer without an agent id: every exclusive
    reservation blocks it.
    """
    index = ReservationIndex(r for r in reservations if r.exclusive and r.agent_id != agent_id)
    blocks = []
    for path in paths:
        if is_folder(path):
            blocks += [Block(path, holder, example) for holder, example in index.overlapping(folder_pattern(path))]
        else:
            blocks += [Block(path, holder) for holder in index.covering(path)]
    return blocks


def reservations_for_paths(store: Store, paths: Sequence[str]) -> list[Reservation]:
    """The live reservations that could cover any of ``paths`` (by anchor)."""
    anchors = {path.split("/", 1)[0] for path in paths}
    # A name git gave that is not UTF-8 (surrogate escapes) is no stored pattern's anchor, nor text the store takes.
    anchors = {anchor for anchor in anchors if is_utf8(anchor)} | {""}
    return store.read(lambda transaction: transaction.reservations(anchors=anchors))


def normalize_place(path: str) -> str:
    """A concrete path in canonical form; a folder (``src/``, ``./src/``) keeps its trailing '/'."""
    return normalize_path(path) + "/" * is_folder(path)


def check_paths(store: Store, paths: Iterable[str], agent_id: str | None) -> list[Block]:
    """The blocks on ``paths`` (:func:`blocking_reservations`); one ending in '/' is a folder."""
    normalized = [normalize_place(path) for path in paths]
    return blocking_reservations(reservations_for_paths(store, normalized), normalized, agent_id)


def reservations_covering(store: Store, path: str) -> list[Reservation]:
    """Every live reservation, exclusive or shared, whose pattern matches ``path``; for a folder
    (``src/``), every one that covers some path beneath it."""
    normalized = normalize_place(path)
    index = ReservationIndex(reservations_for_paths(store, [normalized]))
    if is_folder(normalized):
        return [holder for holder, _ in index.overlapping(folder_pattern(normalized))]
    return index.covering(normalized)
