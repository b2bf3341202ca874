"""The classes on `maf guard`'s path are made by :mod:`pytest_maf.light_dataclass`, not by
:mod:`dataclasses`: each behaves as the same class under :func:`dataclasses.dataclass` would, for
whoever uses it (construction and its errors, repr, equality, hash, frozenness, and the functions
of :mod:`dataclasses`)."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any, Callable

import pytest

from pytest_maf import (
    agents, config, evidence, guard, keeper, kpi, logs, paths, patterns, plugin, records, reservations, session, store,
    tasks, verification,
)
from pytest_maf.light_dataclass import light_dataclass, light_field, light_replace

LIGHT_CLASSES = [
    records.Task, records.Lease, records.Event, records.Evidence, records.Reservation, records.ReservationEvent,
    records.AuditRow, records.Escalation, records.AgentSeen, records.Observation, records.DurationBucket,
    records.OperationStats, kpi.Histogram, agents.HeldTask, agents.AgentStatus, config.Setting, config.Settings,
    config.Layer, logs.LogFile, patterns.Token, patterns.Automaton, reservations.Conflict, reservations.Block,
    reservations.ReleaseTarget, guard.GuardVerdict, store.SetupReport, paths.WorkingDirectory,
    verification.CheckOutcome, verification.ItemOutcome, verification.PreflightBudget, session.VerificationSession,
    keeper.RunOutcome, plugin.LeaseHandle, evidence.RecordedEvidence, tasks.Move, tasks.Steps, tasks.Claim,
    tasks.FinishResult, tasks.Reclaimed, tasks.TaskDetail,
]


def as_dataclass(light: type) -> type:
    """The same class body, made by :mod:`dataclasses`."""
    declared: list[Any] = []
    for name, annotation in light.__annotations__.items():
        if name in light._light_defaults:  # type: ignore[attr-defined]
            declared.append((name, annotation, dataclasses.field(default=light._light_defaults[name])))  # type: ignore[attr-defined]
        elif name in light._light_factories:  # type: ignore[attr-defined]
            declared.append((name, annotation, dataclasses.field(default_factory=light._light_factories[name])))  # type: ignore[attr-defined]
        else:
            declared.append((name, annotation))
    return dataclasses.make_dataclass(
        light.__name__, declared, frozen=light._light_frozen, eq=light._light_eq,  # type: ignore[attr-defined]
    )


def sample_values(light: type) -> list[Any]:
    return [f"value {n}" if n % 2 else n for n in range(len(light._light_fields))]  # type: ignore[attr-defined]


def outcome(call: Callable[[], object]) -> tuple[str, str]:
    """What a call gave: its result's repr, or its error's type and message."""
    try:
        return "returned", repr(call())
    except Exception as error:
        return type(error).__name__, str(error).replace("__create_fn__.<locals>.", "")


@pytest.mark.parametrize("light", LIGHT_CLASSES, ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_a_light_class_behaves_as_the_dataclass_would(light: type) -> None:
    real = as_dataclass(light)
    values = sample_values(light)
    made, twin = light(*values), real(*values)

    assert repr(made) == repr(twin)
    assert made == made and made != twin and made != tuple(values)
    assert (made == light(*values)) is light._light_eq  # type: ignore[attr-defined]
    assert dataclasses.is_dataclass(made) and dataclasses.is_dataclass(light)
    assert [f.name for f in dataclasses.fields(made)] == [f.name for f in dataclasses.fields(twin)]
    assert dataclasses.asdict(made) == dataclasses.asdict(twin)
    assert dataclasses.astuple(made) == tuple(values)
    assert made.__match_args__ == real.__match_args__  # type: ignore[attr-defined]
    first = light._light_fields[0]  # type: ignore[attr-defined]
    changed = dataclasses.replace(made, **{first: "changed"})
    assert type(changed) is light and getattr(changed, first) == "changed" and changed != made
    quick = light_replace(made, **{first: "changed"})  # what the state transitions use
    assert type(quick) is light and repr(quick) == repr(changed) and (quick == changed) is light._light_eq  # type: ignore[attr-defined]
    assert repr(made) == repr(twin)  # the original untouched
    assert outcome(lambda: light_replace(made, unknown=1)) == outcome(lambda: dataclasses.replace(twin, unknown=1))
    assert copy.deepcopy(made) == made

    if not light._light_eq:  # type: ignore[attr-defined]
        assert made != light(*values) and hash(made) != hash(light(*values))
    elif light._light_frozen:  # type: ignore[attr-defined]
        assert hash(made) == hash(light(*values))
        assert outcome(lambda: setattr(made, first, 1)) == outcome(lambda: setattr(twin, first, 1))
        assert outcome(lambda: delattr(made, first)) == outcome(lambda: delattr(twin, first))
    else:
        assert light.__hash__ is None and real.__hash__ is None
    assert outcome(lambda: light(*values, "one too many")) == outcome(lambda: real(*values, "one too many"))
    assert outcome(lambda: light(*values[:-1], **{first: 1})) == outcome(lambda: real(*values[:-1], **{first: 1}))
    assert outcome(lambda: light(unknown=1)) == outcome(lambda: real(unknown=1))
    assert outcome(lambda: light()) == outcome(lambda: real())


def test_defaults_and_factories_are_applied_per_instance_and_keyword_arguments_work() -> None:
    first = records.Evidence("t", 1, "pytest", "PASS")
    second = records.Evidence(task_id="t", attempt=1, verifier="pytest", result="PASS")
    assert first == second and first.details == {} and first.details is not second.details
    assert records.Task("t", "READY", 0, None, 1, 1, 0, 3).kind == "work"
    assert pickle.loads(pickle.dumps(first)) == first


def test_post_init_runs_after_the_fields_are_set_and_eq_false_keeps_identity() -> None:
    @light_dataclass(eq=False)
    class Run:
        name: str
        items: list[str] = light_field(default_factory=list)

        def __post_init__(self) -> None:
            self.label = f"{self.name}: {len(self.items)}"

    first, second = Run("a", ["x"]), Run("a", ["x"])
    assert first.label == "a: 1" and Run(name="b").label == "b: 0"
    assert first != second and len({first, second}) == 2
    assert repr(first) == "test_post_init_runs_after_the_fields_are_set_and_eq_false_keeps_identity.<locals>.Run(name='a', items=['x'])"

    first.extra = "set later"  # replacing copies the fields only, and __post_init__ runs again
    renamed = light_replace(first, name="b")
    assert renamed.label == "b: 1" and not hasattr(renamed, "extra") and renamed.items is first.items
    assert vars(renamed) == vars(dataclasses.replace(first, name="b"))


def test_what_the_light_decorator_does_not_do_is_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match="defines __eq__"):
        @light_dataclass(frozen=True)
        class WithItsOwnEquality:
            name: str

            def __eq__(self, other: object) -> bool:
                return True

    with pytest.raises(TypeError, match="non-default argument 'later'"):
        @light_dataclass
        class DefaultFirst:
            first: int = 1
            later: int  # type: ignore[misc]

    with pytest.raises(ValueError):
        light_field(default=1, default_factory=list)
