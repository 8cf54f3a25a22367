"""The livestream server under test, in its own process, with a producer thread.

It is run the way a user runs it: ``livestream.Server(...).start()`` puts Tornado on a
background thread with its own loop, and a plain thread calls ``stream.append`` (the
producer). The process's main thread only answers the benchmark's pipe commands:

* ``produce``: start the producer. ``batch`` rows per append; ``rate`` rows/s
  (``None``: as fast as it can); ``shape``: ``"arrays"`` (a dict of numpy arrays) or
  ``"scalars"`` (a dict of Python scalars, one row, as a tick producer returns);
  ``duration`` caps the run (seconds); ``on``: ``"thread"`` (a plain thread calling
  ``stream.append``) or ``"loop"`` (an async generator registered with
  ``stream.producer``, run on the server's event loop as livestream runs ``async``
  producers: no second thread contends for the GIL).
* ``stop``: stop it; answers ``{"appended", "end", "elapsed"}``.
* ``prefill``: append ``rows`` rows at once whose ``time`` runs up to now ``spacing_ms``
  apart (a long history, for ``benchmarks.browser.large_windows``); answers ``{"end"}``.
* ``info``: ``{"rss", "subscribers", "end", "sessions"}``.
* ``quit``.

Options (the dict given to :func:`serve`): ``history``, ``write_timeout``, ``overflow``
(``"wait"``: the stream is made with ``overflow="wait"``, issue 14's lossless mode),
``switch_interval``, ``limits`` (a dict of :class:`livestream.limits.Limits` fields, for a
server configured the way an operator would), and ``fixtures`` (see :func:`fixtures`):
streams created in this process before the server answers, for ``benchmarks.abuse``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psutil

from .common import (
    HOST,
    STREAM,
    TOKEN,
    Batches,
    PacedProducer,
    ProducerSlot,
    child_setup,
    error_reply,
    serve_commands,
)

SCHEMA = {"time": "float64", "price": "float64", "volume": "int64"}


class _Producer(PacedProducer):
    def __init__(
        self,
        stream: Any,
        batch: int,
        rate: float | None,
        shape: str,
        duration: float,
        hub: Any = None,
        max_lag: int | None = None,
        on: str = "thread",
    ) -> None:
        super().__init__(batch, rate, duration)
        self.stream = stream
        self.hub = hub
        self.max_lag = max_lag
        self.shape = shape
        self.stop_event = threading.Event()
        self.on = on
        self.thread = threading.Thread(target=self._run, name="bench-producer", daemon=True)
        self.registered: Any = None  # the livestream Producer, when on the loop

    def start(self) -> None:
        if self.on == "thread":
            self.thread.start()
            return
        if self.on != "loop":
            raise ValueError(f"`on` must be 'thread' or 'loop'; got {self.on!r}")
        if self.max_lag is not None:
            raise ValueError("max_lag waits in a thread; use on='thread'")
        self.registered = self.stream.producer(self._agen)

    def stop(self) -> None:
        self.stop_event.set()
        if self.registered is not None:
            self.registered.stop()
            deadline = time.monotonic() + 10
            while not self.stopped and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            self.thread.join(10)

    async def _agen(self) -> Any:
        """The same schedule as ``_run``, as an async generator: each item is appended by
        livestream on its loop; the generator sleeps when ahead of the schedule and yields
        to the loop (``sleep(0)``) between batches otherwise, as a well-behaved async
        producer must."""
        import asyncio

        source = Batches(self.batch)
        scalars = self.shape == "scalars"
        pace = self.pace()
        n = 0
        try:
            async for _ in pace.abeats(self.stop_event.is_set):
                await asyncio.sleep(0)
                yield source.row() if scalars else source.columns()
                n += self.batch
                self.appended = n
        finally:
            self.stopped = time.monotonic()

    def _run(self) -> None:
        source = Batches(self.batch)
        append = self.stream.append
        pace = self.pace()
        n = 0
        scalars = self.shape == "scalars"
        for _ in pace.beats(self.stop_event):
            if self.max_lag is not None and not self._wait_for_slowest(pace.deadline):
                break
            append(source.row() if scalars else source.columns())
            n += self.batch
            self.appended = n
        self.stopped = time.monotonic()

    def _wait_for_slowest(self, deadline: float) -> bool:
        """Back-pressure for the lossless runs: wait while the slowest subscriber's cursor is
        more than ``max_lag`` rows behind the end of the stream (it would otherwise fall out
        of the history and be sent ``reset``). Reads the hub's cursors: a harness device,
        not something livestream offers producers (they are never blocked by viewers)."""
        stream, hub, stop = self.stream, self.hub, self.stop_event
        while not stop.is_set() and time.monotonic() < deadline:
            subs = list(hub.subscribers.get(STREAM, ()))
            if not subs or stream.end - min(s.cursor for s in subs) <= self.max_lag:
                return True
            time.sleep(0.0002)
        return False


def _prefill(stream: Any, rows: int, spacing_ms: float) -> dict[str, Any]:
    """``prefill``: append ``rows`` rows whose ``time`` runs up to now, ``spacing_ms``
    apart (a history as a feed at that rate would have left it), in 1 M-row appends."""
    import numpy as np

    source = Batches(min(rows, 1_000_000))
    now = time.time() * 1000.0
    for lo in range(0, rows, source.size):
        n = min(source.size, rows - lo)
        cols = source.columns()
        cols = {k: v[:n] for k, v in cols.items()}
        cols["time"] = now - (rows - lo - np.arange(n, dtype=np.float64)) * spacing_ms
        stream.append(cols)
    return {"end": stream.end}


def fixtures(server: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Create the streams an abuse run needs, in the server's own process (as an operator's
    code would), and say what was made. Keys of ``spec``, each optional:

    * ``history``: ``{"name", "rows"}``: a stream of one float64 column ``v`` holding
      ``rows`` rows (its history is made that long).
    * ``streams``: a count: streams ``s00001`` ... of one row each, until the server holds
      that many streams (what publishing one row to each name makes, without depending on
      a publish path a rate limit may slow down).
    * ``wide``: ``{"name", "columns", "rows"}``: a stream of that many float64 columns
      (needs ``limits={"max_columns": ...}`` when over the server's limit).
    * ``slow_action``: ``{"name", "sleep"}``: a stream whose producer (a plain function
      called every 0.5 s, so on a thread of its own) declares an action ``nap`` whose
      callback sleeps ``sleep`` seconds.
    """
    import numpy as np

    made: dict[str, Any] = {}
    if "history" in spec:
        name, rows = spec["history"]["name"], int(spec["history"]["rows"])
        stream = server.stream(name, schema={"v": "float64"}, history=rows)
        step = 1_000_000
        for lo in range(0, rows, step):
            stream.append({"v": np.arange(lo, min(rows, lo + step), dtype=np.float64)})
        made["history"] = {"name": name, "rows": stream.end}
    if "streams" in spec:
        want = int(spec["streams"])
        i = 0
        while len(server.hub.streams) < want and i < want + 10:
            i += 1
            server.stream(f"s{i:05d}").append({"t": [float(i)], "v": [1.0]})
        made["streams"] = len(server.hub.streams)
    if "wide" in spec:
        name, ncols = spec["wide"]["name"], int(spec["wide"]["columns"])
        rows = int(spec["wide"].get("rows", 100))
        stream = server.stream(name, schema={f"c{j:05d}": "float64" for j in range(ncols)})
        stream.append({f"c{j:05d}": np.full(rows, float(j)) for j in range(ncols)})
        made["wide"] = {"name": name, "columns": len(stream.schema), "rows": stream.end}
    if "slow_action" in spec:
        name, nap_s = spec["slow_action"]["name"], float(spec["slow_action"]["sleep"])
        stream = server.stream(name, schema={"t": "float64"})

        def tick() -> dict[str, float]:
            return {"t": time.time() * 1000.0}

        def nap(params: Any) -> None:
            time.sleep(nap_s)  # a slow device, a blocking call: what a real action may do

        stream.producer(tick, every=0.5, actions={"nap": nap})
        made["slow_action"] = {"name": name, "sleep": nap_s}
    return made


class _ErrorCount(logging.Handler):
    """Counts what the server logs at ERROR and above (an exception in a callback, a
    failed write), keeping the first few lines, for ``info``."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 3:
            text = record.getMessage().splitlines()[0][:200]
            if record.exc_info and record.exc_info[0] is not None:
                text += f" ({record.exc_info[0].__name__})"
            self.first.append(text)


def serve(conn: Any, options: dict[str, Any]) -> None:
    """Process entry point: run a livestream server and obey pipe commands."""
    child_setup()
    errors = _ErrorCount()
    logging.getLogger().addHandler(errors)
    if options.get("switch_interval"):
        import sys

        sys.setswitchinterval(options["switch_interval"])  # for the GIL experiment in the docs
    try:
        from livestream.server import Server

        extra: dict[str, Any] = {}
        if options.get("limits"):
            from livestream.limits import Limits

            extra["limits"] = Limits(**options["limits"])
        server = Server(
            HOST,
            0,
            token=TOKEN,
            history=options.get("history", 100_000),
            write_timeout=options.get("write_timeout", 30.0),
            **extra,
        )
        server.start()
        stream_options: dict[str, Any] = {}
        if options.get("overflow"):
            # Issue 14's wait mode. Passed as given, unguarded: a server without the
            # keyword fails this variant loudly.
            stream_options["overflow"] = options["overflow"]
        stream = server.stream(STREAM, schema=SCHEMA, **stream_options)
        made = fixtures(server, options["fixtures"]) if options.get("fixtures") else {}
    except Exception as exc:
        conn.send(error_reply(exc))
        return
    me = psutil.Process()
    conn.send({"kind": "livestream", "port": server.port, "pid": me.pid, "fixtures": made})
    producer = ProducerSlot()

    def produce(msg: dict[str, Any]) -> dict[str, Any]:
        producer.run(
            _Producer(
                stream,
                msg.get("batch", 1000),
                msg.get("rate"),
                msg.get("shape", "arrays"),
                msg.get("duration", 120.0),
                server.hub,
                msg.get("max_lag"),
                msg.get("on", "thread"),
            )
        )
        return {"ok": True, "end": stream.end}

    def info(msg: dict[str, Any]) -> dict[str, Any]:
        return {
            "rss": me.memory_info().rss,
            "end": stream.end,
            "subscribers": server.hub.subscriber_count(STREAM),
            "sessions": len(server.hub.sessions),
            "errors_logged": errors.count,
            "first_errors": errors.first,
        }

    try:
        serve_commands(
            conn,
            {
                "produce": produce,
                "prefill": lambda msg: _prefill(stream, int(msg["rows"]), float(msg["spacing_ms"])),
                "stop": lambda msg: {**producer.stop(), "end": stream.end},
                "info": info,
            },
        )
    finally:
        producer.stop()
        server.stop()
