"""The Bokeh server baseline: the same rows streamed with ``ColumnDataSource.stream``.

A ``bokeh.server.server.Server`` with one app at ``/bench``. Every session (one per client:
Bokeh gives each session its own document) gets a ``ColumnDataSource`` of ``time``,
``price``, ``volume`` behind a line figure, and a callback chain that streams the rows:

* as fast as it can (no ``rate``): a next-tick callback streams a ``batch``-row batch with
  ``rollover`` and schedules itself again. Bokeh runs each callback with the document
  locked and waits for the resulting patch to be written before it releases the lock, so
  this is paced by the connection, the same as raw Tornado's ``await`` mode;
* with a ``rate``: a periodic callback.

Pipe commands as for ``benchmarks.ls_server``; ``produce`` switches every current and
future session on, ``stop`` off and answers the rows streamed over all sessions.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import psutil

from .common import HOST, Batches, child_setup, error_reply, serve_commands

STATE: dict[str, Any] = {
    "active": False,
    "batch": 1000,
    "rollover": 10_000,
    "shape": "arrays",
    "streamed": 0,
    "deadline": 0.0,
}


def make_document(doc: Any) -> None:
    """The Bokeh app: a source, a figure, and the streaming callback chain."""
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    source = ColumnDataSource(
        data={"time": np.zeros(0), "price": np.zeros(0), "volume": np.zeros(0, dtype=np.int64)}
    )
    plot = figure(width=600, height=300, x_axis_type="datetime", output_backend="webgl")
    plot.line("time", "price", source=source)
    doc.add_root(plot)
    batches: dict[int, Batches] = {}

    def tick() -> None:
        if STATE["active"] and time.monotonic() < STATE["deadline"]:
            size = STATE["batch"]
            src = batches.get(size) or batches.setdefault(size, Batches(size))
            if STATE["shape"] == "scalars":
                row = src.row()
                source.stream({k: [v] for k, v in row.items()}, rollover=STATE["rollover"])
            else:
                source.stream(src.columns(), rollover=STATE["rollover"])
            STATE["streamed"] += size
            doc.add_next_tick_callback(tick)
        else:
            doc.add_timeout_callback(tick, 20)

    doc.add_next_tick_callback(tick)


def serve(conn: Any, options: dict[str, Any]) -> None:
    """Process entry point: run a Bokeh server and obey pipe commands."""
    child_setup()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run_loop() -> None:
        asyncio.set_event_loop(loop)
        try:
            from bokeh.application import Application
            from bokeh.application.handlers.function import FunctionHandler
            from bokeh.server.server import Server
            from tornado.ioloop import IOLoop

            server = Server(
                {"/bench": Application(FunctionHandler(make_document))},
                io_loop=IOLoop.current(),
                address=HOST,
                port=0,
                allow_websocket_origin=["*"],
                websocket_max_message_size=256 * 1024 * 1024,
                unused_session_lifetime_milliseconds=5_000,
                check_unused_sessions_milliseconds=2_000,
            )
            server.start()
            holder["port"] = server.port
            holder["server"] = server
        except Exception as exc:
            holder["error"] = exc
        ready.set()
        if "error" not in holder:
            loop.run_forever()

    thread = threading.Thread(target=run_loop, name="bokeh-server", daemon=True)
    thread.start()
    if not ready.wait(60) or "error" in holder:
        conn.send(error_reply(holder.get("error", TimeoutError("Bokeh server did not start"))))
        return
    me = psutil.Process()
    conn.send({"kind": "bokeh", "port": holder["port"], "pid": me.pid})
    started = 0.0

    def produce(msg: dict[str, Any]) -> dict[str, Any]:
        nonlocal started
        STATE.update(
            batch=msg.get("batch", 1000),
            shape=msg.get("shape", "arrays"),
            rollover=msg.get("rollover", 10_000),
            streamed=0,
            deadline=time.monotonic() + msg.get("duration", 120.0),
        )
        STATE["active"] = True
        started = time.monotonic()
        return {"ok": True, "end": 0}

    def stop(msg: dict[str, Any]) -> dict[str, Any]:
        STATE["active"] = False
        return {"appended": STATE["streamed"], "elapsed": time.monotonic() - started}

    def info(msg: dict[str, Any]) -> dict[str, Any]:
        server = holder["server"]
        sessions = sum(len(ctx.sessions) for ctx in server._tornado._applications.values())
        return {"rss": me.memory_info().rss, "subscribers": sessions}

    try:
        serve_commands(conn, {"produce": produce, "stop": stop, "info": info})
    finally:
        STATE["active"] = False
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
