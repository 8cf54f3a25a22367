"""Declared parameters and actions: validation before a producer sees them, and describe()."""

from __future__ import annotations

import math
from typing import Any

import pytest

from livestream import Action, Bool, Choice, ConfigError, Float, Int, Stream
from livestream.controls import ControlSet, Params
from livestream.errors import InvalidParam, UnknownAction

# --------------------------------------------------------------------------- Float


def test_float_accepts_numbers_within_bounds() -> None:
    p = Float(0.02, min=0, max=0.2)
    assert p.validate("v", 0) == 0.0 and isinstance(p.validate("v", 0), float)
    assert p.validate("v", 0.2) == 0.2
    assert p.validate("v", 0.1) == 0.1
    assert Float(1.0).validate("v", -1e300) == -1e300  # no bounds


@pytest.mark.parametrize(
    "value", [-0.001, 0.2001, 1, math.nan, math.inf, -math.inf, 10**400, True, "0.1", None, [0.1]]
)
def test_float_refuses(value: Any) -> None:
    with pytest.raises(InvalidParam, match="'v'"):
        Float(0.02, min=0, max=0.2).validate("v", value)


def test_float_refuses_nan_and_inf_even_without_bounds() -> None:
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(InvalidParam, match="finite"):
            Float(0.0).validate("v", value)


def test_a_bound_message_says_which_bound() -> None:
    with pytest.raises(InvalidParam, match=r"between 0 and 0\.2; got 0\.3"):
        Float(0.1, min=0, max=0.2).validate("v", 0.3)
    with pytest.raises(InvalidParam, match="at least 0; got -1"):
        Float(0.1, min=0).validate("v", -1)
    with pytest.raises(InvalidParam, match="at most 5; got 6"):
        Int(1, max=5).validate("n", 6)


def test_float_default_is_validated() -> None:
    assert Float(1).default == 1.0 and isinstance(Float(1).default, float)
    with pytest.raises(ConfigError, match="default"):
        Float(0.5, min=0, max=0.2)


# --------------------------------------------------------------------------- Int


def test_int_accepts_whole_numbers_within_bounds() -> None:
    p = Int(10, min=1, max=100)
    assert p.validate("n", 1) == 1
    assert p.validate("n", 100) == 100
    whole = p.validate("n", 42.0)  # JSON numbers from a browser may arrive as floats
    assert whole == 42 and type(whole) is int


@pytest.mark.parametrize("value", [0, 101, 2.5, math.nan, math.inf, True, False, "5", None])
def test_int_refuses(value: Any) -> None:
    with pytest.raises(InvalidParam, match="'n'"):
        Int(10, min=1, max=100).validate("n", value)


def test_int_default_is_validated() -> None:
    with pytest.raises(ConfigError, match="default"):
        Int(1.5)
    with pytest.raises(ConfigError, match="at least 1"):
        Int(0, min=1)


# --------------------------------------------------------------------------- Bool


def test_bool_takes_only_true_or_false() -> None:
    p = Bool(False)
    assert p.validate("on", True) is True
    assert p.validate("on", False) is False
    for value in (0, 1, "true", None, 1.0):
        with pytest.raises(InvalidParam, match="true or false"):
            p.validate("on", value)


def test_bool_default_is_validated() -> None:
    with pytest.raises(ConfigError, match="default"):
        Bool("yes")


# --------------------------------------------------------------------------- Choice


def test_choice_accepts_only_its_choices() -> None:
    p = Choice("ACME", choices=["ACME", "GLOBEX"])
    assert p.validate("s", "GLOBEX") == "GLOBEX"
    for value in ("acme", "", None, 1):
        with pytest.raises(InvalidParam, match=r"one of \['ACME', 'GLOBEX'\]"):
            p.validate("s", value)


def test_choice_does_not_confuse_bools_and_numbers() -> None:
    numbers = Choice(1, choices=[1, 2])
    with pytest.raises(InvalidParam):
        numbers.validate("c", True)  # True == 1 in Python, not on the wire
    mixed = Choice(True, choices=[True, 1])
    assert mixed.validate("c", True) is True
    assert mixed.validate("c", 1) == 1 and type(mixed.validate("c", 1)) is int
    floats = Choice(0.5, choices=[0.5, 1.0])
    assert floats.validate("c", 1) == 1.0  # JSON sends 1.0 as 1


def test_choice_needs_choices_and_a_valid_default() -> None:
    with pytest.raises(ConfigError, match="non-empty"):
        Choice("a", choices=[])
    with pytest.raises(ConfigError, match="one of"):
        Choice("c", choices=["a", "b"])


# --------------------------------------------------------------------------- ControlSet


def test_set_validates_every_value_before_applying_any() -> None:
    controls = ControlSet({"v": Float(0.1, min=0, max=1), "n": Int(1)})
    assert controls.values == {"v": 0.1, "n": 1}
    assert controls.validate_set({"v": 0.5, "n": 3.0}) == {"v": 0.5, "n": 3}
    with pytest.raises(InvalidParam, match="'v'"):
        controls.validate_set({"n": 2, "v": 5})
    assert controls.values == {"v": 0.1, "n": 1}  # validate_set never applies


def test_unknown_parameter_is_refused_listing_the_known_ones() -> None:
    controls = ControlSet({"v": Float(0.1), "n": Int(1)})
    with pytest.raises(InvalidParam, match="unknown parameter 'x'; known parameters: v, n"):
        controls.validate_set({"x": 1})
    with pytest.raises(InvalidParam, match="none are declared"):
        ControlSet().validate_set({"x": 1})
    with pytest.raises(InvalidParam, match="needs `params`"):
        controls.validate_set({})


def test_unknown_action_is_refused_listing_the_accepted_ones() -> None:
    controls = ControlSet(actions={"shock": Action()})
    for name in ("pause", "resume", "set", "shock"):
        controls.check_action(name)
    with pytest.raises(
        UnknownAction, match="unknown action 'boom'; this stream accepts: pause, resume, set, shock"
    ):
        controls.check_action("boom")


@pytest.mark.parametrize("name", ["pause", "resume", "set"])
def test_builtin_action_names_cannot_be_declared(name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name!r} is built in"):
        ControlSet(actions={name: Action()})
    with pytest.raises(ConfigError, match="built in"):
        Stream("s", actions={name: Action()})


def test_an_action_may_be_a_plain_callback() -> None:
    called: list[dict[str, Any]] = []
    stream = Stream("s", params={"v": Float(0.5)}, actions={"go": lambda p: called.append(dict(p))})
    assert stream.controls.describe()["actions"] == {"go": {}}
    stream.control("go")
    assert called == [{"v": 0.5}]
    with pytest.raises(ConfigError, match="action 'go' must be"):
        ControlSet(actions={"go": "not callable"})  # type: ignore[dict-item]


def test_a_parameter_must_be_declared_with_a_type() -> None:
    with pytest.raises(ConfigError, match=r"ls\.Float, ls\.Int, ls\.Bool or ls\.Choice"):
        ControlSet({"v": 0.5})  # type: ignore[dict-item]


def test_stream_control_applies_only_valid_changes() -> None:
    stream = Stream("s", params={"v": Float(0.1, min=0, max=1), "on": Bool(True)})
    state = stream.control("set", {"v": 0.25})
    assert state == {"status": "idle", "paused": False, "params": {"v": 0.25, "on": True}}
    with pytest.raises(InvalidParam):
        stream.control("set", {"v": 0.5, "on": 1})
    assert stream.params == {"v": 0.25, "on": True}
    with pytest.raises(UnknownAction):
        stream.control("explode")
    assert stream.control("pause")["paused"] is True
    assert stream.control("resume")["paused"] is False


def test_params_reads_by_key_and_attribute() -> None:
    params = Params({"v": 0.5})
    assert params["v"] == 0.5 and params.v == 0.5
    assert dict(params) == {"v": 0.5} and len(params) == 1
    with pytest.raises(AttributeError):
        _ = params.missing


# --------------------------------------------------------------------------- describe()


def test_describe_shapes_match_the_protocol() -> None:
    controls = ControlSet(
        {
            "volatility": Float(0.02, min=0, max=0.2, step=0.005, label="Volatility"),
            "window": Int(10, min=1, max=100),
            "bare": Float(1.5),
            "live": Bool(True, label="Live"),
            "symbol": Choice("ACME", choices=("ACME", "GLOBEX"), label="Symbol"),
        },
        {"shock": Action(lambda params: None, label="Shock"), "reset": Action()},
    )
    assert controls.describe() == {
        "params": {
            "volatility": {
                "type": "float",
                "default": 0.02,
                "min": 0,
                "max": 0.2,
                "step": 0.005,
                "label": "Volatility",
            },
            "window": {"type": "int", "default": 10, "min": 1, "max": 100},
            "bare": {"type": "float", "default": 1.5},
            "live": {"type": "bool", "default": True, "label": "Live"},
            "symbol": {
                "type": "choice",
                "default": "ACME",
                "choices": ["ACME", "GLOBEX"],
                "label": "Symbol",
            },
        },
        "actions": {"shock": {"label": "Shock"}, "reset": {}},
    }
    assert ControlSet().describe() == {"params": {}, "actions": {}}
