"""Column batches: what producers hand in and what the wire carries (livestream.columns)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from livestream.columns import DTYPES, NUMERIC_DTYPES, Batch, conform, from_json_columns, to_batch
from livestream.errors import SchemaMismatch

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MS_2024 = 1_704_067_200_000.0  # 2024-01-01T00:00:00Z in milliseconds


def _values(batch: Batch) -> dict[str, list[Any]]:
    return {name: arr.tolist() for name, arr in batch.columns.items()}


def _same(a: list[Any], b: list[Any]) -> bool:
    """Equal lists where NaN equals NaN."""
    return len(a) == len(b) and all(
        x == y
        or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        for x, y in zip(a, b, strict=True)
    )


# --------------------------------------------------------------------------- to_batch: Python


def test_dict_of_lists_infers_dtypes() -> None:
    batch = to_batch(
        {
            "f": [1.0, 2.5],
            "i": [1, 2],
            "b": [True, False],
            "s": ["a", "b"],
            "o": [{"k": 1}, [1, 2]],
            "mixed": ["a", 1],
            "int_none": [1, None],
            "int_float": [1, 2.5],
            "bool_int": [True, 2],
            "none": [None, None],
            "big": [2**63, 1],
        }
    )
    assert batch.schema == {
        "f": "float64",
        "i": "int64",
        "b": "bool",
        "s": "str",
        "o": "object",
        "mixed": "object",
        "int_none": "float64",
        "int_float": "float64",
        "bool_int": "object",
        "none": "float64",
        "big": "float64",
    }
    assert batch.rows == len(batch) == 2
    assert _same(batch.columns["int_none"].tolist(), [1.0, math.nan])
    assert all(math.isnan(v) for v in batch.columns["none"].tolist())
    for name, dtype in batch.schema.items():
        if dtype in NUMERIC_DTYPES:
            assert batch.columns[name].dtype == np.dtype(NUMERIC_DTYPES[dtype])
        else:
            assert batch.columns[name].dtype == object


def test_missing_values_are_none_nan_nat_or_na() -> None:
    batch = to_batch(
        {
            "s": ["a", None, math.nan, pd.NA],
            "f": [1.5, None, math.nan, pd.NA],
            "t": [dt.datetime(2024, 1, 1), None, pd.NaT, np.datetime64("NaT")],
            "o": [{"a": 1}, None, math.nan, pd.NaT],
        }
    )
    assert batch.schema == {"s": "str", "f": "float64", "t": "float64", "o": "object"}
    assert batch.columns["s"].tolist() == ["a", None, None, None]
    assert batch.columns["o"].tolist() == [{"a": 1}, None, None, None]
    assert _same(batch.columns["t"].tolist(), [MS_2024, math.nan, math.nan, math.nan])
    assert batch.to_json_columns()["f"] == [1.5, None, None, None]


def test_integers_beyond_float64_stay_exact() -> None:
    batch = to_batch({"a": [10**400, 1]})
    assert batch.schema == {"a": "object"}
    assert batch.columns["a"].tolist() == [10**400, 1]


def test_datetimes_become_utc_milliseconds() -> None:
    eastern = dt.timezone(dt.timedelta(hours=-5))
    batch = to_batch(
        {
            "naive": [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, 0, 0, 0, 1000)],
            "aware": [dt.datetime(2023, 12, 31, 19, tzinfo=eastern), None],
            "date": [dt.date(2024, 1, 1), dt.date(1969, 12, 31)],
            "np": [np.datetime64("2024-01-01T00:00:00.5"), np.datetime64("1970-01-01")],
            "td": [dt.timedelta(seconds=1.5), None],
            "np_td": [np.timedelta64(2, "s"), np.timedelta64(3, "ms")],
        }
    )
    assert set(batch.schema.values()) == {"float64"}
    assert batch.columns["naive"].tolist() == [MS_2024, MS_2024 + 1]
    assert _same(batch.columns["aware"].tolist(), [MS_2024, math.nan])
    assert batch.columns["date"].tolist() == [MS_2024, -86_400_000.0]
    assert batch.columns["np"].tolist() == [MS_2024 + 500, 0.0]
    assert _same(batch.columns["td"].tolist(), [1500.0, math.nan])
    assert batch.columns["np_td"].tolist() == [2000.0, 3.0]


def test_dict_of_scalars_is_one_row() -> None:
    batch = to_batch(
        {
            "t": 1.5,
            "n": 3,
            "ok": True,
            "s": "x",
            "none": None,
            "when": dt.datetime(2024, 1, 1),
            "np": np.float32(2),
        }
    )
    assert batch.rows == 1
    assert batch.schema == {
        "t": "float64",
        "n": "int64",
        "ok": "bool",
        "s": "str",
        "none": "float64",
        "when": "float64",
        "np": "float64",
    }
    assert batch.columns["when"].tolist() == [MS_2024]
    assert to_batch({"d": dt.timedelta(milliseconds=5)}).columns["d"].tolist() == [5.0]


def test_dict_mixing_scalars_and_lists_names_the_scalars() -> None:
    with pytest.raises(
        SchemaMismatch, match=r"columns \['b'\] hold single values while others hold lists"
    ):
        to_batch({"a": [1, 2], "b": 3})


def test_list_of_dicts_fills_missing_keys() -> None:
    batch = to_batch([{"a": 1, "s": "x"}, {"a": 2}, {"a": 3, "b": 1.5, "s": "z"}])
    assert list(batch.columns) == ["a", "s", "b"]
    assert batch.schema == {"a": "int64", "s": "str", "b": "float64"}
    assert batch.columns["s"].tolist() == ["x", None, "z"]
    assert _same(batch.columns["b"].tolist(), [math.nan, math.nan, 1.5])
    only_later = to_batch([{"a": 1}, {"a": 2, "n": 5}])
    assert only_later.schema == {"a": "int64", "n": "float64"}
    assert _same(only_later.columns["n"].tolist(), [math.nan, 5.0])


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({}, "at least one column; got an empty dict"),
        ([], "at least one row; got an empty list"),
        ([{"a": 1}, 5], "rows as dicts ({column: value}); got int"),
        ("text", "expected a dict of columns, a dict of values (one row), a list of row dicts"),
        (5, "got int"),
        ({1: [1]}, "column names must be strings; got 1"),
        ({"a": {1, 2}}, "column 'a' must be a list or an array of values; got set"),
        ({"a": [1, 2], "b": [1]}, "columns must have equal lengths; got a=2, b=1"),
        (
            {"a": np.zeros((2, 2))},
            "column 'a' must be one-dimensional; got an array of shape (2, 2)",
        ),
        (
            {"a": np.array([1 + 2j])},
            "column 'a' has numpy dtype complex128, which cannot be streamed",
        ),
    ],
)
def test_to_batch_errors_say_what_was_expected(data: Any, fragment: str) -> None:
    with pytest.raises(SchemaMismatch) as info:
        to_batch(data)
    assert fragment in str(info.value)
    assert info.value.code == "schema_mismatch"


def test_batch_passes_through() -> None:
    batch = to_batch({"a": [1]})
    assert to_batch(batch) is batch


# --------------------------------------------------------------------------- to_batch: numpy


@pytest.mark.parametrize(
    ("np_dtype", "wire"),
    [
        ("int8", "int32"),
        ("int16", "int32"),
        ("int32", "int32"),
        (">i4", "int32"),
        ("int64", "int64"),
        (">i8", "int64"),
        ("uint8", "uint8"),
        ("uint16", "int32"),
        ("uint32", "int64"),
        ("uint64", "int64"),
        ("float16", "float32"),
        ("float32", "float32"),
        (">f4", "float32"),
        ("float64", "float64"),
        (">f8", "float64"),
        ("longdouble", "float64"),
        ("bool", "bool"),
    ],
)
def test_numpy_dtypes_map_to_wire_dtypes(np_dtype: str, wire: str) -> None:
    info = np.iinfo(np_dtype) if np.dtype(np_dtype).kind in "iu" else None
    if info is not None:
        values = [int(info.min), 0, min(int(info.max), 2**63 - 1)]
    elif np.dtype(np_dtype).kind == "b":
        values = [True, False, True]
    else:
        values = [-1.5, 0.0, 2.25]
    batch = to_batch({"c": np.array(values, dtype=np_dtype)})
    assert batch.schema == {"c": wire}
    arr = batch.columns["c"]
    assert arr.dtype == np.dtype(NUMERIC_DTYPES[wire])
    assert arr.dtype.byteorder in "<=|"
    assert arr.tolist() == values


def test_uint64_beyond_int64_becomes_float64() -> None:
    batch = to_batch({"c": np.array([2**64 - 1, 0], dtype="uint64")})
    assert batch.schema == {"c": "float64"}
    assert batch.columns["c"].tolist() == [float(2**64 - 1), 0.0]


@pytest.mark.parametrize(
    ("values", "unit", "expected"),
    [
        (["2024-01-01T00:00:00"], "s", [MS_2024]),
        (["2024-01-01T00:00:00.250"], "ms", [MS_2024 + 250]),
        (["2024-01-01T00:00:00.000500"], "us", [MS_2024 + 0.5]),
        (["2024-01-01T00:00:00.000000001"], "ns", [MS_2024 + 1e-6]),
        (["2024-01-01", "NaT"], "D", [MS_2024, math.nan]),
        (["1969-12-31"], "D", [-86_400_000.0]),
        # Beyond 2262, where nanoseconds would overflow, dates must not wrap around.
        (["9999-12-31"], "D", [253_402_214_400_000.0]),
        (["3000-01-01T00:00:00"], "s", [32_503_680_000_000.0]),
    ],
)
def test_numpy_datetime64_becomes_milliseconds(
    values: list[str], unit: str, expected: list[float]
) -> None:
    batch = to_batch({"t": np.array(values, dtype=f"datetime64[{unit}]")})
    assert batch.schema == {"t": "float64"}
    assert _same(batch.columns["t"].tolist(), expected)


def test_numpy_timedelta64_becomes_milliseconds() -> None:
    batch = to_batch(
        {
            "s": np.array([1, -2], dtype="timedelta64[s]"),
            "ns": np.array([1_500_000, 0], dtype="timedelta64[ns]"),
            "nat": np.array([5, "NaT"], dtype="timedelta64[ms]"),
            "days": np.array([200_000 * 365, 0], dtype="timedelta64[D]"),
        }
    )
    assert set(batch.schema.values()) == {"float64"}
    assert batch.columns["s"].tolist() == [1000.0, -2000.0]
    assert batch.columns["ns"].tolist() == [1.5, 0.0]
    assert _same(batch.columns["nat"].tolist(), [5.0, math.nan])
    assert batch.columns["days"].tolist() == [200_000 * 365 * 86_400_000.0, 0.0]


def test_numpy_strings_and_objects() -> None:
    batch = to_batch(
        {
            "u": np.array(["a", "bc"]),
            "b": np.array([b"x", b"yz"]),
            "o": np.array(["a", None], dtype=object),
            "on": np.array([1, 2], dtype=object),
        }
    )
    assert batch.schema == {"u": "str", "b": "str", "o": "str", "on": "int64"}
    assert batch.columns["b"].tolist() == ["x", "yz"]


def test_structured_array_becomes_columns() -> None:
    arr = np.array(
        [(1.5, 3, b"ab", "2024-01-01"), (2.5, -4, b"c", "NaT")],
        dtype=[("x", ">f8"), ("n", "i2"), ("s", "S2"), ("t", "datetime64[D]")],
    )
    batch = to_batch(arr)
    assert batch.schema == {"x": "float64", "n": "int32", "s": "str", "t": "float64"}
    assert _values(batch)["x"] == [1.5, 2.5]
    assert _values(batch)["n"] == [3, -4]
    assert _values(batch)["s"] == ["ab", "c"]
    assert _same(_values(batch)["t"], [MS_2024, math.nan])
    for arr_ in batch.columns.values():
        assert arr_.flags.c_contiguous


# --------------------------------------------------------------------------- to_batch: pandas


def test_dataframe_with_default_index() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], "n": [1, 2], "s": ["a", "b"], "b": [True, False]})
    batch = to_batch(frame)
    assert batch.schema == {"x": "float64", "n": "int64", "s": "str", "b": "bool"}
    assert _values(batch) == {"x": [1.0, 2.0], "n": [1, 2], "s": ["a", "b"], "b": [True, False]}


def test_dataframe_datetimes_naive_and_tz_aware() -> None:
    frame = pd.DataFrame(
        {
            "naive": pd.to_datetime(["2024-01-01", None]),
            "ns": pd.to_datetime(["2024-01-01T00:00:00.000000001"]).repeat(2),
            "tokyo": pd.to_datetime(["2024-01-01 09:00:00", "2024-01-01 09:00:01"]).tz_localize(
                "Asia/Tokyo"
            ),
            "delta": pd.to_timedelta(["1s", None]),
            "far": pd.Series(np.array(["9999-12-31", "2024-01-01"], dtype="datetime64[s]")),
        }
    )
    batch = to_batch(frame)
    assert set(batch.schema.values()) == {"float64"}
    assert _same(_values(batch)["naive"], [MS_2024, math.nan])
    assert _values(batch)["ns"] == [MS_2024 + 1e-6] * 2
    assert _values(batch)["tokyo"] == [MS_2024, MS_2024 + 1000]
    assert _same(_values(batch)["delta"], [1000.0, math.nan])
    assert _values(batch)["far"] == [253_402_214_400_000.0, MS_2024]


@pytest.mark.parametrize("tz", [None, "UTC", "US/Eastern"])
def test_datetime_index_becomes_a_column(tz: str | None) -> None:
    index = pd.DatetimeIndex(["2024-01-01", "2024-01-02"], name="time")
    if tz is not None:
        index = index.tz_localize("UTC").tz_convert(tz)
    batch = to_batch(pd.DataFrame({"v": [1.0, 2.0]}, index=index))
    assert list(batch.columns) == ["time", "v"]
    assert batch.schema == {"time": "float64", "v": "float64"}
    assert _values(batch)["time"] == [MS_2024, MS_2024 + 86_400_000]
    unnamed = to_batch(pd.DataFrame({"v": [1.0]}, index=pd.DatetimeIndex(["2024-01-01"])))
    assert unnamed.schema == {"index": "float64", "v": "float64"}


def test_pandas_nullable_and_extension_dtypes() -> None:
    frame = pd.DataFrame(
        {
            "int_na": pd.array([1, None, 3], dtype="Int64"),
            "int": pd.array([1, 2, 3], dtype="Int64"),
            "int32": pd.array([1, 2, 3], dtype="Int32"),
            "float_na": pd.array([1.5, None, 2.5], dtype="Float64"),
            "bool": pd.array([True, False, True], dtype="boolean"),
            "bool_na": pd.array([True, None, False], dtype="boolean"),
            "string": pd.array(["a", None, "c"], dtype="string"),
            "obj_str_nan": pd.Series(["a", np.nan, "c"], dtype=object),
            "cat": pd.Categorical(["x", "y", None]),
        }
    )
    batch = to_batch(frame)
    assert batch.schema == {
        "int_na": "float64",
        "int": "int64",
        "int32": "int32",
        "float_na": "float64",
        "bool": "bool",
        "bool_na": "object",
        "string": "str",
        "obj_str_nan": "str",
        "cat": "str",
    }
    values = _values(batch)
    assert _same(values["int_na"], [1.0, math.nan, 3.0])
    assert values["int"] == [1, 2, 3]
    assert _same(values["float_na"], [1.5, math.nan, 2.5])
    assert values["bool_na"] == [True, None, False]
    assert values["string"] == ["a", None, "c"]
    assert values["obj_str_nan"] == ["a", None, "c"]
    assert values["cat"] == ["x", "y", None]


def test_series() -> None:
    assert to_batch(pd.Series([1, 2])).schema == {"value": "int64"}
    assert to_batch(pd.Series([1.5], name="price")).schema == {"price": "float64"}
    assert to_batch(pd.Series(["a"], name=3)).schema == {"3": "str"}
    assert _values(to_batch(pd.Series(pd.to_datetime(["2024-01-01"]), name="t"))) == {
        "t": [MS_2024]
    }


# --------------------------------------------------------------------------- reading a batch


def test_to_pandas_to_dict_to_rows() -> None:
    batch = to_batch({"t": [MS_2024, MS_2024 + 50], "p": [1.5, math.nan], "s": ["a", None]})
    assert batch.to_dict().keys() == {"t", "p", "s"}
    assert batch.to_dict()["t"] is batch.columns["t"]
    rows = batch.to_rows()
    assert rows[0] == {"t": MS_2024, "p": 1.5, "s": "a"}
    assert math.isnan(rows[1]["p"]) and rows[1]["s"] is None
    frame = batch.to_pandas()
    assert list(frame.columns) == ["t", "p", "s"]
    assert isinstance(frame.index, pd.RangeIndex) and frame.index.name is None
    assert to_batch(frame) == batch

    batch.offset = 40
    frame = batch.to_pandas(datetimes=["t"])
    assert frame.index.name == "offset" and frame.index.tolist() == [40, 41]
    assert frame["t"].tolist() == [
        pd.Timestamp("2024-01-01", tz="UTC"),
        pd.Timestamp("2024-01-01 00:00:00.050", tz="UTC"),
    ]
    again = to_batch(frame)
    assert again.schema == batch.schema
    assert _same(_values(again)["t"], _values(batch)["t"])


def test_to_json_columns_has_no_nan() -> None:
    batch = Batch(
        {
            "f": np.array([1.0, math.nan, math.inf]),
            "f32": np.array([-math.inf, 0.5, 2], "<f4"),
            "o": np.array([math.nan, np.int64(3), dt.date(2024, 1, 1)], dtype=object),
            "i": np.array([1, 2, 3], "<i4"),
            "b": np.array([True, False, True]),
        },
        {"f": "float64", "f32": "float32", "o": "object", "i": "int32", "b": "bool"},
    )
    assert batch.to_json_columns() == {
        "f": [1.0, None, None],
        "f32": [None, 0.5, 2.0],
        "o": [None, 3, "2024-01-01"],
        "i": [1, 2, 3],
        "b": [True, False, True],
    }


def test_select_slice_concat_and_equality() -> None:
    a = to_batch({"x": [1.0, math.nan, 3.0], "s": ["a", "b", None]})
    a.offset = 10
    assert a.select(["s"]).schema == {"s": "str"}
    assert list(a.select(["s", "x"]).columns) == ["s", "x"]
    part = a.slice(1, 3)
    assert part.rows == 2 and part.offset == 11
    assert np.shares_memory(part.columns["x"], a.columns["x"])
    assert Batch.concat([a.slice(0, 1), part]) == a
    assert Batch.concat([a]) is a
    with pytest.raises(ValueError, match="at least one batch"):
        Batch.concat([])
    assert a == to_batch({"x": [1.0, math.nan, 3.0], "s": ["a", "b", None]})  # NaN == NaN here
    assert a != to_batch({"x": [1.0, math.nan, 3.0], "s": ["a", "b", "c"]})
    assert a != to_batch({"x": [1, 2, 3], "s": ["a", "b", None]})
    assert a != a.slice(0, 2)
    assert (a == 5) is False
    assert repr(a) == "Batch(rows=3, offset=10, columns=[x:float64, s:str])"
    with pytest.raises(TypeError):
        hash(a)


# --------------------------------------------------------------------------- from_json_columns


def test_from_json_columns_follows_the_schema_when_values_fit() -> None:
    schema = {"f": "float32", "i": "int32", "u": "uint8", "b": "bool", "s": "str", "o": "object"}
    batch = from_json_columns(
        {
            "f": [1, None],
            "i": [1, -2],
            "u": [0, 255],
            "b": [True, False],
            "s": [None, None],
            "o": [1, "a"],
        },
        schema,
    )
    assert batch.schema == schema
    assert _same(batch.columns["f"].tolist(), [1.0, math.nan])
    assert batch.columns["s"].tolist() == [None, None]
    assert batch.columns["o"].tolist() == [1, "a"]
    for dtype in DTYPES:  # JSON cannot type an empty list: the schema does
        empty = from_json_columns({"e": []}, {"e": dtype})
        assert empty.schema == {"e": dtype}
        assert empty.columns["e"].dtype == np.dtype(NUMERIC_DTYPES.get(dtype, object))


@pytest.mark.parametrize(
    ("values", "want", "inferred"),
    [
        ([1.5, 2], "int64", "float64"),  # never truncated
        (["1", "2"], "float64", "str"),  # never parsed from text
        ([1, "2"], "float64", "object"),
        ([True, False], "float64", "bool"),
        ([1, 0], "bool", "int64"),
        ([2**40], "int32", "int64"),  # out of range: conform() will say so
        ([1, 2], "str", "int64"),
    ],
)
def test_from_json_columns_infers_values_that_contradict_the_schema(
    values: list[Any], want: str, inferred: str
) -> None:
    assert from_json_columns({"c": values}, {"c": want}).schema == {"c": inferred}


def test_from_json_columns_errors() -> None:
    with pytest.raises(SchemaMismatch, match="non-empty object"):
        from_json_columns({})
    with pytest.raises(SchemaMismatch, match="column 'a' must be a JSON array of values; got dict"):
        from_json_columns({"a": {"x": 1}})


# --------------------------------------------------------------------------- conform


def test_conform_returns_the_batch_when_it_already_fits() -> None:
    batch = to_batch({"a": [1], "b": ["x"]})
    assert conform(batch, {"a": "int64", "b": "str"}) is batch


def test_conform_orders_columns_and_keeps_offset() -> None:
    batch = to_batch({"b": ["x"], "a": [1]})
    batch.offset = 3
    out = conform(batch, {"a": "int64", "b": "str"})
    assert list(out.columns) == ["a", "b"] and out.offset == 3


@pytest.mark.parametrize(
    ("have", "want", "values", "expected"),
    [
        ("int64", "float64", [1, -2], [1.0, -2.0]),
        ("int32", "float32", [1, -2], [1.0, -2.0]),
        ("uint8", "float64", [255], [255.0]),
        ("float64", "float32", [0.5, math.nan], [0.5, math.nan]),
        ("float32", "float64", [0.5], [0.5]),
        ("int32", "int64", [-(2**31)], [-(2**31)]),
        ("int64", "int32", [2**31 - 1, -(2**31)], [2**31 - 1, -(2**31)]),
        ("uint8", "int32", [255], [255]),
        ("int64", "uint8", [0, 255], [0, 255]),
        ("float64", "int64", [1.0, -3.0], [1, -3]),
        ("float64", "int64", [-(2.0**63)], [-(2**63)]),
        ("float64", "int32", [2.0**31 - 1], [2**31 - 1]),
        ("float32", "uint8", [255.0], [255]),
        ("float64", "str", [math.nan, math.nan], [None, None]),
        ("object", "str", ["a", None], ["a", None]),
        ("object", "float64", [None], [math.nan]),
        ("str", "float32", [None], [math.nan]),
        ("int64", "object", [1], [1]),
        ("bool", "object", [True], [True]),
    ],
)
def test_conform_converts_when_no_value_is_lost(
    have: str, want: str, values: list[Any], expected: list[Any]
) -> None:
    arr = np.array(values, dtype=NUMERIC_DTYPES.get(have, object))
    out = conform(Batch({"c": arr}, {"c": have}), {"c": want}, "s")
    assert out.schema == {"c": want}
    if want in NUMERIC_DTYPES:
        assert out.columns["c"].dtype == np.dtype(NUMERIC_DTYPES[want])
    assert _same(out.columns["c"].tolist(), expected)


@pytest.mark.parametrize("want", sorted(DTYPES))
@pytest.mark.parametrize("have", sorted(DTYPES))
def test_conform_accepts_empty_columns_of_any_dtype(have: str, want: str) -> None:
    empty = np.empty(0, dtype=NUMERIC_DTYPES.get(have, object))
    out = conform(Batch({"c": empty}, {"c": have}), {"c": want})
    assert out.schema == {"c": want} and out.rows == 0
    if want != "object":  # any array may be an object column
        assert out.columns["c"].dtype == np.dtype(NUMERIC_DTYPES.get(want, object))


@pytest.mark.parametrize(
    ("have", "want", "values", "shown"),
    [
        ("float64", "int64", [1.5], "1.5"),
        ("float64", "int64", [math.nan], "None"),
        ("float64", "int32", [math.inf], "None"),
        ("float64", "int64", [2.0**63], "9.223372036854776e+18"),
        ("float64", "int32", [2.0**31], "2147483648.0"),
        ("int64", "int32", [2**31], "2147483648"),
        ("int64", "uint8", [-1], "-1"),
        ("bool", "int64", [True], "True"),
        ("bool", "float64", [True], "True"),
        ("int64", "bool", [1], "1"),
        ("str", "float64", ["1.5"], "'1.5'"),
        ("object", "str", [1], "1"),
        ("float64", "str", [1.0], "1.0"),
        ("str", "int64", [None], "None"),
    ],
)
def test_conform_refuses_lossy_conversions_naming_the_column(
    have: str, want: str, values: list[Any], shown: str
) -> None:
    arr = np.array(values, dtype=NUMERIC_DTYPES.get(have, object))
    with pytest.raises(SchemaMismatch) as info:
        conform(Batch({"price": arr}, {"price": have}), {"price": want}, "prices")
    message = str(info.value)
    assert (
        f"column 'price' for stream 'prices' is {want} but the batch has {have} values" in message
    )
    assert f"(e.g. {shown})" in message
    assert message.endswith(f"send {want} values")


def test_conform_missing_and_extra_columns() -> None:
    schema = {"time": "float64", "price": "float64"}
    with pytest.raises(SchemaMismatch) as info:
        conform(to_batch({"time": [1.0]}), schema, "prices")
    assert str(info.value) == (
        "batch for stream 'prices' lacks column 'price'; the schema is (time float64, price float64)"
    )
    with pytest.raises(SchemaMismatch) as info:
        conform(to_batch({"time": [1.0], "price": [2.0], "volume": [3]}), schema)
    assert str(info.value) == (
        "batch has column 'volume', which is not in the schema (time float64, price float64); "
        "send only those columns or use a new stream"
    )


# --------------------------------------------------------------------------- properties

_WIRE_NUMERIC = {
    "float64": st.floats(),
    "float32": st.floats(width=32),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "uint8": st.integers(0, 255),
    "bool": st.booleans(),
}


@st.composite
def numeric_batches(draw: st.DrawFn, min_rows: int = 0) -> Batch:
    rows = draw(st.integers(min_rows, 10))
    names = draw(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=4, unique=True))
    cols, schema = {}, {}
    for name in names:
        dtype = draw(st.sampled_from(sorted(_WIRE_NUMERIC)))
        cols[name] = draw(hnp.arrays(NUMERIC_DTYPES[dtype], rows, elements=_WIRE_NUMERIC[dtype]))
        schema[name] = dtype
    if draw(st.booleans()):
        cols["s"] = np.empty(rows, dtype=object)
        cols["s"][:] = draw(st.lists(st.none() | st.text(max_size=5), min_size=rows, max_size=rows))
        schema["s"] = "str"
    return Batch(cols, schema)


@FAST
@given(numeric_batches())
def test_pandas_round_trip(batch: Batch) -> None:
    again = to_batch(batch.to_pandas())
    assert list(again.columns) == list(batch.columns)
    # A str column without a single string reads back as float64 NaN; conform() restores it.
    assert conform(again, batch.schema) == batch


@FAST
@given(numeric_batches(min_rows=1))
def test_rows_round_trip(batch: Batch) -> None:
    # Rows of Python values lose the narrow dtypes (int32 reads back as int64): conform()
    # restores them without losing a value.
    again = to_batch(batch.to_rows())
    assert list(again.columns) == list(batch.columns)
    assert conform(again, batch.schema) == batch


@FAST
@given(numeric_batches())
def test_dict_of_arrays_round_trip(batch: Batch) -> None:
    again = to_batch(batch.to_dict())
    assert conform(again, batch.schema) == batch
    for name, dtype in batch.schema.items():
        if dtype in NUMERIC_DTYPES:  # arrays keep their dtype exactly
            assert again.schema[name] == dtype


@FAST
@given(numeric_batches())
def test_json_columns_round_trip(batch: Batch) -> None:
    again = from_json_columns(batch.to_json_columns(), batch.schema)
    assert again.schema == batch.schema
    expected = {
        n: np.where(np.isfinite(a), a, np.nan).astype(a.dtype)
        if batch.dtypes[n].startswith("float")
        else a
        for n, a in batch.columns.items()
    }
    assert again == Batch(expected, batch.schema)


@FAST
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=5),
            st.datetimes(),
            st.timedeltas(),
            st.lists(st.integers(), max_size=2),
            st.just(pd.NaT),
            st.just(pd.NA),
        ),
        max_size=8,
    )
)
def test_any_list_of_values_becomes_a_column(values: list[Any]) -> None:
    batch = to_batch({"c": values})
    assert batch.rows == len(values)
    assert batch.dtypes["c"] in DTYPES
    arr = batch.columns["c"]
    assert arr.ndim == 1
    if batch.dtypes["c"] in NUMERIC_DTYPES:
        assert arr.dtype == np.dtype(NUMERIC_DTYPES[batch.dtypes["c"]])
    else:
        assert arr.dtype == object
        assert not any(
            v is pd.NaT or v is pd.NA or (isinstance(v, float) and math.isnan(v))
            for v in arr.tolist()
        )


def test_a_filtered_dataframe_keeps_its_schema() -> None:
    # A leftover integer index (from filtering) is not data: appending a filtered frame
    # must not add an "index" column and break the stream's schema.
    frame = pd.DataFrame({"price": [1.0, 2.0, 3.0, 4.0, 5.0]})
    kept = frame[frame.price != 3.0]
    assert to_batch(kept).schema == {"price": "float64"}
    named = frame.rename_axis("tick")
    kept_named = named[named.price != 3.0]
    assert to_batch(kept_named).schema == {"tick": "int64", "price": "float64"}


def test_odd_object_values_travel_as_text() -> None:
    import decimal

    from livestream.protocol import Data, decode_server, encode_server

    batch = to_batch({"amount": [decimal.Decimal("1.10"), None]})
    for binary in (True, False):
        back = decode_server(encode_server(Data("s", 0, batch), binary=binary))
        assert back.batch.columns["amount"].tolist() == ["1.10", None]
