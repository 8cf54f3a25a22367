"""Declared, typed producer parameters and actions, validated before a producer sees them.

``Float``, ``Int``, ``Bool`` and ``Choice`` declare parameters; ``Action`` declares a custom
button. A :class:`ControlSet` holds a stream's declarations and current values and turns a
wire ``control`` request into a validated change. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError, InvalidParam, UnknownAction

__all__ = ["Action", "Bool", "Choice", "ControlSet", "Float", "Int", "Param", "Params"]

BUILTIN_ACTIONS = ("pause", "resume", "set")


@dataclass
class Param:
    """Base of the declared parameter types."""

    default: Any
    label: str | None = None

    kind = "param"

    def validate(self, name: str, value: Any) -> Any:  # pragma: no cover - overridden
        """``value`` as this parameter takes it; raises ``InvalidParam`` naming ``name``."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The wire description: {"type", "default", and "min", "max", ... where they apply}."""
        out: dict[str, Any] = {"type": self.kind, "default": self.default}
        if self.label:
            out["label"] = self.label
        return out


def _number(name: str, value: Any, kind: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise InvalidParam(f"parameter {name!r} takes a {kind}; got {value!r}")
    return value.item() if isinstance(value, np.generic) else value


def _check_bounds(name: str, v: float, lo: float | None, hi: float | None, value: Any) -> None:
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        if lo is not None and hi is not None:
            want = f"between {lo} and {hi}"
        else:
            want = f"at least {lo}" if lo is not None else f"at most {hi}"
        raise InvalidParam(f"parameter {name!r} must be {want}; got {value!r}")


def _valid_default(p: Param) -> Any:
    """The declared default, validated; a bad one is a programming error (ConfigError)."""
    try:
        return p.validate("default", p.default)
    except InvalidParam as exc:
        raise ConfigError(f"{type(p).__name__}: the default is not valid: {exc.message}") from None


def _describe_bounded(p: Any) -> dict[str, Any]:
    out = Param.describe(p)
    out.update({k: getattr(p, k) for k in ("min", "max", "step") if getattr(p, k) is not None})
    return out


@dataclass
class Float(Param):
    """A float parameter, e.g. ``Float(0.02, min=0, max=0.2)``; shown as a slider."""

    min: float | None = None
    max: float | None = None
    step: float | None = None
    kind = "float"

    def __post_init__(self) -> None:
        self.default = float(_valid_default(self))

    def validate(self, name: str, value: Any) -> float:
        try:
            v = float(_number(name, value, "number"))
        except OverflowError:  # an int beyond float range, e.g. 10**400 from JSON
            v = math.inf
        if not math.isfinite(v):
            raise InvalidParam(f"parameter {name!r} takes a finite number; got {value!r}")
        _check_bounds(name, v, self.min, self.max, value)
        return v

    def describe(self) -> dict[str, Any]:
        return _describe_bounded(self)


@dataclass
class Int(Param):
    """An integer parameter, e.g. ``Int(10, min=1, max=100)``; shown as a slider."""

    min: int | None = None
    max: int | None = None
    step: int | None = None
    kind = "int"

    def __post_init__(self) -> None:
        self.default = _valid_default(self)

    def validate(self, name: str, value: Any) -> int:
        v = _number(name, value, "whole number")
        if isinstance(v, float):
            if not v.is_integer():
                raise InvalidParam(f"parameter {name!r} takes a whole number; got {value!r}")
            v = int(v)
        _check_bounds(name, v, self.min, self.max, value)
        return int(v)

    def describe(self) -> dict[str, Any]:
        return _describe_bounded(self)


@dataclass
class Bool(Param):
    """A true/false parameter; shown as a toggle."""

    kind = "bool"

    def __post_init__(self) -> None:
        _valid_default(self)

    def validate(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise InvalidParam(f"parameter {name!r} takes true or false; got {value!r}")
        return value


@dataclass
class Choice(Param):
    """One of a fixed list of values, e.g. ``Choice("AAPL", choices=["AAPL", "MSFT"])``."""

    choices: Sequence[Any] = ()
    kind = "choice"

    def __post_init__(self) -> None:
        if not self.choices:
            raise ConfigError("Choice needs a non-empty `choices` list")
        self.choices = list(self.choices)
        self.default = _valid_default(self)

    def validate(self, name: str, value: Any) -> Any:
        # True == 1 in Python, but a bool choice matches only a bool, and a number only a
        # number; JSON may send 1 for the choice 1.0, so the declared choice is returned.
        for choice in self.choices:
            if choice == value and isinstance(choice, bool) == isinstance(value, bool):
                return choice
        raise InvalidParam(
            f"parameter {name!r} must be one of {list(self.choices)!r}; got {value!r}"
        )

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["choices"] = list(self.choices)
        return out


@dataclass
class Action:
    """A custom action a viewer can trigger (a button); ``callback(params)`` runs it."""

    callback: Callable[..., Any] | None = None
    label: str | None = None

    def describe(self) -> dict[str, Any]:
        """The wire description: {"label"} when it has one."""
        return {"label": self.label} if self.label else {}


class Params(Mapping[str, Any]):
    """The current parameter values a producer reads: ``params["x"]`` or ``params.x``."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Params({self._values!r})"


@dataclass
class ControlSet:
    """A stream's declared parameters and actions with the current values."""

    params: dict[str, Param] = field(default_factory=dict)
    actions: dict[str, Action] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, p in self.params.items():
            if not isinstance(p, Param):
                raise ConfigError(
                    f"parameter {name!r} must be declared with ls.Float, ls.Int, ls.Bool or "
                    f"ls.Choice; got {p!r}"
                )
        for name, act in self.actions.items():
            if name in BUILTIN_ACTIONS:
                raise ConfigError(f"action name {name!r} is built in; choose another name")
            if not isinstance(act, Action):
                if not callable(act):
                    raise ConfigError(
                        f"action {name!r} must be ls.Action(callback) or a function "
                        f"callback(params); got {act!r}"
                    )
                self.actions[name] = Action(callback=act)
        self.values: dict[str, Any] = {n: p.default for n, p in self.params.items()}

    def describe(self) -> dict[str, Any]:
        """The wire ``controls`` object."""
        return {
            "params": {n: p.describe() for n, p in self.params.items()},
            "actions": {n: a.describe() for n, a in self.actions.items()},
        }

    def validate_set(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validate a ``set`` request; returns the new values without applying them."""
        if not params:
            raise InvalidParam("`set` needs `params`: {name: value}")
        out: dict[str, Any] = {}
        for name, value in params.items():
            spec = self.params.get(name)
            if spec is None:
                known = ", ".join(self.params) or "none are declared"
                raise InvalidParam(f"unknown parameter {name!r}; known parameters: {known}")
            out[name] = spec.validate(name, value)
        return out

    def check_action(self, action: str) -> None:
        if action not in BUILTIN_ACTIONS and action not in self.actions:
            known = ", ".join([*BUILTIN_ACTIONS, *self.actions])
            raise UnknownAction(f"unknown action {action!r}; this stream accepts: {known}")
