"""Column batches: what producers hand in and what the wire carries.

A :class:`Batch` is an ordered set of equally long one-dimensional numpy arrays, one per
column, each of a wire dtype: ``float64``, ``float32``, ``int32``, ``int64``, ``uint8``,
``bool`` (numeric, sent as raw little-endian buffers), ``str`` and ``object`` (sent as JSON
values). :func:`to_batch` accepts what people have at hand:

* a dict of lists or arrays (columns), or a dict of scalars (one row);
* a list of dicts (rows);
* a numpy structured array, a pandas DataFrame (a non-default index becomes a column) or
  Series;

Datetimes become ``float64`` milliseconds since the Unix epoch (Bokeh's convention; naive
datetimes are taken as UTC), timedeltas ``float64`` milliseconds. This module is pure: no
I/O, no tornado, no asyncio.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import SchemaMismatch

__all__ = [
    "DTYPES",
    "NUMERIC_DTYPES",
    "Batch",
    "check_cells",
    "conform",
    "from_json_columns",
    "to_batch",
]

#: Numeric wire dtypes and their little-endian numpy type codes.
NUMERIC_DTYPES: dict[str, str] = {
    "float64": "<f8",
    "float32": "<f4",
    "int32": "<i4",
    "int64": "<i8",
    "uint8": "u1",
    "bool": "?",
}
#: Every dtype a schema may name.
DTYPES: tuple[str, ...] = (*NUMERIC_DTYPES, "str", "object")

_FLOATS = ("float64", "float32")
#: numpy dtypes that are a wire dtype as they are: a dict of such arrays needs no conversion.
_WIRE_NUMPY: dict[np.dtype[Any], str] = {np.dtype(c): d for d, c in NUMERIC_DTYPES.items()}
_INTS = ("int32", "int64", "uint8")
#: How deeply a value in an ``object`` column may nest lists and dicts (Limits.max_depth).
MAX_DEPTH = 32
#: The longest column name, in characters.
MAX_NAME = 256


class Batch:
    """Equal-length columns, each a 1-D numpy array with a wire dtype.

    Build one with :func:`to_batch`; read it with :meth:`to_dict`, :meth:`to_pandas` or
    :meth:`to_rows`. ``offset`` is the stream offset of the first row when the batch came
    from a stream (``None`` otherwise).
    """

    __slots__ = ("checked", "columns", "dtypes", "offset", "rows")

    def __init__(
        self,
        columns: Mapping[str, np.ndarray],
        dtypes: Mapping[str, str],
        *,
        offset: int | None = None,
    ) -> None:
        self.columns: dict[str, np.ndarray] = dict(columns)
        self.dtypes: dict[str, str] = {name: dtypes[name] for name in self.columns}
        lengths = {len(a) for a in self.columns.values()}
        if len(lengths) > 1:
            sizes = ", ".join(f"{n}={len(a)}" for n, a in self.columns.items())
            raise SchemaMismatch(f"columns must have equal lengths; got {sizes}")
        self.rows: int = lengths.pop() if lengths else 0
        self.offset = offset
        #: True once :func:`check_cells` passed: every value can be sent to every viewer.
        self.checked = False

    @property
    def schema(self) -> dict[str, str]:
        """{column: dtype} in column order."""
        return dict(self.dtypes)

    def __len__(self) -> int:
        return self.rows

    def __repr__(self) -> str:
        cols = ", ".join(f"{n}:{d}" for n, d in self.dtypes.items())
        return f"Batch(rows={self.rows}, offset={self.offset}, columns=[{cols}])"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Batch):
            return NotImplemented
        if self.dtypes != other.dtypes or self.rows != other.rows:
            return False
        for name, a in self.columns.items():
            b = other.columns[name]
            if self.dtypes[name] in _FLOATS:
                if not np.array_equal(a, b, equal_nan=True):
                    return False
            elif self.dtypes[name] in NUMERIC_DTYPES:
                if not np.array_equal(a, b):
                    return False
            elif list(a) != list(b):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, np.ndarray]:
        """The columns as a dict of numpy arrays (not copies)."""
        return dict(self.columns)

    def to_pandas(self, *, datetimes: Iterable[str] | None = None) -> Any:
        """A pandas DataFrame; columns named in ``datetimes`` become UTC datetimes."""
        import pandas as pd

        frame = pd.DataFrame(self.columns, copy=False)
        if self.offset is not None:
            frame.index = pd.RangeIndex(self.offset, self.offset + self.rows, name="offset")
        for name in datetimes or ():
            frame[name] = pd.to_datetime(frame[name], unit="ms", utc=True)
        return frame

    def to_rows(self) -> list[dict[str, Any]]:
        """The rows as a list of plain dicts (NaN stays NaN)."""
        names = list(self.columns)
        lists = [self.columns[n].tolist() for n in names]
        return [dict(zip(names, values, strict=True)) for values in zip(*lists, strict=True)]

    def to_json_columns(self) -> dict[str, list[Any]]:
        """{column: [values]} ready for JSON: NaN and infinities become ``None``."""
        out: dict[str, list[Any]] = {}
        for name, arr in self.columns.items():
            if self.dtypes[name] in _FLOATS:
                values = arr.tolist()
                if not np.isfinite(arr).all():
                    values = [v if math.isfinite(v) else None for v in values]
                out[name] = values
            elif self.dtypes[name] in ("str", "object"):
                out[name] = [_jsonable(v) for v in arr.tolist()]
            else:
                out[name] = arr.tolist()
        return out

    def select(self, names: Sequence[str]) -> Batch:
        """A batch with only ``names``, in that order."""
        return Batch({n: self.columns[n] for n in names}, self.dtypes, offset=self.offset)

    def slice(self, start: int, stop: int) -> Batch:
        """Rows ``start:stop`` (views, not copies)."""
        offset = None if self.offset is None else self.offset + start
        return Batch(
            {n: a[start:stop] for n, a in self.columns.items()}, self.dtypes, offset=offset
        )

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        """Join batches of the same schema end to end."""
        if not batches:
            raise ValueError("concat needs at least one batch")
        first = batches[0]
        if len(batches) == 1:
            return first
        cols = {n: np.concatenate([b.columns[n] for b in batches]) for n in first.columns}
        return Batch(cols, first.dtypes, offset=first.offset)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, list, dict)):
        return value
    # Anything else (Decimal, UUID, a custom object) travels as its text, so one odd value
    # cannot make a stream's frames unencodable for every subscriber.
    return str(value)


def _ticks(arr: np.ndarray, kind: str) -> tuple[np.ndarray, float]:
    # Nanoseconds only span 1677-2262: coarser units go through microseconds (+-290,000
    # years) so that far dates such as 9999-12-31 do not silently wrap around.
    unit, _ = np.datetime_data(arr.dtype)
    if unit in ("ns", "ps", "fs", "as"):
        return arr.astype(f"{kind}64[ns]"), 1e6
    return arr.astype(f"{kind}64[us]"), 1e3


def _datetime64_to_ms(arr: np.ndarray) -> np.ndarray:
    ticks, per_ms = _ticks(arr, "datetime")
    out = ticks.astype("int64").astype("float64") / per_ms
    out[np.isnat(ticks)] = np.nan
    return out


def _timedelta64_to_ms(arr: np.ndarray) -> np.ndarray:
    ticks, per_ms = _ticks(arr, "timedelta")
    out = ticks.astype("int64").astype("float64") / per_ms
    out[np.isnat(ticks)] = np.nan
    return out


def _datetime_ms(value: Any) -> float:
    if isinstance(value, np.datetime64):
        return float(_datetime64_to_ms(np.array([value]))[0])
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.UTC)
        return float(value.timestamp()) * 1000.0
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.UTC).timestamp() * 1000.0
    raise TypeError(value)


def _timedelta_ms(value: Any) -> float:
    if isinstance(value, np.timedelta64):
        return float(_timedelta64_to_ms(np.array([value]))[0])
    return float(value / _dt.timedelta(milliseconds=1))


def _is_missing(value: Any) -> bool:
    """None, NaN, NaT and pandas.NA all mean "no value" when a column's dtype is inferred."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating, _dt.datetime, np.datetime64, np.timedelta64)):
        return bool(value != value)  # NaN and NaT are the values unequal to themselves
    return type(value).__name__ == "NAType"


def _from_numpy(name: str, arr: np.ndarray) -> tuple[np.ndarray, str]:
    if arr.ndim != 1:
        raise SchemaMismatch(
            f"column {name!r} must be one-dimensional; got an array of shape {arr.shape}"
        )
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype.itemsize == 8:
            return arr.astype("<f8", copy=False), "float64"
        if arr.dtype.itemsize <= 4:
            return arr.astype("<f4", copy=False), "float32"
        return arr.astype("<f8"), "float64"
    if kind == "i":
        if arr.dtype.itemsize <= 4:
            return arr.astype("<i4", copy=False), "int32"
        return arr.astype("<i8", copy=False), "int64"
    if kind == "u":
        if arr.dtype.itemsize == 1:
            return arr, "uint8"
        if arr.dtype.itemsize == 2:
            return arr.astype("<i4"), "int32"
        if arr.dtype.itemsize == 4 or (arr.size == 0 or int(arr.max()) < 2**63):
            return arr.astype("<i8"), "int64"
        return arr.astype("<f8"), "float64"
    if kind == "b":
        return arr, "bool"
    if kind == "M":
        return _datetime64_to_ms(arr), "float64"
    if kind == "m":
        return _timedelta64_to_ms(arr), "float64"
    if kind in "US":
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in arr.tolist()]
        return _object_array(values), "str"
    if kind == "O":
        return _from_list(name, arr.tolist())
    raise SchemaMismatch(f"column {name!r} has numpy dtype {arr.dtype}, which cannot be streamed")


def _object_array(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _from_list(name: str, values: Sequence[Any]) -> tuple[np.ndarray, str]:
    """Infer a wire dtype for a list of Python values (None, NaN, NaT, NA are missing)."""
    has_none = False
    kinds = set()
    for v in values:
        if _is_missing(v):
            has_none = True
        elif isinstance(v, (bool, np.bool_)):
            kinds.add("bool")
        elif isinstance(v, (_dt.timedelta, np.timedelta64)):  # before int: numpy's is one
            kinds.add("timedelta")
        elif isinstance(v, (int, np.integer)):
            kinds.add("int")
        elif isinstance(v, (float, np.floating)):
            kinds.add("float")
        elif isinstance(v, str):
            kinds.add("str")
        elif isinstance(v, (_dt.datetime, _dt.date, np.datetime64)):
            kinds.add("datetime")
        else:
            kinds.add("object")
    if not kinds:
        # All missing (or empty): a float column of NaN is the most useful guess.
        return np.full(len(values), np.nan, dtype="<f8"), "float64"
    if kinds == {"bool"} and not has_none:
        return np.array(values, dtype="?"), "bool"
    try:
        if kinds == {"int"} and not has_none:
            try:
                return np.array(values, dtype="<i8"), "int64"
            except OverflowError:
                return np.array(values, dtype="<f8"), "float64"
        if kinds <= {"int", "float"}:
            floats = [math.nan if _is_missing(v) else v for v in values]
            return np.array(floats, dtype="<f8"), "float64"
    except OverflowError:
        # Integers beyond float64 (1e309): keep them exact as JSON values.
        return _object_array([None if _is_missing(v) else v for v in values]), "object"
    if kinds == {"datetime"}:
        ms = [math.nan if _is_missing(v) else _datetime_ms(v) for v in values]
        return np.array(ms, dtype="<f8"), "float64"
    if kinds == {"timedelta"}:
        ms = [math.nan if _is_missing(v) else _timedelta_ms(v) for v in values]
        return np.array(ms, dtype="<f8"), "float64"
    cleaned = [None if _is_missing(v) else v for v in values]
    if kinds == {"str"}:
        return _object_array(cleaned), "str"
    return _object_array(cleaned), "object"


def _from_series(name: str, series: Any) -> tuple[np.ndarray, str]:
    import pandas as pd

    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        values = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
        return _datetime64_to_ms(values), "float64"
    if isinstance(dtype, pd.CategoricalDtype):
        return _from_list(name, series.astype(object).tolist())
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and not isinstance(dtype, (np.dtype,)):
        kind = getattr(dtype, "kind", "O")
        if kind in "iuf":
            if series.isna().any():
                return series.to_numpy(dtype="float64", na_value=np.nan), "float64"
            return _from_numpy(name, series.to_numpy(dtype=dtype.numpy_dtype))
        if kind == "b" and not series.isna().any():
            return series.to_numpy(dtype=bool), "bool"
        return _from_list(name, [None if v is pd.NA else v for v in series.tolist()])
    return _from_numpy(name, series.to_numpy())


def _column(name: str, values: Any) -> tuple[np.ndarray, str]:
    if not isinstance(name, str):
        raise SchemaMismatch(f"column names must be strings; got {name!r}")
    if isinstance(values, np.ndarray):
        return _from_numpy(name, values)
    if hasattr(values, "dtype") and hasattr(values, "to_numpy"):
        return _from_series(name, values)
    if isinstance(values, (list, tuple, range)):
        return _from_list(name, list(values))
    raise SchemaMismatch(
        f"column {name!r} must be a list or an array of values; got {type(values).__name__}"
    )


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(
        value, (str, bytes, bool, int, float, np.generic, _dt.datetime, _dt.date, _dt.timedelta)
    )


def to_batch(data: Any) -> Batch:
    """Turn rows or columns in any supported shape into a :class:`Batch`.

    >>> to_batch({"time": [1.0, 2.0], "price": [10, 11]}).schema
    {'time': 'float64', 'price': 'int64'}
    >>> to_batch({"temp": 21.5, "ok": True}).rows
    1
    """
    if isinstance(data, Batch):
        return data
    if type(data) is dict and data:
        # The fast path, for producers that append a dict of numpy arrays many times a second.
        fast: dict[str, str] = {}
        for name, values in data.items():
            if (
                type(values) is not np.ndarray
                or values.ndim != 1
                or type(name) is not str
                or len(name) > MAX_NAME
            ):
                break
            wire = _WIRE_NUMPY.get(values.dtype)
            if wire is None:
                break
            fast[name] = wire
        else:
            batch = Batch(data, fast)
            batch.checked = True  # numeric columns with text names: nothing to check
            return batch
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        frame = data
        index = frame.index
        if (
            isinstance(index, (pd.MultiIndex, pd.DatetimeIndex))
            or index.dtype.kind not in "iu"
            or (index.name is not None and not isinstance(index, pd.RangeIndex))
        ):
            # A named or datetime index is data (a time index, a symbol); a plain integer
            # index left over from filtering is not, and would change the schema.
            frame = frame.reset_index()
        cols: dict[str, np.ndarray] = {}
        dtypes: dict[str, str] = {}
        for name in frame.columns:
            cols[str(name)], dtypes[str(name)] = _from_series(str(name), frame[name])
        return Batch(cols, dtypes)
    if pd is not None and isinstance(data, pd.Series):
        name = str(data.name) if data.name is not None else "value"
        arr, dtype = _from_series(name, data)
        return Batch({name: arr}, {name: dtype})
    if isinstance(data, np.ndarray) and data.dtype.names:
        cols, dtypes = {}, {}
        for name in data.dtype.names:
            cols[name], dtypes[name] = _from_numpy(name, np.ascontiguousarray(data[name]))
        return Batch(cols, dtypes)
    if isinstance(data, Mapping):
        if not data:
            raise SchemaMismatch("a batch needs at least one column; got an empty dict")
        scalars = [_is_scalar(v) for v in data.values()]
        if all(scalars):
            data = {k: [v] for k, v in data.items()}
        elif any(scalars):
            mixed = [k for k, s in zip(data, scalars, strict=True) if s]
            raise SchemaMismatch(
                f"a dict must hold either one value per column (one row) or a list per column;"
                f" columns {mixed} hold single values while others hold lists"
            )
        cols, dtypes = {}, {}
        for name, values in data.items():
            cols[name], dtypes[name] = _column(name, values)
        return Batch(cols, dtypes)
    if isinstance(data, (list, tuple)):
        if not data:
            raise SchemaMismatch("a batch needs at least one row; got an empty list")
        if not all(isinstance(r, Mapping) for r in data):
            raise SchemaMismatch(
                "a list must hold rows as dicts ({column: value}); got "
                f"{type(next(r for r in data if not isinstance(r, Mapping))).__name__}"
            )
        names: dict[str, None] = {}
        for row in data:
            for key in row:
                names.setdefault(key, None)
        return to_batch({n: [row.get(n) for row in data] for n in names})
    raise SchemaMismatch(
        "expected a dict of columns, a dict of values (one row), a list of row dicts, a numpy "
        f"structured array or a pandas DataFrame; got {type(data).__name__}"
    )


def from_json_columns(columns: Mapping[str, Any], schema: Mapping[str, str] | None = None) -> Batch:
    """Decode JSON ``{name: [values]}`` columns, typed by ``schema`` where it is known."""
    if not isinstance(columns, Mapping) or not columns:
        raise SchemaMismatch("`columns` must be a non-empty object of {name: [values]}")
    cols: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for name, values in columns.items():
        if not isinstance(values, list):
            raise SchemaMismatch(
                f"column {name!r} must be a JSON array of values; got {type(values).__name__}"
            )
        want = schema.get(name) if schema else None
        if want in NUMERIC_DTYPES:
            arr = _typed_json_array(values, want)
            if arr is not None:
                cols[name], dtypes[name] = arr, want
                continue
        elif want == "object" or (
            want == "str" and all(v is None or isinstance(v, str) for v in values)
        ):
            cols[name], dtypes[name] = _object_array(values), want
            continue
        cols[name], dtypes[name] = _from_list(name, values)
    return Batch(cols, dtypes)


def _typed_json_array(values: list[Any], want: str) -> np.ndarray | None:
    """``values`` as an array of ``want``, or None when they are not all of that kind.

    Only values of the right JSON kind are accepted (numbers for floats, integers for ints,
    true/false for bool), so nothing is silently truncated, parsed from a string or
    rounded; the caller falls back to inferring the dtype from the values themselves.
    """
    if want in _FLOATS:
        if not all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values
        ):
            return None
        values = [math.nan if v is None else v for v in values]
    elif want == "bool":
        if not all(isinstance(v, bool) for v in values):
            return None
    elif not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    try:
        return np.array(values, dtype=NUMERIC_DTYPES[want])
    except OverflowError:
        return None


def _describe(schema: Mapping[str, str]) -> str:
    return ", ".join(f"{n} {d}" for n, d in schema.items())


def _fits(value: Any, want: str) -> bool:
    """Whether one value of an object, str or bool column can become a ``want`` value."""
    if want in _FLOATS:
        return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    if want in _INTS:
        return isinstance(value, int) and not isinstance(value, bool)
    if want == "str":
        return value is None or isinstance(value, str)
    return isinstance(value, bool) if want == "bool" else True


def _first_misfit(arr: np.ndarray, have: str, want: str) -> int:
    """The index of the first value of ``arr`` that :func:`conform` cannot convert to
    ``want`` (0 when the column fails as a whole)."""
    if have in NUMERIC_DTYPES and have != "bool" and want in _INTS:
        info = np.iinfo(NUMERIC_DTYPES[want])
        with np.errstate(invalid="ignore"):  # NaN compares false, as a misfit should
            fits = (arr >= info.min) & (arr < info.max + 1)
            if have in _FLOATS:
                fits &= np.isfinite(arr) & (arr == np.round(arr))
        misfits = np.flatnonzero(~fits).tolist()
    elif want == "str" and have in _FLOATS:
        misfits = np.flatnonzero(~np.isnan(arr)).tolist()
    else:
        misfits = [i for i, v in enumerate(arr.tolist()) if not _fits(v, want)]
    return int(misfits[0]) if misfits else 0


def conform(batch: Batch, schema: Mapping[str, str], stream: str = "") -> Batch:
    """Return ``batch`` with its columns ordered and cast to ``schema``.

    These conversions are applied: ints and floats to either float (float32 rounds), ints
    to other ints and floats of whole numbers to ints when every value fits, anything to
    object, str-only object columns to str, columns without a value (all None/NaN, or no
    rows) to any dtype; anything else raises :class:`SchemaMismatch` naming the column.
    """
    where = f" for stream {stream!r}" if stream else ""
    if batch.dtypes == dict(schema) and list(batch.columns) == list(schema):
        return batch
    missing = [n for n in schema if n not in batch.columns]
    if missing:
        raise SchemaMismatch(
            f"batch{where} lacks column {missing[0]!r}; the schema is ({_describe(schema)})"
        )
    extra = [n for n in batch.columns if n not in schema]
    if extra:
        raise SchemaMismatch(
            f"batch{where} has column {extra[0]!r}, which is not in the schema "
            f"({_describe(schema)}); send only those columns or use a new stream"
        )
    cols: dict[str, np.ndarray] = {}
    for name, want in schema.items():
        arr, have = batch.columns[name], batch.dtypes[name]
        if have == want or (want == "object"):
            cols[name] = arr
            continue
        if len(arr) == 0 and (want == "str" or want in NUMERIC_DTYPES):
            # No values, nothing to convert: JSON cannot say what type an empty list has.
            cols[name] = (
                _object_array([]) if want == "str" else np.empty(0, dtype=NUMERIC_DTYPES[want])
            )
            continue
        ok = False
        if want in _FLOATS and have in (*_FLOATS, *_INTS):
            cols[name], ok = arr.astype(NUMERIC_DTYPES[want]), True
        elif want in _INTS and have in _INTS:
            info = np.iinfo(NUMERIC_DTYPES[want])
            if arr.size == 0 or (int(arr.min()) >= info.min and int(arr.max()) <= info.max):
                cols[name], ok = arr.astype(NUMERIC_DTYPES[want]), True
        elif want in _INTS and have in _FLOATS:
            info = np.iinfo(NUMERIC_DTYPES[want])
            if (
                np.isfinite(arr).all()
                and (arr == np.round(arr)).all()
                # `< max + 1`, not `<= max`: float(2**63 - 1) rounds up to 2**63, which
                # would wrap around to the most negative int64.
                and (arr.size == 0 or (arr.min() >= info.min and arr.max() < info.max + 1))
            ):
                cols[name], ok = arr.astype(NUMERIC_DTYPES[want]), True
        elif want == "str" and have in ("str", "object"):
            if all(v is None or isinstance(v, str) for v in arr.tolist()):
                cols[name], ok = arr, True
        elif want == "str" and have in _FLOATS and np.isnan(arr).all():
            # A column with no value at all (all None) is inferred as float64 NaN.
            cols[name], ok = _object_array([None] * len(arr)), True
        elif want in _FLOATS and have in ("str", "object") and all(v is None for v in arr.tolist()):
            cols[name], ok = np.full(len(arr), np.nan, dtype=NUMERIC_DTYPES[want]), True
        if not ok:
            # Show the first value that does not fit, not the first value: in a float column
            # that holds one stray text, that text is what needs fixing.
            bad = _first_misfit(arr, have, want)
            at = f" at row {bad + 1} of {len(arr)}" if len(arr) > 1 else ""
            raise SchemaMismatch(
                f"column {name!r}{where} is {want} but the batch has {have} values"
                f" (e.g. {_jsonable(arr[bad]) if len(arr) else 'none'!r}){at}; send {want} values"
            )
    out = Batch(cols, schema, offset=batch.offset)
    out.checked = batch.checked
    return out


def check_cells(batch: Batch, *, max_depth: int = MAX_DEPTH, stream: str = "") -> Batch:
    """Refuse a batch that could not be sent to a viewer; return it marked ``checked``.

    A stream keeps what it accepts and sends it to every viewer as JSON (``str`` and
    ``object`` columns) or binary buffers, so whatever could fail to encode later is
    refused here, naming the column and row: column names that are not text (or longer
    than :data:`MAX_NAME`), ``str`` cells that are not text, and ``object`` values holding
    NaN or an infinity inside a list or dict, dict keys JSON cannot carry, or nesting
    deeper than ``max_depth`` (a cycle counts as too deep). Numeric columns need no check.
    """
    if batch.checked:
        return batch
    where = f" of stream {stream!r}" if stream else ""
    for name, arr in batch.columns.items():
        if not isinstance(name, str) or len(name) > MAX_NAME:
            shown = _clip(repr(name))
            raise SchemaMismatch(
                f"column name {shown}{where} must be text of at most {MAX_NAME} characters"
            )
        dtype = batch.dtypes[name]
        if dtype == "str":
            for row, value in enumerate(arr.tolist()):
                if value is not None and not isinstance(value, str):
                    raise SchemaMismatch(
                        f"column {name!r}{where} is str but row {row} holds "
                        f"{type(value).__name__} {_clip(repr(value))}; send text or null"
                    )
        elif dtype == "object":
            for row, value in enumerate(arr.tolist()):
                problem = _json_problem(value, max_depth)
                if problem is not None:
                    raise SchemaMismatch(
                        f"column {name!r}{where}, row {row}: {problem}, so it could not be "
                        "sent to viewers; fix the value or send it as text"
                    )
    batch.checked = True
    return batch


def _clip(text: str, most: int = 60) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."


def _json_problem(value: Any, depth_left: int, top: bool = True) -> str | None:
    """What keeps ``value`` from being sent as JSON, or None when nothing does."""
    if isinstance(value, float):
        # A missing value at the top is sent as null; inside a list it would be lost.
        if top or math.isfinite(value):
            return None
        return f"the value holds {value!r} inside a list or object, which JSON cannot carry"
    if isinstance(value, (list, tuple, dict)):
        if depth_left <= 0:
            return "the value nests lists and objects too deeply (or refers to itself)"
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, (str, int, bool)) and key is not None:
                    return f"the value has a key of type {type(key).__name__}; keys must be text"
                problem = _json_problem(item, depth_left - 1, False)
                if problem is not None:
                    return problem
        else:
            for item in value:
                problem = _json_problem(item, depth_left - 1, False)
                if problem is not None:
                    return problem
    return None
