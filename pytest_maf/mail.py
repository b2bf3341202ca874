"""Agent-mail: one JSON file per message, written atomically under the mail root.

Layout: ``messages/<agent>/<id>.json`` is each agent's inbox, ``outbox/``
holds the sender's copies. A message is written to a temporary file, synced,
then renamed into place, so a reader never sees half a message.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from pytest_maf.errors import UsageError
from pytest_maf.files import write_json_atomic

MAX_NAME_LENGTH = 128


def validate_name(kind: str, name: str) -> str:
    """Check a name that becomes a path segment (an agent, a target, a message id)."""
    if not name or name in (".", ".."):
        raise UsageError(f"{kind} {name!r} is not a usable name")
    if len(name) > MAX_NAME_LENGTH:
        raise UsageError(f"{kind} is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}")
    if "/" in name or "\\" in name or "\0" in name or not name.isprintable():
        raise UsageError(f"{kind} {name!r} may not contain '/', '\\\\' or control characters")
    return name


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
