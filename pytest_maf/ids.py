"""One rule for the ids of agents, tasks, beads, escalation targets and messages.

An agent's inbox is the directory ``messages/<agent id>/`` of the mail root,
so an id is also a path segment: any id the store accepts can receive mail.
The rule: 1-128 printable characters and at most 255 bytes in UTF-8 (a file
name's limit), no leading or trailing space, no ``/``, ``\\``, NUL or control
character, and not ``.`` or ``..``.

Example::

    validate_id("agent", "claude-1")    # -> "claude-1"
    validate_id("agent", "team/alice")  # UsageError: agent id 'team/alice' may not contain '/', ...
"""

from __future__ import annotations

from pytest_maf.errors import UsageError

MAX_ID_LENGTH = 128
MAX_ID_BYTES = 255  # a file name's limit: an agent's inbox is a folder named after its id
PATH_CHARACTERS = ("/", "\\", "\0")
# Kinds of id that never become a path: a verifier is named by a pytest node id
# ('checks/test_store.py::test_schema'), which contains '/'.
LABEL_KINDS = frozenset({"verifier"})
# A node id grows with folders, a class and parametrize ids: 208 characters is ordinary. The bytes
# bound keeps it, with its task id, within the largest index entry PostgreSQL takes (about 2,700 bytes).
MAX_LABEL_LENGTH = 1024
MAX_LABEL_BYTES = 2048


def id_problem(value: str, *, path_segment: bool = True) -> str | None:
    """What is wrong with ``value`` as an id, said after the id; None when it is fine (pure)."""
    if not value:
        return "must not be empty"
    longest = MAX_ID_LENGTH if path_segment else MAX_LABEL_LENGTH
    if len(value) > longest:
        return f"is {len(value)} characters long; the limit is {longest}"
    if not value.isprintable():  # before the spaces: strip() takes a trailing newline for one
        return "may not contain '/', '\\', NUL or control characters" if path_segment else "contains control characters"
    if value != value.strip():
        return "may not start or end with a space"
    if path_segment and (value in (".", "..") or any(character in value for character in PATH_CHARACTERS)):
        return "may not be '.' or '..'" if value in (".", "..") else "may not contain '/', '\\', NUL or control characters"
    if path_segment and len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        size = len(value.encode("utf-8", "surrogatepass"))
        return f"is {size} bytes long in UTF-8; the limit is {MAX_ID_BYTES} (a file name's: an inbox is named after it)"
    if not path_segment and len(value) > MAX_LABEL_BYTES // 4 and len(value.encode("utf-8", "surrogatepass")) > MAX_LABEL_BYTES:
        return f"is {len(value.encode('utf-8', 'surrogatepass'))} bytes long in UTF-8; the limit is {MAX_LABEL_BYTES}"
    return None


def validate_id(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid ``kind`` id, else raise :class:`UsageError` saying why."""
    problem = id_problem(value, path_segment=kind not in LABEL_KINDS)
    if problem is None:
        return value
    label = kind if kind.endswith(" id") else f"{kind} id"
    shown = repr(value) if len(value) <= MAX_ID_LENGTH else f"{value[:24]!r}..."
    raise UsageError(f"{label} {shown} {problem}")
