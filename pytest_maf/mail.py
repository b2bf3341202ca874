"""Agent-mail: one JSON file per message, written atomically under the mail root.

Layout: ``messages/<agent>/<id>.json`` is each agent's inbox, ``outbox/``
holds the sender's copies. A message is written to a temporary file, synced,
then renamed into place, so a reader never sees half a message.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Iterable

from pytest_maf import ids
from pytest_maf.errors import NotFoundError
from pytest_maf.files import write_json_atomic

MAX_NAME_LENGTH = ids.MAX_ID_LENGTH


def validate_name(kind: str, name: str) -> str:
    """Check a name that becomes a path segment (an agent, a target, a message id).

    The same rule as every id the store accepts (:mod:`pytest_maf.ids`), so
    any agent that can hold a reservation or a lease can receive mail.
    """
    return ids.validate_id(kind, name)


def new_message_id() -> str:
    return f"msg-{uuid.uuid4().hex}"


def deliver(mail_root: Path, message: dict[str, Any]) -> Path:
    """Put ``message`` into its recipient's inbox and the outbox; return the inbox path.

    ``message`` needs ``id``, ``from`` and ``to``; the names are validated so
    nothing is written outside ``mail_root``.
    """
    recipient = validate_name("recipient", message["to"])
    validate_name("sender", message["from"])
    message_id = validate_name("message id", message["id"])
    inbox_path = mail_root / "messages" / recipient / f"{message_id}.json"
    write_json_atomic(inbox_path, message)
    write_json_atomic(mail_root / "outbox" / f"{message_id}.json", message)
    return inbox_path


def _read(path: Path) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return message


def list_messages(mail_root: Path, agent: str, unread_only: bool = False) -> list[dict[str, Any]]:
    """An agent's inbox, oldest first. Files being written (temporary names) are never read."""
    inbox = mail_root / "messages" / validate_name("agent", agent)
    if not inbox.is_dir():
        return []
    messages = [_read(path) for path in inbox.glob("*.json") if not path.name.startswith(".")]
    if unread_only:
        messages = [message for message in messages if not message.get("read_at")]
    return sorted(messages, key=lambda message: (message.get("created_at", 0), message.get("id", "")))


def find_message(mail_root: Path, message_id: str) -> tuple[Path, dict[str, Any]]:
    """A message by id: from an inbox, else from the outbox."""
    name = f"{validate_name('message id', message_id)}.json"
    for path in [*sorted((mail_root / "messages").glob(f"*/{name}")), mail_root / "outbox" / name]:
        if path.is_file():
            return path, _read(path)
    raise NotFoundError(f"no message {message_id!r} under {mail_root}")


def acknowledge(mail_root: Path, message_id: str, agent: str, now_ms: int) -> dict[str, Any]:
    """Mark a message in ``agent``'s inbox read; the message itself stays where it is."""
    path = mail_root / "messages" / validate_name("agent", agent) / f"{validate_name('message id', message_id)}.json"
    if not path.is_file():
        raise NotFoundError(f"no message {message_id!r} in {agent}'s inbox")
    message = _read(path)
    if not message.get("read_at"):
        message["read_at"] = now_ms
        write_json_atomic(path, message)
    return message


def send(mail_root: Path, sender: str, recipient: str, subject: str, body: str, now_ms: int) -> dict[str, Any]:
    message = {
        "id": new_message_id(),
        "type": "MESSAGE",
        "from": sender,
        "to": recipient,
        "subject": subject,
        "body": body,
        "created_at": now_ms,
    }
    deliver(mail_root, message)
    return message


def initialise(mail_root: Path, inboxes: Iterable[str] = ()) -> list[Path]:
    """Lay out the mail root (and the given inboxes); return what was created."""
    created = []
    for directory in (mail_root, mail_root / "messages", mail_root / "outbox", *(
        mail_root / "messages" / validate_name("agent", name) for name in inboxes
    )):
        if not directory.is_dir():
            directory.mkdir(parents=True)
            created.append(directory)
    return created
