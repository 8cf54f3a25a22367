"""Record streams to Parquet datasets, and replay recordings as live feeds.

A recording is an ordinary Parquet dataset (pyarrow, zstd), readable with
``pandas.read_parquet(DIR)`` and no livestream code::

    DIR/
      _livestream.json                    what was recorded: format, streams, schemas, controls
      stream=prices/                      one hive partition per stream
        3f9a1c0d2b7e-000000000000000-000000000004999.parquet   epoch, first and last offset
        3f9a1c0d2b7e-000000000005000-000000000009123.parquet
      _events/stream=prices/              control, state, reset, start and stop events
        events-1733312345678901234.parquet

Each data file holds the stream's columns plus ``_offset`` (int64) and ``_epoch``
(string), for the rows of one epoch with contiguous offsets: a gap (a ``reset`` the
recorder suffered) shows as a jump in ``_offset`` between files and as an event row of
kind ``reset``. Files are written to a dot-named temporary file and renamed, so a recorder
killed at any moment leaves a dataset that reads back completely up to its last flush;
pyarrow's dataset discovery (and so pandas, polars and duckdb) skips names that start
with ``_`` or ``.``, so the events and temporary files never get in the way.

:meth:`livestream.Stream.record` records a stream of this process (on its own thread, by
cursor into the stream's history: it never slows the viewers); ``livestream record``
records streams of a server over the protocol. :func:`replay` feeds a recording (or a
Parquet file, or a DataFrame) into a stream at its original pace, with playback controls.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .client import AsyncClient, AsyncSubscription
from .columns import NUMERIC_DTYPES, Batch, to_batch
from .controls import Bool, Choice, Float, Int, Param
from .errors import ConfigError, LivestreamError

if TYPE_CHECKING:
    from . import protocol as P
    from .client import Client
    from .streams import Stream

__all__ = [
    "FORMAT",
    "Recording",
    "RecordingError",
    "finished",
    "read_events",
    "record",
    "record_remote",
    "recorded_streams",
    "replay",
]

log = logging.getLogger("livestream.recording")

#: The value of ``format`` in ``_livestream.json``.
FORMAT = "livestream-recording"
META_FILE = "_livestream.json"
EVENTS_DIR = "_events"
#: Columns a recording adds beside the stream's own.
OFFSET, EPOCH = "_offset", "_epoch"
_PART = re.compile(r"^(?P<epoch>[^.][^/]*?)-(?P<first>\d{15})-(?P<last>\d{15})\.parquet$")
_MAX_READ = 1_000_000  # rows read from a stream's history at once
_CHUNK_ROWS = 2_000_000  # rows buffered before a flush is due regardless of time
_FILE_ROWS = 500_000  # rows a data file holds at most
_FAST_CHUNK = 1_048_576  # rows a replay appends at once when "as fast as possible"


class RecordingError(LivestreamError):
    """A recording could not be written (disk full, permission denied) or a replay's
    source could not be read (not Parquet, not a recording, no time column)."""


def _pa() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise ConfigError(
            "recording and replay need pyarrow; install it with `pip install pyarrow`"
        ) from None
    return pyarrow


def _background() -> None:
    """Run the calling thread at the lowest CPU priority (on Linux, niceness is per thread,
    and threads it starts inherit it): on a busy machine the server's loop and the
    producers get the CPU before the recorder's compression, which waits with its rows
    in memory (written at once beyond ``_CHUNK_ROWS``)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # another system, or not permitted: normal priority
        pass


def _write_error(path: Path, exc: OSError) -> RecordingError:
    import errno

    # pyarrow's text wraps the system's ("Error writing bytes to file. Detail: [errno 28]
    # No space left on device"): the system's alone says it.
    why = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space on that disk, or record to another folder (--out DIR)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "record to a folder you may write to, or fix its permissions"
    else:
        fix = "check the folder"
    return RecordingError(f"cannot write the recording at {path}: {why}; {fix}")


# --------------------------------------------------------------------------- writing


def _arrow_column(values: np.ndarray, dtype: str) -> Any:
    pa = _pa()
    if dtype in NUMERIC_DTYPES:
        return pa.array(values)
    if dtype == "str":
        return pa.array(values, type=pa.string())
    return pa.array(
        [None if v is None else json.dumps(v, default=str) for v in values.tolist()],
        type=pa.string(),
    )


def _to_table(batches: list[Batch], epoch: str, first: int, stream: str) -> Any:
    """One file's table: the batches' columns as chunks (no copy), ``_offset``, ``_epoch``."""
    pa = _pa()
    head = batches[0]
    names = list(head.columns)
    rows = sum(b.rows for b in batches)
    arrays = [
        pa.chunked_array([_arrow_column(b.columns[n], head.dtypes[n]) for b in batches])
        for n in names
    ]
    arrays.append(pa.chunked_array([np.arange(first, first + rows, dtype=np.int64)]))
    arrays.append(pa.chunked_array([_repeated(epoch, rows)]))
    meta = {"stream": stream, "epoch": epoch, "schema": head.schema, "first": first}
    schema = pa.schema(
        [pa.field(n, a.type) for n, a in zip([*names, OFFSET, EPOCH], arrays, strict=True)],
        metadata={"livestream": json.dumps(meta)},
    )
    return pa.Table.from_arrays(arrays, schema=schema)


def _repeated(text: str, rows: int) -> Any:
    """A string column holding ``text`` ``rows`` times, built from its buffers (a hundred
    times faster than ``pyarrow.repeat``); Parquet stores it dictionary-encoded."""
    pa = _pa()
    raw = text.encode()
    offsets = np.arange(rows + 1, dtype=np.int32) * len(raw)
    return pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(raw * rows))


def _rename(folder: Path, name: str) -> int:
    """Move ``folder/.name.tmp`` to ``folder/name`` (atomic); the file's size."""
    try:
        os.replace(folder / f".{name}.tmp", folder / name)
        return (folder / name).stat().st_size
    except OSError as exc:
        raise _write_error(folder / name, exc) from None


def _write_atomic(table: Any, folder: Path, name: str, *, rename: bool = True) -> int:
    """Write ``table`` as ``folder/name`` through a dot-named temporary file (left there
    for :func:`_rename` when not ``rename``); the file's size."""
    pq = _pa().parquet
    tmp = folder / f".{name}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Dictionary encoding only where values repeat (the epoch, text): on numbers it
        # costs a quarter of the write and saves nothing. Floats are written byte-stream
        # split and integers delta-packed (Parquet's encodings for them): on ticks this
        # wrote 15 M rows/s instead of 6 M, in slightly fewer bytes (docs/recording.md).
        pa = _pa()
        text = [f.name for f in table.schema if f.type == pa.string()]
        encoding = {}
        for f in table.schema:
            if pa.types.is_floating(f.type):
                encoding[f.name] = "BYTE_STREAM_SPLIT"
            elif pa.types.is_integer(f.type):
                encoding[f.name] = "DELTA_BINARY_PACKED"
        pq.write_table(
            table, tmp, compression="zstd", use_dictionary=text, column_encoding=encoding or None
        )
        if not rename:
            return tmp.stat().st_size
        os.replace(tmp, folder / name)
        return (folder / name).stat().st_size
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise _write_error(folder / name, exc) from None


def _stream_dir(root: Path, stream: str) -> Path:
    return root / f"stream={stream}"


def _parts(root: Path, stream: str) -> list[tuple[str, int, int, Path]]:
    """(epoch, first, last, path) of the stream's data files."""
    folder = _stream_dir(root, stream)
    out = []
    if folder.is_dir():
        for path in folder.iterdir():
            m = _PART.match(path.name)
            if m:
                out.append((m["epoch"], int(m["first"]), int(m["last"]), path))
    return out


def _last_recorded(root: Path, stream: str, epoch: str | None = None) -> tuple[str, int] | None:
    """(epoch, last offset) recorded for ``epoch``, or for the most recently written epoch."""
    parts = _parts(root, stream)
    if epoch is None:
        if not parts:
            return None
        epoch = max(parts, key=lambda p: p[3].stat().st_mtime_ns)[0]
    lasts = [last for e, _, last, _ in parts if e == epoch]
    return (epoch, max(lasts)) if lasts else None


def recorded_streams(root: str | os.PathLike[str]) -> list[str]:
    """The names of the streams recorded in the folder ``root``."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p.name[7:] for p in base.iterdir() if p.is_dir() and p.name.startswith("stream="))


class _Writer:
    """One stream's buffer of rows and events, written out by :meth:`flush` (any thread)."""

    def __init__(self, root: Path, stream: str) -> None:
        self.root = root
        self.stream = stream
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._rows: list[tuple[str, int, Batch]] = []
        self._buffered = 0
        self._events: list[dict[str, Any]] = []
        self.rows = 0
        self.bytes = 0
        self.files = 0
        self.schema: dict[str, str] = {}
        self.controls: dict[str, Any] = {}
        self._cleanup()

    def _cleanup(self) -> None:
        """Remove temporary files a killed recorder left behind."""
        for folder in (_stream_dir(self.root, self.stream), self._events_dir):
            if folder.is_dir():
                for path in folder.glob(".*.tmp"):
                    try:
                        path.unlink()
                    except OSError:
                        pass

    @property
    def _events_dir(self) -> Path:
        return self.root / EVENTS_DIR / f"stream={self.stream}"

    @property
    def buffered(self) -> int:
        return self._buffered

    def add_rows(self, epoch: str, first: int, batch: Batch) -> None:
        if batch.rows == 0:
            return
        with self._lock:
            self._rows.append((epoch, first, batch))
            self._buffered += batch.rows

    def event(self, kind: str, **fields: Any) -> None:
        row = {
            "time": fields.pop("time", time.time() * 1000.0),
            "stream": self.stream,
            "kind": kind,
            "action": fields.pop("action", None),
            "params": _json_or_none(fields.pop("params", None)),
            "by": fields.pop("by", None),
            "state": _json_or_none(fields.pop("state", None)),
            "epoch": fields.pop("epoch", None),
            "offset": fields.pop("offset", None),
            "reason": fields.pop("reason", None),
            "missing_from": fields.pop("missing_from", None),
        }
        with self._lock:
            self._events.append(row)

    def flush(self) -> None:
        """Write what is buffered: one file per contiguous run of rows of one epoch."""
        with self._flush_lock:
            with self._lock:
                rows, self._rows, self._buffered = self._rows, [], 0
                events, self._events = self._events, []
            # Events first: a recorder killed mid-flush then never leaves rows on disk
            # without the events that came before them (its `start`, a reset, a control).
            if events:
                pa = _pa()
                table = pa.Table.from_pylist(events, schema=_event_schema())
                name = f"events-{time.time_ns()}.parquet"
                self.bytes += _write_atomic(table, self._events_dir, name)
            runs: list[list[tuple[str, int, Batch]]] = []
            for item in rows:
                last = runs[-1][-1] if runs else None
                if last is not None and last[0] == item[0] and last[1] + last[2].rows == item[1]:
                    runs[-1].append(item)
                else:
                    runs.append([item])
            # Files of at most _FILE_ROWS rows (readers get row groups of a sane size, and
            # two files compress at once on two cores), made of the batches as they are:
            # no copy into one array, which would hold the GIL the viewers' loop needs.
            pieces: list[tuple[str, int, list[Batch]]] = []
            for run in runs:
                epoch, first = run[0][0], run[0][1]
                if not self.schema:
                    self.schema = run[0][2].schema
                group: list[Batch] = []
                size = 0
                for _, _, b in run:
                    at = 0
                    while at < b.rows:
                        take = min(b.rows - at, _FILE_ROWS - size)
                        group.append(b.slice(at, at + take) if take < b.rows else b)
                        size += take
                        at += take
                        if size == _FILE_ROWS:
                            pieces.append((epoch, first, group))
                            first, group, size = first + size, [], 0
                if group:
                    pieces.append((epoch, first, group))
            folder = _stream_dir(self.root, self.stream)

            def write(piece: tuple[str, int, list[Batch]]) -> str:
                epoch, first, batches = piece
                rows = sum(b.rows for b in batches)
                table = _to_table(batches, epoch, first, self.stream)
                name = f"{epoch}-{first:015d}-{first + rows - 1:015d}.parquet"
                _write_atomic(table, folder, name, rename=False)
                return name

            if len(pieces) > 1:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(2, thread_name_prefix="livestream-recorder-write") as pool:
                    names = list(pool.map(write, pieces))
            else:
                names = [write(p) for p in pieces]
            # Renamed in offset order, so a recorder killed meanwhile leaves a prefix of
            # them: never a hole that a restarted recorder would not fill.
            sizes = [_rename(folder, name) for name in names]
            # Counted once every file is on disk: `rows` never counts a row that is not.
            self.bytes += sum(sizes)
            self.rows += sum(b.rows for p in pieces for b in p[2])
            self.files += len(pieces)


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


def _event_schema() -> Any:
    pa = _pa()
    return pa.schema(
        [
            ("time", pa.float64()),
            ("stream", pa.string()),
            ("kind", pa.string()),
            ("action", pa.string()),
            ("params", pa.string()),
            ("by", pa.string()),
            ("state", pa.string()),
            ("epoch", pa.string()),
            ("offset", pa.int64()),
            ("reason", pa.string()),
            ("missing_from", pa.int64()),
        ]
    )


#: One read-modify-write of a ``_livestream.json`` at a time in this process (several
#: recorders may share a folder).
_MANIFEST_LOCK = threading.Lock()


def _write_manifest(root: Path, writers: Sequence[_Writer]) -> None:
    """Add the writers' streams to ``root/_livestream.json`` (written atomically)."""
    with _MANIFEST_LOCK:
        _write_manifest_locked(root, writers)


def _write_manifest_locked(root: Path, writers: Sequence[_Writer]) -> None:
    path = root / META_FILE
    try:
        meta = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        meta = {}
    meta["format"] = FORMAT
    meta["version"] = 1
    streams = meta.setdefault("streams", {})
    for w in writers:
        entry = streams.setdefault(w.stream, {})
        if w.schema:
            entry["schema"] = w.schema
        if w.controls:
            entry["controls"] = w.controls
    tmp = root / f".{META_FILE}.{os.getpid()}.tmp"  # another process may write it too
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        raise _write_error(path, exc) from None


class Recording:
    """A running recorder, returned by :meth:`Stream.record` and :func:`record_remote`.

    ``rows`` and ``bytes`` say how much is on disk so far; ``stop()`` writes what is left
    and ends it (raising :class:`RecordingError` if writing failed). A write that fails
    (disk full, permission denied) stops the recorder and is kept in ``error``; the
    stream and its viewers carry on.
    """

    def __init__(self, root: Path, writers: list[_Writer], flush: float) -> None:
        self.path = root
        self._writers = writers
        self.flush_every = flush
        self.error: RecordingError | None = None
        self._stop = threading.Event()
        self._stopped = False
        self._cleanups: list[Callable[[], None]] = []
        self._threads: list[threading.Thread] = []
        self._flusher = threading.Thread(
            target=self._run_flusher, name="livestream-recorder-flush", daemon=True
        )

    def __repr__(self) -> str:
        return f"<Recording {str(self.path)!r} rows={self.rows} bytes={self.bytes}>"

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def rows(self) -> int:
        """Rows written to disk so far."""
        return sum(w.rows for w in self._writers)

    @property
    def bytes(self) -> int:
        """Bytes written to disk so far (data and event files)."""
        return sum(w.bytes for w in self._writers)

    @property
    def files(self) -> int:
        """Data files written so far."""
        return sum(w.files for w in self._writers)

    @property
    def running(self) -> bool:
        """False once stopped, or once a write failed (see ``error``)."""
        return not self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the recorder stops (or fails); False when ``timeout`` ran out first."""
        return self._stop.wait(timeout)

    def _start(self) -> None:
        self._flusher.start()
        for t in self._threads:
            t.start()

    def _fail(self, exc: RecordingError) -> None:
        if self.error is None:
            self.error = exc
            log.error("recording to %s stopped: %s", self.path, exc)
        self._stop.set()

    def flush(self) -> None:
        """Write what is buffered now."""
        for w in self._writers:
            w.flush()
        _write_manifest(self.path, self._writers)

    def _run_flusher(self) -> None:
        _background()
        described = {w.stream for w in self._writers if w.schema}
        while not self._stop.wait(self.flush_every):
            try:
                for w in self._writers:
                    if w.buffered or w._events:
                        w.flush()
                known = {w.stream for w in self._writers if w.schema}
                if known != described:  # a schema learnt from the first rows: say it now
                    _write_manifest(self.path, self._writers)
                    described = known
            except RecordingError as exc:
                self._fail(exc)
                return

    def wait_buffered_below(self, rows: int) -> None:
        """Flush at once when more than ``rows`` rows wait (memory stays bounded)."""
        for w in self._writers:
            if w.buffered > rows:
                w.flush()

    def stop(self) -> None:
        """Stop recording: write what is buffered and an event of kind ``stop``."""
        if self._stopped:
            if self.error is not None:
                raise self.error
            return
        self._stopped = True
        self._stop.set()
        for cleanup in self._cleanups:
            try:
                cleanup()
            except Exception:
                log.exception("stopping a recorder of %s", self.path)
        for t in [*self._threads, self._flusher]:
            if t is not threading.current_thread() and t.ident is not None:
                t.join(10)
        if self.error is None:
            try:
                for w in self._writers:
                    w.event("stop")
                self.flush()
            except RecordingError as exc:
                self.error = exc
        if self.error is not None:
            raise self.error


def _prepare(path: str | os.PathLike[str], streams: Sequence[str]) -> tuple[Path, list[_Writer]]:
    _pa()
    root = Path(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _write_error(root, exc) from None
    return root, [_Writer(root, s) for s in streams]


# --------------------------------------------------------------------------- in process


def record(stream: Stream, path: str | os.PathLike[str], *, flush: float = 1.0) -> Recording:
    """Record ``stream`` into the folder ``path``; see :meth:`livestream.Stream.record`."""
    if not flush > 0:
        raise ConfigError(f"flush must be a number of seconds above 0; got {flush!r}")
    root, writers = _prepare(path, [stream.name])
    writer = writers[0]
    for column in (OFFSET, EPOCH, "stream"):
        if column in stream.schema:
            raise ConfigError(
                f"stream {stream.name!r} has a column {column!r}, a name a recording uses for "
                "itself; rename that column to record the stream"
            )
    writer.controls = stream.controls.describe()
    rec = Recording(root, writers, flush)
    state = {"last": stream.state}

    def on_control(event: dict[str, Any]) -> None:
        state["last"] = event["state"]
        writer.event(
            "control", **{k: event[k] for k in ("time", "action", "params", "by", "state")}
        )

    rec._cleanups.append(stream.on_control(on_control))

    epoch = stream.epoch
    found = _last_recorded(root, stream.name, epoch)
    start, _ = stream.window()
    cursor = start if found is None else found[1] + 1
    writer.event("start", epoch=epoch, offset=cursor, state=stream.state)
    if found is not None and cursor < start:
        writer.event("reset", reason="gap", epoch=epoch, offset=start, missing_from=cursor)
        cursor = start
    _write_manifest(root, writers)

    def run() -> None:
        nonlocal epoch, cursor
        stop = rec._stop  # the reader keeps its priority: a starved one would miss rows
        try:
            while True:
                stopping = stop.is_set()
                now_epoch = stream.epoch
                if now_epoch != epoch:
                    writer.event(
                        "reset", reason="restart", epoch=now_epoch, offset=0, missing_from=cursor
                    )
                    epoch, cursor = now_epoch, 0
                start, end = stream.window()
                if cursor < start:
                    writer.event(
                        "reset", reason="gap", epoch=epoch, offset=start, missing_from=cursor
                    )
                    cursor = start
                if end > cursor:
                    batch = stream.read(cursor, min(end, cursor + _MAX_READ))
                    if stream.epoch != epoch:
                        continue  # restarted while it was read: those rows are of no epoch
                    first = batch.offset if batch.offset is not None else cursor
                    if first > cursor:
                        writer.event(
                            "reset", reason="gap", epoch=epoch, offset=first, missing_from=cursor
                        )
                    writer.add_rows(epoch, first, batch)
                    cursor = first + batch.rows
                    if not writer.schema:
                        writer.schema = batch.schema
                    rec.wait_buffered_below(_CHUNK_ROWS)
                    continue
                now = stream.state
                if now != state["last"]:
                    state["last"] = now
                    writer.event("state", state=now, by=None)
                if stopping:
                    return
                stop.wait(0.01)
        except RecordingError as exc:
            rec._fail(exc)
        except Exception:
            log.exception("the recorder of stream %r failed", stream.name)
            rec._fail(RecordingError(f"the recorder of stream {stream.name!r} failed"))

    rec._threads.append(
        threading.Thread(target=run, name=f"livestream-recorder-{stream.name}", daemon=True)
    )
    rec._start()
    return rec


# --------------------------------------------------------------------------- over the protocol


class _RecordingSubscription(AsyncSubscription):
    """A subscription that hands every row, reset and state change to a writer, in the
    order they arrive."""

    def __init__(self, client: AsyncClient, stream: str, writer: _Writer, **kw: Any) -> None:
        self._writer = writer
        self._started = False
        super().__init__(client, stream, columns=None, **kw)

    @property
    def state(self) -> dict[str, Any]:
        return self._state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        previous = getattr(self, "_state", None)
        self._state = value
        if previous is not None and self._started and value != previous:
            self._writer.event("state", state=value, by=None, epoch=self.epoch)

    def _on_subscribed(self, msg: P.Subscribed) -> None:
        super()._on_subscribed(msg)
        self._writer.controls = msg.controls
        if msg.schema and not self._writer.schema:
            self._writer.schema = dict(msg.schema)
        if not self._started:
            self._writer.event("start", epoch=msg.epoch, offset=msg.offset, state=msg.state)
        self._started = True

    def _on_reset(self, msg: P.Reset) -> None:
        missing = self.next_offset
        super()._on_reset(msg)
        self._writer.event(
            "reset", reason=msg.reason, epoch=msg.epoch, offset=msg.offset, missing_from=missing
        )

    def _on_data(self, msg: P.Data) -> None:
        queued = len(self._queue)
        super()._on_data(msg)
        if len(self._queue) > queued and self.next_offset is not None and self.epoch:
            batch = self._queue[-1]
            assert isinstance(batch, Batch)
            if not self._writer.schema:
                self._writer.schema = batch.schema
            self._writer.add_rows(self.epoch, self.next_offset - batch.rows, batch)


def record_remote(
    client: Client,
    streams: Sequence[str],
    path: str | os.PathLike[str],
    *,
    flush: float = 1.0,
) -> Recording:
    """Record ``streams`` of the server ``client`` is connected to into the folder ``path``
    (what ``livestream record`` runs). A folder that already holds a recording of a stream
    continues it from the last offset recorded, when the server still has that epoch."""
    if not flush > 0:
        raise ConfigError(f"flush must be a number of seconds above 0; got {flush!r}")
    root, writers = _prepare(path, streams)
    rec = Recording(root, writers, flush)
    inner: AsyncClient = client._async
    subs: list[_RecordingSubscription] = []

    async def subscribe(writer: _Writer) -> _RecordingSubscription:
        found = _last_recorded(root, writer.stream)
        sub = _RecordingSubscription(
            inner,
            writer.stream,
            writer,
            last=None,
            since=None if found is None else found[1] + 1,
            epoch=None if found is None else found[0],
        )
        if writer.stream in inner._subs:
            raise ConfigError(f"stream {writer.stream!r} is named twice")
        inner._subs[writer.stream] = sub
        try:
            await inner._request(sub._request())
        except BaseException:
            inner._subs.pop(writer.stream, None)
            raise
        return sub

    async def drain(sub: _RecordingSubscription) -> None:
        # The rows went to the writer as they arrived; taking them grants the credit.
        try:
            async for _ in sub:
                if rec._stop.is_set():
                    return
                if sub._writer.buffered > _CHUNK_ROWS:
                    await _to_thread(sub._writer.flush)
        except LivestreamError as exc:
            rec._fail(RecordingError(f"recording of stream {sub.stream!r} ended: {exc}"))

    for w in writers:
        subs.append(client._run(subscribe(w), client.timeout + 5))
    _write_manifest(root, writers)
    import asyncio

    tasks = [asyncio.run_coroutine_threadsafe(drain(s), client._loop) for s in subs]

    def close() -> None:
        for s in subs:
            try:
                client._run(s.close(), 10)
            except Exception:
                pass
        for t in tasks:
            t.cancel()

    rec._cleanups.append(close)
    rec._start()
    return rec


async def _to_thread(fn: Callable[[], None]) -> None:
    import asyncio

    await asyncio.get_running_loop().run_in_executor(None, fn)


# --------------------------------------------------------------------------- reading


def read_events(path: str | os.PathLike[str], stream: str | None = None) -> Any:
    """The control, state, reset, start and stop events of a recording as a DataFrame
    sorted by ``time`` (ms since the epoch); ``params`` and ``state`` hold JSON text."""
    import pandas as pd

    root = Path(path) / EVENTS_DIR
    if stream is not None:
        root = root / f"stream={stream}"
    files = sorted(p for p in root.rglob("events-*.parquet")) if root.is_dir() else []
    if not files:
        return pd.DataFrame({n: [] for n in _event_schema().names})
    pq = _pa().parquet
    frame = pd.concat([pq.read_table(p).to_pandas() for p in files], ignore_index=True)
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


_EXPECTED = (
    "a recording folder (written by `livestream record` or Stream.record), a .parquet file "
    "with a time column, or a pandas DataFrame"
)


def _read_parquet(path: Path) -> list[Any]:
    """The tables of one Parquet file, or of every data file of a stream's folder."""
    pa = _pa()
    files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith((".", "_")))
    if path.is_file():
        files = [path]
    if not files:
        raise RecordingError(f"{path} holds no Parquet files; expected {_EXPECTED}")
    tables = []
    for f in files:
        try:
            # Without the recording's own columns: decoding `_epoch` (a string a row)
            # would take as long as all the rest.
            names = [n for n in pa.parquet.read_schema(f).names if n not in (OFFSET, EPOCH)]
            tables.append(pa.parquet.read_table(f, columns=names))
        except (pa.ArrowException, OSError) as exc:
            raise RecordingError(
                f"{f} is not a readable Parquet file ({exc}); expected {_EXPECTED}"
            ) from None
    return tables


def _arrays(table: Any) -> dict[str, np.ndarray]:
    """A table's columns as numpy arrays: numbers without nulls as they are stored (no
    copy through pandas), anything else through pandas (text as objects, datetimes)."""
    pa = _pa()
    out: dict[str, np.ndarray] = {}
    for name in table.column_names:
        col = table.column(name)
        kind = col.type
        numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        if (numeric or pa.types.is_boolean(kind)) and col.null_count == 0:
            out[name] = col.to_numpy()
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            out[name] = col.to_numpy(zero_copy_only=False)  # objects; a null stays None
        else:
            out[name] = col.to_pandas().to_numpy()
    return out


def _load(
    source: Any, name: str | None, time_column: str
) -> tuple[Batch, np.ndarray, str, str | None]:
    """(batch, times in ms, a label of the source, the recorded stream name)."""
    import pandas as pd

    recorded: str | None = None
    if isinstance(source, pd.DataFrame):
        frame = source
        if isinstance(frame.index, pd.DatetimeIndex) and time_column not in frame.columns:
            index = frame.index
            if index.tz is not None:
                index = index.tz_convert("UTC").tz_localize(None)
            frame = frame.reset_index(drop=True)
            frame.insert(0, time_column, index.to_numpy("datetime64[ns]"))
        else:
            frame = frame.reset_index(drop=True)
        label, where = "a DataFrame", "the DataFrame"
        tables_meta: dict[str, str] = {}
    else:
        path = Path(source)
        if not path.exists():
            raise RecordingError(f"{path} does not exist; expected {_EXPECTED}")
        if path.is_dir() and not list(path.glob("*.parquet")):
            streams = recorded_streams(path)
            if not streams:
                raise RecordingError(f"{path} holds no recorded stream; expected {_EXPECTED}")
            if name is None and len(streams) > 1:
                raise ConfigError(
                    f"{path} holds {len(streams)} streams ({', '.join(streams)}); pick one "
                    "with name= (or --stream NAME)"
                )
            if name in streams:
                recorded = name
            elif len(streams) == 1:
                recorded = streams[0]  # replayed under ``name``
            else:
                raise ConfigError(f"{path} has no stream {name!r}; it holds: {', '.join(streams)}")
            path = _stream_dir(path, recorded)
        tables = _read_parquet(path)
        meta = tables[0].schema.metadata or {}
        tables_meta = {}
        if b"livestream" in meta:
            try:
                tables_meta = json.loads(meta[b"livestream"]).get("schema", {})
            except ValueError:
                tables_meta = {}
        if len(tables) > 1:
            # Files in the order of their rows: epochs, then offsets, by first time.
            def first_time(t: Any) -> float:
                if time_column in t.column_names and t.num_rows:
                    return float(t.column(time_column)[0].as_py() or 0.0)
                return 0.0

            tables.sort(key=first_time)
        pa = _pa()
        try:
            table = pa.concat_tables(tables, promote_options="default")
        except pa.ArrowException as exc:
            raise RecordingError(
                f"the files of {path} do not share one schema ({exc}); expected {_EXPECTED}"
            ) from None
        drop = [c for c in (OFFSET, EPOCH, "stream") if c in table.column_names]
        frame = _arrays(table.drop_columns(drop))
        label, where = str(source), str(path)
    if time_column not in frame:
        raise RecordingError(
            f"{where} has no column {time_column!r} (columns: {', '.join(map(str, frame))}); "
            f"expected {_EXPECTED}; name the time column with time=..."
        )
    for column, dtype in tables_meta.items():
        if dtype == "object" and column in frame:
            decoded = np.empty(len(frame[column]), dtype=object)
            for k, v in enumerate(frame[column]):
                decoded[k] = None if v is None else json.loads(v)
            frame[column] = decoded
    try:
        batch = to_batch(frame)
    except LivestreamError as exc:
        raise RecordingError(f"{where} cannot be replayed: {exc}") from None
    times = np.asarray(batch.columns[time_column], dtype=np.float64)
    if batch.dtypes[time_column] not in ("float64", "float32", "int64", "int32"):
        raise RecordingError(
            f"column {time_column!r} of {where} must hold times (ms since the epoch, or "
            f"datetimes); got {batch.dtypes[time_column]}"
        )
    if batch.rows and not np.all(np.diff(times) >= 0):
        order = np.argsort(times, kind="stable")
        batch = Batch({n: a[order] for n, a in batch.columns.items()}, batch.dtypes)
        times = times[order]
    return batch, times, label, recorded


class _Player:
    """The replay engine: a generator producer appending rows at their recorded pace."""

    def __init__(
        self,
        stream: Stream,
        batch: Batch,
        times: np.ndarray,
        changes: list[tuple[float, dict[str, Any]]] | None = None,
    ) -> None:
        self.stream = stream
        self.batch = batch
        self.times = times
        #: Recorded parameter values with the time they took effect, in time order.
        self.changes = changes or []
        self._change_times = np.array([t for t, _ in self.changes], dtype=np.float64)
        self.finished = threading.Event()
        self._seek: float | None = None
        self._wake = threading.Event()
        self._lock = threading.Lock()

    def on_control(self, event: dict[str, Any]) -> None:
        if event["action"] == "set" and "position" in event["params"]:
            with self._lock:
                self._seek = float(event["params"]["position"])
        self._wake.set()

    def _take_seek(self) -> float | None:
        with self._lock:
            target, self._seek = self._seek, None
        return target

    def _show_recorded(self, pos: float, done: int) -> int:
        """Apply the recorded parameter changes up to time ``pos``, from change ``done``
        on; viewers see them as a state change. Returns how many are applied."""
        upto = int(np.searchsorted(self._change_times, pos, side="right"))
        if upto > done:
            for _, values in self.changes[done:upto]:
                self.stream.controls.values.update(values)
            self.stream.set_status(self.stream.status)
        return upto

    def play(self, params: Any) -> Iterator[Any]:
        times, n = self.times, len(self.times)
        values = self.stream.controls.values
        # A batch never larger than a quarter of the history: a viewer keeps up with it,
        # and an append that waits for room (overflow "wait") can get it.
        chunk = max(1, min(_FAST_CHUNK, self.stream.history_rows // 4))
        i = 0
        shown_changes = self._show_recorded(float(times[0]) if n else 0.0, 0)
        pos = float(times[0]) if n else 0.0
        last_wall = time.monotonic()
        shown = last_wall
        planned = 0.0
        while True:
            now = time.monotonic()
            speed = 1.0 if params["fastest"] else float(params["speed"])
            # A pause (or a stall) must not make the replay jump ahead after it.
            pos += min(now - last_wall, planned + 0.25) * 1000.0 * speed
            last_wall = now
            target = self._take_seek()
            if target is None and i >= n and params["loop"] and n:
                target = float(times[0])
            if target is not None:
                k = int(np.searchsorted(times, target, side="left"))
                if k < i or (i >= n and k < n):
                    self.stream.restart()  # viewers get `reset` (restart) and the rows from k
                i, pos = k, target
                self.finished.clear()
                values["position"] = target
                if self.changes:  # the recorded values as they were at the target
                    shown_changes = self._show_recorded(target, 0)
            if i >= n:
                if not self.finished.is_set():
                    values["position"] = float(times[-1]) if n else 0.0
                    self.stream.set_status(self.stream.status)
                    self.finished.set()
                planned = 0.25
                self._wake.wait(planned)
                self._wake.clear()
                yield None
                continue
            if params["fastest"]:
                j = min(n, i + chunk)
            else:
                j = min(int(np.searchsorted(times, pos, side="right")), i + chunk)
            if j > i:
                out = self.batch.slice(i, j)
                i = j
                pos = max(pos, float(times[j - 1]))
                planned = 0.0
                if shown_changes < len(self.changes):
                    shown_changes = self._show_recorded(pos, shown_changes)
                if now - shown >= 1.0:
                    values["position"] = pos
                    self.stream.set_status(self.stream.status)  # viewers see the position
                    shown = now
                yield Batch(out.columns, out.dtypes)
                continue
            planned = min(0.25, (float(times[i]) - pos) / 1000.0 / speed)
            self._wake.wait(planned)
            self._wake.clear()
            if time.monotonic() - now > 0.05:
                yield None  # lets the producer notice a stop


def _recorded_controls(
    root: Path, stream: str
) -> tuple[dict[str, Param], list[tuple[float, dict[str, Any]]]]:
    """The parameters the recorded stream declared (from ``_livestream.json``) and the
    values they took over time (from the events), so that a replay shows them."""
    try:
        meta = json.loads((root / META_FILE).read_text())
        described = meta["streams"][stream]["controls"]["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}, []
    declared: dict[str, Param] = {}
    for key, d in described.items():
        try:
            if d["type"] in ("float", "int"):
                kind = Float if d["type"] == "float" else Int
                declared[key] = kind(
                    d["default"], min=d.get("min"), max=d.get("max"), step=d.get("step"),
                    label=d.get("label"),
                )  # fmt: skip
            elif d["type"] == "bool":
                declared[key] = Bool(d["default"], label=d.get("label"))
            elif d["type"] == "choice":
                declared[key] = Choice(d["default"], choices=d["choices"], label=d.get("label"))
        except (KeyError, TypeError, LivestreamError):
            continue  # a description this version cannot rebuild: not shown
    changes: list[tuple[float, dict[str, Any]]] = []
    events = read_events(root, stream)
    for t, state in zip(events["time"], events["state"], strict=True):
        if isinstance(state, str):
            values = json.loads(state).get("params") or {}
            values = {k: v for k, v in values.items() if k in declared}
            if values:
                changes.append((float(t), values))
    return declared, changes


def replay(
    source: Any,
    name: str | None = None,
    speed: float = 1.0,
    loop: bool = False,
    *,
    server: Any,
    time: str = "time",
    history: int | None = None,
) -> Stream:
    """Feed ``source`` into the stream ``name`` on ``server`` at its recorded pace; see
    :func:`livestream.replay` (which uses the default server)."""
    fastest = speed is None or (isinstance(speed, float) and math.isinf(speed))
    if not fastest and not 0.1 <= float(speed) <= 100:
        raise ConfigError(
            f"speed must be between 0.1 and 100 (times the recorded pace), or "
            f"float('inf') for as fast as possible; got {speed!r}"
        )
    batch, times, label, recorded = _load(source, name, time)
    stream_name = name or recorded or "replay"
    options: dict[str, Any] = {"schema": batch.schema, "overflow": "wait"}
    if history is not None:
        options["history"] = history
    stream: Stream = server.stream(stream_name, **options)
    if stream.schema and stream.schema != batch.schema:
        raise ConfigError(
            f"stream {stream_name!r} has the schema {stream.schema}, the source {batch.schema}; "
            "replay into another stream (name=...)"
        )
    recorded_params: dict[str, Param] = {}
    changes: list[tuple[float, dict[str, Any]]] = []
    if recorded is not None:
        recorded_params, changes = _recorded_controls(Path(source), recorded)
    player = _Player(stream, batch, times, changes)
    t0 = float(times[0]) if len(times) else 0.0
    t1 = float(times[-1]) if len(times) else 0.0
    params = {
        "speed": Float(
            1.0 if fastest else float(speed), min=0.1, max=100.0, step=0.1, label="Speed (x)"
        ),
        "fastest": Bool(fastest, label="As fast as possible"),
        "position": Float(t0, min=t0, max=t1, label="Position (time)"),
        "loop": Bool(bool(loop), label="Loop"),
        "replay_of": Choice(label, choices=[label], label="Replay of"),
    }
    for key, param in recorded_params.items():
        params.setdefault(key, param)  # a recorded name that a playback control has: left out
    names = set(recorded_params) - {"speed", "fastest", "position", "loop", "replay_of"}
    player.changes = [(t, {k: v for k, v in c.items() if k in names}) for t, c in changes]
    previous = _PLAYERS.pop(stream, None)
    if previous is not None:
        previous[1]()
    _PLAYERS[stream] = (player, stream.on_control(player.on_control))
    stream.producer(player.play, params=params)
    return stream


#: The player feeding each replayed stream, and what removes its control listener.
_PLAYERS: weakref.WeakKeyDictionary[Stream, tuple[_Player, Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)


def finished(stream: Stream, timeout: float | None = None) -> bool:
    """Wait until the replay feeding ``stream`` has appended its last row (True), or
    ``timeout`` seconds passed (False). A seek or a loop starts it over."""
    entry = _PLAYERS.get(stream)
    if entry is None:
        raise ConfigError(f"stream {stream.name!r} is not fed by a replay")
    return entry[0].finished.wait(timeout)
