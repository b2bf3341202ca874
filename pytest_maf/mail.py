"""Agent-mail: one JSON file per message, written atomically under the mail root.

Layout: ``messages/<agent>/<id>.json`` is each agent's inbox, ``outbox/``
holds the sender's copies. A message is written to a temporary file in its
folder, synced, then linked or renamed into place, so a reader never sees
half a message.

Nothing leaves the mail root. Every folder and message is reached by walking
its names from the root, and a symbolic link is followed only when it
resolves inside the root; a mail root named inside a repository (the default
``.agent-mail``) must itself resolve inside that repository. Any other link
is refused (:class:`MailRootError`) before anything is read or written. The
folder so checked is then opened one name at a time without following a link,
from the repository's root (or from a mail root configured outside any
repository), and read and written through that descriptor, so a link another
process puts in its place meanwhile is refused too, not followed.

Messages that a store operation sends (an escalation's request, the notices
of a force-release or a guard override) are queued in the store in the
operation's own transaction and delivered by :func:`deliver_pending` after it
commits, and again by the next command when a process died in between::

    transaction.enqueue_mail(message)            # inside the operation
    delivery = deliver_pending(store, mail_root)  # after the commit
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Iterable, Iterator, Sequence

from pytest_maf import ids
from pytest_maf.errors import MafError, NotFoundError, UsageError
from pytest_maf.files import CAN_WRITE_IN_FOLDER, json_file_bytes, write_bytes_atomic, write_bytes_in

if TYPE_CHECKING:
    from pytest_maf.store import Store

MAX_MESSAGE_BYTES = 1024 * 1024
MAX_NAME_LENGTH = ids.MAX_ID_LENGTH
GLOB_CHARACTERS = "*?[]"
OUTSIDE_THE_ROOT = "outside the mail root; remove it"
MAKE_TRIES = 8  # looks at a folder being made, each time something else took its name meanwhile
OUTSIDE_THE_REPOSITORY = (
    "outside the repository {tree}; remove it, or name the folder it leads to as the mail root"
    " (MAF_AGENT_MAIL_ROOT)"
)


class MailRootError(UsageError):
    """A symbolic link that would take a read or a write out of the mail root."""


class UnreadableMessage(UsageError):
    """A regular ``*.json`` file in a mail folder that is no message pytest-maf would write (too large,
    not a JSON object, or an id that is not its file name): refused when asked for by its id, passed
    over with a warning when a whole inbox is listed."""


def validate_name(kind: str, name: str) -> str:
    """Check a name that becomes a path segment (an agent, a target, a message id).

    The same rule as every id the store accepts (:mod:`pytest_maf.ids`), so
    any agent that can hold a reservation or a lease can receive mail.
    """
    return ids.validate_id(kind, name)


def validate_message_id(message_id: str) -> str:
    """A message id names one file: the id rule, and no glob character."""
    validate_name("message id", message_id)
    if any(character in message_id for character in GLOB_CHARACTERS):
        raise UsageError(
            f"message id {message_id!r} may not contain '*', '?', '[' or ']': give one message's id"
            " (see `maf mail list`)"
        )
    return message_id


def new_message_id() -> str:
    return f"msg-{uuid.uuid4().hex}"


# Walking the mail root.


def _shown(path: str | Path) -> str:
    """A path as a user would type it: relative to the current directory when below it."""
    text = str(path)
    try:
        relative = os.path.relpath(text)
    except (OSError, ValueError):
        relative = text
    shown = text if relative.startswith("..") else relative
    return shown if shown.isprintable() else repr(shown)


def _inside(path: str, boundary: str) -> bool:
    return path == boundary or path.startswith(boundary.rstrip(os.sep) + os.sep)


_FOLDER_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
# The folders on the way: passed through, not read, so a folder the user may enter but not list (0711)
# does not stop the walk (O_PATH, on Linux; elsewhere they are opened for reading).
_PASSING_FLAGS = _FOLDER_FLAGS & ~os.O_RDONLY | getattr(os, "O_PATH", 0) if hasattr(os, "O_PATH") else _FOLDER_FLAGS


@contextlib.contextmanager
def _opened(start: str, real: str, named: Path) -> Iterator[int]:
    """The folder at ``real`` (a real path: no link on the way when it was checked), opened from the
    checked folder ``start`` above it one name at a time without following a link: a link (or a file)
    put in place of it, or of a folder between, since it was checked is refused, never followed out
    of the mail root. ``named`` is how the user knows the folder."""
    parts = Path(real).relative_to(start).parts
    descriptor = os.open(start, (_PASSING_FLAGS if parts else _FOLDER_FLAGS) & ~getattr(os, "O_NOFOLLOW", 0))
    try:
        for depth, part in enumerate(parts, start=1):
            try:
                inner = os.open(part, _PASSING_FLAGS if depth < len(parts) else _FOLDER_FLAGS, dir_fd=descriptor)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise MailRootError(
                        f"{_shown(named)} was replaced while it was used (by a symbolic link or a file); try again"
                    ) from None
                raise OSError(error.errno, error.strerror, os.path.join(start, *parts[:depth])) from None
            os.close(descriptor)
            descriptor = inner
        yield descriptor
    finally:
        os.close(descriptor)


def _make_folder(start: str, parent: str, part: str, named: Path) -> None:
    """Make the folder ``part`` in the real folder ``parent`` (``named`` is how the user knows it)."""
    if not CAN_WRITE_IN_FOLDER:
        os.mkdir(os.path.join(parent, part))
        return
    with _opened(start, parent, named.parent) as folder:
        try:
            os.mkdir(part, dir_fd=folder)
        except OSError as error:  # named as the user knows it, not as the name inside its folder
            raise OSError(error.errno, error.strerror, _shown(named)) from None


def _write(start: str, folder: str, named: Path, data: bytes, *, overwrite: bool) -> bool:
    """Write the file ``named`` in the real, checked ``folder`` whole, through the folder's descriptor."""
    if not CAN_WRITE_IN_FOLDER:
        return write_bytes_atomic(Path(folder) / named.name, data, overwrite=overwrite)
    with _opened(start, folder, named.parent) as descriptor:
        try:
            return write_bytes_in(descriptor, named.name, data, overwrite=overwrite)
        except OSError as error:  # named as the user knows it, not as the name inside its folder
            raise OSError(error.errno, error.strerror, _shown(named)) from None


def _remove(start: str, folder: str, named: Path) -> None:
    """Remove the file ``named`` from the real, checked ``folder``; nothing if it is gone already."""
    with contextlib.suppress(FileNotFoundError):
        if not CAN_WRITE_IN_FOLDER:
            os.unlink(os.path.join(folder, named.name))
            return
        with _opened(start, folder, named.parent) as descriptor:
            os.unlink(named.name, dir_fd=descriptor)


def _names(start: str, folder: str, named: Path) -> list[str]:
    """The names in the real, checked ``folder``, read through its descriptor."""
    if not CAN_WRITE_IN_FOLDER:
        return os.listdir(folder)
    with _opened(start, folder, named) as descriptor:
        return os.listdir(descriptor)


def _walk(
    start: str, boundary: str, named: Path, parts: Sequence[str], outside: str, create: bool,
    created: list[Path] | None, walk_from: str,
) -> str | None:
    """The real folder reached from the real folder ``start`` through ``parts``; None if missing.

    A symbolic link is followed only when it resolves inside ``boundary``;
    ``named`` is how the user knows ``start``. A folder is made through a descriptor walked from
    ``walk_from`` (:func:`_opened`).
    """
    current = start
    for index, part in enumerate(parts):
        name = named.joinpath(*parts[: index + 1])
        candidate = os.path.join(current, part)
        for _ in range(MAKE_TRIES):
            if os.path.islink(candidate):
                target = os.path.realpath(candidate)
                if not _inside(target, boundary):
                    raise MailRootError(f"{_shown(name)} is a symbolic link to {_shown(target)}, {outside}")
                if not os.path.lexists(target):  # made here, the folder would be the link's name, not its target
                    raise MailRootError(
                        f"{_shown(name)} is a symbolic link to {_shown(target)}, which does not exist;"
                        " make that folder, or remove the link"
                    )
                candidate = target
            if os.path.isdir(candidate):
                break
            if os.path.lexists(candidate):
                raise UsageError(f"{_shown(name)} is not a folder; move it away so agent-mail can use the mail root")
            if not create:
                return None
            try:
                _make_folder(walk_from, current, part, name)
            except FileExistsError:
                continue  # made meanwhile, perhaps as a link: look again
            if created is not None:
                created.append(name)
            break
        else:
            raise MailRootError(f"{_shown(name)} keeps being replaced while agent-mail makes it; try again")
        current = candidate
    return current


def _work_tree_of(path: Path) -> Path | None:
    """The work tree ``path`` is named in (nearest folder above it holding ``.git``), if any."""
    for directory in path.parents:
        if os.path.lexists(directory / ".git"):
            return directory
    return None


def _root(mail_root: Path, create: bool, created: list[Path] | None = None) -> tuple[str, str] | None:
    """(where a descriptor walk to the mail root's folders starts, the mail root's real path), checked;
    None when it does not exist (and ``create`` is false). The walk starts at the real root of the
    repository the mail root is named in (agents write inside it, so every name below it is walked),
    else at the mail root itself (configured outside any repository: the user chose it)."""
    named = Path(os.path.abspath(mail_root))
    tree = _work_tree_of(named)
    if tree is not None:
        boundary = os.path.realpath(tree)
        whole = os.path.abspath(tree)  # not _shown: "the repository ." says nothing
        outside = OUTSIDE_THE_REPOSITORY.format(tree=whole if whole.isprintable() else repr(whole))
        root = _walk(boundary, boundary, tree, named.relative_to(tree).parts, outside, create, created, boundary)
        return None if root is None else (boundary, root)
    real = os.path.realpath(named)  # configured outside any repository: the user chose it
    if os.path.isdir(real):
        return real, real
    if os.path.lexists(real):
        raise UsageError(f"{_shown(named)} is not a folder; move it away so agent-mail can use the mail root")
    if not create:
        return None
    os.makedirs(real, exist_ok=True)
    if created is not None:
        created.append(named)
    return real, real


def _folder(
    mail_root: Path, *parts: str, create: bool = False, created: list[Path] | None = None
) -> tuple[str, str, str] | None:
    """(where a descriptor walk starts, the root's real path, the real path of ``parts`` below it), all
    checked (:func:`_root`); None if missing."""
    found = _root(mail_root, create, created)
    if found is None:
        return None
    start, root = found
    folder = _walk(root, root, Path(os.path.abspath(mail_root)), parts, OUTSIDE_THE_ROOT, create, created, start)
    return None if folder is None else (start, root, folder)


def _read(start: str, root: str, folder: str, named: Path) -> dict[str, Any] | None:
    """The message file ``named`` (in the real ``folder``, walked to from ``start``); None when there is
    no such regular file."""
    path = os.path.join(folder, named.name)
    if os.path.islink(path):
        target = os.path.realpath(path)
        if not _inside(target, root):
            raise MailRootError(f"{_shown(named)} is a symbolic link to {_shown(target)}, {OUTSIDE_THE_ROOT}")
        path = target
    # O_NONBLOCK: a FIFO planted in an inbox must not hang the reader (it is then not a regular file).
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        if CAN_WRITE_IN_FOLDER:
            place, name = os.path.split(path)
            with _opened(start, place, named.parent) as folder_descriptor:
                descriptor = os.open(name, flags, dir_fd=folder_descriptor)
        else:
            descriptor = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise MailRootError(f"{_shown(named)} became a symbolic link while it was read; try again") from None
        raise
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):  # a folder or a FIFO named like a message: not one
        os.close(descriptor)
        return None
    with os.fdopen(descriptor, "rb") as handle:
        if status.st_size > MAX_MESSAGE_BYTES:
            raise UnreadableMessage(
                f"{_shown(named)} is {status.st_size} bytes, more than a message may be ({MAX_MESSAGE_BYTES});"
                " move it out of the mail root"
            )
        data = handle.read(MAX_MESSAGE_BYTES + 1)
    return _parsed(data, named)


def _parsed(data: bytes, named: Path) -> dict[str, Any]:
    """The message a file's bytes hold; else an :class:`UnreadableMessage` saying why it is none."""

    def not_json(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    try:
        message = json.loads(data.decode("utf-8"), parse_constant=not_json)
    except UnicodeDecodeError:
        why = "it is not UTF-8 text"
    except (ValueError, RecursionError):
        why = "it is not JSON"
    else:
        if not isinstance(message, dict):
            why = "it is JSON but not an object"
        elif message.get("id") != named.stem:  # pytest-maf names each file after its message's id
            why = f"its id {message.get('id')!r} is not its file name's {named.stem!r}"
        else:
            return message
    raise UnreadableMessage(f"{_shown(named)} is not an agent-mail message ({why}); move it out of the mail root")


# Reading.


def list_messages(
    mail_root: Path, agent: str, unread_only: bool = False, unreadable: list[str] | None = None
) -> list[dict[str, Any]]:
    """An agent's inbox, oldest first. Files being written (temporary names) are never read; a file
    that is no message (:class:`UnreadableMessage`) is passed over, and why is added to ``unreadable``,
    so one stray file hides none of the others."""
    inbox_parts = ("messages", validate_name("agent", agent))
    found = _folder(mail_root, *inbox_parts)
    if found is None:
        return []
    start, root, inbox = found
    named = Path(os.path.abspath(mail_root)).joinpath(*inbox_parts)
    messages = []
    for name in sorted(_names(start, inbox, named)):
        if name.endswith(".json") and not name.startswith("."):
            try:
                message = _read(start, root, inbox, named / name)
            except UnreadableMessage as error:
                if unreadable is not None:
                    unreadable.append(str(error))
                continue
            if message is not None:
                messages.append(message)
    if unread_only:
        messages = [message for message in messages if not message.get("read_at")]
    return sorted(messages, key=_oldest_first)


def _oldest_first(message: dict[str, Any]) -> tuple[float, str]:
    created = message.get("created_at")
    return (created if isinstance(created, (int, float)) else 0, str(message.get("id", "")))


def inbox_agents(mail_root: Path) -> list[str]:
    """The agents that have an inbox under the mail root, sorted; [] when there is no mail root."""
    found = _folder(mail_root, "messages")
    if found is None:
        return []
    start, _, inboxes = found
    return [
        agent for agent in sorted(_names(start, inboxes, Path(os.path.abspath(mail_root)) / "messages"))
        if os.path.islink(os.path.join(inboxes, agent)) or os.path.isdir(os.path.join(inboxes, agent))
    ]


def find_message(mail_root: Path, message_id: str) -> tuple[Path, dict[str, Any]]:
    """A message by id: from an inbox, else from the outbox."""
    name = f"{validate_message_id(message_id)}.json"
    named_root = Path(os.path.abspath(mail_root))
    places: list[tuple[str, ...]] = [("messages", agent) for agent in inbox_agents(mail_root)]
    places.append(("outbox",))  # inbox_agents has walked the mail root: its own problem is refused there, everyone's
    passed_over = []
    for parts in places:
        try:
            folder = _folder(mail_root, *parts)
        except UsageError as error:
            if parts[0] != "messages":  # the outbox is everyone's
                raise
            passed_over.append(str(error))  # an inbox leading out, or no folder: not where this message is
            continue
        if folder is None:
            continue
        message = _read(*folder, named_root.joinpath(*parts, name))
        if message is not None:
            return named_root.joinpath(*parts, name), message
    unread = f" (not looked for in: {'; '.join(passed_over)})" if passed_over else ""
    raise NotFoundError(f"no message {message_id!r} under {_shown(mail_root)}{unread}")


# Writing.


def _required(message: dict[str, Any], key: str, kind: str) -> str:
    value = message.get(key)
    if not isinstance(value, str):
        raise UsageError(f"a message needs a {kind} ({key!r}); this one has {value!r}")
    return validate_message_id(value) if key == "id" else validate_name(kind, value)


def check_root(mail_root: Path) -> None:
    """Raise :class:`MailRootError` (or :class:`UsageError`) if the way to the mail root leaves its
    repository, or the mail root is no folder; writes nothing."""
    _root(mail_root, create=False)


def check_deliverable(mail_root: Path, recipient: str) -> None:
    """Raise :class:`MailRootError` (or :class:`UsageError`) if a message to ``recipient`` could
    not be delivered inside the mail root; writes nothing."""
    validate_name("recipient", recipient)
    _folder(mail_root, "messages", recipient)
    _folder(mail_root, "outbox")


def deliver(mail_root: Path, message: dict[str, Any]) -> Path:
    """Put ``message`` into its recipient's inbox and the outbox; return the inbox path.

    ``message`` needs ``id``, ``from`` and ``to``; the names are validated and
    every folder checked before anything is written, so nothing is written
    outside ``mail_root``. A file already there under the message's id is
    kept (it is this message, perhaps marked read): delivering twice is harmless.
    """
    recipient = _required(message, "to", "recipient")
    _required(message, "from", "sender")
    name = f"{_required(message, 'id', 'message id')}.json"
    check_deliverable(mail_root, recipient)
    found_inbox = _folder(mail_root, "messages", recipient, create=True)
    found_outbox = _folder(mail_root, "outbox", create=True)
    assert found_inbox is not None and found_outbox is not None
    named_root = Path(os.path.abspath(mail_root))
    data = json_file_bytes(message)
    in_inbox = named_root / "messages" / recipient / name
    start, _, inbox = found_inbox
    new_in_inbox = _write(start, inbox, in_inbox, data, overwrite=False)
    try:
        _write(start, found_outbox[2], named_root / "outbox" / name, data, overwrite=False)
    except BaseException:
        if new_in_inbox:  # both copies or neither: a retry must not deliver it twice
            with contextlib.suppress(MafError, OSError):
                _remove(start, inbox, in_inbox)
        raise
    return mail_root / "messages" / recipient / name


def acknowledge(mail_root: Path, message_id: str, agent: str, now_ms: int) -> dict[str, Any]:
    """Mark a message in ``agent``'s inbox read; the message itself stays where it is."""
    parts = ("messages", validate_name("agent", agent))
    name = f"{validate_message_id(message_id)}.json"
    found = _folder(mail_root, *parts)
    named = Path(os.path.abspath(mail_root)).joinpath(*parts, name)
    message = None if found is None else _read(*found, named)
    if found is None or message is None:
        raise NotFoundError(f"no message {message_id!r} in {agent}'s inbox")
    if not message.get("read_at"):
        message["read_at"] = now_ms
        start, _, inbox = found
        _write(start, inbox, named, json_file_bytes(message), overwrite=True)
    return message


# What a message's mark of having been read adds to its file: room kept so it can still be read after.
READ_MARK_BYTES = 64


def fits(message: dict[str, Any]) -> bool:
    """Whether ``message``'s file would be one a reader opens, with room for its read mark."""
    return len(json_file_bytes(message)) + READ_MARK_BYTES <= MAX_MESSAGE_BYTES


def check_size(message: dict[str, Any], what: str, hint: str) -> dict[str, Any]:
    """``message``, if it :func:`fits`; else a :class:`UsageError` saying so of ``what`` (the text
    that makes it long), with ``hint``."""
    if not fits(message):
        size = len(json_file_bytes(message))
        raise UsageError(
            f"{what} is too long: the message would be {size} bytes, and a message may be at most"
            f" {MAX_MESSAGE_BYTES - READ_MARK_BYTES}; {hint}"
        )
    return message


def send(mail_root: Path, sender: str, recipient: str, subject: str, body: str, now_ms: int) -> dict[str, Any]:
    """Deliver a message; one that would be larger than :data:`MAX_MESSAGE_BYTES` (which no reader
    would open) is refused before anything is written."""
    message = {
        "id": new_message_id(),
        "type": "MESSAGE",
        "from": sender,
        "to": recipient,
        "subject": subject,
        "body": body,
        "created_at": now_ms,
    }
    check_size(message, "the subject and body", "put the text in a file and send its path")
    deliver(mail_root, message)
    return message


def initialise(mail_root: Path, inboxes: Iterable[str] = ()) -> list[Path]:
    """Lay out the mail root (and the given inboxes); return what was created."""
    names = [validate_name("agent", name) for name in inboxes]
    for parts in (("messages",), ("outbox",), *(("messages", name) for name in names)):
        _folder(mail_root, *parts)  # every link checked before anything is made
    created: list[Path] = []
    for parts in (("messages",), ("outbox",), *(("messages", name) for name in names)):
        _folder(mail_root, *parts, create=True, created=created)
    return created


# Delivering what store operations queued.


@dataclass
class Delivery:
    """What :func:`deliver_pending` did: the ids delivered, and why each other one is still queued."""

    delivered: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def warning(self) -> str | None:
        """One line about the messages still queued, or None."""
        if not self.failed:
            return None
        first_id, why = next(iter(self.failed.items()))
        more = f" and {len(self.failed) - 1} more" if len(self.failed) > 1 else ""
        return (
            f"{len(self.failed)} queued agent-mail message(s) could not be delivered ({first_id}{more}): {why};"
            " they stay queued and the next maf command delivers them"
        )


def deliver_pending(store: Store, mail_root: Path, message_ids: Collection[str] | None = None) -> Delivery:
    """Deliver the messages queued in the store (only ``message_ids``, when given), then mark them.

    One indexed query when nothing is queued. A message that cannot be
    delivered (a full disk, an unwritable mail root, a link out of it) stays
    queued and is listed in :attr:`Delivery.failed`; nothing is rolled back.
    """
    queued = store.read(lambda transaction: transaction.pending_mail(message_ids))
    delivery = Delivery()
    for queued_id, message in queued:
        try:
            deliver(mail_root, message)
        except (MafError, OSError) as error:
            delivery.failed[queued_id] = str(error)
        else:
            delivery.delivered.append(queued_id)
    if delivery.delivered:
        try:
            store.write(lambda transaction: transaction.mark_mail_delivered(delivery.delivered))
        except (MafError, OSError):
            pass  # delivered but not marked (a busy store): the next delivery finds the files there
    return delivery
