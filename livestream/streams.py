"""A stream: its schema, its history ring numbered by row offset, its epoch, state and controls.

Rows get consecutive offsets from 0. The history keeps the newest ``history`` rows (and, with
``max_age``, only rows younger than that many seconds); ``start`` is the offset of the oldest
row kept and ``end`` the offset the next row will get. ``append`` may be called from any
thread: it validates and copies the batch into the ring under a short lock and then tells the
hub, which never blocks the caller.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, overload

import numpy as np

from .columns import MAX_DEPTH, NUMERIC_DTYPES, Batch, check_cells, conform, to_batch
from .controls import Action, ControlSet, Param
from .errors import ConfigError, RateLimited, TooLarge
from .limits import Limits

if TYPE_CHECKING:
    import asyncio

    from .producer import Producer

__all__ = ["DEFAULT_HISTORY", "History", "Stream", "StreamHost"]

log = logging.getLogger("livestream.stream")

#: Calls of a stream's actions that may wait or run at once; beyond, ``rate_limited``.
MAX_PENDING_ACTIONS = 8


class StreamHost(Protocol):
    """What a stream needs from where it lives (the hub of a server): the loop its async
    producer and async actions run on, and the server, for widgets to find it. The stream
    holds this handle, never the server's internals."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The server's event loop while it runs, else None."""

    @property
    def server(self) -> Any:
        """The server, for widgets (its ``base_url`` and ``token``)."""

    def turn(self, stream: Stream) -> Awaitable[Any] | None:
        """Taken by a producer on the loop after each step: None unless a viewer lags,
        else something to await, done when a frame was written (bounded): writes and
        producer take turns."""


DEFAULT_HISTORY = 100_000
_ROW_BYTES = {"float64": 8, "int64": 8, "float32": 4, "int32": 4, "uint8": 1, "bool": 1}


#: Copies up to this many bytes into the ring hold the GIL (see :func:`_copy`).
_HOLD_GIL_BYTES = 4 << 20
#: numpy lets go of the GIL only for copies of more values than this (its
#: ``NPY_BEGIN_THREADS_THRESHOLDED``): a smaller copy is numpy's, quickest as it is.
_NUMPY_HOLDS_GIL = 500


def _copy(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[:] = src``. numpy lets go of the GIL for a copy of more than 500 items, and a
    producer thread then has to take it back from the server's loop, which holds it for
    up to a switch interval (5 ms) when busy: a copy of microseconds costing milliseconds.
    A plain memory copy through ``memoryview`` keeps the GIL; above a few MiB numpy's
    release pays, and is kept."""
    if src.size <= _NUMPY_HOLDS_GIL:
        dst[...] = src
    elif (
        src.dtype == dst.dtype
        and dst.dtype.kind != "O"
        and src.nbytes <= _HOLD_GIL_BYTES
        and src.flags.c_contiguous
        and dst.flags.c_contiguous
    ):
        memoryview(dst).cast("B")[:] = memoryview(src).cast("B")  # type: ignore[arg-type]
    else:
        dst[...] = src


_INT64_MIN, _INT64_END = -(2**63), 2**63
_EXACT_FLOAT = 2**53
_MISSING = object()


def _scalar_row(data: dict[str, Any], schema: dict[str, str]) -> list[Any] | None:
    """The values of a one-row dict in schema order when each is a plain Python value of
    its column's type (a float or a small int for float64, an int for int64, text for str,
    a bool for bool), else None: then the general path checks, converts and says what is
    wrong. Saves a single-row append from building a batch of one-element arrays."""
    if len(data) != len(schema):
        return None
    row = []
    for name, want in schema.items():
        value = data.get(name, _MISSING)
        kind = type(value)
        if (
            (
                want == "float64"
                and (kind is float or (kind is int and -_EXACT_FLOAT <= value <= _EXACT_FLOAT))
            )
            or (want == "int64" and kind is int and _INT64_MIN <= value < _INT64_END)
            or (want == "str" and kind is str)
            or (want == "bool" and kind is bool)
        ):
            row.append(value)
        else:
            return None
    return row


class History:
    """A ring of column arrays holding the newest ``capacity`` rows, addressed by offset.

    The ring starts small and doubles as rows arrive, up to ``capacity``: a stream that
    never fills its history (or one a publisher created by mistake) costs little memory.
    """

    INITIAL_ROWS = 1024

    def __init__(self, schema: dict[str, str], capacity: int, max_age: float | None = None) -> None:
        if capacity < 1:
            raise ConfigError(f"history must keep at least 1 row; got {capacity}")
        self.schema = dict(schema)
        #: Bytes a row takes on the wire, about (text and objects counted as 16).
        self.row_bytes = sum(_ROW_BYTES.get(d, 16) for d in self.schema.values()) or 8
        self.capacity = capacity
        self.max_age = max_age
        self.start = 0
        self.end = 0
        size = min(capacity, self.INITIAL_ROWS)
        # (size, columns), replaced as a whole when the ring grows, so that a reader that
        # takes no lock never pairs one ring's size with another's arrays.
        self._ring: tuple[int, dict[str, np.ndarray]] = (size, self._allocate(size))
        self._bytes = self._byte_views(self._ring[1])
        self._stamps = np.zeros(size, dtype="<f8") if max_age is not None else None
        #: Every column numeric: a dict of arrays of the ring's dtypes can go in as it is.
        self._plain = all(d in NUMERIC_DTYPES for d in self.schema.values())

    def plain_rows(self, data: dict[str, Any]) -> int:
        """Rows of ``data`` when it can go into the ring as it is, else 0.

        As it is means: exactly the schema's columns, each a 1-D numpy array of its ring
        column's dtype (which is its wire dtype), all numeric and of one length. That is
        what :func:`to_batch` and :func:`conform` would pass unchanged and
        :func:`check_cells` has nothing to check in; anything else (and an empty batch)
        takes the general path, which converts, checks and says what is wrong."""
        cols = self._ring[1]
        if not self._plain or len(data) != len(cols):
            return 0
        n = -1
        for name, ring in cols.items():
            a = data.get(name)
            if type(a) is not np.ndarray or a.ndim != 1 or a.dtype != ring.dtype:
                return 0
            if n < 0:
                n = len(a)
            elif len(a) != n:
                return 0
        return max(n, 0)

    @staticmethod
    def _byte_views(cols: dict[str, np.ndarray]) -> dict[str, memoryview]:
        """The writer's byte views of the numeric ring arrays, made once per ring."""
        return {
            n: memoryview(a).cast("B")  # type: ignore[arg-type]
            for n, a in cols.items()
            if a.dtype.kind != "O"
        }

    def _allocate(self, size: int) -> dict[str, np.ndarray]:
        return {
            name: np.empty(size, dtype=NUMERIC_DTYPES.get(dtype, object))
            for name, dtype in self.schema.items()
        }

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def allocated_rows(self) -> int:
        """Rows the ring has room for now (it grows on demand up to ``capacity``)."""
        return self._ring[0]

    @property
    def nbytes(self) -> int:
        """Bytes the ring's numeric arrays take (object columns count their pointers)."""
        return sum(a.nbytes for a in self._ring[1].values())

    @staticmethod
    def _put(ring: np.ndarray, pos: int, src: np.ndarray | float, count: int) -> None:
        """Write ``count`` values at ring position ``pos``, wrapping at the end."""
        head = min(count, len(ring) - pos)
        if isinstance(src, np.ndarray):
            _copy(ring[pos : pos + head], src[:head])
            if count > head:
                _copy(ring[: count - head], src[head:count])
        else:
            ring[pos : pos + head] = src
            if count > head:
                ring[: count - head] = src

    def _grow(self, rows: int) -> None:
        """Make room for ``rows`` rows (at most ``capacity``), keeping what is stored."""
        want = min(self.capacity, rows)
        old_size = self._ring[0]
        if want <= old_size:
            return
        size = min(self.capacity, max(want, old_size * 2))
        kept = self.read(self.start)
        stamps = None
        if self._stamps is not None:
            old = self._stamps
            stamps = np.array([old[o % old_size] for o in range(self.start, self.end)], dtype="<f8")
        cols = self._allocate(size)
        pos = self.start % size
        for name, ring in cols.items():
            self._put(ring, pos, kept.columns[name], kept.rows)
        if stamps is not None:
            self._stamps = np.zeros(size, dtype="<f8")
            self._put(self._stamps, pos, stamps, len(stamps))
        self._bytes = self._byte_views(cols)
        self._ring = (size, cols)  # filled first: a reader sees the old ring or this one

    def append(self, batch: Batch, now: float) -> int:
        """Store a conformed batch; returns the offset of its first row (see
        :meth:`append_columns`)."""
        return self.append_columns(batch.columns, batch.rows, now)

    def append_columns(self, columns: dict[str, np.ndarray], n: int, now: float) -> int:
        """Store ``n`` rows of columns already of the ring's dtypes (a conformed batch's, or
        ones :meth:`plain_rows` passed); returns the offset of the first row.

        One writer at a time (the stream's lock), any number of readers without a lock:
        ``start`` moves past the rows about to be overwritten *before* their slots are
        written, and ``end`` moves only once the new rows are in. A reader that copied rows
        from ``since`` and then still sees ``start <= since`` copied rows nobody touched
        (see :meth:`Stream.read`).
        """
        first = self.end
        if first - self.start + n > self._ring[0]:
            self._grow(first - self.start + n)
        size, cols = self._ring
        skip = max(0, n - size)  # only the newest `size` rows can stay
        pos = (first + skip) % size
        count = n - skip
        self.start = max(self.start, first + n - size)
        head = min(count, size - pos)
        views = self._bytes
        for name, ring in cols.items():
            src = columns[name]
            if skip:
                src = src[skip:]
            view = views.get(name)
            item = ring.itemsize
            if view is not None and count * item <= _HOLD_GIL_BYTES and src.dtype == ring.dtype:
                # A plain memory copy into the ring's bytes keeps the GIL (see _copy).
                try:
                    data = memoryview(src).cast("B")  # type: ignore[arg-type]
                except TypeError:  # not contiguous
                    self._put(ring, pos, src, count)
                    continue
                if head == count and len(data) == count * item:
                    view[pos * item : (pos + count) * item] = data  # no slice to make
                    continue
                view[pos * item : (pos + head) * item] = data[: head * item]
                if count > head:
                    view[: (count - head) * item] = data[head * item : count * item]
            else:
                self._put(ring, pos, src, count)
        if self._stamps is not None:
            self._put(self._stamps, pos, now, count)
        self.end = first + n
        return first

    def append_row(self, row: list[Any], now: float) -> int:
        """Store one row (values in schema order, each already of its column's type);
        the offset it gets. The same order of writes as :meth:`append`."""
        first = self.end
        if first - self.start + 1 > self._ring[0]:
            self._grow(first - self.start + 1)
        size, cols = self._ring
        pos = first % size
        self.start = max(self.start, first + 1 - size)
        for ring, value in zip(cols.values(), row, strict=True):
            ring[pos] = value
        if self._stamps is not None:
            self._stamps[pos] = now
        self.end = first + 1
        return first

    def trim(self, now: float) -> None:
        """Drop rows older than ``max_age`` seconds."""
        if self._stamps is None or self.max_age is None:
            return
        cutoff = now - self.max_age
        size = self._ring[0]
        if self.start < self.end and self._stamps[self.start % size] < cutoff:
            # Rows are stored in time order, so binary search the first one to keep.
            lo, hi = self.start, self.end
            while lo < hi:
                mid = (lo + hi) // 2
                if self._stamps[mid % size] < cutoff:
                    lo = mid + 1
                else:
                    hi = mid
            self.start = lo

    def read(
        self,
        since: int,
        stop: int | None = None,
        columns: tuple[str, ...] | None = None,
        *,
        copy: bool = True,
    ) -> Batch:
        """Rows ``since:stop`` (clipped to what is kept) as a batch: copies, or with
        ``copy=False`` views into the ring where the rows lie in one piece (they stay valid
        only while nothing overwrites them: check ``start`` after use)."""
        since = max(since, self.start)
        end = self.end
        stop = end if stop is None else min(stop, end)
        size, cols = self._ring
        names = columns if columns is not None else tuple(cols)
        n = max(0, stop - since)
        pos = since % size
        head = min(n, size - pos)
        out: dict[str, np.ndarray] = {}
        for name in names:
            ring = cols[name]
            if head == n:
                view = ring[pos : pos + n]
                out[name] = view.copy() if copy else view
            else:
                out[name] = np.concatenate([ring[pos:], ring[: n - head]])
        return Batch(out, self.schema, offset=since)


class Stream:
    """A named stream of rows. Create one with ``livestream.stream(name)`` or ``Server.stream``.

    ``append(data)`` adds rows from any thread; ``producer(...)`` decorates a function that
    produces them. ``schema`` is declared (``{"time": "float64", ...}``) or inferred from the
    first batch; later batches must match it.
    """

    def __init__(
        self,
        name: str,
        *,
        schema: dict[str, str] | None = None,
        history: int = DEFAULT_HISTORY,
        max_age: float | None = None,
        overflow: str = "skip",
        params: dict[str, Param] | None = None,
        actions: dict[str, Action] | None = None,
        host: StreamHost | None = None,
    ) -> None:
        self.name = name
        self.epoch = uuid.uuid4().hex[:12]
        if overflow not in ("skip", "wait"):
            raise ConfigError(
                f'overflow must be "skip" (slow viewers get reset; for live views) or "wait" '
                f"(append waits for the slowest viewer; for backfills and replays); got {overflow!r}"
            )
        self.history_rows = history
        self.max_age = max_age
        #: "skip": append never waits, a viewer that falls out of history is reset.
        #: "wait": append from a thread waits (at most ``wait_timeout``) for room.
        self.overflow = overflow
        self.wait_timeout = Limits.write_timeout
        #: Set by the hub: the lowest cursor among the viewers that read (None: no viewer).
        self.slowest_cursor: Callable[[], int | None] | None = None
        self._control_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._room = threading.Condition(threading.Lock())
        self._room_waiters = 0
        #: Where the stream lives: the hub of a server (its loop, its server), or None.
        self.host = host
        self.controls = ControlSet(dict(params or {}), dict(actions or {}))
        self._lock = threading.Lock()
        self._overview: Any = None  # views.Overview, made by overview()
        self._action_lock = threading.Lock()  # guards the three below
        self._action_queue: deque[Callable[[], None]] = deque()
        self._action_worker: threading.Thread | None = None
        self._actions_pending = 0
        self._history: History | None = None
        self._status = "idle"
        self._paused = False
        self._error: str | None = None
        self._producer: Producer | None = None
        self._rate: deque[tuple[float, int]] = deque(maxlen=40)
        #: Bounds on what may be appended (set from the server's Limits by the hub).
        self.max_depth = MAX_DEPTH
        self.max_columns = Limits.max_columns
        self.created = time.time()
        # Set by the hub: called (from any thread) after rows were added / state changed.
        self.on_append: Callable[[Stream], None] | None = None
        self.on_state: Callable[[Stream], None] | None = None
        #: Set by a backplane that numbers rows elsewhere (livestream.backplanes.redis):
        #: ``append`` hands it the checked batch instead of storing it, and returns what it
        #: returns; the backplane stores the numbered rows back with :meth:`append_at`.
        self.sink: Callable[[Stream, Batch], int] | None = None
        if schema is not None:
            bad = {n: d for n, d in schema.items() if d not in (*NUMERIC_DTYPES, "str", "object")}
            if bad:
                raise ConfigError(
                    f"schema has unknown dtypes {bad}; use one of float64, float32, "
                    "int32, int64, uint8, bool, str, object"
                )
            self._history = History(schema, history, max_age)

    def __repr__(self) -> str:
        return f"<Stream {self.name!r} rows={self.rows} offset={self.end} status={self._status}>"

    # ------------------------------------------------------------------ data

    @property
    def schema(self) -> dict[str, str]:
        """{column: dtype}, empty until the first batch when not declared."""
        h = self._history
        return dict(h.schema) if h is not None else {}

    @property
    def row_bytes(self) -> int:
        """About how many bytes a row takes on the wire (8 before the schema is known)."""
        h = self._history
        return h.row_bytes if h is not None else 8

    @property
    def start(self) -> int:
        """Offset of the oldest row kept."""
        return self.window()[0]  # trims by max_age first

    @property
    def end(self) -> int:
        """Offset the next appended row will get (= rows appended so far)."""
        h = self._history
        return h.end if h is not None else 0

    @property
    def rows(self) -> int:
        """Rows currently kept in history."""
        start, end = self.window()  # trims by max_age first
        return end - start

    def append(self, data: Any) -> int:
        """Append rows (a dict of columns or of one row's values, a list of row dicts, numpy
        arrays or a pandas DataFrame). Returns the offset of the first appended row.

        Safe from any thread; never waits for viewers. Raises
        :class:`~livestream.errors.SchemaMismatch` naming the column when the batch does
        not match the stream's schema.
        """
        h = self._history
        if type(data) is dict and h is not None and self.sink is None and self.overflow != "wait":
            # Two shapes go straight into the ring: one row of plain Python values, each of
            # its column's type, and numeric arrays of the ring's dtypes.
            row = _scalar_row(data, h.schema)
            n = 0 if row is not None else h.plain_rows(data)
            if row is not None or n:
                first = self._store(h, row, data, n)
                if first >= 0:
                    return first
        batch = check_cells(to_batch(data), max_depth=self.max_depth, stream=self.name)
        if batch.rows == 0:
            return self.end
        if len(batch.columns) > self.max_columns:
            raise TooLarge(
                f"a batch of {len(batch.columns)} columns is over the limit of "
                f"{self.max_columns} columns a stream may have; split it over streams"
            )
        if self.overflow == "wait":
            self.wait_for_room(batch.rows)
        sink = self.sink
        if sink is not None:
            h = self._history
            return sink(self, batch if h is None else conform(batch, h.schema, self.name))
        now = time.monotonic()
        with self._lock:
            h = self._history
            if h is None:
                h = History(batch.schema, self.history_rows, self.max_age)
                self._history = h
            else:
                batch = conform(batch, h.schema, self.name)
            first = h.append(batch, now)
            self._kept(h, now)
        self._tell()
        return first

    def _store(self, h: History, row: list[Any] | None, data: dict[str, Any], n: int) -> int:
        """Store ``row`` (one row's values) or ``n`` rows of ``data`` (arrays that
        :meth:`History.plain_rows` passed) into ``h``; -1 when the stream restarted
        meanwhile (the caller then takes the general path)."""
        now = time.monotonic()
        with self._lock:
            if self._history is not h:
                return -1
            first = h.append_row(row, now) if row is not None else h.append_columns(data, n, now)
            self._kept(h, now)
        self._tell()
        return first

    def _kept(self, h: History, now: float) -> None:
        """After rows went into ``h`` (under the lock): age out, note the rate."""
        h.trim(now)
        if not self._rate or now - self._rate[-1][0] >= 0.25:
            self._rate.append((now, h.end))

    def _tell(self) -> None:
        """After an append (outside the lock): the hub schedules the fan-out."""
        callback = self.on_append
        if callback is not None:
            callback(self)

    def append_at(self, offset: int, batch: Batch) -> int:
        """Store a batch whose first row a backplane numbered ``offset`` (never through
        :attr:`sink`). Rows already held are skipped; a batch past ``end`` leaves the rows
        between out (the history restarts at ``offset``, and a viewer behind it gets
        ``reset``, reason ``gap``). Returns the new ``end``."""
        now = time.monotonic()
        with self._lock:
            h = self._history
            if h is None:
                h = History(batch.schema, self.history_rows, self.max_age)
                self._history = h
            else:
                batch = conform(batch, h.schema, self.name)
            if offset > h.end:
                h.start = h.end = offset
            elif offset < h.end:
                batch = batch.slice(min(h.end - offset, batch.rows), batch.rows)
            if batch.rows:
                h.append(batch, now)
            self._kept(h, now)
            end = h.end
        self._tell()
        return end

    # ------------------------------------------------------------------ waiting for room

    def _needs_room(self, rows: int) -> bool:
        h, slowest = self._history, self.slowest_cursor
        if h is None or slowest is None:
            return False
        cursor = slowest()
        return cursor is not None and cursor < h.end + rows - h.capacity

    def wait_for_room(self, rows: int, timeout: float | None = None) -> bool:
        """Wait until ``rows`` more rows fit without pushing the slowest viewer out of the
        history; False when ``timeout`` (default: the server's write timeout) ran out first
        (the append then goes ahead, and that viewer gets ``reset``).

        Returns at once on the server's own loop (an append there must not block the loop:
        an async producer awaits :meth:`wait_for_room_async` instead) and when no viewer is
        behind. Viewers that paused themselves with credit do not hold a producer up.
        """
        if not self._needs_room(rows) or self._on_server_loop():
            return True
        deadline = time.monotonic() + (self.wait_timeout if timeout is None else timeout)
        with self._room:
            self._room_waiters += 1
            try:
                while self._needs_room(rows):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    # Woken when a viewer's frame is sent; the bound only covers a wake lost
                    # to a viewer that went away.
                    self._room.wait(min(left, 0.1))
            finally:
                self._room_waiters -= 1
        return True

    async def wait_for_room_async(self, rows: int, timeout: float | None = None) -> bool:
        """:meth:`wait_for_room` for a coroutine on the server's loop: it awaits, so the
        loop goes on writing to the viewers it waits for."""
        import asyncio

        deadline = time.monotonic() + (self.wait_timeout if timeout is None else timeout)
        pause = 0.0005
        while self._needs_room(rows):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.01)
        return True

    def room_made(self) -> None:
        """Called by the hub when a viewer's cursor moved or a viewer left."""
        if self._room_waiters:
            with self._room:
                self._room.notify_all()

    def read(
        self, since: int, stop: int | None = None, columns: tuple[str, ...] | None = None
    ) -> Batch:
        """Copy rows from offset ``since`` (clipped to history) up to ``stop``.

        Takes no lock (unless the stream trims by age): a producer thread appending never
        makes a reader wait, nor the other way round. Should the writer overwrite the rows
        while they are copied, the read starts again from the new oldest row.
        """
        return self.read_rows(since, stop, columns, copy=True)

    def read_rows(
        self,
        since: int,
        stop: int | None = None,
        columns: tuple[str, ...] | None = None,
        *,
        copy: bool = True,
    ) -> Batch:
        """:meth:`read`, with ``copy=False`` returning views into the history where the
        rows lie in one piece: valid only until :meth:`intact` says otherwise (the hub
        encodes a frame straight from them, then checks)."""
        h = self._history
        if h is None:
            return Batch({}, {}, offset=0)
        if h.max_age is not None:
            with self._lock:  # trimming by age writes `start`: one writer at a time
                h.trim(time.monotonic())
                return h.read(since, stop, columns, copy=copy)
        while True:
            batch = h.read(since, stop, columns, copy=copy)
            first = batch.offset if batch.offset is not None else since
            if h.start <= first:
                return batch
            since = max(since, h.start)  # overwritten meanwhile: read what is kept now

    def intact(self, since: int) -> bool:
        """Whether rows from ``since`` on are still the ones appended (not overwritten)."""
        h = self._history
        return h is None or h.start <= since

    def window(self) -> tuple[int, int]:
        """(start, end): the offsets of the oldest row kept and of the next row. Takes no
        lock (unless the stream trims by age); rows in it may be overwritten by the time
        they are read, which :meth:`read` handles."""
        h = self._history
        if h is None:
            return 0, 0
        if h.max_age is not None:
            with self._lock:
                h.trim(time.monotonic())
                return h.start, h.end
        start = h.start
        return start, max(start, h.end)

    def tail(self, n: int) -> Batch:
        """The newest ``n`` rows."""
        start, end = self.window()
        return self.read(max(start, end - n))

    def to_pandas(self) -> Any:
        """The whole history window as a DataFrame indexed by offset."""
        start, _ = self.window()
        return self.read(start).to_pandas()

    def rate(self) -> float:
        """Rows per second appended over the last few seconds."""
        now = time.monotonic()
        with self._lock:
            samples = list(self._rate)
            end = self.end
        recent = [s for s in samples if now - s[0] <= 5.0]
        if not recent:
            return 0.0
        t0, e0 = recent[0]
        span = now - t0
        return (end - e0) / span if span > 0.2 else 0.0

    # ------------------------------------------------------------------ where it lives

    @property
    def server(self) -> Any:
        """The server that serves this stream (``None`` for a stream made on its own)."""
        return self.host.server if self.host is not None else None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop of the server this stream lives on, once that server runs."""
        return self.host.loop if self.host is not None else None

    @property
    def producer_of(self) -> Producer | None:
        """The producer feeding this stream, if any."""
        return self._producer

    def attach_producer(self, producer: Producer, *, fresh: bool = True) -> None:
        """Make ``producer`` this stream's one producer, stopping the one before it.

        ``fresh`` (a producer that starts now): the stream starts as declared, not paused
        and with no error left from before, which is what re-running a notebook's
        producer cell means.
        """
        if self._producer is not None and self._producer is not producer:
            self._producer.stop()
        self._producer = producer
        if fresh:
            self._paused = False
            self._error = None

    def loop_started(self) -> None:
        """The server's loop runs now: an async producer waiting for it starts."""
        if self._producer is not None:
            self._producer.loop_started()

    def stop_producer(self) -> None:
        """Stop the producer, without waiting for a running call (the server stops)."""
        if self._producer is not None:
            self._producer.stop(wait=False)

    # ------------------------------------------------------------------ state

    @property
    def status(self) -> str:
        """The producer status: ``idle``, ``running``, ``paused``, ``stopped`` or ``error``."""
        return self._status

    @property
    def state(self) -> dict[str, Any]:
        """The wire ``state``: status, paused, params, and error when in error."""
        out: dict[str, Any] = {
            "status": self._status,
            "paused": self._paused,
            "params": dict(self.controls.values),
        }
        if self._error is not None:
            out["error"] = self._error
        return out

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def params(self) -> dict[str, Any]:
        """Current parameter values."""
        return dict(self.controls.values)

    def set_status(self, status: str, error: str | None = None) -> None:
        """Change the producer status (``idle``, ``running``, ``paused``, ``stopped``, ``error``)."""
        self._status = status
        self._error = error if status == "error" else None
        self._notify_state()

    def _notify_state(self) -> None:
        callback = self.on_state
        if callback is not None:
            callback(self)

    def declare(
        self,
        params: dict[str, Param] | None = None,
        actions: dict[str, Action] | None = None,
        *,
        as_declared: bool = False,
    ) -> None:
        """Add parameter and action declarations (used by the producer decorator).

        Parameters declared again keep their current values, unless ``as_declared``: then
        they take their declared defaults (a producer defined anew starts as declared).
        """
        merged = ControlSet(
            {**self.controls.params, **(params or {})}, {**self.controls.actions, **(actions or {})}
        )
        fresh = set(params or {}) if as_declared else set()
        merged.values.update(
            {k: v for k, v in self.controls.values.items() if k in merged.values and k not in fresh}
        )
        self.controls = merged
        self._notify_state()

    def control(
        self, action: str, params: dict[str, Any] | None = None, *, by: str = "python"
    ) -> dict[str, Any]:
        """Apply a control (``pause``, ``resume``, ``set`` or a declared action); returns the
        new state. Raises ``InvalidParam`` / ``UnknownAction`` without changing anything.

        ``by`` says who sent it (a connection passes its roles, e.g. ``"view,control"``);
        every listener added with :meth:`on_control` hears of it, a recorder among them.
        """
        params = params or {}
        self.controls.check_action(action)
        if action == "set":
            values = self.controls.validate_set(params)
            self.controls.values.update(values)
        elif action == "pause":
            self._paused = True
            if self._status in ("running", "idle"):
                self._status = "paused"
        elif action == "resume":
            self._paused = False
            if self._status == "paused":
                self._status = "running" if self._producer is not None else "idle"
            producer = self._producer
            if producer is not None and self._status in ("error", "stopped"):
                producer.start()
        else:
            act = self.controls.actions[action]
            if act.callback is not None:
                done = self._run_action(action, act.callback)
                if not self._on_server_loop():
                    done.wait()  # a Python caller sees the action done, as with a call
        if self._producer is not None:
            self._producer.wake()
        self._notify_state()
        state = self.state
        if self._control_listeners:
            event = {
                "time": time.time() * 1000.0,
                "action": action,
                "params": dict(params),
                "by": by,
                "state": state,
            }
            for listener in list(self._control_listeners):
                try:
                    listener(event)
                except Exception:
                    log.exception("a control listener of stream %r failed", self.name)
        return state

    def record(self, path: Any, *, flush: float = 1.0) -> Any:
        """Record this stream into the folder ``path`` as a Parquet dataset (one file per
        ``flush`` seconds, zstd; control and state events beside the rows) until the
        returned :class:`~livestream.recording.Recording`'s ``stop()``. Runs on its own
        thread, reading the history by cursor: viewers are never slowed. Recording again
        into the same folder continues after the last row recorded. See docs/recording.md.
        """
        from .recording import record  # here: pyarrow loads only when recording

        return record(self, path, flush=flush)

    def overview(self) -> Any:
        """This stream's :class:`~livestream.views.Overview`: the per-block summaries that
        views of its history at a plot's width are chosen from, made on first use and
        shared by every viewer (see docs/protocol.md, "Views of long histories")."""
        found = self._overview
        if found is None:
            from .views import Overview

            with self._lock:
                found = self._overview
                if found is None:
                    found = self._overview = Overview(self)
        return found

    def on_control(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``listener(event)`` after every control applied to this stream, from the
        thread that applied it; ``event`` is ``{time (ms since the epoch), action, params,
        by, state}``. Returns a function that removes the listener. A listener must be
        quick (it runs on the server's loop for a viewer's control)."""
        self._control_listeners.append(listener)

        def remove() -> None:
            if listener in self._control_listeners:
                self._control_listeners.remove(listener)

        return remove

    def restart(self, epoch: str | None = None) -> str:
        """Start the stream over: a new epoch, an empty history (same schema), offsets
        from 0. Every viewer gets ``reset`` (reason ``restart``) and then the new rows; a
        replay seeking backwards does this. ``epoch`` is the new epoch when a backplane
        chose it (default: a fresh one). Returns the new epoch."""
        with self._lock:
            h = self._history
            self.epoch = epoch or uuid.uuid4().hex[:12]
            if h is not None:
                self._history = History(h.schema, self.history_rows, self.max_age)
            self._rate.clear()
        callback = self.on_append
        if callback is not None:
            callback(self)  # wakes the viewers, who see the new epoch
        return self.epoch

    def _on_server_loop(self) -> bool:
        import asyncio  # here: importing livestream (and its pure modules) loads no I/O

        loop = self.loop
        try:
            return loop is not None and asyncio.get_running_loop() is loop
        except RuntimeError:
            return False

    def _run_action(self, name: str, callback: Callable[..., Any]) -> threading.Event:
        """Run a declared action's callback where producer code runs, never on the server's
        loop: a coroutine function as a task beside an async producer, anything else on one
        worker thread per stream, in order. At most :data:`MAX_PENDING_ACTIONS` calls wait
        or run at once (beyond, ``rate_limited``), so a flood of button presses costs
        neither threads nor an endless queue. A failure puts the stream in the ``error``
        state, naming the action, and leaves the server and viewers alone."""
        import asyncio

        from .controls import Params

        with self._action_lock:
            if self._actions_pending >= MAX_PENDING_ACTIONS:
                raise RateLimited(
                    f"{self._actions_pending} actions of stream {self.name!r} are waiting or "
                    f"running (at most {MAX_PENDING_ACTIONS}); wait for them to finish"
                )
            self._actions_pending += 1
        params = Params(dict(self.controls.values))
        done = threading.Event()

        def run() -> None:
            try:
                result = callback(params)
                if inspect.isawaitable(result):
                    asyncio.run(result)  # type: ignore[arg-type]
            except Exception as exc:
                log.warning("action %r of stream %r failed", name, self.name, exc_info=exc)
                self.set_status("error", f"action {name!r} failed: {type(exc).__name__}: {exc}")
            finally:
                with self._action_lock:
                    self._actions_pending -= 1
                done.set()

        loop = self.loop
        if inspect.iscoroutinefunction(callback) and loop is not None:

            async def run_async() -> None:
                try:
                    await callback(params)
                except Exception as exc:
                    log.warning("action %r of stream %r failed", name, self.name, exc_info=exc)
                    self.set_status("error", f"action {name!r} failed: {type(exc).__name__}: {exc}")
                finally:
                    with self._action_lock:
                        self._actions_pending -= 1
                    done.set()

            asyncio.run_coroutine_threadsafe(run_async(), loop)
            return done
        with self._action_lock:
            self._action_queue.append(run)
            if self._action_worker is None:
                self._action_worker = threading.Thread(
                    target=self._work_actions, name=f"livestream-action-{self.name}", daemon=True
                )
                self._action_worker.start()
        return done

    def _work_actions(self) -> None:
        """The stream's action thread: runs queued actions in order, ends when none is left."""
        while True:
            with self._action_lock:
                if not self._action_queue:
                    self._action_worker = None
                    return
                run = self._action_queue.popleft()
            run()

    def pause(self) -> None:
        """Pause the stream's producer (as a viewer's Pause button does)."""
        self.control("pause")

    def resume(self) -> None:
        """Resume the stream's producer."""
        self.control("resume")

    def set(self, **params: Any) -> None:
        """Set declared parameters, validated as a viewer's change would be."""
        self.control("set", params)

    @overload
    def producer(
        self,
        func: Callable[..., Any],
        *,
        every: float | None = None,
        params: dict[str, Param] | None = None,
        actions: dict[str, Any] | None = None,
        start: bool = True,
    ) -> Producer: ...

    @overload
    def producer(
        self,
        func: None = None,
        *,
        every: float | None = None,
        params: dict[str, Param] | None = None,
        actions: dict[str, Any] | None = None,
        start: bool = True,
    ) -> Callable[[Callable[..., Any]], Producer]: ...

    def producer(
        self,
        func: Callable[..., Any] | None = None,
        *,
        every: float | None = None,
        params: dict[str, Param] | None = None,
        actions: dict[str, Any] | None = None,
        start: bool = True,
    ) -> Producer | Callable[[Callable[..., Any]], Producer]:
        """Decorate a function that produces rows for this stream.

        ``every`` seconds the function is called with the current parameters and whatever it
        returns (rows in any shape ``append`` takes, or ``None``) is appended. Generator and
        async functions work too. See :class:`livestream.producer.Producer`.
        """
        # Imported here: producer.py needs asyncio, and importing livestream loads no I/O.
        from .producer import Producer

        def wrap(fn: Callable[..., Any]) -> Producer:
            return Producer(self, fn, every=every, params=params, actions=actions, start=start)

        return wrap(func) if func is not None else wrap

    def describe(self) -> dict[str, Any]:
        """A JSON summary for ``list`` and the HTTP API."""
        start, end = self.window()
        out = {
            "name": self.name,
            "schema": self.schema,
            "rows": end - start,
            "offset": end,
            "start": start,
            "epoch": self.epoch,
            "state": self.state,
            "controls": self.controls.describe(),
            "rate": round(self.rate(), 3),
        }
        producer = self._producer
        stalled = (
            producer.stalled_for() if producer is not None and self._status == "running" else None
        )
        if stalled is not None:
            out["stalled_for"] = round(stalled, 1)
        return out
