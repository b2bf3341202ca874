"""Values checked at the door: integers the store can hold, JSON it can give back.

Whatever a caller passes (a payload, evidence details, a priority) is checked
here before it is stored, so nothing stored is unreadable later: a NaN is not
JSON, a 100,000-deep list cannot be printed back, and an integer past
SQLite's 64 bits cannot be stored at all.

Example::

    check_integer("priority", 10, INT64_MIN, INT64_MAX)  # -> 10
    check_json("payload", {"issue": 42})                   # -> {"issue": 42}
"""

from __future__ import annotations

import math
import re

from pytest_maf.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_JSON_DEPTH = 64
MAX_JSON_BYTES = 1024 * 1024


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8: it holds no lone surrogate (how Python keeps a byte of
    a file name or an argument that was not UTF-8)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(name: str, value: str, max_chars: int | None = None) -> str:
    """Free text a user wrote (a reason, an error's context), as both backends can store it: no NUL
    character (PostgreSQL's text cannot hold one, so a SQLite store holding one could not be copied
    there), nothing that is not UTF-8 and, given ``max_chars``, no more characters than that; else a
    :class:`UsageError` naming ``name``."""
    if max_chars is not None and len(value) > max_chars:
        raise UsageError(f"{name} is {len(value):,} characters long, more than {max_chars:,}: say it in fewer words")
    if "\0" in value:
        raise UsageError(f"{name} holds a NUL character, which a store cannot keep: remove it")
    if not is_utf8(value):
        raise UsageError(f"{name} holds text that is not UTF-8 (a lone surrogate), which a store cannot keep")
    return value


def check_integer(name: str, value: int, low: int, high: int) -> int:
    """``value`` if ``low <= value <= high``, else a :class:`UsageError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _flat_and_short(value: dict[Any, Any]) -> bool:
    """Whether ``value`` is an object of strings, booleans, nulls and lists of strings whose JSON is
    surely under :data:`MAX_JSON_BYTES`: what the pytest plugin's evidence details are, checked at a
    fraction of the cost of :func:`check_json`'s walk (pure)."""
    items = characters = 0
    for key, inner in value.items():
        if type(key) is not str:
            return False
        kind = type(inner)
        if kind is str:
            characters += len(inner)
        elif kind is list:
            for element in inner:
                if type(element) is not str:
                    return False
                characters += len(element)
            items += len(inner)
        elif inner is not True and inner is not False and inner is not None:
            return False
        items += 1
        characters += len(key)
    # Each character is at most 6 in JSON (\u0000), each key, value or element at most 8 more.
    return 6 * characters + 8 * items + 2 <= MAX_JSON_BYTES


def check_json(name: str, value: Any) -> Any:
    """``value`` if it is plain JSON (no NaN or infinity), at most :data:`MAX_JSON_DEPTH`
    deep and :data:`MAX_JSON_BYTES` long; else a :class:`UsageError` naming ``name``."""
    if type(value) is dict and _flat_and_short(value):
        return value
    pending: list[tuple[Any, int]] = [(value, 1)]
    # An upper bound of the JSON's length, kept while walking: a string is at most 6 characters
    # a character (\u0000) and its quotes, a number 24, each item and key 2 more for ", " or ": ".
    # Only a value that might be too long is serialised to measure it.
    bound = 0
    while pending:  # iterative: a deep value must not exhaust the stack while it is checked
        item, depth = pending.pop()  # depth: the objects and arrays around item, item included if it is one
        if depth > MAX_JSON_DEPTH and isinstance(item, (dict, list, tuple)):
            raise UsageError(f"{name} is nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(item, str):
            bound += 6 * len(item) + 4
        elif isinstance(item, dict):
            bound += 4
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise UsageError(f"{name} has a key that is not a string: {key!r}")
                bound += 6 * len(key) + 4
                pending.append((inner, depth + 1))
        elif isinstance(item, (list, tuple)):
            bound += 4
            pending.extend((inner, depth + 1) for inner in item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise UsageError(f"{name} holds {item!r}, which is not JSON; use a number or a string")
        elif isinstance(item, int) and not isinstance(item, bool) and not INT64_MIN <= item <= INT64_MAX:
            raise UsageError(f"{name} holds an integer past 64 bits; write it as a string")
        elif item is not None and not isinstance(item, (str, int, float, bool)):
            raise UsageError(f"{name} holds a {type(item).__name__}, which is not JSON")
        else:
            bound += 26
    if bound > MAX_JSON_BYTES:
        import json  # only a value that might be too long is serialised

        size = len(json.dumps(value, ensure_ascii=False))
        if size > MAX_JSON_BYTES:
            raise UsageError(f"{name} is {size} characters of JSON; the limit is {MAX_JSON_BYTES}")
    return value


def plain_json(name: str, value: Any) -> Any:
    """:func:`check_json`'s ``value`` made of built-in types only: a subclass (an ``IntEnum``, an
    ``OrderedDict``) becomes its plain value and a tuple a list, as the stored JSON will read back.
    What pytest-xdist sends between processes must be such plain data.

    Example::

        plain_json("details", OrderedDict(files=(1, 2)))  # -> {"files": [1, 2]}
    """
    check_json(name, value)
    if type(value) is dict and _flat_and_short(value):
        return value
    import json  # only details beyond the plain strings, booleans and lists of strings the plugin makes

    return json.loads(json.dumps(value, ensure_ascii=False))


def parse_json(name: str, text: str) -> Any:
    """Parse JSON given by a user and :func:`check_json` it; every problem is a :class:`UsageError`."""

    def refuse_constant(constant: str) -> Any:
        raise UsageError(f"{name} holds {constant}, which is not JSON; use a number or a string")

    import json  # here: the guard parses no JSON

    try:
        value = json.loads(text, parse_constant=refuse_constant)
    except json.JSONDecodeError as error:
        raise UsageError(f"{name} is not valid JSON ({error.msg} at position {error.pos})") from None
    except RecursionError:
        raise UsageError(f"{name} is nested more than {MAX_JSON_DEPTH} levels deep") from None
    return check_json(name, value)


DURATION_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
MAX_DURATION_MS = 100 * 365 * 86_400_000  # a hundred years: any longer reaches back past every store


def parse_duration(name: str, text: str) -> int:
    """A span of time such as ``30m``, ``2h``, ``1d`` or ``1h30m`` in milliseconds (a bare number is
    seconds); anything else, or nothing, or more than a hundred years, is a :class:`UsageError`."""
    spelled = text.strip().lower()
    parts = re.fullmatch(r"(?:[0-9]+(?:\.[0-9]+)?[smhdw])+|[0-9]+(?:\.[0-9]+)?", spelled)
    if not spelled or parts is None:
        raise UsageError(
            f"{name} {text!r} is not a duration; write a number with a unit: 90s, 30m, 2h, 1d, 1w (or 1h30m)"
        )
    if spelled[-1] in "0123456789":
        spelled += "s"
    total = sum(
        float(amount) * DURATION_UNITS_MS[unit] for amount, unit in re.findall(r"([0-9]+(?:\.[0-9]+)?)([smhdw])", spelled)
    )
    if total > MAX_DURATION_MS:
        raise UsageError(f"{name} {text!r} is longer than a hundred years")
    return int(total)
