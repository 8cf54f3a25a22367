"""The in-page ceiling of the large-window benchmark: a page with BokehJS alone.

A small Tornado app (in its own process, like every server of the benchmarks) serves
``benchmarks/pages/ceiling.html`` and its script, and BokehJS from the installed ``bokeh``
package at ``/static/js/`` (where ``livestream.server`` serves it too). The page makes its
columns in advance and streams the rows due at each animation frame with one
``ColumnDataSource.stream`` (see ``pages/ceiling.js``): no socket, no decoding, nothing
but BokehJS drawing a plot of ``window`` points. What a page fed over a network can do is
at most this.

Pipe commands: ``quit``. The first message gives the ``port``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil

from .common import HOST, child_setup, error_reply

PAGES = Path(__file__).resolve().parent / "pages"


def bokeh_static() -> str:
    """BokehJS's files in the installed ``bokeh`` package (``/static/js/`` of Bokeh's own
    server and of livestream's)."""
    import bokeh

    return str(Path(bokeh.__file__).parent / "server" / "static" / "js")


def app(extra: list[Any] | None = None) -> Any:
    """The Tornado application: ``/`` is the ceiling page, ``/bench/`` the page files,
    ``/static/js/`` BokehJS. ``extra`` routes go first (benchmarks.perspective adds its
    own)."""
    import tornado.web

    class Page(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.set_header("Cache-Control", "no-cache")
            self.finish((PAGES / "ceiling.html").read_bytes())

    return tornado.web.Application(
        [
            *(extra or []),
            (r"/", Page),
            (r"/bench/(.*)", tornado.web.StaticFileHandler, {"path": str(PAGES)}),
            (r"/static/js/(.*)", tornado.web.StaticFileHandler, {"path": bokeh_static()}),
        ]
    )


def serve(conn: Any, options: dict[str, Any]) -> None:
    """Process entry point: serve the ceiling page until ``quit``."""
    child_setup()
    import asyncio
    import threading

    import tornado.httpserver
    import tornado.netutil

    started = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        async def main() -> None:
            sockets = tornado.netutil.bind_sockets(0, HOST)
            server = tornado.httpserver.HTTPServer(app())
            server.add_sockets(sockets)
            box["port"] = sockets[0].getsockname()[1]
            box["stop"] = asyncio.Event()
            box["loop"] = asyncio.get_running_loop()
            started.set()
            await box["stop"].wait()
            server.stop()

        asyncio.run(main())

    thread = threading.Thread(target=run, name="ceiling-server", daemon=True)
    try:
        thread.start()
        if not started.wait(30):
            raise TimeoutError("the ceiling page server did not start within 30 s")
    except Exception as exc:
        conn.send(error_reply(exc))
        return
    conn.send({"kind": "ceiling", "port": box["port"], "pid": psutil.Process().pid})
    try:
        while True:
            msg = conn.recv()
            if msg["cmd"] == "quit":
                break
            conn.send({"error": f"unknown command {msg['cmd']!r}"})
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)
