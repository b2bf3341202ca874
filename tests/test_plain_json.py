"""Evidence details made of built-in types only, as pytest-xdist must send them between processes."""

from __future__ import annotations

import collections
import enum
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_maf.errors import UsageError
from pytest_maf.values import plain_json

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def built_in_only(value: Any) -> bool:
    if type(value) is dict:
        return all(type(key) is str and built_in_only(inner) for key, inner in value.items())
    if type(value) is list:
        return all(built_in_only(inner) for inner in value)
    return value is None or type(value) in (bool, int, float, str)


@given(st.dictionaries(st.text(), JSON, max_size=5))
def test_plain_json_keeps_what_json_keeps_in_built_in_types(value: dict[str, Any]) -> None:
    plain = plain_json("details", value)

    assert built_in_only(plain)
    assert plain == json.loads(json.dumps(value))


class Level(enum.IntEnum):
    HIGH = 2


def test_subclasses_become_their_plain_values() -> None:
    plain = plain_json("details", collections.OrderedDict(level=Level.HIGH, files=("a.py",)))

    assert plain == {"level": 2, "files": ["a.py"]} and type(plain) is dict and type(plain["level"]) is int


def test_a_value_json_cannot_hold_is_refused_by_name() -> None:
    with pytest.raises(UsageError, match="details holds a PosixPath, which is not JSON"):
        plain_json("details", {"where": Path("/tmp")})
