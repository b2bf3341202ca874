"""A pattern read as a line of a ``.gitignore``: the trailing spaces git drops from it.

Example::

    drop_trailing_spaces("build/  ")   # -> 'build/'
    drop_trailing_spaces("name\\ ")    # -> 'name\\ ' (an escaped space stays)
"""

from __future__ import annotations


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
