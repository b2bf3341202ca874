"""A pattern read as a line of a ``.gitignore``: the trailing spaces git drops from it, and the
syntax git reads as something other than a name, which a reservation refuses rather than store
as a literal name.

Example::

    drop_trailing_spaces("build/  ")   # -> 'build/'
    drop_trailing_spaces("name\\ ")    # -> 'name\\ ' (an escaped space stays)
    refuse_other_meanings("!src/a.py")  # UsageError: a negation; write \\!src/a.py for that name
"""

from __future__ import annotations

from pytest_maf.errors import UsageError

# A line's first character that git reads as syntax, and what it means there.
_LEADING_SYNTAX = {
    "!": "a negation: it re-includes what an earlier line excluded, and a reservation cannot exclude",
    "#": "a comment: it matches nothing",
}


def drop_trailing_spaces(text: str) -> str:
    r"""``text`` without its unescaped trailing spaces, as git reads a ``.gitignore`` line.

    A backslash escapes the character after it, a backslash too: ``a\ `` keeps its space,
    ``a\\ `` (an escaped backslash) drops it.

    >>> drop_trailing_spaces("src/ "), drop_trailing_spaces("a\\ "), drop_trailing_spaces("a\\\\ ")
    ('src/', 'a\\ ', 'a\\\\')
    """
    last_space = None
    index = 0
    while index < len(text):
        character = text[index]
        if character == " ":
            last_space = index if last_space is None else last_space
        else:
            last_space = None
            index += character == "\\"  # the escaped character is never a trailing space
        index += 1
    return text if last_space is None else text[:last_space]


def refuse_other_meanings(text: str) -> None:
    r"""Raise :class:`UsageError` for a pattern that a ``.gitignore`` reads as something other than a
    name: a leading ``!`` or ``#``, a trailing backslash, a ``/`` inside ``[...]``. Give ``text``
    as typed, its trailing spaces dropped (:func:`drop_trailing_spaces`). The messages quote it
    as typed, not as Python would (no doubled backslash): control characters are refused before.

    >>> refuse_other_meanings("\\!x"), refuse_other_meanings("src/[!.]*")
    (None, None)
    """
    if text[:1] in _LEADING_SYNTAX:
        escaped = "\\" + text
        raise UsageError(
            f"pattern '{text}' starts with {text[0]!r}, which a .gitignore reads as {_LEADING_SYNTAX[text[0]]};"
            f" for a file or folder named so, escape it as in a .gitignore: '{escaped}'"
        )
    if _dangling_escape(text):
        escaped = text + "\\"
        raise UsageError(
            f"pattern '{text}' ends with a backslash, which escapes nothing (git matches no path with it);"
            f" leave it out, or write '{escaped}' for a name that ends with a backslash"
        )
    bracket = _class_with_a_slash(text)
    if bracket is not None:
        raise UsageError(
            f"pattern '{text}' has a '/' inside the character class {bracket}: a class matches one character"
            " of a name, never '/', so git does not read it as a folder; leave the '/' out of the class"
            " ('?' is any one character), or write '\\[' for a name with a '[' in it"
        )


def _dangling_escape(text: str) -> bool:
    """Whether ``text`` ends with a backslash that escapes nothing (an odd run of them)."""
    return (len(text) - len(text.rstrip("\\"))) % 2 == 1


def _class_with_a_slash(text: str) -> str | None:
    """The first ``[...]`` class of ``text`` with a '/' inside, read as git reads one (a ']' first in
    the class is a member; a backslash escapes), or None."""
    index = 0
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        end = _class_end(text, index) if text[index] == "[" else None
        if end is not None and "/" in text[index:end]:
            return text[index:end]
        index = end if end is not None else index + 1
    return None


def _class_end(text: str, start: int) -> int | None:
    """Where the class opened by the '[' at ``start`` ends (just past its ']'), or None: unterminated."""
    index = start + 1
    index += index < len(text) and text[index] in "!^"
    first = True
    while index < len(text):
        if text[index] == "]" and not first:
            return index + 1
        index += 2 if text[index] == "\\" else 1
        first = False
    return None
