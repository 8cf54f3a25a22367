"""The livestream wire protocol, version 1: typed messages and their encodings.

This module is pure: bytes and strings in, messages out, and back. It imports no tornado,
asyncio or socket code, so the server, the Python client and any test share one definition
of the protocol (``docs/protocol.md`` is its prose twin).

* :func:`decode_client` / :func:`encode_client` handle what a client sends;
* :func:`decode_server` / :func:`encode_server` handle what the server sends;
* :func:`encode_batch_frame` / :func:`decode_batch_frame` are the binary column frames.

Decoding errors are :class:`~livestream.errors.ProtocolError` subclasses whose ``code`` is
the wire error code and whose message says what was expected and what arrived.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import reprlib
import struct
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

import numpy as np

from .columns import DTYPES, NUMERIC_DTYPES, Batch, check_cells, from_json_columns
from .errors import BadMessage, ProtocolError, TooLarge
from .limits import Limits

__all__ = [
    "CLIENT_TYPES",
    "ERROR_CODES",
    "PROTOCOL_VERSION",
    "Ack",
    "ClientMessage",
    "Control",
    "Credit",
    "Data",
    "Error",
    "ListStreams",
    "Ping",
    "Pong",
    "Publish",
    "Reset",
    "ServerMessage",
    "StateChanged",
    "Streams",
    "Subscribe",
    "Subscribed",
    "Unsubscribe",
    "Unsubscribed",
    "Welcome",
    "decode_batch_frame",
    "decode_client",
    "decode_server",
    "encode_batch_frame",
    "encode_client",
    "encode_server",
    "validate_stream_name",
]

PROTOCOL_VERSION = 1

ERROR_CODES = (
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

_STREAM_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_ALIGN = 8
_PAD = b"\0" * _ALIGN
_U32 = struct.Struct("<I")
#: The numpy dtype of each numeric wire dtype.
_NUMPY_DTYPES = {name: np.dtype(code) for name, code in NUMERIC_DTYPES.items()}
_LIMITS = Limits()
Id = str | int | None


# --------------------------------------------------------------------------- messages
# Client to server.


@dataclass(frozen=True)
class Subscribe:
    """Start receiving a stream. ``since``+``epoch`` resume; ``last`` asks for the newest rows."""

    stream: str
    id: Id = None
    since: int | None = None
    epoch: str | None = None
    last: int | None = None
    columns: tuple[str, ...] | None = None
    credit: int | None = None
    format: Literal["binary", "json"] = "binary"


@dataclass(frozen=True)
class Unsubscribe:
    """Stop receiving a stream."""

    stream: str
    id: Id = None


@dataclass(frozen=True)
class Control:
    """Pause, resume, set parameters of, or trigger an action on a stream's producer."""

    stream: str
    action: str
    params: dict[str, Any] = field(default_factory=dict)
    id: Id = None


@dataclass(frozen=True)
class Publish:
    """Append a batch of rows to a stream (creating it when unknown).

    ``publisher`` and ``seq`` (optional, together) make a resend safe: a server stores a
    batch whose ``seq`` is not above the last one it stored for that ``publisher`` and
    stream only once (the ack then says ``duplicate``)."""

    stream: str
    batch: Batch
    id: Id = None
    publisher: str | None = None
    seq: int | None = None


@dataclass(frozen=True)
class ListStreams:
    """Ask for the streams the server has."""

    id: Id = None


@dataclass(frozen=True)
class Credit:
    """Grant the server ``frames`` more data frames for ``stream``."""

    stream: str
    frames: int
    id: Id = None


@dataclass(frozen=True)
class Ping:
    """Ask for a ``pong``."""

    id: Id = None


@dataclass
class ViewRequest:
    """``view``: the rows to draw of an x-range of a stream's history at a plot's width
    (docs/protocol.md, "Views of long histories")."""

    stream: str
    id: Id = None
    width: int = 1000
    columns: tuple[str, ...] = ()
    x: str | None = None
    range: tuple[float, float] | None = None
    read: tuple[str, ...] | None = None
    key: str | None = None
    format: str = "binary"


ClientMessage = (
    Subscribe | Unsubscribe | Control | Publish | ListStreams | Credit | Ping | ViewRequest
)


# Server to client.


@dataclass(frozen=True)
class Welcome:
    """The first message on every connection."""

    session: str
    roles: tuple[str, ...]
    server: str = "livestream"
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Subscribed:
    """Answer to ``subscribe``: ``offset`` is the offset of the first row that will be sent."""

    stream: str
    epoch: str
    schema: dict[str, str]
    controls: dict[str, Any]
    state: dict[str, Any]
    offset: int
    id: Id = None


@dataclass(frozen=True)
class Unsubscribed:
    """Answer to ``unsubscribe``."""

    stream: str
    id: Id = None


@dataclass(frozen=True)
class Ack:
    """Answer to ``control`` (with ``state``) and ``publish`` (with ``offset`` and ``rows``)."""

    id: Id = None
    ok: bool = True
    state: dict[str, Any] | None = None
    offset: int | None = None
    rows: int | None = None
    #: True when a publish repeated a ``publisher``'s ``seq`` already stored (not stored again).
    duplicate: bool | None = None


@dataclass(frozen=True)
class Streams:
    """Answer to ``list``."""

    streams: list[dict[str, Any]]
    id: Id = None


@dataclass(frozen=True)
class Data:
    """Rows of a stream starting at ``offset``."""

    stream: str
    offset: int
    batch: Batch

    @property
    def rows(self) -> int:
        return self.batch.rows


@dataclass(frozen=True)
class Reset:
    """The rows before ``offset`` are gone (``reason``: ``gap`` or ``restart``)."""

    stream: str
    epoch: str
    offset: int
    reason: str


@dataclass(frozen=True)
class StateChanged:
    """A stream's state changed (wire type ``state``)."""

    stream: str
    state: dict[str, Any]


@dataclass(frozen=True)
class Error:
    """A request failed; ``id`` names the request when it had one."""

    code: str
    message: str
    id: Id = None


@dataclass(frozen=True)
class Pong:
    """Answer to ``ping``."""

    id: Id = None


@dataclass
class ViewReply:
    """The answer to a ``view``: the chosen rows (``batch``) and their offsets, or
    ``cancelled`` when a newer ``view`` with the same key replaced the request."""

    stream: str
    id: Id = None
    key: str | None = None
    epoch: str = ""
    first: int = 0
    stop: int = 0
    end: int = 0
    exact: bool = True
    buckets: int = 0
    offsets: Any = None
    batch: Batch | None = None
    cancelled: bool = False


ServerMessage = (
    Welcome
    | Subscribed
    | Unsubscribed
    | Ack
    | Streams
    | Data
    | Reset
    | StateChanged
    | Error
    | Pong
    | ViewReply
)

CLIENT_TYPES = (
    "subscribe",
    "unsubscribe",
    "control",
    "publish",
    "list",
    "credit",
    "ping",
    "view",
)
#: The widest view a client may ask for (pixels: an 8K screen is 7,680 wide).
MAX_VIEW_WIDTH = 20_000
#: The most columns a view may keep the extremes of.
MAX_VIEW_COLUMNS = 32
#: The column of a binary ``view`` reply that holds the rows' offsets (more ``@`` in front
#: when the stream has a column of that name: the header's ``offsets_column`` says which).
VIEW_OFFSETS = "@offset"


# --------------------------------------------------------------------------- helpers


def validate_stream_name(name: object, *, id: Id = None) -> str:
    """Return ``name`` if it is a valid stream name, else raise :class:`BadMessage`."""
    if not isinstance(name, str) or not _STREAM_NAME.fullmatch(name):
        raise BadMessage(
            f"`stream` must be a name of 1-128 letters, digits, '_', '-', '.' or ':'; "
            f"got {_show(name)}",
            id=id,
        )
    return name


def _show(value: object) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        # reprlib bounds the depth, so a hostile deeply nested value cannot recurse here.
        text = reprlib.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str)


def _parse_json_object(text: str | bytes, what: str) -> dict[str, Any]:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadMessage(
                f"{what} must be UTF-8 encoded JSON; byte {exc.start} ({text[exc.start]:#04x}) "
                "is not valid UTF-8"
            ) from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise BadMessage(
            f"{what} must be a JSON object; could not parse it as JSON ({exc.__class__.__name__}: "
            f"{str(exc)[:80]})"
        ) from None
    except RecursionError:
        raise BadMessage(f"{what} must be a JSON object; it is nested too deeply") from None
    if not isinstance(obj, dict):
        raise BadMessage(f"{what} must be a JSON object; got a JSON {_json_kind(obj)}")
    return obj


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array"


def _is_id(value: object) -> bool:
    return (
        value is None
        or isinstance(value, str)
        or (isinstance(value, int) and not isinstance(value, bool))
    )


def _get_id(obj: dict[str, Any]) -> Id:
    value = obj.get("id")
    if _is_id(value):
        return value
    raise BadMessage(f"`id` must be a string or an integer; got {_show(value)}")


#: The longest ``publisher`` id a publish may carry.
MAX_PUBLISHER = 64
#: The largest ``seq`` (it must fit a signed 64-bit integer and a Lua number exactly).
MAX_SEQ = 2**53


def _publisher_seq(obj: dict[str, Any], id: Id) -> tuple[str | None, int | None]:
    """A publish's optional ``publisher`` and ``seq`` (both or neither)."""
    publisher, seq = obj.get("publisher"), obj.get("seq")
    if publisher is None and seq is None:
        return None, None
    if (
        not isinstance(publisher, str)
        or not 1 <= len(publisher) <= MAX_PUBLISHER
        or not publisher.isprintable()
    ):
        raise BadMessage(
            f"`publisher` must be a printable string of 1 to {MAX_PUBLISHER} characters that "
            f"names the publisher (sent with `seq`); got {_show(publisher)}",
            id=id,
        )
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise BadMessage(
            f"`seq` must be an integer from 0 to 2**53 that grows with each publish of "
            f"`publisher` {publisher!r}; got {_show(seq)}",
            id=id,
        )
    return publisher, seq


def _opt_int(obj: dict[str, Any], key: str, id: Id, minimum: int = 0) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise BadMessage(f"`{key}` must be an integer >= {minimum}; got {_show(value)}", id=id)
    return value


# --------------------------------------------------------------------------- binary frames


@functools.lru_cache(maxsize=4096)
def _json_text(text: str) -> str:
    """``json.dumps`` of a name (stream, column, dtype), kept: names repeat every frame."""
    return json.dumps(text)


def _header_json(header: dict[str, Any], rows: int, descr: list[dict[str, Any]]) -> str:
    """``_dumps({**header, "rows": rows, "columns": descr})``, byte for byte, without
    building and walking the dicts: a frame's header is written once per frame, on the
    loop, and json.dumps of it cost about as much as copying 10,000 rows."""
    parts = []
    for key, value in (*header.items(), ("rows", rows)):
        if isinstance(value, str):
            text = _json_text(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
        else:
            return _dumps({**header, "rows": rows, "columns": descr})
        parts.append(f"{_json_text(key)}:{text}")
    cols = []
    for col in descr:
        if "values" in col:
            cols.append(_dumps(col))
        else:
            cols.append(
                f'{{"name":{_json_text(col["name"])},"dtype":{_json_text(col["dtype"])},'
                f'"offset":{col["offset"]},"nbytes":{col["nbytes"]}}}'
            )
    return "{" + ",".join(parts) + ',"columns":[' + ",".join(cols) + "]}"


def encode_batch_frame(header: dict[str, Any], batch: Batch) -> bytes:
    """Encode ``batch`` as a binary frame whose JSON header holds ``header`` plus columns."""
    descr: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    position = 0
    for name, arr in batch.columns.items():
        dtype = batch.dtypes[name]
        if dtype in NUMERIC_DTYPES:
            # The array's own bytes go into the one join below: a `.tobytes()` per column
            # would copy each buffer once more (about 9x slower for a 100,000-row batch,
            # see docs/benchmarks.md).
            data: memoryview | None = None
            if arr.dtype == _NUMPY_DTYPES[dtype]:
                # The common case (a column read from a history): its bytes as they are.
                with contextlib.suppress(TypeError):  # not contiguous
                    data = memoryview(arr).cast("B")  # type: ignore[arg-type]
            if data is None:
                data = np.ascontiguousarray(arr, dtype=NUMERIC_DTYPES[dtype]).view(np.uint8).data
            nbytes = data.nbytes
            descr.append({"name": name, "dtype": dtype, "offset": position, "nbytes": nbytes})
            buffers.append(data)
            pad = -nbytes % _ALIGN
            if pad:
                buffers.append(_PAD[:pad])
            position += nbytes + pad
        else:
            values = batch.select([name]).to_json_columns()[name]
            descr.append({"name": name, "dtype": dtype, "values": values})
    head_bytes = _header_json(header, batch.rows, descr).encode()
    pad = -(4 + len(head_bytes)) % _ALIGN
    return b"".join([_U32.pack(len(head_bytes)), head_bytes, _PAD[:pad], *buffers])


def decode_batch_frame(
    frame: bytes | bytearray | memoryview, schema: dict[str, str] | None = None
) -> tuple[dict[str, Any], Batch]:
    """Split a binary frame into its JSON header (without ``columns``) and its :class:`Batch`.

    Column arrays are views into ``frame``, not copies (read-only when ``frame`` is bytes).
    """
    header, area = _split_frame(frame)
    return header, _read_batch(header, area, schema)


def _split_frame(
    frame: bytes | bytearray | memoryview, max_header: int | None = None
) -> tuple[dict[str, Any], memoryview]:
    """The JSON header of a binary frame and its buffer area."""
    view = memoryview(frame).cast("B")
    total = len(view)
    if total < 4:
        raise BadMessage(
            f"a binary frame must start with a 4-byte little-endian header length; got {total} bytes"
        )
    (hlen,) = _U32.unpack_from(view, 0)
    if hlen > total - 4:
        raise BadMessage(
            f"binary frame declares a {hlen}-byte header but only {total - 4} bytes follow"
        )
    if max_header is not None and hlen > max_header:
        raise TooLarge(
            f"a binary frame's JSON header of {hlen} bytes is over the server's max_json_size "
            f"of {max_header} bytes; send the columns as buffers rather than JSON `values`, "
            "or split the batch"
        )
    header = _parse_json_object(bytes(view[4 : 4 + hlen]), "a binary frame's header")
    start = 4 + hlen + (-(4 + hlen) % _ALIGN)
    return header, view[min(start, total) :]


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_batch(header: dict[str, Any], area: memoryview, schema: dict[str, str] | None) -> Batch:
    """The columns a binary frame's header describes; pops ``columns`` from ``header``."""
    raw_id = header.get("id")
    id = raw_id if _is_id(raw_id) else None
    rows = header.get("rows")
    if not _is_count(rows):
        raise BadMessage(f"binary header `rows` must be an integer >= 0; got {_show(rows)}", id=id)
    descr = header.pop("columns", None)
    if not isinstance(descr, list) or not descr:
        raise BadMessage(
            "binary header `columns` must be a non-empty list of "
            "{name, dtype, offset, nbytes} or {name, values}",
            id=id,
        )
    cols: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for i, col in enumerate(descr):
        if not isinstance(col, dict) or not isinstance(col.get("name"), str):
            raise BadMessage(f"binary header column #{i} must be an object with a `name`", id=id)
        name = col["name"]
        if name in cols:
            raise BadMessage(f"binary header names column {name!r} twice", id=id)
        dtype = col.get("dtype")
        if "values" in col:
            values = col["values"]
            if not isinstance(values, list) or len(values) != rows:
                raise BadMessage(
                    f"column {name!r}: `values` must be a list of {rows} values", id=id
                )
            if not isinstance(dtype, str):
                dtype = (schema or {}).get(name)
            b = from_json_columns({name: values}, {name: dtype} if dtype in DTYPES else None)
            cols[name], dtypes[name] = b.columns[name], b.dtypes[name]
            continue
        off, nbytes = col.get("offset"), col.get("nbytes")
        if not isinstance(dtype, str) or dtype not in NUMERIC_DTYPES:
            raise BadMessage(
                f"column {name!r}: dtype must be one of {', '.join(NUMERIC_DTYPES)} for a buffer"
                f" (or send `values`); got {_show(dtype)}",
                id=id,
            )
        if not (_is_count(off) and _is_count(nbytes)):
            raise BadMessage(
                f"column {name!r}: `offset` and `nbytes` must be integers >= 0; got "
                f"{_show(off)} and {_show(nbytes)}",
                id=id,
            )
        npdtype = np.dtype(NUMERIC_DTYPES[dtype])
        if nbytes != rows * npdtype.itemsize:
            raise BadMessage(
                f"column {name!r}: {rows} rows of {dtype} need {rows * npdtype.itemsize} bytes;"
                f" `nbytes` says {nbytes}",
                id=id,
            )
        if off % _ALIGN:
            raise BadMessage(
                f"column {name!r}: `offset` {off} is not 8-byte aligned (a multiple of 8)", id=id
            )
        if off + nbytes > len(area):
            raise BadMessage(
                f"column {name!r}: bytes {off}..{off + nbytes} lie past the end of the "
                f"{len(area)}-byte buffer area",
                id=id,
            )
        cols[name] = np.frombuffer(area, dtype=npdtype, count=rows, offset=off)
        dtypes[name] = dtype
    return Batch(cols, dtypes)


# --------------------------------------------------------------------------- client messages


def decode_client(
    frame: str | bytes | bytearray | memoryview, limits: Limits | None = None
) -> ClientMessage:
    """Parse one frame a client sent. Raises :class:`ProtocolError` with a wire code.

    ``limits`` bounds what a frame may cost before anything is converted: the size of its
    JSON (``max_json_size``), and a publish's columns (``max_columns``) and cells
    (``max_cells``); a publish's ``object`` values are checked (:func:`check_cells`) so
    that whatever is accepted can be sent to every viewer.
    """
    lim = limits or _LIMITS
    if isinstance(frame, (bytes, bytearray, memoryview)):
        header, area = _split_frame(frame, lim.max_json_size)
        id = _get_id(header)
        if header.get("type") != "publish":
            raise BadMessage(
                f"a binary frame from a client must be a `publish`; its header says type "
                f"{_show(header.get('type'))}; send other messages as JSON text frames",
                id=id,
            )
        stream = validate_stream_name(header.get("stream"), id=id)
        publisher, seq = _publisher_seq(header, id)
        try:
            descr, rows = header.get("columns"), header.get("rows")
            if isinstance(descr, list) and _is_count(rows):
                check_publish_size(f"a publish to {stream!r}", len(descr), rows * len(descr), lim)
            batch = check_cells(_read_batch(header, area, None), max_depth=lim.max_depth)
        except ProtocolError as exc:
            exc.id = id
            raise
        return Publish(stream, batch, id, publisher, seq)
    if len(frame) > lim.max_json_size:
        raise TooLarge(
            f"a JSON text frame of {len(frame)} bytes is over the server's max_json_size of "
            f"{lim.max_json_size} bytes; send large publishes as binary frames (see "
            "docs/protocol.md, Binary frames) or split them into smaller messages"
        )
    obj = _parse_json_object(frame, "a text frame")
    id = _get_id(obj)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise BadMessage(
            f"a message needs a string `type` (one of {', '.join(CLIENT_TYPES)}); "
            f"got {_show(kind)}",
            id=id,
        )
    if kind == "ping":
        return Ping(id)
    if kind == "list":
        return ListStreams(id)
    if kind not in CLIENT_TYPES:
        raise BadMessage(
            f"unknown message type {_show(kind)}; expected one of {', '.join(CLIENT_TYPES)}",
            id=id,
        )
    if "stream" not in obj:
        raise BadMessage(f"`{kind}` needs a `stream` field naming the stream", id=id)
    stream = validate_stream_name(obj["stream"], id=id)
    if kind == "subscribe":
        since = _opt_int(obj, "since", id)
        last = _opt_int(obj, "last", id)
        credit = _opt_int(obj, "credit", id, minimum=1)
        epoch = obj.get("epoch")
        if epoch is not None and not isinstance(epoch, str):
            raise BadMessage(f"`epoch` must be a string; got {_show(epoch)}", id=id)
        if since is not None and last is not None:
            raise BadMessage("give `since` (resume) or `last` (newest rows), not both", id=id)
        columns = obj.get("columns")
        if columns is not None:
            if (
                not isinstance(columns, list)
                or not columns
                or not all(isinstance(c, str) for c in columns)
            ):
                # An empty list would select nothing: every data frame would be empty.
                raise BadMessage(
                    "`columns` must be a non-empty list of column names (leave it out for "
                    f"every column); got {_show(columns)}",
                    id=id,
                )
            columns = tuple(columns)
        fmt = obj.get("format", "binary")
        if fmt not in ("binary", "json"):
            raise BadMessage(f'`format` must be "binary" or "json"; got {_show(fmt)}', id=id)
        return Subscribe(stream, id, since, epoch, last, columns, credit, fmt)
    if kind == "unsubscribe":
        return Unsubscribe(stream, id)
    if kind == "control":
        action = obj.get("action")
        if not isinstance(action, str) or not action:
            raise BadMessage(
                f"`control` needs an `action` string (pause, resume, set, or a declared "
                f"action); got {_show(action)}",
                id=id,
            )
        params = obj.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise BadMessage(f"`params` must be an object; got {_show(params)}", id=id)
        return Control(stream, action, params, id)
    if kind == "view":
        return _decode_view(obj, stream, id)
    if kind == "credit":
        frames = obj.get("frames")
        if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
            raise BadMessage(f"`frames` must be an integer >= 1; got {_show(frames)}", id=id)
        return Credit(stream, frames, id)
    # publish
    publisher, seq = _publisher_seq(obj, id)
    columns = obj.get("columns")
    if not isinstance(columns, dict) or not columns:
        raise BadMessage(
            "`publish` needs `columns`: an object of {column: [values, ...]}; got "
            f"{_show(columns)}",
            id=id,
        )
    try:
        cells = sum(len(v) if isinstance(v, list) else 1 for v in columns.values())
        check_publish_size(f"a publish to {stream!r}", len(columns), cells, lim)
        batch = check_cells(from_json_columns(columns), max_depth=lim.max_depth)
    except ProtocolError as exc:
        exc.id = id
        raise
    return Publish(stream, batch, id, publisher, seq)


def _names(
    obj: dict[str, Any], key: str, id: Id, most: int, needed: bool
) -> tuple[str, ...] | None:
    value = obj.get(key)
    if value is None and not needed:
        return None
    if (
        not isinstance(value, list)
        or not value
        or len(value) > most
        or not all(isinstance(c, str) for c in value)
    ):
        raise BadMessage(
            f"`{key}` must be a list of 1 to {most} column names; got {_show(value)}", id=id
        )
    return tuple(value)


def _decode_view(obj: dict[str, Any], stream: str, id: Id) -> ViewRequest:
    width = obj.get("width")
    if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= MAX_VIEW_WIDTH:
        raise BadMessage(
            f"`view` needs `width`, the plot's width in pixels, a whole number from 1 to "
            f"{MAX_VIEW_WIDTH}; got {_show(width)}",
            id=id,
        )
    columns = _names(obj, "columns", id, MAX_VIEW_COLUMNS, True)
    assert columns is not None
    read = _names(obj, "read", id, 1000, False)
    x = obj.get("x")
    if x is not None and not isinstance(x, str):
        raise BadMessage(
            f"`x` must be the name of the x column, or null for the row offset; got {_show(x)}",
            id=id,
        )
    span = obj.get("range")
    x_range: tuple[float, float] | None = None
    if span is not None:
        if (
            not isinstance(span, list)
            or len(span) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in span)
            or not all(math.isfinite(v) for v in span)
            or span[1] < span[0]
        ):
            raise BadMessage(
                "`range` must be [low, high], two finite numbers with low <= high (x values, "
                f"or offsets when `x` is null), or null for the whole history; got {_show(span)}",
                id=id,
            )
        x_range = (float(span[0]), float(span[1]))
    key = obj.get("key")
    if key is not None and (not isinstance(key, str) or len(key) > 256):
        raise BadMessage(f"`key` must be text of at most 256 characters; got {_show(key)}", id=id)
    fmt = obj.get("format", "binary")
    if fmt not in ("binary", "json"):
        raise BadMessage(f'`format` must be "binary" or "json"; got {_show(fmt)}', id=id)
    return ViewRequest(stream, id, width, columns, x, x_range, read, key, fmt)


def encode_view_reply(reply: ViewReply, binary: bool = True) -> str | bytes:
    """A ``view`` answer: a binary frame (or JSON text) whose columns are the rows'
    columns plus their offsets, in the column the header's ``offsets_column`` names."""
    head: dict[str, Any] = {"type": "view", "stream": reply.stream}
    if reply.id is not None:
        head["id"] = reply.id
    if reply.key is not None:
        head["key"] = reply.key
    if reply.cancelled or reply.batch is None:
        head["cancelled"] = True
        return _dumps(head)
    batch = reply.batch
    name = VIEW_OFFSETS
    while name in batch.columns:
        name = "@" + name
    head.update(
        epoch=reply.epoch,
        first=reply.first,
        stop=reply.stop,
        end=reply.end,
        exact=reply.exact,
        buckets=reply.buckets,
        offsets_column=name,
    )
    cols = {**batch.columns, name: np.asarray(reply.offsets, dtype="<i8")}
    out = Batch(cols, {**batch.dtypes, name: "int64"})
    if binary:
        return encode_batch_frame(head, out)
    return _dumps({**head, "rows": out.rows, "columns": out.to_json_columns()})


def _view_reply(header: dict[str, Any], batch: Batch) -> ViewReply:
    name = header["offsets_column"]
    if name not in batch.columns:
        raise BadMessage(f"view reply without its offsets column {_show(name)}")
    offsets = np.asarray(batch.columns[name], dtype=np.int64)
    rest = {k: v for k, v in batch.columns.items() if k != name}
    rows = Batch(rest, {k: batch.dtypes[k] for k in rest})
    rows.offset = int(offsets[0]) if len(offsets) else header["first"]
    return ViewReply(
        header["stream"],
        header.get("id"),
        header.get("key"),
        header["epoch"],
        header["first"],
        header["stop"],
        header["end"],
        bool(header["exact"]),
        header["buckets"],
        offsets,
        rows,
    )


def check_publish_size(what: str, columns: int, cells: int, limits: Limits) -> None:
    """Refuse (``TooLarge``) a publish of more columns or cells than ``limits`` allow,
    before anything is converted; ``what`` names it in the message ("a publish to 'x'",
    "the body")."""
    if columns > limits.max_columns:
        raise TooLarge(
            f"{what} has {columns} columns, over the server's max_columns of "
            f"{limits.max_columns}; send fewer columns, or split them over streams"
        )
    if cells > limits.max_cells:
        raise TooLarge(
            f"{what} makes {cells} cells (rows x columns), over the server's max_cells of "
            f"{limits.max_cells}; split it into smaller batches"
        )


def encode_client(msg: ClientMessage, *, binary: bool = True) -> str | bytes:
    """Encode a client message; a ``Publish`` travels as a binary frame unless ``binary=False``."""
    if isinstance(msg, Publish):
        head: dict[str, Any] = {"type": "publish", "stream": msg.stream}
        if msg.id is not None:
            head["id"] = msg.id
        if msg.publisher is not None:
            head["publisher"] = msg.publisher
            head["seq"] = msg.seq
        if binary:
            return encode_batch_frame(head, msg.batch)
        head["columns"] = msg.batch.to_json_columns()
        return _dumps(head)
    obj: dict[str, Any]
    if isinstance(msg, Subscribe):
        obj = {"type": "subscribe", "stream": msg.stream}
        for key in ("since", "epoch", "last", "credit"):
            if getattr(msg, key) is not None:
                obj[key] = getattr(msg, key)
        if msg.columns is not None:
            obj["columns"] = list(msg.columns)
        if msg.format != "binary":
            obj["format"] = msg.format
    elif isinstance(msg, Unsubscribe):
        obj = {"type": "unsubscribe", "stream": msg.stream}
    elif isinstance(msg, Control):
        obj = {"type": "control", "stream": msg.stream, "action": msg.action, "params": msg.params}
    elif isinstance(msg, ListStreams):
        obj = {"type": "list"}
    elif isinstance(msg, Credit):
        obj = {"type": "credit", "stream": msg.stream, "frames": msg.frames}
    elif isinstance(msg, Ping):
        obj = {"type": "ping"}
    elif isinstance(msg, ViewRequest):
        obj = {"type": "view", "stream": msg.stream, "width": msg.width}
        obj["columns"] = list(msg.columns)
        obj["x"] = msg.x
        obj["range"] = None if msg.range is None else list(msg.range)
        if msg.read is not None:
            obj["read"] = list(msg.read)
        if msg.key is not None:
            obj["key"] = msg.key
        if msg.format != "binary":
            obj["format"] = msg.format
    else:  # pragma: no cover - exhaustive
        raise TypeError(f"not a client message: {msg!r}")
    if msg.id is not None:
        obj["id"] = msg.id
    return _dumps(obj)


# --------------------------------------------------------------------------- server messages


def encode_server(msg: ServerMessage, *, binary: bool = True) -> str | bytes:
    """Encode a server message; ``Data`` travels as a binary frame unless ``binary=False``."""
    if isinstance(msg, Data):
        head = {"type": "data", "stream": msg.stream, "offset": msg.offset}
        if binary:
            return encode_batch_frame(head, msg.batch)
        return _dumps({**head, "rows": msg.batch.rows, "columns": msg.batch.to_json_columns()})
    obj: dict[str, Any]
    if isinstance(msg, Welcome):
        obj = {
            "type": "welcome",
            "protocol": msg.protocol,
            "server": msg.server,
            "session": msg.session,
            "roles": list(msg.roles),
        }
    elif isinstance(msg, Subscribed):
        obj = {
            "type": "subscribed",
            "stream": msg.stream,
            "epoch": msg.epoch,
            "schema": msg.schema,
            "controls": msg.controls,
            "state": msg.state,
            "offset": msg.offset,
        }
    elif isinstance(msg, Unsubscribed):
        obj = {"type": "unsubscribed", "stream": msg.stream}
    elif isinstance(msg, Ack):
        obj = {"type": "ack", "ok": msg.ok}
        for key in ("state", "offset", "rows", "duplicate"):
            if getattr(msg, key) is not None:
                obj[key] = getattr(msg, key)
    elif isinstance(msg, Streams):
        obj = {"type": "streams", "streams": msg.streams}
    elif isinstance(msg, Reset):
        obj = {
            "type": "reset",
            "stream": msg.stream,
            "epoch": msg.epoch,
            "offset": msg.offset,
            "reason": msg.reason,
        }
    elif isinstance(msg, StateChanged):
        obj = {"type": "state", "stream": msg.stream, "state": msg.state}
    elif isinstance(msg, Error):
        obj = {"type": "error", "code": msg.code, "message": msg.message}
    elif isinstance(msg, Pong):
        obj = {"type": "pong"}
    elif isinstance(msg, ViewReply):
        return encode_view_reply(msg, binary)
    else:  # pragma: no cover - exhaustive
        raise TypeError(f"not a server message: {msg!r}")
    msg_id = getattr(msg, "id", None)
    if msg_id is not None:
        obj["id"] = msg_id
    return _dumps(obj)


def encode_stream_info(info: dict[str, Any]) -> str:
    """One entry of a ``streams`` reply, as JSON text (see :func:`encode_streams_reply`)."""
    return _dumps(info)


def encode_streams_reply(entries: list[str], id: Id = None) -> str:
    """A ``streams`` reply from entries encoded one by one with :func:`encode_stream_info`:
    the same text as ``encode_server(Streams(...))``, but a server can encode a long list a
    slice at a time instead of in one call that holds the loop."""
    tail = "" if id is None else ',"id":' + json.dumps(id)
    return '{"type":"streams","streams":[' + ",".join(entries) + "]" + tail + "}"


def decode_server(
    frame: str | bytes | bytearray | memoryview, schema: dict[str, str] | None = None
) -> ServerMessage:
    """Parse one frame the server sent (used by the Python client and the tests).

    ``schema`` types the columns of JSON ``data`` frames (JSON alone cannot tell int64 from
    float64 when every value is whole).
    """
    if isinstance(frame, (bytes, bytearray, memoryview)):
        header, batch = decode_batch_frame(frame, schema)
        if header.get("type") == "view":
            try:
                return _view_reply(header, batch)
            except KeyError as exc:
                raise BadMessage(f"view reply lacks field {exc.args[0]!r}") from None
        if header.get("type") != "data":
            raise BadMessage(f"binary frame of type {_show(header.get('type'))}; expected data")
        offset = header.get("offset")
        if not isinstance(offset, int):
            raise BadMessage("data frame without an integer `offset`")
        batch.offset = offset
        return Data(str(header.get("stream")), offset, batch)
    obj = _parse_json_object(frame, "a server frame")
    kind = obj.get("type")
    id = obj.get("id")
    try:
        if kind == "data":
            batch = from_json_columns(obj["columns"], schema)
            batch.offset = obj["offset"]
            return Data(obj["stream"], obj["offset"], batch)
        if kind == "welcome":
            return Welcome(
                obj["session"], tuple(obj["roles"]), obj.get("server", ""), obj["protocol"]
            )
        if kind == "subscribed":
            return Subscribed(
                obj["stream"],
                obj["epoch"],
                obj["schema"],
                obj.get("controls", {}),
                obj.get("state", {}),
                obj["offset"],
                id,
            )
        if kind == "unsubscribed":
            return Unsubscribed(obj["stream"], id)
        if kind == "ack":
            return Ack(
                id,
                obj.get("ok", True),
                obj.get("state"),
                obj.get("offset"),
                obj.get("rows"),
                obj.get("duplicate"),
            )
        if kind == "streams":
            return Streams(obj["streams"], id)
        if kind == "reset":
            return Reset(obj["stream"], obj["epoch"], obj["offset"], obj["reason"])
        if kind == "state":
            return StateChanged(obj["stream"], obj["state"])
        if kind == "error":
            return Error(obj["code"], obj["message"], id)
        if kind == "pong":
            return Pong(id)
        if kind == "view":
            if obj.get("cancelled"):
                return ViewReply(obj["stream"], id, obj.get("key"), cancelled=True)
            return _view_reply(obj, from_json_columns(obj["columns"], schema))
    except KeyError as exc:
        raise BadMessage(f"server message {kind!r} lacks field {exc.args[0]!r}") from None
    raise BadMessage(f"unknown server message type {_show(kind)}")
