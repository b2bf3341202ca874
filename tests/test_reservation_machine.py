"""Property-based test of reservations: the store against a model that decides
conflicts by brute force over a universe of paths, not by the automaton search."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from backends import backend_store
from pytest_maf import reservations
from pytest_maf.clock import ManualClock
from pytest_maf.errors import MafError
from pytest_maf.patterns import compile_pattern

AGENTS = ("agent-a", "agent-b", "agent-c")
PATTERNS = (
    "src/**", "src/*.py", "src/a*", "src/app.py", "docs/**", "*.md", "docs/x.md", "src/b/**", "tests/**", "src/*/x.py",
    # gitignore's anchoring and directory rule: any depth, root only, everything beneath.
    "docs", "x.md", "/x.md", "b/", "/src",
)
SEGMENTS = ("src", "docs", "tests", "b", "a.py", "app.py", "x.py", "x.md", "a.md", "ab")
# Four deep: a common path beneath a plain path can need it (b/ and docs/x.md share docs/x.md/b/a).
UNIVERSE = ["/".join(parts) for size in (1, 2, 3, 4) for parts in itertools.product(SEGMENTS, repeat=size)]
MATCHES = {pattern: {path for path in UNIVERSE if compile_pattern(pattern).matches(path)} for pattern in PATTERNS}


def clash(first: str, second: str) -> bool:
    return bool(MATCHES[first] & MATCHES[second])


class ReservationMachine(RuleBasedStateMachine):
    backend = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="maf-rm-"))
        self.clock = ManualClock(0)
        self.opened = contextlib.ExitStack()
        self.store = self.opened.enter_context(backend_store(self.backend, self.directory, clock=self.clock))
        self.held: dict[tuple[str, str], tuple[bool, int]] = {}  # (agent, pattern) -> (exclusive, expires)

    def teardown(self) -> None:
        self.opened.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def live(self) -> dict[tuple[str, str], tuple[bool, int]]:
        return {key: value for key, value in self.held.items() if value[1] > self.clock()}

    @rule(agent=st.sampled_from(AGENTS), wanted=st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3, unique=True),
          exclusive=st.booleans(), ttl=st.sampled_from([1_000, 5_000]))
    def acquire(self, agent: str, wanted: list[str], exclusive: bool, ttl: int) -> None:
        expected_conflict = any(
            other != agent and (exclusive or held_exclusive) and clash(pattern, held_pattern)
            for pattern in wanted
            for (other, held_pattern), (held_exclusive, _) in self.live().items()
        )
        try:
            reservations.acquire(self.store, wanted, agent, ttl, exclusive=exclusive)
            granted = True
        except reservations.ReservationConflictError:
            granted = False
        assert granted != expected_conflict
        self.held = self.live()  # expired ones are gone from the model, as from the store
        if granted:
            for pattern in wanted:
                self.held[(agent, pattern)] = (exclusive, self.clock() + ttl)

    @rule(agent=st.sampled_from(AGENTS), pattern=st.sampled_from(PATTERNS))
    def release(self, agent: str, pattern: str) -> None:
        mine = (agent, pattern) in self.live()
        try:
            reservations.release(self.store, [pattern], agent)
            released = True
        except MafError:
            released = False
        assert released == mine
        self.held.pop((agent, pattern), None) if released else None

    @rule(agent=st.sampled_from(AGENTS), pattern=st.sampled_from(PATTERNS), ttl=st.sampled_from([1_000, 5_000]))
    def renew(self, agent: str, pattern: str, ttl: int) -> None:
        mine = (agent, pattern) in self.live()
        try:
            reservations.renew(self.store, [pattern], agent, ttl)
            renewed = True
        except MafError:
            renewed = False
        assert renewed == mine
        if renewed:
            exclusive, _ = self.held[(agent, pattern)]
            self.held[(agent, pattern)] = (exclusive, self.clock() + ttl)

    @rule(ms=st.sampled_from([1, 999, 1_000, 4_000]))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @invariant()
    def store_agrees_with_model(self) -> None:
        stored = {
            (r.agent_id, r.pattern): (r.exclusive, r.expires_at) for r in reservations.list_reservations(self.store)
        }
        assert stored == self.live()

    @invariant()
    def no_two_agents_hold_overlapping_exclusive_reservations(self) -> None:
        live = list(self.live().items())
        for (first, (first_exclusive, _)), (second, (second_exclusive, _)) in itertools.combinations(live, 2):
            if first[0] != second[0] and (first_exclusive or second_exclusive):
                assert not clash(first[1], second[1]), (first, second)


def test_reservations_against_a_brute_force_model(backend: str) -> None:
    machine = type(f"ReservationMachine_{backend}", (ReservationMachine,), {"backend": backend})
    run_state_machine_as_test(machine, settings=settings(max_examples=60, stateful_step_count=40, deadline=None))


def test_the_universe_finds_exactly_the_overlaps_the_automaton_finds() -> None:
    from pytest_maf.patterns import overlap_witness

    for first, second in itertools.combinations_with_replacement(PATTERNS, 2):
        assert clash(first, second) == (overlap_witness(first, second) is not None), (first, second)
