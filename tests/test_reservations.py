"""File reservations through the library: conflicts, renewal, release, force-release."""

from __future__ import annotations

import json
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from pytest_maf import reservations as r
from pytest_maf.clock import ManualClock
from pytest_maf.errors import NotFoundError, UsageError
from pytest_maf.records import Reservation
from pytest_maf.store import Store

MINUTE = 60_000


def kinds(store: Store) -> list[str]:
    return [event.kind for event in store.read(lambda t: t.reservation_events())]


def test_exclusive_conflicts_with_any_overlap_and_names_the_holder(store: Store) -> None:
    r.acquire(store, ["app/**"], "agent-a", 30 * MINUTE, reason="models refactor")

    with pytest.raises(r.ReservationConflictError) as raised:
        r.acquire(store, ["app/models/user.py"], "agent-b", 30 * MINUTE)

    (conflict,) = raised.value.conflicts
    assert (conflict.requested, conflict.holder.agent_id, conflict.holder.pattern) == (
        "app/models/user.py", "agent-a", "app/**",
    )
    assert conflict.holder.reason == "models refactor"
    assert conflict.witness == "app/models/user.py"


def test_a_request_is_all_or_nothing(store: Store) -> None:
    r.acquire(store, ["src/*.py"], "agent-a", 30 * MINUTE)

    with pytest.raises(r.ReservationConflictError):
        r.acquire(store, ["docs/**", "src/a*", "tests/**"], "agent-b", 30 * MINUTE)

    assert r.list_reservations(store, "agent-b") == []
    assert kinds(store) == ["acquire", "conflict"]


def test_every_conflict_is_listed(store: Store) -> None:
    r.acquire(store, ["src/**"], "agent-a", 30 * MINUTE)
    r.acquire(store, ["docs/x.md"], "agent-c", 30 * MINUTE)

    with pytest.raises(r.ReservationConflictError) as raised:
        r.acquire(store, ["src/app.py", "*.md"], "agent-b", 30 * MINUTE)

    holders = {(c.requested, c.holder.agent_id) for c in raised.value.conflicts}
    # *.md matches at any depth, so it also overlaps src/** (src/a.md).
    assert holders == {("src/app.py", "agent-a"), ("*.md", "agent-a"), ("*.md", "agent-c")}


def test_shared_does_not_conflict_with_shared(store: Store) -> None:
    r.acquire(store, ["docs/**"], "agent-a", 30 * MINUTE, exclusive=False)
    r.acquire(store, ["docs/*.md"], "agent-b", 30 * MINUTE, exclusive=False)

    with pytest.raises(r.ReservationConflictError):
        r.acquire(store, ["docs/x.md"], "agent-c", 30 * MINUTE)  # exclusive vs shared
    assert len(r.list_reservations(store)) == 2


def test_reacquiring_extends_without_a_duplicate(store: Store, clock: ManualClock) -> None:
    (first,) = r.acquire(store, ["src/**"], "agent-a", 10 * MINUTE)
    clock.advance(5 * MINUTE)
    (again,) = r.acquire(store, ["./src//"], "agent-a", 10 * MINUTE)

    assert again.pattern == "src/**"
    assert again.expires_at == first.expires_at + 5 * MINUTE
    assert again.created_at == first.created_at
    assert len(r.list_reservations(store)) == 1


def test_expired_reservations_do_not_conflict(store: Store, clock: ManualClock) -> None:
    r.acquire(store, ["src/**"], "agent-a", 1 * MINUTE)
    clock.advance(1 * MINUTE)

    r.acquire(store, ["src/app.py"], "agent-b", 1 * MINUTE)

    assert [res.agent_id for res in r.list_reservations(store)] == ["agent-b"]
    assert "expire" in kinds(store)


def test_renew_and_release_are_for_the_holder(store: Store, clock: ManualClock) -> None:
    r.acquire(store, ["src/**"], "agent-a", 1 * MINUTE)

    with pytest.raises(r.NotHolderError):
        r.renew(store, ["src/**"], "agent-b", 10 * MINUTE)
    with pytest.raises(r.NotHolderError):
        r.release(store, ["src/**"], "agent-b")
    with pytest.raises(NotFoundError):
        r.release(store, ["nothing/**"], "agent-a")

    clock.advance(30_000)
    (renewed,) = r.renew(store, ["src/**"], "agent-a", 10 * MINUTE)
    assert renewed.expires_at == clock() + 10 * MINUTE
    r.release(store, ["src/**"], "agent-a")
    assert r.list_reservations(store) == []


def test_force_release_is_recorded_and_tells_the_holder(store: Store, tmp_path: Path) -> None:
    r.acquire(store, ["src/**"], "agent-a", 30 * MINUTE)
    mail_root = tmp_path / ".agent-mail"

    with pytest.raises(UsageError):
        r.force_release(store, ["src/**"], "lead", "  ", mail_root)
    r.force_release(store, ["src/**"], "lead", "agent-a is stuck", mail_root)

    assert r.list_reservations(store) == []
    (event,) = store.read(lambda t: t.reservation_events("force_release"))
    assert event.agent_id == "lead" and event.data["holder"] == "agent-a"
    (message_file,) = (mail_root / "messages" / "agent-a").glob("*.json")
    message = json.loads(message_file.read_text())
    assert message["type"] == "RESERVATION_FORCE_RELEASED"
    assert (message["from"], message["pattern"], message["reason"]) == ("lead", "src/**", "agent-a is stuck")
    assert (mail_root / "outbox" / message_file.name).is_file()
    assert not list(mail_root.rglob("*.tmp"))


def test_a_holder_id_that_would_escape_the_mail_root_cannot_reserve(store: Store) -> None:
    """One id rule for the store and the mail: an id that could not receive mail is never stored."""
    with pytest.raises(UsageError, match="may not contain '/'"):
        r.acquire(store, ["src/**"], "../../etc", 30 * MINUTE)

    assert r.list_reservations(store) == []


@pytest.mark.parametrize("pattern", ["/", "../outside", "/../outside", "a/../../b"])
def test_patterns_outside_the_repository_are_refused(store: Store, pattern: str) -> None:
    with pytest.raises(UsageError):
        r.acquire(store, [pattern], "agent-a", MINUTE)
    assert r.list_reservations(store) == []


def test_a_leading_slash_anchors_at_the_root_and_a_plain_name_floats(store: Store) -> None:
    (root_only,) = r.acquire(store, ["/README.md"], "agent-a", MINUTE)
    r.acquire(store, ["docs/README.md"], "agent-b", MINUTE)

    with pytest.raises(r.ReservationConflictError) as raised:
        r.acquire(store, ["README.md"], "agent-c", MINUTE)

    assert root_only.pattern == "/README.md"
    assert {(c.holder.agent_id, c.witness) for c in raised.value.conflicts} == {
        ("agent-a", "README.md"), ("agent-b", "docs/README.md"),
    }
    assert [b.holder.agent_id for b in r.check_paths(store, ["README.md", "src/README.md"], "agent-c")] == ["agent-a"]


def test_a_directory_reservation_covers_what_lies_beneath(store: Store) -> None:
    r.acquire(store, ["docs"], "agent-a", MINUTE)
    r.acquire(store, ["app/*"], "agent-a", MINUTE)

    blocked = r.check_paths(store, ["docs/api.md", "src/docs/x", "app/models/user.py", "app", "docsx"], "agent-b")

    assert [(b.path, b.holder.pattern) for b in blocked] == [
        ("docs/api.md", "docs"), ("src/docs/x", "docs"), ("app/models/user.py", "app/*"),
    ]
    with pytest.raises(r.ReservationConflictError):
        r.acquire(store, ["/docs/guide/**"], "agent-b", MINUTE)


def test_blocking_ignores_own_and_shared_reservations(store: Store) -> None:
    r.acquire(store, ["src/**"], "agent-a", MINUTE)
    r.acquire(store, ["docs/**"], "agent-b", MINUTE, exclusive=False)
    held = r.list_reservations(store)
    paths = ["src/app.py", "docs/x.md", "README.md"]

    assert [b.path for b in r.blocking_reservations(held, paths, "agent-a")] == []
    assert [b.path for b in r.blocking_reservations(held, paths, "agent-c")] == ["src/app.py"]
    assert [b.path for b in r.blocking_reservations(held, paths, None)] == ["src/app.py"]


def test_index_finds_the_same_holders_as_trying_every_pattern(store: Store) -> None:
    patterns = [
        "src/app.py", "src/**", "*.md", "docs/*/index.md", "a/**/b", "[ab]*/x",
        "docs", "/README.md", "x.py", "src/", "src/*.py",
    ]
    for number, pattern in enumerate(patterns):
        r.acquire(store, [pattern], f"agent-{number}", MINUTE, exclusive=False)
    held = r.list_reservations(store)
    index = r.ReservationIndex(held)
    from pytest_maf.patterns import compile_pattern

    for path in [
        "src/app.py", "README.md", "docs/guide/index.md", "a/b", "a/q/b", "ab/x", "x/y",
        "src/app.py/x", "README.md/x", "a/b/c", "ab/x/y.md", "q/x.py/z", "q/src/z", "src/a.py/b.js",
    ]:
        brute = {h.pattern for h in held if compile_pattern(h.pattern).matches(path)}
        assert {h.pattern for h in index.covering(path)} == brute, path


_SEGMENTS = ["src", "docs", "a", "*", "**", "*.py", "x?", "[ab]*", "a.py"]
# Anchored or not, directory or not: as a user writes them.
_patterns = st.builds(
    lambda lead, segments, trail: lead + "/".join(segments) + trail,
    st.sampled_from(["", "/"]), st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=3), st.sampled_from(["", "/"]),
)
_paths = st.lists(st.sampled_from(["src", "docs", "a", "b.py", "a.py", "xy", "bz"]), min_size=1, max_size=4).map("/".join)


def _held(patterns: list[str]) -> list[Reservation]:
    from pytest_maf.patterns import normalize_pattern

    normal = sorted({normalize_pattern(p) for p in patterns})
    return [Reservation(f"agent-{n}", p, True, "", 0, 1) for n, p in enumerate(normal)]


@settings(max_examples=200, deadline=None)
@given(held=st.lists(_patterns, min_size=1, max_size=8), asked=_patterns)
def test_index_finds_every_overlap_that_brute_force_finds(held: list[str], asked: str) -> None:
    from pytest_maf.patterns import normalize_pattern, overlap_witness

    reservations_held = _held(held)
    pattern = normalize_pattern(asked)

    brute = {h.pattern for h in reservations_held if overlap_witness(pattern, h.pattern) is not None}
    indexed = {h.pattern for h, _ in r.ReservationIndex(reservations_held).overlapping(pattern)}
    assert indexed == brute


@settings(max_examples=300, deadline=None)
@given(held=st.lists(_patterns, min_size=1, max_size=8), path=_paths)
def test_index_finds_every_reservation_covering_a_path(held: list[str], path: str) -> None:
    from pytest_maf.patterns import compile_pattern

    reservations_held = _held(held)

    brute = {h.pattern for h in reservations_held if compile_pattern(h.pattern).matches(path)}
    covering = r.ReservationIndex(reservations_held).covering(path)
    assert {h.pattern for h in covering} == brute and len(covering) == len(brute)


@pytest.mark.parametrize(
    ("reason", "refusal"),
    [("a\x00b", "the reason holds a NUL"), ("bad \udcff byte", "the reason holds text that is not UTF-8"),
     ("why " * 500 + "!", "the reason is 2,001 characters long, more than 2,000")],
    ids=["nul", "lone-surrogate", "too-long"],
)
def test_a_reason_a_store_cannot_keep_is_refused_on_either_backend_and_nothing_is_reserved(
    store: Store, reason: str, refusal: str, tmp_path: Path
) -> None:
    # before: SQLite kept the NUL, and the store could then not be copied to PostgreSQL, which refused it;
    # and a reason of any length was kept, shown to everyone blocked and sent in every notice
    with pytest.raises(UsageError, match=refusal):
        r.acquire(store, ["docs/"], "agent-a", MINUTE, reason=reason)
    r.acquire(store, ["docs/"], "agent-b", MINUTE)
    with pytest.raises(UsageError, match=refusal):
        r.force_release(store, ["docs/"], "lead", reason, tmp_path / "mail")

    assert [(held.agent_id, held.pattern) for held in r.list_reservations(store)] == [("agent-b", "docs/")]
