"""FINOS Perspective in the large-window benchmark: perspective-python's Tornado handler
and its viewer in Chromium, fed the same rows as the livestream page.

The server (its own process): a ``perspective.Server`` with one table ``bench`` of
``time`` and ``price`` (float, ``time`` in ms since the epoch, stamped when the batch is
made) whose ``limit`` is the window (a rolling table of the newest ``window`` rows), behind
``perspective.handlers.tornado.PerspectiveTornadoHandler`` at ``/websocket``; a producer
thread calls ``table.update`` with an Arrow IPC batch (Perspective's fastest input) of
``rate / 100`` rows 100 times a second, like the livestream producer. The page
(``pages/perspective.html``, ``pages/perspective.js``) loads the viewer from the
perspective-python package itself (its anywidget bundle: viewer, WebAssembly client,
WebGL charts; no CDN), connects a ``Client`` to the handler over a WebSocket, and shows
an "X/Y Line" of price against time.

What is measured differs from the Bokeh pages in one way: Perspective's viewer does not
receive rows, it asks the server for its view's data at each render. So "rows/s" is what
the table took in during the window (counted by the producer), and the page reports
renders/s, frames/s and the lag of the rows drawn (see ``pages/perspective.js``).

perspective-python is not a dependency of livestream, nor of its test extra: when it is
not installed, :func:`viewer_page` answers rows whose ``error`` says why.

Pipe commands: ``produce`` (``batch``, ``rate`` or ``None``, ``duration``), ``stop``
(answers ``appended``, ``elapsed``), ``info`` (``size``), ``quit``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from .common import (
    Batches,
    PacedProducer,
    ProducerSlot,
    ServerThread,
    child_setup,
    error_reply,
    serve_commands,
    start_process,
)

UNAVAILABLE = "perspective-python is not installed (pip install perspective-python)"


def available() -> str | None:
    """``None`` when perspective-python and pyarrow import; else why not."""
    try:
        import perspective  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as exc:
        return f"{UNAVAILABLE}: {exc}"
    return None


def _static() -> str:
    import perspective

    return str(Path(perspective.__file__).parent / "widget" / "static")


def _arrow(columns: dict[str, Any]) -> bytes:
    import pyarrow as pa

    table = pa.table({"time": columns["time"], "price": columns["price"]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


class _Producer(PacedProducer):
    def __init__(self, table: Any, batch: int, rate: float | None, duration: float) -> None:
        super().__init__(batch, rate, duration)
        self.table = table
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="psp-producer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        source = Batches(self.batch)
        for _ in self.pace().beats(self.stop_event):
            self.table.update(_arrow(source.columns()))
            self.appended += self.batch
        self.stopped = time.monotonic()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)


def serve(conn: Any, options: dict[str, Any]) -> None:
    """Process entry point: Perspective's Tornado handler, the page, and a producer."""
    child_setup()
    import psutil

    try:
        from concurrent.futures import ThreadPoolExecutor

        import perspective
        import tornado.web
        from perspective.handlers.tornado import PerspectiveTornadoHandler

        from . import ceiling

        # Updates are merged until the previous poll is done: Perspective's way to take
        # frequent updates (its multi-threaded tests do the same); without it each update
        # recomputes every view of the table at once, in the producer's thread.
        poller = ThreadPoolExecutor(1, thread_name_prefix="psp-poll")
        poll_lock = threading.Lock()

        def poll(server: Any) -> None:
            try:
                server.poll()
            finally:
                poll_lock.release()

        def on_poll_request(server: Any) -> None:
            if poll_lock.acquire(blocking=False):
                poller.submit(poll, server)

        server = perspective.Server(on_poll_request=on_poll_request)
        client = server.new_local_client()
        table = client.table(
            {"time": "float", "price": "float"}, name="bench", limit=int(options["window"])
        )
        http = ServerThread(
            lambda: ceiling.app(
                [
                    (r"/", ceiling.page_handler("perspective.html")),
                    (r"/websocket", PerspectiveTornadoHandler, {"perspective_server": server}),
                    (r"/psp/(.*)", tornado.web.StaticFileHandler, {"path": _static()}),
                ],
                websocket_max_message_size=1 << 30,
            ),
            "the Perspective server",
            max_buffer_size=1 << 30,
        )
    except Exception as exc:
        conn.send(error_reply(exc))
        return
    conn.send({"kind": "perspective", "port": http.port, "pid": psutil.Process().pid})
    producer = ProducerSlot()

    def produce(msg: dict[str, Any]) -> dict[str, Any]:
        producer.run(
            _Producer(table, msg.get("batch", 1000), msg.get("rate"), msg.get("duration", 60.0))
        )
        return {"ok": True}

    try:
        serve_commands(
            conn,
            {
                "produce": produce,
                "stop": lambda msg: producer.stop(),
                "info": lambda msg: {"size": table.size()},
            },
        )
    finally:
        producer.stop()
        http.stop()


def measure(page: Any, seconds: float) -> dict[str, Any]:
    """Frames, renders and lag in the page, rows the table took in, over ``seconds``."""
    from .browser import count_in_page, lag_figures

    got = count_in_page(
        page,
        seconds,
        "b.frames = 0; b.renders = 0; b.lags = []; b.lagWeights = [];",
        "{frames: b.frames, renders: b.renders, lags: b.lags, weights: b.lagWeights}",
        settle=0.7,
    )
    return {
        "fps": got["frames"] / seconds,
        "paints_per_s": got["renders"] / seconds,
        "streams_per_s": float("nan"),
        **lag_figures(got["lags"], got["weights"]),
    }


def viewer_page(
    window: int,
    rates: list[int],
    *,
    seconds: float,
    warmup: float,
    load_timeout: float,
    log: Any,
) -> list[dict[str, Any]]:
    """Perspective's viewer on a table of ``window`` rows (filled before the page opens),
    at each offered rate. Rows with ``error`` when Perspective cannot run here."""
    base = {"page": "perspective", "window": window, "backend": "webgl"}
    why = available()
    if why:
        log(f"  large windows: Perspective not measured: {why}")
        return [dict(base, offered=rate, error=why) for rate in rates]
    from .browser import at_rate, batch_for, page_at, page_rows, wait_ready

    server = start_process(serve, {"window": window}, timeout=120)
    with page_rows(server, base, rates, f"Perspective ({window:,})", log) as rows:
        server.call("produce", batch=min(window, 1_000_000), rate=None, duration=300)
        deadline = time.monotonic() + 300
        while server.call("info")["size"] < window and time.monotonic() < deadline:
            time.sleep(0.2)
        server.call("stop", timeout=120)
        with page_at(server, "/") as (page, t):
            wait_ready(
                page,
                "perspectivePage",
                "Perspective",
                load_timeout,
                timed_out=f"the viewer had not drawn its first view of {window:,} rows "
                f"{load_timeout:.0f} s after the page opened",
            )
            load_s = time.monotonic() - t
            gl = page.evaluate("() => window.perspectivePage.gl")
            plugin = page.evaluate("() => window.perspectivePage.plugin")
            for rate in rates:
                log(
                    f"  large windows: Perspective, {window:,} rows, {rate:,} rows/s "
                    f"({batch_for(rate):,} rows x 100 updates/s)"
                )
                r, took = at_rate(
                    server, page, rate, measure, seconds=seconds, warmup=warmup, stop_timeout=120
                )
                r.update(
                    base,
                    offered=rate,
                    rows_per_s=took,
                    appended_per_s=took,
                    load_s=load_s,
                    gl=gl,
                    drawn_with=[plugin],
                )
                rows.append(r)
                log(
                    f"    table took {took:,.0f} rows/s, {r['fps']:.1f} fps, "
                    f"{r['paints_per_s']:.1f} renders/s, lag p50 {r['lag_p50']:.0f} ms, "
                    f"p99 {r['lag_p99']:.0f} ms"
                )
                time.sleep(1.0)
    return rows
