"""Typed, validated option records: frozen dataclasses that check themselves when built.

Every configurable thing in flowmatch (a coupling's options, the training hyper-parameters,
a sampler's tolerance) is an :class:`Options` subclass: a frozen dataclass whose fields carry
their type annotation and, through :func:`option`, their range and a one-line description.
Building one checks every field once (type, range, choices) and normalises TOML-friendly
values (an ``int`` given for a ``float``, a list for a tuple); the error names the field, the
value and what was expected. The same metadata generates the documentation tables and the
CLI help, so a field is described in one place.

Why not pydantic? Component kinds are open at run time (plugins register new ones), so a
static discriminated union would have to be rebuilt by hand anyway; this module is ~250 lines
with no dependency, keeps the one-line error style of the rest of the library and keeps
config records plain frozen dataclasses (``dataclasses.replace``, ``==``, ``hash`` work).

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Opts(Options):
    ...     lr: float = option(1e-3, gt=0, doc="learning rate")
    ...     steps: int = option(100, ge=1)
    >>> Opts(lr=1).lr  # an int is accepted for a float and stored as a float
    1.0
    >>> Opts(steps=0)
    Traceback (most recent call last):
    ...
    flowmatch.utils.options.OptionError: steps must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, Literal, get_args, get_origin

__all__ = [
    "OptionError",
    "OptionTypeError",
    "Options",
    "check_value",
    "describe_type",
    "field_docs",
    "option",
    "options_dict",
]


class OptionError(ValueError):
    """An option has a wrong type or value.

    Attributes:
        key: the dotted key of the option (``"lr"``, ``"solver.atol"``); parents prepend
            their own name when they re-raise (:meth:`prefixed`).
        reason: what is wrong, without the key (``"must be > 0, got -1"``).
    """

    def __init__(self, key: str, reason: str) -> None:
        self.key, self.reason = key, reason
        super().__init__(_join(key, reason))

    def prefixed(self, prefix: str) -> OptionError:
        """The same error with ``prefix`` (e.g. ``"train."``) in front of the key."""
        key = f"{prefix}{self.key}" if self.key else prefix.rstrip(".")
        return type(self)(key, self.reason)


class OptionTypeError(OptionError, TypeError):
    """An option has the wrong type (both a ``ValueError`` and a ``TypeError``)."""


def _join(key: str, reason: str) -> str:
    """``"lr must be > 0"``, ``"shift=2.0 only applies ..."``, ``"kind: unknown coupling ..."``."""
    if not key:
        return reason
    if reason.startswith("="):
        return key + reason
    if reason.startswith("unknown "):
        if key == "kind" or key.endswith(".kind"):  # "coupling.kind: unknown coupling 'x'"
            return f"{key}: {reason}"
        return reason.replace("unknown ", f"unknown {key} ", 1)  # "unknown lr_schedule 'x'"
    return f"{key} {reason}"


def option(
    default: Any = MISSING,
    *,
    default_factory: Callable[[], Any] | Any = MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    doc: str = "",
    hint: str = "",
) -> Any:
    """A dataclass field with a range and a description (read by :class:`Options`).

    Args:
        default: the default value.
        default_factory: a zero-argument factory for mutable or computed defaults.
        ge: the value (each element of a tuple) must be ``>= ge``.
        gt: ``> gt``.
        le: ``<= le``.
        lt: ``< lt``.
        doc: one line for the documentation tables and ``--help``.
        hint: added to range errors, e.g. ``"or none to disable clipping"``.

    Returns:
        A ``dataclasses.field``.
    """
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc, "hint": hint}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Options:
    """Base of validated option records (see the module docstring).

    Subclasses are ``@dataclass(frozen=True)``; they may override :meth:`validate` for checks
    that involve several fields (raise :class:`OptionError` naming the key).
    """

    _hints: ClassVar[dict[type, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        hints = _type_hints(type(self))
        for f in fields(self):
            if not f.init:
                continue
            value = getattr(self, f.name)
            coerced = check_value(value, hints[f.name], f.name, f.metadata)
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; called after every field passed its own (override as needed)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-friendly nested dict (tuples become lists, nested records dicts)."""
        return {k: _plain(v) for k, v in options_dict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build from a flat dict of field values; unknown keys are an error.

        (Nested sections and component kinds are parsed by :mod:`flowmatch.config`.)

        Raises:
            OptionError: an unknown key (the valid ones are listed) or a bad value.
        """
        names = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            raise OptionError(
                "", f"unknown {cls.__name__} key(s) {unknown}; valid keys are {sorted(names)}"
            )
        return cls(**data)


def _plain(value: Any) -> Any:
    if isinstance(value, Options):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _type_hints(cls: type) -> dict[str, Any]:
    cache = Options._hints
    if cls not in cache:
        cache[cls] = typing.get_type_hints(cls)
    return cache[cls]


def _is_options(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Options)


def check_value(value: Any, tp: Any, name: str, meta: Any = None) -> Any:
    """Check ``value`` against the annotation ``tp`` and the range in ``meta``; return it.

    Returns the value normalised: ``float`` for an ``int`` given to a float field, ``tuple``
    for a list given to a tuple field. Nested :class:`Options` values must already be
    instances (parsing dicts into them is :mod:`flowmatch.config`'s job).

    Raises:
        OptionTypeError: wrong type (e.g. a string for a number).
        OptionError: out of range, or not one of the allowed literals.
    """
    out = _coerce(value, tp, name)
    _check_range(out, name, meta or {})
    return out


def _type_error(name: str, tp: Any, value: Any) -> OptionError:
    origin = get_origin(tp)
    if origin is Literal:
        choices = list(get_args(tp))
        if isinstance(value, str) and all(isinstance(c, str) for c in choices):
            return OptionError(name, f"unknown {value!r}; choose one of {sorted(choices)}")
        return OptionError(name, f"must be {describe_type(tp)}, got {value!r}")
    return OptionTypeError(
        name, f"must be {describe_type(tp)}, got {value!r} ({type(value).__name__})"
    )


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """``value`` normalised to ``tp`` (see :func:`check_value`), or raise naming ``name``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        for arg in args:
            try:
                return _coerce(value, arg, name)
            except OptionError:
                continue
        # Report against the non-None alternative: "must be a number (or none)".
        real = [a for a in args if a is not type(None)]
        if len(real) == 1:
            err = _type_error(name, real[0], value)
            raise type(err)(name, err.reason.replace(", got", " (or none), got", 1))
        raise _type_error(name, tp, value)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _type_error(name, tp, value)
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            items = [_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)]
        elif len(args) == len(value):
            items = [
                _coerce(v, a, f"{name}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            ]
        else:
            raise _type_error(name, tp, value)
        out = tuple(items)
        return value if isinstance(value, tuple) and out == value else out
    if not _matches(value, tp):
        raise _type_error(name, tp, value)
    if tp is float and not isinstance(value, float):
        try:
            return float(value)
        except OverflowError:
            raise OptionError(name, f"must be a finite number, got {value!r}") from None
    return value


def _matches(value: Any, tp: Any) -> bool:
    origin = get_origin(tp)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if _is_options(tp):
        return isinstance(value, tp)
    raise TypeError(f"unsupported option annotation {tp!r}")


def _check_range(value: Any, name: str, meta: Any) -> None:
    items = value if isinstance(value, tuple) else (value,)
    lo = ("[", meta["ge"]) if meta.get("ge") is not None else ("(", meta.get("gt"))
    hi = ("]", meta["le"]) if meta.get("le") is not None else (")", meta.get("lt"))
    hint = f" ({meta['hint']})" if meta.get("hint") else ""
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise OptionError(name, f"must be finite, got {value!r}")
        low_bad = lo[1] is not None and (v < lo[1] if lo[0] == "[" else v <= lo[1])
        high_bad = hi[1] is not None and (v > hi[1] if hi[0] == "]" else v >= hi[1])
        if not (low_bad or high_bad):
            continue
        if lo[1] is not None and hi[1] is not None:
            rule = f"in {lo[0]}{lo[1]:g}, {hi[1]:g}{hi[0]}"
        elif lo[1] is not None:
            rule = f"{'>=' if lo[0] == '[' else '>'} {lo[1]:g}"
        else:
            rule = f"{'<=' if hi[0] == ']' else '<'} {hi[1]:g}"
        raise OptionError(name, f"must be {rule}{hint}, got {value!r}")


def describe_type(tp: Any) -> str:
    """A short human description of an annotation (``"a float"``, ``"one of 'a', 'b'"``)."""
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in get_args(tp))
    if tp is type(None):
        return "none"
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe_type(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} values"
    if tp is int:
        return "an int"
    if tp is float:
        return "a number"
    if tp is bool:
        return "a bool"
    if tp is str:
        return "a str"
    return getattr(tp, "__name__", str(tp))


def options_dict(opts: Options) -> dict[str, Any]:
    """The init fields of ``opts`` as a shallow dict (nested records stay records)."""
    return {f.name: getattr(opts, f.name) for f in fields(opts) if f.init}


def field_docs(cls: type[Options]) -> list[tuple[str, str, str, str]]:
    """``(name, type, default, doc)`` rows for the documentation of an :class:`Options` class.

    The doc is the field's ``option(doc=...)``, with its range appended (``"(> 0)"``).
    """
    hints = _type_hints(cls)
    rows = []
    for f in fields(cls):
        if not f.init or f.name == "kind":
            continue
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = "required"
        bounds = [
            f"{word} {f.metadata[k]:g}"
            for k, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
            if f.metadata.get(k) is not None
        ]
        doc = f.metadata.get("doc", "") + (f" ({', '.join(bounds)})" if bounds else "")
        rows.append((f.name, describe_type(hints[f.name]), _show(default), doc.strip()))
    return rows


def _show(value: Any) -> str:
    if isinstance(value, Options):
        kind = getattr(value, "kind", None)
        return repr(kind) if kind else type(value).__name__
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)
