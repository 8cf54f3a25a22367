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
* ``info``: ``{"rss", "subscribers", "end", "sessions"}``.
* ``quit``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psutil

from .common import HOST, STREAM, TOKEN, Batches, Pace, child_setup, error_reply

SCHEMA = {"time": "float64", "price": "float64", "volume": "int64"}


class _Producer:
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
        self.stream = stream
        self.hub = hub
        self.max_lag = max_lag
        self.batch = batch
        self.rate = rate
        self.shape = shape
        self.duration = duration
        self.stop_event = threading.Event()
        self.appended = 0
        self.started = 0.0
        self.stopped = 0.0
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
        pace = Pace(self.batch, self.rate, self.duration)
        self.started = pace.start
        n = 0
        try:
            while not self.stop_event.is_set():
                wait = pace.wait()
                if wait is None:
                    break
                if wait:
                    await asyncio.sleep(wait)
                    continue
                await asyncio.sleep(0)
                yield source.row() if scalars else source.columns()
                n += self.batch
                self.appended = n
        finally:
            self.stopped = time.monotonic()

    def _run(self) -> None:
        source = Batches(self.batch)
        append = self.stream.append
        stop = self.stop_event
        pace = Pace(self.batch, self.rate, self.duration)
        self.started = pace.start
        n = 0
        scalars = self.shape == "scalars"
        while not stop.is_set():
            wait = pace.wait()
            if wait is None:
                break
            if wait:
                stop.wait(wait)
                continue
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


def serve(conn: Any, options: dict[str, Any]) -> None:
    """Process entry point: run a livestream server and obey pipe commands."""
    child_setup()
    if options.get("switch_interval"):
        import sys

        sys.setswitchinterval(options["switch_interval"])  # for the GIL experiment in the docs
    try:
        from livestream.server import Server

        server = Server(
            HOST,
            0,
            token=TOKEN,
            history=options.get("history", 100_000),
            write_timeout=options.get("write_timeout", 30.0),
        )
        server.start()
        stream = server.stream(STREAM, schema=SCHEMA)
    except Exception as exc:
        conn.send(error_reply(exc))
        return
    me = psutil.Process()
    conn.send({"kind": "livestream", "port": server.port, "pid": me.pid})
    producer: _Producer | None = None
    try:
        while True:
            msg = conn.recv()
            cmd = msg["cmd"]
            if cmd == "quit":
                break
            try:
                if cmd == "produce":
                    if producer is not None:
                        producer.stop()
                    producer = _Producer(
                        stream,
                        msg.get("batch", 1000),
                        msg.get("rate"),
                        msg.get("shape", "arrays"),
                        msg.get("duration", 120.0),
                        server.hub,
                        msg.get("max_lag"),
                        msg.get("on", "thread"),
                    )
                    producer.start()
                    conn.send({"ok": True, "end": stream.end})
                elif cmd == "stop":
                    out: dict[str, Any] = {"appended": 0, "elapsed": 0.0}
                    if producer is not None:
                        producer.stop()
                        out = {
                            "appended": producer.appended,
                            "elapsed": (producer.stopped or time.monotonic()) - producer.started,
                        }
                        producer = None
                    out["end"] = stream.end
                    conn.send(out)
                elif cmd == "info":
                    conn.send(
                        {
                            "rss": me.memory_info().rss,
                            "end": stream.end,
                            "subscribers": server.hub.subscriber_count(STREAM),
                            "sessions": len(server.hub.sessions),
                        }
                    )
                else:
                    conn.send({"error": f"unknown command {cmd!r}"})
            except Exception as exc:
                conn.send(error_reply(exc))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        if producer is not None:
            producer.stop()
        server.stop()
