"""Text as a terminal should show it: what was stored is what is seen.

A reservation reason, a mail subject or a verifier's failure message may hold
escape sequences that would recolour, move the cursor or forge a line;
:func:`printable` shows them as escapes. JSON output stays exact.

Example::

    printable("red\x1b[31m\nnext")  # -> 'red\\x1b[31m\\nnext'

:class:`Progress` shows how long slow work has run, on a terminal only.
"""

from __future__ import annotations

import os
import sys
import time
import unicodedata
from types import TracebackType

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from typing import Any, TextIO

# What a terminal would act on instead of show: C0 and C1 controls (ESC starts
# colour and cursor sequences), line and paragraph separators, bidirectional
# and other format characters (but the joiners that emoji and scripts need),
# and lone surrogates (undecodable file names).
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_JOINERS = frozenset({"\u200c", "\u200d"})
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _hidden(character: str) -> bool:
    return unicodedata.category(character) in _HIDDEN_CATEGORIES and character not in _JOINERS


def _escaped(character: str) -> str:
    if character in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[character]
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """``text`` as a terminal should show it: control characters written as escapes.

    What was stored is what is seen, on one line: ``"red\\x1b[31m\\nnext"``
    prints as ``red\\x1b[31m\\nnext``. For text output only; JSON output
    (``--json``) stays exact.
    """
    shown = str(text)
    if shown.isprintable():  # the common case, checked in C
        return shown
    return "".join(_escaped(character) if _hidden(character) else character for character in shown)


def cells(text: str) -> int:
    """The columns ``text`` takes on a terminal: two for a wide character (CJK, most emoji), none for
    a combining mark or a format character, one for any other.

    >>> cells("agent"), cells("漢字"), cells("e\u0301")
    (5, 4, 1)
    """
    if text.isascii():  # the common case, checked in C
        return len(text)
    import unicodedata

    return sum(_cells_of(character, unicodedata) for character in text)


def _cells_of(character: str, unicodedata: Any) -> int:
    if unicodedata.combining(character) or unicodedata.category(character) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(character) in ("W", "F") else 1


BRIEF_LIMIT = 200  # characters of free text (a reason, a message, a summary) on one line; --json has it all


def brief(text: object) -> str:
    """``text`` escaped for a terminal and cut to :data:`BRIEF_LIMIT` characters, saying how much is left
    out: a reason of 100,000 characters is one line, not a screenful."""
    original = str(text)
    shown = printable(original)
    if len(shown) <= BRIEF_LIMIT:
        return shown
    # The most of the text whose escaped form fits: no escape cut in two, and what is left out counted
    # in the text's own characters (a control character is one, not the four of its escape).
    low, high = 0, min(len(original), BRIEF_LIMIT)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if len(printable(original[:middle])) <= BRIEF_LIMIT else (low, middle - 1)
    return f"{printable(original[:low])}... ({len(original) - low} more characters; --json shows all)"


def cut(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters with ``...`` where it was cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable_json(value: Any, indent: int | None = 2) -> str:
    """``value`` as JSON (indented, or on one line with ``indent`` None) that shows every control,
    direction and other format character as a ``\\u`` escape: ``--json`` printed to a terminal
    cannot recolour it or reorder what it shows. It parses back to exactly ``value``.
    """
    import json  # here: the guard prints no JSON

    text = json.dumps(value, indent=indent, sort_keys=True, ensure_ascii=False)
    if text.replace("\n", "").isprintable():  # the common case, checked in C
        return text
    # Outside strings JSON has only ASCII and the indent's newlines.
    return "".join(
        json.dumps(character)[1:-1] if character != "\n" and _hidden(character) else character
        for character in text
    )


def on_a_terminal(stream: TextIO) -> bool:
    """``stream`` is an interactive terminal that can redraw a line (not a pipe, a file or TERM=dumb)."""
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


class Progress:
    """A line on stderr saying what is being done and for how long, redrawn in place
    while work that may take seconds runs; only on a terminal, and only once the
    work has taken longer than ``after_s``. Piped or redirected, it writes nothing.

    Example::

        with Progress("backing up .maf/runtime.db"):
            slow_work()
    """

    def __init__(
        self, what: str, *, after_s: float = 1.0, every_s: float = 0.25,
        stream: TextIO | None = None,
    ) -> None:
        self.what = printable(what)
        self.after_s = after_s
        self.every_s = every_s
        self.stream = sys.stderr if stream is None else stream
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._drawn = False

    def line(self, elapsed_s: float) -> str:
        """What the line says after ``elapsed_s`` seconds."""
        return f"{self.what}: {elapsed_s:.0f} s"

    def __enter__(self) -> Progress:
        if on_a_terminal(self.stream):
            import threading  # only when there is a line to draw: `maf guard` starts without it

            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._draw, args=(self._stop,), name="maf-progress", daemon=True)
            self._thread.start()
        return self

    def _draw(self, stop: threading.Event) -> None:
        started = time.monotonic()
        if stop.wait(self.after_s):
            return
        while not stop.is_set():
            self.stream.write(f"\r\x1b[K{self.line(time.monotonic() - started)}")
            self.stream.flush()
            self._drawn = True
            stop.wait(self.every_s)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None,
    ) -> None:
        if self._stop is not None and self._thread is not None:
            self._stop.set()
            self._thread.join()
        if self._drawn:  # leave the line clean for what is printed next
            self.stream.write("\r\x1b[K")
            self.stream.flush()
