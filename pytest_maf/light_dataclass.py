"""``dataclass`` and ``field`` for the modules every `maf guard` imports: the same classes as
:mod:`dataclasses` makes, without importing it at start-up.

:func:`dataclasses.dataclass` compiles an ``__init__``, ``__repr__``, ``__eq__``, ``__hash__``,
``__setattr__`` and ``__delattr__`` for each class, and importing it imports :mod:`inspect`:
for the 27 classes on the guard's path that was 40% of the instructions of a whole `maf guard`
process. Here every class shares one set of methods that read the class's field names, so a
class costs what a plain class costs.

What a class decorated here does is what the same class under :func:`dataclasses.dataclass`
does, for the options used in pytest-maf (``frozen``, ``eq``, ``field(default_factory=...)``,
defaults, ``__post_init__``):
the same ``__init__`` arguments and errors, ``repr``, equality with its own class only, a hash
of the fields when frozen (none when not), :class:`dataclasses.FrozenInstanceError` on
assignment when frozen, ``__match_args__``; and :func:`dataclasses.fields`, ``asdict``,
``astuple``, ``replace`` and ``is_dataclass`` work on it, through ``__dataclass_fields__``,
which :mod:`dataclasses` builds the first time something asks for it. Type checkers see
:mod:`dataclasses` itself.

:func:`light_replace` is :func:`dataclasses.replace` for these classes at a fifth of its cost
(a state transition makes a few of them): the same result, and for a field the class does not
have, the same error.

A class that defines ``__init__``, ``__repr__``, ``__eq__``, ``__hash__`` or ``__setattr__``
itself, uses ``ClassVar`` or ``InitVar`` fields, or has a base class, is not supported (an error
at import, not a silent difference): use :mod:`dataclasses` for it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

_MISSING: Any = object()  # no default given
_GENERATED = ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__")


class _Field:
    """What :func:`light_field` returns in a class body: the field's default or its factory."""

    __slots__ = ("default", "default_factory")

    def __init__(self, default: Any, default_factory: Any) -> None:
        self.default = default
        self.default_factory = default_factory


def light_field(*, default: Any = _MISSING, default_factory: Callable[[], Any] = _MISSING) -> Any:
    """:func:`dataclasses.field`, its ``default`` and ``default_factory`` only."""
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return _Field(default, default_factory)


def light_dataclass(cls: type[T] | None = None, /, *, frozen: bool = False, eq: bool = True) -> Any:
    """:func:`dataclasses.dataclass`, with ``frozen`` and ``eq`` its only options (``init`` and
    ``repr`` as by default); ``__post_init__`` is called as dataclasses calls it."""

    def wrap(cls: type[T]) -> type[T]:
        return _process(cls, frozen, eq)

    return wrap if cls is None else wrap(cls)


def _process(cls: type[T], frozen: bool, eq: bool) -> type[T]:
    if cls.__bases__ != (object,):
        raise TypeError(f"{cls.__qualname__}: base classes are not supported here; use dataclasses")
    for name in _GENERATED:
        if name in cls.__dict__:
            raise TypeError(f"{cls.__qualname__} defines {name}: not supported here; use dataclasses")
    annotations: dict[str, Any] = cls.__dict__.get("__annotations__", {})
    defaults: dict[str, Any] = {}
    factories: dict[str, Callable[[], Any]] = {}
    for name, annotation in annotations.items():
        if str(annotation).startswith(("ClassVar", "typing.ClassVar", "InitVar", "dataclasses.InitVar")):
            raise TypeError(f"{cls.__qualname__}.{name}: ClassVar and InitVar are not supported here; use dataclasses")
        value = cls.__dict__.get(name, _MISSING)
        if isinstance(value, _Field):
            if value.default_factory is not _MISSING:
                factories[name] = value.default_factory
                delattr(cls, name)  # as dataclasses does: no class attribute for a factory's field
            elif value.default is not _MISSING:
                defaults[name] = value.default
                setattr(cls, name, value.default)
            else:
                delattr(cls, name)
        elif value is not _MISSING:
            defaults[name] = value
        elif defaults or factories:
            raise TypeError(f"non-default argument {name!r} follows default argument")
    names = tuple(annotations)
    setattr(cls, "_light_fields", names)
    setattr(cls, "_light_names", frozenset(names))
    setattr(cls, "_light_defaults", defaults)
    setattr(cls, "_light_factories", factories)
    setattr(cls, "_light_frozen", frozen)
    setattr(cls, "_light_eq", eq)
    setattr(cls, "__init__", _init_and_post_init if "__post_init__" in cls.__dict__ else _init)
    setattr(cls, "__repr__", _repr)
    setattr(cls, "__match_args__", names)
    if eq:
        setattr(cls, "__eq__", _eq)
        # As dataclasses does: a hash of the fields when frozen, else unhashable.
        setattr(cls, "__hash__", _hash if frozen else None)
    if frozen:
        setattr(cls, "__setattr__", _frozen_setattr(cls))
        setattr(cls, "__delattr__", _frozen_delattr(cls))
    setattr(cls, "__dataclass_fields__", _BuiltByDataclasses("__dataclass_fields__"))
    setattr(cls, "__dataclass_params__", _BuiltByDataclasses("__dataclass_params__"))
    return cls


def light_replace(obj: T, /, **changes: Any) -> T:
    """A copy of ``obj`` with ``changes``, as :func:`dataclasses.replace` makes it (``__post_init__`` runs)."""
    cls = type(obj)
    if not changes.keys() <= getattr(cls, "_light_names", frozenset()):  # not a light class, or not its field
        import dataclasses

        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    made = object.__new__(cls)
    fields, source = made.__dict__, obj.__dict__
    names: tuple[str, ...] = cls._light_fields  # type: ignore[attr-defined]
    # Only the fields, as __init__ would have them: not what __post_init__ or a method added.
    fields.update(source if len(source) == len(names) else {name: source[name] for name in names})
    fields.update(changes)
    if "__post_init__" in cls.__dict__:
        made.__post_init__()  # type: ignore[attr-defined]
    return made


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    names: tuple[str, ...] = self._light_fields
    if not kwargs and len(args) == len(names):
        self.__dict__.update(zip(names, args))
    elif not args and kwargs.keys() == self._light_names:  # every field by name, as dataclasses.replace calls it
        self.__dict__.update(kwargs)
    else:
        self.__dict__.update(_bound(type(self), args, kwargs))


def _init_and_post_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _init(self, *args, **kwargs)
    self.__post_init__()


def _bound(cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The fields' values from the arguments of a call, with the errors Python gives for a call
    of a dataclass's ``__init__``."""
    names: tuple[str, ...] = cls._light_fields
    where = f"{cls.__qualname__}.__init__()"
    if len(args) > len(names):
        required = len(names) - len(cls._light_defaults) - len(cls._light_factories)
        takes = f"{len(names) + 1}" if required == len(names) else f"from {required + 1} to {len(names) + 1}"
        raise TypeError(f"{where} takes {takes} positional arguments but {len(args) + 1} were given")
    given = dict(zip(names, args))
    for name, value in kwargs.items():
        if name not in names:
            raise TypeError(f"{where} got an unexpected keyword argument {name!r}")
        if name in given:
            raise TypeError(f"{where} got multiple values for argument {name!r}")
        given[name] = value
    values: dict[str, Any] = {}
    missing: list[str] = []
    for name in names:
        if name in given:
            values[name] = given[name]
        elif name in cls._light_defaults:
            values[name] = cls._light_defaults[name]
        elif name in cls._light_factories:
            values[name] = cls._light_factories[name]()
        else:
            missing.append(repr(name))
    if missing:
        listed = (  # as Python lists them: 'a', 'a' and 'b', 'a', 'b', and 'c'
            missing[0] if len(missing) == 1 else " and ".join(missing) if len(missing) == 2
            else ", ".join(missing[:-1]) + ", and " + missing[-1]
        )
        plural = "s" if len(missing) > 1 else ""
        raise TypeError(f"{where} missing {len(missing)} required positional argument{plural}: {listed}")
    return values


def _values(self: Any) -> tuple[Any, ...]:
    return tuple([getattr(self, name) for name in self._light_fields])


def _repr(self: Any) -> str:
    shown = ", ".join([f"{name}={getattr(self, name)!r}" for name in self._light_fields])
    return f"{self.__class__.__qualname__}({shown})"


def _eq(self: Any, other: object) -> Any:
    if other.__class__ is self.__class__:
        return _values(self) == _values(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(_values(self))


def _frozen_setattr(cls: type) -> Callable[[Any, str, Any], None]:
    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in cls._light_fields:  # type: ignore[attr-defined]
            from dataclasses import FrozenInstanceError

            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    return __setattr__


def _frozen_delattr(cls: type) -> Callable[[Any, str], None]:
    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in cls._light_fields:  # type: ignore[attr-defined]
            from dataclasses import FrozenInstanceError

            raise FrozenInstanceError(f"cannot delete field {name!r}")
        object.__delattr__(self, name)

    return __delattr__


class _BuiltByDataclasses:
    """``__dataclass_fields__`` or ``__dataclass_params__`` of a class: made by
    :func:`dataclasses.make_dataclass` from the class's fields when first read, then kept on it."""

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute

    def __get__(self, instance: object, owner: Any) -> Any:
        import dataclasses

        declared = [
            (name, annotation, dataclasses.field(default=owner._light_defaults[name]))
            if name in owner._light_defaults
            else (name, annotation, dataclasses.field(default_factory=owner._light_factories[name]))
            if name in owner._light_factories
            else (name, annotation)
            for name, annotation in owner.__dict__["__annotations__"].items()
        ]
        made = dataclasses.make_dataclass(owner.__name__, declared, frozen=owner._light_frozen, eq=owner._light_eq)
        for attribute in ("__dataclass_fields__", "__dataclass_params__"):
            type.__setattr__(owner, attribute, getattr(made, attribute))
        return getattr(made, self.attribute)


if TYPE_CHECKING:
    from dataclasses import dataclass as dataclass
    from dataclasses import field as field
else:
    dataclass = light_dataclass
    field = light_field
