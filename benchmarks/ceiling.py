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

from .common import ServerThread, child_setup, error_reply, serve_commands

PAGES = Path(__file__).resolve().parent / "pages"


def bokeh_static() -> str:
    """BokehJS's files in the installed ``bokeh`` package (``/static/js/`` of Bokeh's own
    server and of livestream's)."""
    import bokeh

    return str(Path(bokeh.__file__).parent / "server" / "static" / "js")


def page_handler(name: str) -> Any:
    """A handler answering ``GET`` with the page ``pages/<name>`` (never cached)."""
    import tornado.web

    class Page(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.set_header("Cache-Control", "no-cache")
            self.finish((PAGES / name).read_bytes())

    return Page


def app(extra: list[Any] | None = None, **settings: Any) -> Any:
    """The Tornado application: ``/`` is the ceiling page, ``/bench/`` the page files,
    ``/static/js/`` BokehJS. ``extra`` routes go first (benchmarks.perspective adds its
    own, and its ``/`` page); ``settings`` go to the application."""
    import tornado.web

    return tornado.web.Application(
        [
            *(extra or []),
            (r"/", page_handler("ceiling.html")),
            (r"/bench/(.*)", tornado.web.StaticFileHandler, {"path": str(PAGES)}),
            (r"/static/js/(.*)", tornado.web.StaticFileHandler, {"path": bokeh_static()}),
        ],
        **settings,
    )


def serve(conn: Any, options: dict[str, Any]) -> None:
    """Process entry point: serve the ceiling page until ``quit``."""
    child_setup()
    try:
        server = ServerThread(app, "the ceiling page server")
    except Exception as exc:
        conn.send(error_reply(exc))
        return
    conn.send({"kind": "ceiling", "port": server.port, "pid": psutil.Process().pid})
    try:
        serve_commands(conn, {})
    finally:
        server.stop()
