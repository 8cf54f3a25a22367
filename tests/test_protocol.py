"""Wire protocol v1: bytes in, messages out, and back (livestream.protocol)."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from livestream.columns import DTYPES, NUMERIC_DTYPES, Batch, conform, to_batch
from livestream.errors import BadMessage, ProtocolError, SchemaMismatch
from livestream.protocol import (
    CLIENT_TYPES,
    ERROR_CODES,
    PROTOCOL_VERSION,
    Ack,
    Control,
    Credit,
    Data,
    Error,
    ListStreams,
    Ping,
    Pong,
    Publish,
    Reset,
    StateChanged,
    Streams,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    decode_batch_frame,
    decode_client,
    decode_server,
    encode_batch_frame,
    encode_client,
    encode_server,
    validate_stream_name,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# LIVESTREAM_FUZZ_EXAMPLES=100000 runs the fuzzers for longer than the default suite can.
FUZZ = settings(
    max_examples=int(os.environ.get("LIVESTREAM_FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- strategies

stream_names = st.from_regex(r"[A-Za-z0-9_.:\-]{1,128}", fullmatch=True)
ids = st.none() | st.text(max_size=20) | st.integers(-(2**63), 2**63)
counts = st.integers(0, 2**62)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Values of `object` columns: integers stay within float64's exact range, because the JSON
# form infers a column of numbers as float64.
object_values = st.recursive(
    json_scalars.filter(lambda v: not isinstance(v, int) or abs(v) <= 2**53),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=5)

_INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1), "uint8": (0, 255)}


def _column(dtype: str, rows: int, finite: bool) -> st.SearchStrategy[np.ndarray]:
    if dtype in ("float64", "float32"):
        width = 64 if dtype == "float64" else 32
        elements = st.floats(width=width, allow_nan=not finite, allow_infinity=not finite)
        return hnp.arrays(NUMERIC_DTYPES[dtype], rows, elements=elements)
    if dtype in _INT_BOUNDS:
        lo, hi = _INT_BOUNDS[dtype]
        return hnp.arrays(NUMERIC_DTYPES[dtype], rows, elements=st.integers(lo, hi))
    if dtype == "bool":
        return hnp.arrays("?", rows)
    values = st.none() | st.text(max_size=10) if dtype == "str" else object_values
    return st.lists(values, min_size=rows, max_size=rows).map(_objects)


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


@st.composite
def batches(
    draw: st.DrawFn, dtypes: tuple[str, ...] = DTYPES, finite: bool = False, max_rows: int = 12
) -> Batch:
    rows = draw(st.integers(0, max_rows))
    names = draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5, unique=True))
    cols, schema = {}, {}
    for name in names:
        schema[name] = draw(st.sampled_from(dtypes))
        cols[name] = draw(_column(schema[name], rows, finite))
    return Batch(cols, schema)


@st.composite
def subscribes(draw: st.DrawFn) -> Subscribe:
    since = last = None
    which = draw(st.sampled_from(["none", "since", "last"]))
    if which == "since":
        since = draw(counts)
    elif which == "last":
        last = draw(counts)
    return Subscribe(
        stream=draw(stream_names),
        id=draw(ids),
        since=since,
        epoch=draw(st.none() | st.text(max_size=16)),
        last=last,
        columns=draw(st.none() | st.lists(st.text(max_size=8), min_size=1, max_size=4).map(tuple)),
        credit=draw(st.none() | st.integers(1, 2**40)),
        format=draw(st.sampled_from(["binary", "json"])),
    )


client_messages = st.one_of(
    subscribes(),
    st.builds(Unsubscribe, stream_names, ids),
    st.builds(Control, stream_names, st.text(min_size=1, max_size=12), json_objects, ids),
    st.builds(ListStreams, ids),
    st.builds(Credit, stream_names, st.integers(1, 2**40), ids),
    st.builds(Ping, ids),
)

server_messages = st.one_of(
    st.builds(
        Welcome,
        st.text(max_size=20),
        st.lists(st.sampled_from(["view", "control", "publish"]), unique=True).map(tuple),
        st.text(max_size=20),
        st.just(PROTOCOL_VERSION),
    ),
    st.builds(
        Subscribed,
        stream_names,
        st.text(max_size=16),
        st.dictionaries(st.text(max_size=8), st.sampled_from(DTYPES), max_size=5),
        json_objects,
        json_objects,
        counts,
        ids,
    ),
    st.builds(Unsubscribed, stream_names, ids),
    st.builds(
        Ack,
        ids,
        st.booleans(),
        st.none() | json_objects,
        st.none() | counts,
        st.none() | counts,
    ),
    st.builds(Streams, st.lists(json_objects, max_size=3), ids),
    st.builds(
        Reset, stream_names, st.text(max_size=16), counts, st.sampled_from(["gap", "restart"])
    ),
    st.builds(StateChanged, stream_names, json_objects),
    st.builds(Error, st.sampled_from(ERROR_CODES), st.text(max_size=40), ids),
    st.builds(Pong, ids),
)


def _json_wire(batch: Batch) -> Batch:
    """What a batch becomes after the JSON form: NaN and infinities travel as null."""
    cols = {}
    for name, arr in batch.columns.items():
        if batch.dtypes[name] in ("float64", "float32"):
            arr = np.where(np.isfinite(arr), arr, np.nan).astype(arr.dtype)
        cols[name] = arr
    return Batch(cols, batch.dtypes)


def _frame(header: dict[str, Any] | bytes, body: bytes = b"") -> bytes:
    """A binary frame with ``header`` (a dict to dump, or raw bytes) and buffer area ``body``."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    pad = -(4 + len(raw)) % 8
    return struct.pack("<I", len(raw)) + raw + b"\0" * pad + body


def _layout(frame: bytes) -> tuple[dict[str, Any], int]:
    """The JSON header of a binary frame and where its buffer area starts."""
    (hlen,) = struct.unpack_from("<I", frame)
    header = json.loads(frame[4 : 4 + hlen].decode("utf-8"))
    start = 4 + hlen + (-(4 + hlen) % 8)
    assert frame[4 + hlen : start] == b"\0" * (start - 4 - hlen)
    return header, start


# --------------------------------------------------------------------------- round trips


@FAST
@given(client_messages)
def test_client_message_round_trip(msg: Any) -> None:
    frame = encode_client(msg)
    assert isinstance(frame, str)
    assert json.loads(frame)["type"] in CLIENT_TYPES
    assert decode_client(frame) == msg


@FAST
@given(server_messages)
def test_server_message_round_trip(msg: Any) -> None:
    frame = encode_server(msg)
    assert isinstance(frame, str)
    assert decode_server(frame) == msg


def _round_trip(
    encode: Callable[..., Any], decode: Callable[..., Any], msg: Any, wire: type
) -> Any:
    """``msg`` encoded (asserted to be a ``wire`` frame: bytes or str) and decoded again
    (asserted to be of ``msg``'s type)."""
    frame = encode(msg)
    assert isinstance(frame, wire)
    back = decode(frame)
    assert isinstance(back, type(msg))
    return back


@FAST
@given(stream_names, ids, batches())
def test_publish_binary_round_trip(stream: str, id: Any, batch: Batch) -> None:
    msg = _round_trip(encode_client, decode_client, Publish(stream, batch, id), bytes)
    assert (msg.stream, msg.id) == (stream, id)
    assert msg.batch == batch
    assert msg.batch.schema == batch.schema


@FAST
@given(stream_names, ids, batches())
def test_publish_json_round_trip(stream: str, id: Any, batch: Batch) -> None:
    # JSON alone does not carry dtypes: the server infers them, then conforms the batch to
    # the stream's schema; the values survive that (NaN and infinities as null).
    frame = encode_client(Publish(stream, batch, id), binary=False)
    assert isinstance(frame, str)
    assert json.loads(frame)["columns"] == batch.to_json_columns()
    msg = decode_client(frame)
    assert isinstance(msg, Publish)
    assert (msg.stream, msg.id) == (stream, id)
    assert list(msg.batch.columns) == list(batch.columns)
    typed = conform(msg.batch, batch.schema)
    assert typed.schema == batch.schema
    assert typed.to_json_columns() == batch.to_json_columns()


@FAST
@given(stream_names, counts, batches())
def test_data_binary_round_trip(stream: str, offset: int, batch: Batch) -> None:
    msg = _round_trip(encode_server, decode_server, Data(stream, offset, batch), bytes)
    assert (msg.stream, msg.offset, msg.rows) == (stream, offset, batch.rows)
    assert msg.batch == batch
    assert msg.batch.offset == offset


@FAST
@given(stream_names, counts, batches())
def test_data_json_round_trip_with_schema(stream: str, offset: int, batch: Batch) -> None:
    frame = encode_server(Data(stream, offset, batch), binary=False)
    assert isinstance(frame, str)
    obj = json.loads(frame)
    assert obj == {
        "type": "data",
        "stream": stream,
        "offset": offset,
        "rows": batch.rows,
        "columns": batch.to_json_columns(),
    }
    msg = decode_server(frame, batch.schema)
    assert isinstance(msg, Data)
    assert (msg.stream, msg.offset) == (stream, offset)
    assert msg.batch.schema == batch.schema
    assert msg.batch == _json_wire(batch)


@FAST
@given(batches())
def test_binary_frame_layout_is_aligned(batch: Batch) -> None:
    frame = encode_batch_frame({"type": "data", "stream": "s", "offset": 0}, batch)
    header, start = _layout(frame)
    assert start % 8 == 0
    assert header["rows"] == batch.rows
    assert [c["name"] for c in header["columns"]] == list(batch.columns)
    area = frame[start:]
    end = 0
    for col in header["columns"]:
        dtype = batch.dtypes[col["name"]]
        assert col["dtype"] == dtype
        if dtype in NUMERIC_DTYPES:
            assert set(col) == {"name", "dtype", "offset", "nbytes"}
            assert col["offset"] % 8 == 0
            assert col["offset"] == end + (-end % 8)
            assert area[end : col["offset"]] == b"\0" * (col["offset"] - end)
            assert col["nbytes"] == batch.rows * np.dtype(NUMERIC_DTYPES[dtype]).itemsize
            raw = area[col["offset"] : col["offset"] + col["nbytes"]]
            assert raw == np.ascontiguousarray(batch.columns[col["name"]]).tobytes()
            end = col["offset"] + col["nbytes"]
        else:
            assert set(col) == {"name", "dtype", "values"}
            assert col["values"] == batch.select([col["name"]]).to_json_columns()[col["name"]]
    assert len(area) == end + (-end % 8)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_zero_row_batches_of_every_dtype(dtype: str) -> None:
    empty = np.empty(0, dtype=NUMERIC_DTYPES.get(dtype, object))
    batch = Batch({"c": empty}, {"c": dtype})
    for frame in (encode_server(Data("s", 7, batch)), encode_client(Publish("s", batch))):
        header, start = _layout(frame)  # type: ignore[arg-type]
        assert header["rows"] == 0
        assert len(frame) == start
    data = decode_server(encode_server(Data("s", 7, batch)))
    assert isinstance(data, Data) and data.batch == batch and data.rows == 0
    publish = decode_client(encode_client(Publish("s", batch)))
    assert isinstance(publish, Publish) and publish.batch == batch
    as_json = decode_server(encode_server(Data("s", 7, batch), binary=False), {"c": dtype})
    assert isinstance(as_json, Data) and as_json.batch == batch


def test_numeric_extremes_survive_both_forms() -> None:
    batch = Batch(
        {
            "f64": np.array([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]),
            "f32": np.array([math.nan, math.inf, -math.inf, 1e-45, 3.4028235e38, 0.1], "<f4"),
            "i32": np.array([-(2**31), 2**31 - 1, 0, -1, 1, 7], "<i4"),
            "i64": np.array([-(2**63), 2**63 - 1, 2**53 + 1, -1, 0, 1], "<i8"),
            "u8": np.array([0, 255, 1, 2, 3, 4], "u1"),
            "b": np.array([True, False, True, False, False, True]),
        },
        {
            "f64": "float64",
            "f32": "float32",
            "i32": "int32",
            "i64": "int64",
            "u8": "uint8",
            "b": "bool",
        },
    )
    binary = decode_server(encode_server(Data("x", 0, batch)))
    assert isinstance(binary, Data) and binary.batch == batch
    assert np.signbit(binary.batch.columns["f64"][3])
    text = encode_server(Data("x", 0, batch), binary=False)
    assert isinstance(text, str)
    assert "NaN" not in text and "Infinity" not in text
    as_json = decode_server(text, batch.schema)
    assert isinstance(as_json, Data)
    assert as_json.batch == _json_wire(batch)
    assert as_json.batch.columns["i64"].tolist() == [-(2**63), 2**63 - 1, 2**53 + 1, -1, 0, 1]


def test_decoded_buffers_are_views_of_the_frame() -> None:
    batch = to_batch({"x": [1.0, 2.0, 3.0], "n": [1, 2, 3]})
    frame = encode_server(Data("s", 0, batch))
    assert isinstance(frame, bytes)
    header, decoded = decode_batch_frame(frame)
    assert "columns" not in header and header["rows"] == 3
    assert not decoded.columns["x"].flags.writeable
    assert decoded.columns["x"].base is not None
    mutable = bytearray(frame)
    _, decoded = decode_batch_frame(mutable)
    assert np.shares_memory(decoded.columns["x"], np.frombuffer(mutable, dtype="u1"))


def test_binary_frames_are_the_same_whatever_the_columns_memory_layout() -> None:
    """A contiguous column of its wire dtype is framed from its own bytes; a strided,
    reversed, big-endian or read-only one is converted first: the frames must not differ."""
    values = np.arange(-5.0, 5.0)
    flags = np.array([True, False] * 5)
    plain = Batch({"x": values, "b": flags}, {"x": "float64", "b": "bool"})
    base = np.empty(20)
    base[::2] = values
    odd = [
        {"x": base[::2], "b": flags},  # strided
        {"x": values[::-1].copy()[::-1], "b": flags[::-1].copy()[::-1]},  # reversed views
        {"x": values.astype(">f8"), "b": flags},  # big-endian
        {"x": np.frombuffer(values.tobytes()), "b": flags},  # read-only
    ]
    want = encode_server(Data("s", 3, plain))
    for columns in odd:
        got = encode_server(Data("s", 3, Batch(columns, {"x": "float64", "b": "bool"})))
        assert got == want, columns
    _, decoded = decode_batch_frame(want)
    assert decoded.columns["x"].tolist() == values.tolist()
    assert decoded.columns["b"].tolist() == flags.tolist()


def test_binary_frame_byte_for_byte() -> None:
    batch = Batch(
        {
            "x": np.array([1.5, -2.0]),
            "u": np.array([7, 9], "u1"),
            "n": np.array([1, -1], "<i4"),
            "s": np.array(["a", None], dtype=object),
        },
        {"x": "float64", "u": "uint8", "n": "int32", "s": "str"},
    )
    header = (
        b'{"type":"data","stream":"s","offset":5,"rows":2,"columns":['
        b'{"name":"x","dtype":"float64","offset":0,"nbytes":16},'
        b'{"name":"u","dtype":"uint8","offset":16,"nbytes":2},'
        b'{"name":"n","dtype":"int32","offset":24,"nbytes":8},'
        b'{"name":"s","dtype":"str","values":["a",null]}]}'
    )
    assert len(header) == 265
    expected = (
        b"\x09\x01\x00\x00"  # 265, little-endian
        + header
        + b"\x00\x00\x00"  # 4 + 265 + 3 = 272: the buffer area starts 8-aligned
        + b"\x00\x00\x00\x00\x00\x00\xf8\x3f"  # x[0] = 1.5 (float64 LE)
        + b"\x00\x00\x00\x00\x00\x00\x00\xc0"  # x[1] = -2.0
        + b"\x07\x09"  # u = [7, 9]
        + b"\x00" * 6  # pad to 24
        + b"\x01\x00\x00\x00\xff\xff\xff\xff"  # n = [1, -1] (int32 LE)
    )
    assert len(expected) == 304
    assert encode_server(Data("s", 5, batch)) == expected
    assert decode_server(expected) == Data("s", 5, batch)

    publish = encode_client(Publish("s", batch, id=3))
    assert publish[4:].startswith(b'{"type":"publish","stream":"s","id":3,"rows":2,')  # type: ignore[index]


def test_json_forms_byte_for_byte() -> None:
    assert encode_client(Subscribe("prices", id=1, since=10, epoch="e1", credit=2)) == (
        '{"type":"subscribe","stream":"prices","since":10,"epoch":"e1","credit":2,"id":1}'
    )
    assert encode_client(Subscribe("p", format="json", columns=("a",))) == (
        '{"type":"subscribe","stream":"p","columns":["a"],"format":"json"}'
    )
    assert encode_client(Control("p", "set", {"v": 0.5}, id="c")) == (
        '{"type":"control","stream":"p","action":"set","params":{"v":0.5},"id":"c"}'
    )
    assert encode_client(Credit("p", 1)) == '{"type":"credit","stream":"p","frames":1}'
    assert encode_client(ListStreams(id=4)) == '{"type":"list","id":4}'
    assert encode_client(Ping()) == '{"type":"ping"}'
    assert encode_client(Unsubscribe("p")) == '{"type":"unsubscribe","stream":"p"}'
    batch = to_batch({"t": [1.0, math.nan], "s": ["a", None]})
    assert encode_client(Publish("p", batch, id=2), binary=False) == (
        '{"type":"publish","stream":"p","id":2,"columns":{"t":[1.0,null],"s":["a",null]}}'
    )
    assert encode_server(Welcome("abc", ("view", "control"))) == (
        '{"type":"welcome","protocol":1,"server":"livestream","session":"abc",'
        '"roles":["view","control"]}'
    )
    assert encode_server(Ack(id=9, offset=100, rows=2)) == (
        '{"type":"ack","ok":true,"offset":100,"rows":2,"id":9}'
    )
    assert encode_server(Reset("p", "e2", 40, "gap")) == (
        '{"type":"reset","stream":"p","epoch":"e2","offset":40,"reason":"gap"}'
    )
    assert encode_server(Error("forbidden", "no", id="x")) == (
        '{"type":"error","code":"forbidden","message":"no","id":"x"}'
    )
    assert encode_server(Data("p", 3, batch), binary=False) == (
        '{"type":"data","stream":"p","offset":3,"rows":2,"columns":{"t":[1.0,null],"s":["a",null]}}'
    )


def test_server_encoder_refuses_nan_in_descriptive_fields() -> None:
    # JSON has no NaN: a state holding one is a bug in the caller, not a frame to send.
    with pytest.raises(ValueError):
        encode_server(StateChanged("p", {"params": {"x": math.nan}}))


def test_error_codes_are_the_documented_ones() -> None:
    assert ERROR_CODES == (
        "bad_message",
        "unknown_stream",
        "unknown_action",
        "invalid_param",
        "schema_mismatch",
        "forbidden",
        "too_large",
        "rate_limited",
        "internal",
    )


# --------------------------------------------------------------------------- decoding errors

_BAD_TEXT: list[tuple[str, str, str, tuple[str, ...]]] = [
    # (case, frame, code, fragments the message must contain)
    ("not json", "hello", "bad_message", ("must be a JSON object", "could not parse")),
    ("empty", "", "bad_message", ("must be a JSON object",)),
    ("array", "[1, 2]", "bad_message", ("must be a JSON object", "got a JSON array")),
    ("string", '"subscribe"', "bad_message", ("got a JSON string",)),
    ("number", "12", "bad_message", ("got a JSON number",)),
    ("null", "null", "bad_message", ("got a JSON null",)),
    ("deep", "[" * 100_000, "bad_message", ("nested too deeply",)),
    (
        "missing type",
        '{"stream": "a"}',
        "bad_message",
        ("needs a string `type`", "subscribe", "got null"),
    ),
    ("type not str", '{"type": 5}', "bad_message", ("needs a string `type`", "got 5")),
    (
        "unknown type",
        '{"type": "subscibe"}',
        "bad_message",
        ('unknown message type "subscibe"', "expected one of subscribe"),
    ),
    (
        "bad id",
        '{"type": "ping", "id": 1.5}',
        "bad_message",
        ("`id` must be a string or an integer", "got 1.5"),
    ),
    (
        "bool id",
        '{"type": "ping", "id": true}',
        "bad_message",
        ("`id` must be a string or an integer",),
    ),
]

# Messages that carry an id: the error must carry it too.
_BAD_WITH_ID: list[tuple[str, dict[str, Any], str, tuple[str, ...]]] = [
    ("missing stream", {"type": "subscribe"}, "bad_message", ("`subscribe` needs a `stream`",)),
    (
        "missing stream unsub",
        {"type": "unsubscribe"},
        "bad_message",
        ("`unsubscribe` needs a `stream`",),
    ),
    (
        "stream space",
        {"type": "subscribe", "stream": "a b"},
        "bad_message",
        ("`stream` must be a name of 1-128", 'got "a b"'),
    ),
    (
        "stream empty",
        {"type": "subscribe", "stream": ""},
        "bad_message",
        ("`stream` must be a name",),
    ),
    (
        "stream long",
        {"type": "subscribe", "stream": "x" * 129},
        "bad_message",
        ("`stream` must be a name",),
    ),
    (
        "stream newline",
        {"type": "subscribe", "stream": "abc\n"},
        "bad_message",
        ("`stream` must be a name",),
    ),
    (
        "stream number",
        {"type": "control", "stream": 5, "action": "pause"},
        "bad_message",
        ("`stream` must be a name", "got 5"),
    ),
    (
        "since negative",
        {"type": "subscribe", "stream": "a", "since": -1},
        "bad_message",
        ("`since` must be an integer >= 0", "got -1"),
    ),
    (
        "since string",
        {"type": "subscribe", "stream": "a", "since": "3"},
        "bad_message",
        ("`since` must be an integer >= 0", 'got "3"'),
    ),
    (
        "since float",
        {"type": "subscribe", "stream": "a", "since": 1.5},
        "bad_message",
        ("`since` must be an integer",),
    ),
    (
        "since bool",
        {"type": "subscribe", "stream": "a", "since": True},
        "bad_message",
        ("`since` must be an integer",),
    ),
    (
        "last negative",
        {"type": "subscribe", "stream": "a", "last": -5},
        "bad_message",
        ("`last` must be an integer >= 0",),
    ),
    (
        "credit zero",
        {"type": "subscribe", "stream": "a", "credit": 0},
        "bad_message",
        ("`credit` must be an integer >= 1", "got 0"),
    ),
    (
        "credit bool",
        {"type": "subscribe", "stream": "a", "credit": True},
        "bad_message",
        ("`credit` must be an integer >= 1",),
    ),
    (
        "since and last",
        {"type": "subscribe", "stream": "a", "since": 1, "last": 2},
        "bad_message",
        ("`since`", "`last`", "not both"),
    ),
    (
        "epoch number",
        {"type": "subscribe", "stream": "a", "since": 1, "epoch": 3},
        "bad_message",
        ("`epoch` must be a string",),
    ),
    (
        "columns string",
        {"type": "subscribe", "stream": "a", "columns": "x"},
        "bad_message",
        ("`columns` must be a non-empty list of column names",),
    ),
    (
        "columns numbers",
        {"type": "subscribe", "stream": "a", "columns": [1]},
        "bad_message",
        ("`columns` must be a non-empty list of column names",),
    ),
    (
        "columns empty",
        {"type": "subscribe", "stream": "a", "columns": []},
        "bad_message",
        ("`columns` must be a non-empty list", "leave it out"),
    ),
    (
        "format",
        {"type": "subscribe", "stream": "a", "format": "xml"},
        "bad_message",
        ('`format` must be "binary" or "json"', 'got "xml"'),
    ),
    (
        "control no action",
        {"type": "control", "stream": "a"},
        "bad_message",
        ("`control` needs an `action` string", "pause, resume, set"),
    ),
    (
        "control empty action",
        {"type": "control", "stream": "a", "action": ""},
        "bad_message",
        ("needs an `action`",),
    ),
    (
        "control params list",
        {"type": "control", "stream": "a", "action": "set", "params": [1]},
        "bad_message",
        ("`params` must be an object", "got [1]"),
    ),
    (
        "credit no frames",
        {"type": "credit", "stream": "a"},
        "bad_message",
        ("`frames` must be an integer >= 1", "got null"),
    ),
    (
        "credit frames zero",
        {"type": "credit", "stream": "a", "frames": 0},
        "bad_message",
        ("`frames` must be an integer >= 1",),
    ),
    (
        "credit frames str",
        {"type": "credit", "stream": "a", "frames": "2"},
        "bad_message",
        ("`frames` must be an integer >= 1",),
    ),
    (
        "publish no columns",
        {"type": "publish", "stream": "a"},
        "bad_message",
        ("`publish` needs `columns`", "{column: [values, ...]}"),
    ),
    (
        "publish empty columns",
        {"type": "publish", "stream": "a", "columns": {}},
        "bad_message",
        ("`publish` needs `columns`",),
    ),
    (
        "publish columns list",
        {"type": "publish", "stream": "a", "columns": [[1]]},
        "bad_message",
        ("`publish` needs `columns`",),
    ),
    (
        "publish unequal",
        {"type": "publish", "stream": "a", "columns": {"x": [1, 2], "y": [1]}},
        "schema_mismatch",
        ("equal lengths", "x=2", "y=1"),
    ),
    (
        "publish scalar column",
        {"type": "publish", "stream": "a", "columns": {"x": 5}},
        "schema_mismatch",
        ("column 'x' must be a JSON array",),
    ),
]


@pytest.mark.parametrize(
    ("case", "frame", "code", "fragments"), _BAD_TEXT, ids=[c[0] for c in _BAD_TEXT]
)
def test_bad_text_frames(case: str, frame: str, code: str, fragments: tuple[str, ...]) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client(frame)
    assert info.value.code == code
    for fragment in fragments:
        assert fragment in info.value.message
    assert info.value.id is None


@pytest.mark.parametrize("msg_id", ["req-1", 42])
@pytest.mark.parametrize(
    ("case", "obj", "code", "fragments"), _BAD_WITH_ID, ids=[c[0] for c in _BAD_WITH_ID]
)
def test_bad_messages_carry_their_id(
    case: str, obj: dict[str, Any], code: str, fragments: tuple[str, ...], msg_id: Any
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client(json.dumps({**obj, "id": msg_id}))
    assert info.value.code == code
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    assert info.value.id == msg_id
    with pytest.raises(ProtocolError) as info:
        decode_client(json.dumps(obj))
    assert info.value.id is None


def _float_col(**over: Any) -> dict[str, Any]:
    return {"name": "x", "dtype": "float64", "offset": 0, "nbytes": 16, **over}


def _pub(**over: Any) -> dict[str, Any]:
    return {"type": "publish", "stream": "s", "id": 7, "rows": 2, "columns": [_float_col()], **over}


_TWO_FLOATS = struct.pack("<2d", 1.0, 2.0)

_BAD_BINARY: list[tuple[str, bytes, tuple[str, ...], Any]] = [
    # (case, frame, fragments the message must contain, id the error carries)
    ("empty", b"", ("4-byte little-endian header length", "got 0 bytes"), None),
    ("three bytes", b"\x01\x02\x03", ("4-byte little-endian header length", "got 3 bytes"), None),
    (
        "header past end",
        struct.pack("<I", 100) + b"{}{}{}",
        ("declares a 100-byte header", "only 6 bytes follow"),
        None,
    ),
    ("huge header length", b"\xff\xff\xff\xff{}", ("declares a 4294967295-byte header",), None),
    (
        "bad utf-8",
        _frame(b'{"type":"publish","stream":"\xff"}'),
        ("must be UTF-8 encoded JSON", "byte 28 (0xff)"),
        None,
    ),
    (
        "utf-16",
        _frame('{"type":"publish"}'.encode("utf-16")),
        ("must be UTF-8 encoded JSON",),
        None,
    ),
    (
        "header not json",
        _frame(b"publish!"),
        ("header must be a JSON object", "could not parse"),
        None,
    ),
    ("header array", _frame(b"[]"), ("header must be a JSON object", "got a JSON array"), None),
    (
        "not publish",
        _frame({"type": "subscribe", "stream": "s", "id": 7}),
        ("must be a `publish`", 'type "subscribe"', "JSON text frames"),
        7,
    ),
    (
        "data from client",
        _frame({"type": "data", "stream": "s", "offset": 0, "rows": 0, "columns": []}),
        ("must be a `publish`",),
        None,
    ),
    ("no type", _frame({"stream": "s", "id": "q"}), ("must be a `publish`", "type null"), "q"),
    ("bad stream", _frame(_pub(stream="no/slash"), _TWO_FLOATS), ("`stream` must be a name",), 7),
    ("bad id", _frame(_pub(id=[1]), _TWO_FLOATS), ("`id` must be a string or an integer",), None),
    (
        "rows missing",
        _frame(_pub(rows=None), _TWO_FLOATS),
        ("`rows` must be an integer >= 0", "got null"),
        7,
    ),
    (
        "rows negative",
        _frame(_pub(rows=-1), _TWO_FLOATS),
        ("`rows` must be an integer >= 0", "got -1"),
        7,
    ),
    ("rows float", _frame(_pub(rows=2.0), _TWO_FLOATS), ("`rows` must be an integer >= 0",), 7),
    ("columns missing", _frame(_pub(columns=None)), ("`columns` must be a non-empty list",), 7),
    ("columns empty", _frame(_pub(columns=[])), ("`columns` must be a non-empty list",), 7),
    (
        "column not object",
        _frame(_pub(columns=[5]), _TWO_FLOATS),
        ("column #0 must be an object with a `name`",),
        7,
    ),
    (
        "column no name",
        _frame(_pub(columns=[{"dtype": "float64"}]), _TWO_FLOATS),
        ("column #0 must be an object with a `name`",),
        7,
    ),
    (
        "duplicate name",
        _frame(_pub(columns=[_float_col(), _float_col()]), _TWO_FLOATS),
        ("names column 'x' twice",),
        7,
    ),
    (
        "unknown dtype",
        _frame(_pub(columns=[_float_col(dtype="float16")]), _TWO_FLOATS),
        ("dtype must be one of float64, float32, int32, int64, uint8, bool", 'got "float16"'),
        7,
    ),
    (
        "str dtype as buffer",
        _frame(_pub(columns=[_float_col(dtype="str")]), _TWO_FLOATS),
        ("dtype must be one of", "or send `values`"),
        7,
    ),
    (
        "dtype missing",
        _frame(_pub(columns=[{"name": "x", "offset": 0, "nbytes": 16}]), _TWO_FLOATS),
        ("dtype must be one of", "got null"),
        7,
    ),
    (
        "dtype unhashable",
        _frame(_pub(columns=[_float_col(dtype=["float64"])]), _TWO_FLOATS),
        ("dtype must be one of",),
        7,
    ),
    (
        "offset missing",
        _frame(_pub(columns=[_float_col(offset=None)]), _TWO_FLOATS),
        ("`offset` and `nbytes` must be integers >= 0",),
        7,
    ),
    (
        "offset negative",
        _frame(_pub(columns=[_float_col(offset=-8)]), _TWO_FLOATS),
        ("`offset` and `nbytes` must be integers >= 0",),
        7,
    ),
    (
        "nbytes string",
        _frame(_pub(columns=[_float_col(nbytes="16")]), _TWO_FLOATS),
        ("`offset` and `nbytes` must be integers >= 0",),
        7,
    ),
    (
        "nbytes mismatch",
        _frame(_pub(columns=[_float_col(nbytes=8)]), _TWO_FLOATS),
        ("2 rows of float64 need 16 bytes", "`nbytes` says 8"),
        7,
    ),
    (
        "unaligned",
        _frame(_pub(columns=[_float_col(offset=4)]), _TWO_FLOATS + bytes(8)),
        ("`offset` 4 is not 8-byte aligned",),
        7,
    ),
    (
        "buffer past end",
        _frame(_pub(), _TWO_FLOATS[:8]),
        ("bytes 0..16 lie past the end of the 8-byte buffer area",),
        7,
    ),
    ("buffer area missing", _frame(_pub()), ("lie past the end of the 0-byte buffer area",), 7),
    (
        "values wrong length",
        _frame(_pub(columns=[{"name": "s", "dtype": "str", "values": ["a"]}])),
        ("column 's': `values` must be a list of 2 values",),
        7,
    ),
    (
        "values not list",
        _frame(_pub(columns=[{"name": "s", "values": "ab"}])),
        ("`values` must be a list of 2 values",),
        7,
    ),
]


@pytest.mark.parametrize(
    ("case", "frame", "fragments", "msg_id"), _BAD_BINARY, ids=[c[0] for c in _BAD_BINARY]
)
def test_bad_binary_frames(
    case: str, frame: bytes, fragments: tuple[str, ...], msg_id: Any
) -> None:
    with pytest.raises(BadMessage) as info:
        decode_client(frame)
    assert info.value.code == "bad_message"
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    assert info.value.id == msg_id


def test_binary_publish_accepts_values_columns_and_memoryviews() -> None:
    frame = _frame(
        {
            "type": "publish",
            "stream": "s",
            "rows": 2,
            "columns": [
                {"name": "x", "dtype": "float64", "offset": 0, "nbytes": 16},
                {"name": "s", "dtype": "str", "values": ["a", None]},
                {"name": "o", "values": [{"k": 1}, [2]]},
                {"name": "f", "dtype": "float32", "values": [1.5, None]},
            ],
        },
        _TWO_FLOATS,
    )
    for form in (frame, bytearray(frame), memoryview(frame)):
        msg = decode_client(form)
        assert isinstance(msg, Publish)
        assert msg.batch.schema == {"x": "float64", "s": "str", "o": "object", "f": "float32"}
        assert msg.batch.to_json_columns() == {
            "x": [1.0, 2.0],
            "s": ["a", None],
            "o": [{"k": 1}, [2]],
            "f": [1.5, None],
        }


def test_binary_values_that_contradict_their_dtype_are_not_coerced() -> None:
    frame = _frame(
        {
            "type": "publish",
            "stream": "s",
            "rows": 2,
            "columns": [
                {"name": "i", "dtype": "int32", "values": [1.5, 2]},
                {"name": "f", "dtype": "float64", "values": ["1", "2"]},
                {"name": "s", "dtype": "str", "values": [1, 2]},
            ],
        }
    )
    msg = decode_client(frame)
    assert isinstance(msg, Publish)
    # Inferred from the values, so that conform() can report the mismatch.
    assert msg.batch.schema == {"i": "float64", "f": "str", "s": "int64"}
    with pytest.raises(SchemaMismatch, match="column 'i'"):
        conform(msg.batch, {"i": "int32", "f": "float64", "s": "str"})


def test_huge_json_integers_stay_exact() -> None:
    big = 10**400
    msg = decode_client(
        json.dumps({"type": "publish", "stream": "s", "columns": {"a": [big, 1.5]}})
    )
    assert isinstance(msg, Publish)
    assert msg.batch.schema == {"a": "object"}
    assert msg.batch.to_json_columns() == {"a": [big, 1.5]}


def test_validate_stream_name() -> None:
    for good in ("a", "A-z_0.9:x", "x" * 128):
        assert validate_stream_name(good) == good
    for bad in ("", "x" * 129, "a b", "a/b", "é", "a\n", "\na", None, 3, ["a"]):
        with pytest.raises(BadMessage, match="`stream` must be a name"):
            validate_stream_name(bad, id=5)
    with pytest.raises(BadMessage) as info:
        validate_stream_name("a b", id=5)
    assert info.value.id == 5


def test_decode_server_errors() -> None:
    with pytest.raises(BadMessage, match="lacks field 'stream'"):
        decode_server('{"type": "reset", "epoch": "e", "offset": 0, "reason": "gap"}')
    with pytest.raises(BadMessage, match="unknown server message type"):
        decode_server('{"type": "hello"}')
    with pytest.raises(BadMessage, match="expected data"):
        decode_server(encode_client(Publish("s", to_batch({"a": [1]}))))
    with pytest.raises(BadMessage, match="integer `offset`"):
        decode_server(
            _frame(
                {"type": "data", "stream": "s", "rows": 0, "columns": [{"name": "a", "values": []}]}
            )
        )


# --------------------------------------------------------------------------- fuzz


def _only_protocol_errors(frame: str | bytes) -> None:
    try:
        msg = decode_client(frame)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES
        assert isinstance(exc.message, str) and exc.message
        assert exc.id is None or isinstance(exc.id, (str, int))
    else:
        assert isinstance(
            msg, (Subscribe, Unsubscribe, Control, Publish, ListStreams, Credit, Ping)
        )


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(frame: bytes) -> None:
    _only_protocol_errors(frame)


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_arbitrary_text(frame: str) -> None:
    _only_protocol_errors(frame)


_field_values = st.one_of(json_values, st.integers(-(10**400), 10**400), st.just(math.nan))


@FUZZ
@given(
    st.sampled_from([*CLIENT_TYPES, "data", "", "Subscribe"]),
    st.dictionaries(
        st.sampled_from(
            [
                "stream",
                "id",
                "since",
                "epoch",
                "last",
                "columns",
                "credit",
                "format",
                "action",
                "params",
                "frames",
            ]
        ),
        _field_values
        | stream_names
        | st.dictionaries(st.text(max_size=4), _field_values | st.lists(_field_values), max_size=3),
        max_size=6,
    ),
)
def test_fuzz_structured_text(kind: str, fields: dict[str, Any]) -> None:
    _only_protocol_errors(json.dumps({"type": kind, **fields}))


_column_descr = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=3) | st.integers(),
        "dtype": st.sampled_from([*DTYPES, "float16", ""]) | json_values,
        "offset": st.integers(-8, 64) | json_values,
        "nbytes": st.integers(-8, 64) | json_values,
        "values": st.lists(_field_values, max_size=4) | json_values,
    },
)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["publish", "publish", "data", "subscribe"]) | json_values,
            "stream": stream_names | json_values,
            "id": ids | json_values,
            "rows": st.integers(-1, 6) | json_values,
            "columns": st.lists(_column_descr, max_size=4) | json_values,
        },
    ),
    st.binary(max_size=80),
    st.integers(0, 7),
)
def test_fuzz_structured_binary(header: dict[str, Any], body: bytes, misalign: int) -> None:
    frame = _frame(header, body)
    _only_protocol_errors(frame)
    _only_protocol_errors(frame[: len(frame) - misalign])


@FUZZ
@given(batches(max_rows=4), st.data())
def test_fuzz_corrupted_publish_frames(batch: Batch, data: st.DataObject) -> None:
    frame = bytearray(encode_client(Publish("s", batch, id=1)))  # type: ignore[arg-type]
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(frame) - 1))
        frame[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    _only_protocol_errors(bytes(frame[:cut]))
    _only_protocol_errors(bytes(frame))


# --------------------------------------------------------------------------- purity

_PURITY_CHECK = """
import sys
{setup}
import livestream.protocol, livestream.columns, livestream.errors
print(",".join(m for m in ("tornado", "asyncio", "socket", "redis") if m in sys.modules))
"""

# Loads the modules under a bare `livestream` package, without running its __init__.py.
_BARE_PACKAGE = f"""
import types
pkg = types.ModuleType("livestream")
pkg.__path__ = [{str(ROOT / "livestream")!r}]
sys.modules["livestream"] = pkg
"""


def _loaded_by_import(setup: str) -> str:
    code = textwrap.dedent(_PURITY_CHECK.format(setup=setup))
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_protocol_modules_import_no_io() -> None:
    assert _loaded_by_import(_BARE_PACKAGE) == ""


def test_importing_livestream_protocol_loads_no_io() -> None:
    # Through the real package: livestream/__init__.py must keep its re-exports lazy.
    assert _loaded_by_import("") == ""
