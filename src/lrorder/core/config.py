"""Typed recipe configs: frozen dataclasses whose fields carry a doc, a check and the paper's value.

A recipe declares its knobs once, as `param(default, doc, check=..., paper=...)` fields.
Everything a user types (`--set key=value`) is parsed by the field's type and checked here,
and every problem of one command is reported in a single line, before anything runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from lrorder.core.errors import UserError


@dataclasses.dataclass(frozen=True)
class Check:
    """A constraint on one value, with the words that state it in an error message."""

    holds: Callable[[Any], bool]
    words: str


def greater(low: float) -> Check:
    return Check(lambda v: v > low, f"> {low:g}")


def at_least(low: float) -> Check:
    return Check(lambda v: v >= low, f">= {low:g}")


def between(low: float, high: float) -> Check:
    """Closed interval [low, high]."""
    return Check(lambda v: low <= v <= high, f"in [{low:g}, {high:g}]")


def each(check: Check) -> Check:
    """Apply `check` to every element of a tuple-valued field."""
    return Check(lambda vs: all(check.holds(v) for v in vs), f"all {check.words}")


def param(default: Any, doc: str, *, check: Check | None = None, paper: Any = None) -> Any:
    """A config field: `doc` says what it is and why the default; `paper` is the paper's value."""
    return dataclasses.field(default=default, metadata={"doc": doc, "check": check, "paper": paper})


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    name: str
    type: Any
    default: Any
    doc: str
    check: Check | None
    paper: Any


def describe(config_type: type) -> list[FieldInfo]:
    """The fields of a config class, in declaration order, with their resolved types."""
    hints = typing.get_type_hints(config_type)
    return [
        FieldInfo(f.name, hints[f.name], f.default, f.metadata.get("doc", ""),
                  f.metadata.get("check"), f.metadata.get("paper"))
        for f in dataclasses.fields(config_type)
    ]


def parse_value(text: str, kind: Any) -> Any:
    """Parse a command-line string as `kind`; raises ValueError with the expected form."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null", ""):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return parse_value(text, inner[0])
    if origin is Literal:
        if text not in args:
            raise ValueError(f"one of {', '.join(map(str, args))}")
        return text
    if origin is tuple:
        element = args[0]
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            return tuple(parse_value(p, element) for p in parts)
        except ValueError as exc:
            raise ValueError(f"a comma-separated list, each {exc}") from None
    if kind is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError("true or false")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("an integer") from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError("a number") from None
        if not math.isfinite(value):
            raise ValueError("a finite number")
        return value
    if kind is str:
        return text
    raise ValueError(f"a value of type {kind}")


def _coerce(value: Any, kind: Any) -> Any:
    """Bring a JSON/Python value (e.g. a list from config.json) to the field's type."""
    if isinstance(value, str) and kind is not str:
        return parse_value(value, kind)
    if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
        return tuple(_coerce(v, typing.get_args(kind)[0]) for v in value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _type_ok(value: Any, kind: Any) -> bool:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin is tuple:
        return isinstance(value, tuple) and all(_type_ok(v, args[0]) for v in value)
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, float)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def split_assignments(assignments: Iterable[str]) -> dict[str, str]:
    """`["a=1", "b=x,y"]` -> `{"a": "1", "b": "x,y"}`; a missing `=` is a user error."""
    pairs = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r} is not key=value: write e.g. --set eps=0.01")
        pairs[key.strip()] = value.strip()
    return pairs


def unknown_key_message(key: str, known: Iterable[str], what: str = "config key") -> str:
    known = list(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known {what}s: {', '.join(known)}"
    if key in ("seed", "seeds") and what == "config key":
        hint = "seeds are set with --seed S or --seeds N"
    return f"unknown {what} {key!r} ({hint})"


def resolve(config_type: type, values: Mapping[str, Any] = (), texts: Mapping[str, str] = ()) -> Any:
    """Build a config from typed `values` (a profile, a stored config) then string `texts` (--set).

    Unknown keys, unparsable strings, failed checks and the config's own `problems()` are
    gathered and raised as one UserError, so a user fixes a command in one go.
    """
    fields = {f.name: f for f in describe(config_type)}
    chosen: dict[str, Any] = {}
    errors: list[str] = []
    given = [(k, v, _coerce) for k, v in dict(values).items()]
    given += [(k, v, parse_value) for k, v in dict(texts).items()]
    for key, value, convert in given:
        if key not in fields:
            errors.append(unknown_key_message(key, fields))
            continue
        try:
            chosen[key] = convert(value, fields[key].type)
        except ValueError as exc:
            errors.append(f"{key}={value!r} is not valid: expected {exc}")
    valid = {}
    for key, value in chosen.items():
        info = fields[key]
        if not _type_ok(value, info.type):
            errors.append(f"{key}={value!r} has the wrong type: expected {info.type}")
        elif info.check is not None and value is not None and not info.check.holds(value):
            errors.append(f"{key} must be {info.check.words} (got {value!r})")
        else:
            valid[key] = value
    config = config_type(**valid)  # the config's own checks see every value that passed its field's
    errors += config.problems() if hasattr(config, "problems") else []
    if errors:
        raise UserError("; ".join(dict.fromkeys(errors)))
    return config


def as_dict(config: Any) -> dict[str, Any]:
    """The config as plain JSON-ready values (tuples become lists)."""
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
