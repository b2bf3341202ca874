"""Text as a terminal should show it: what was stored is what is seen.

A reservation reason, a mail subject or a verifier's failure message may hold
escape sequences that would recolour, move the cursor or forge a line;
:func:`printable` shows them as escapes. JSON output stays exact.

Example::

    printable("red\x1b[31m\nnext")  # -> 'red\\x1b[31m\\nnext'
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

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


def printable_json(value: Any) -> str:
    """``value`` as indented JSON that shows every control character as a ``\\u`` escape.

    It parses back to exactly ``value``.
    """
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    # Outside strings JSON has only ASCII and the indent's newlines.
    return "".join(
        json.dumps(character)[1:-1] if character != "\n" and _hidden(character) else character
        for character in text
    )
