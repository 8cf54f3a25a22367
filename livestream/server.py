"""The Tornado application, its thin handlers, and the ways to run it.

Routes:

==========================  ===================================================
``/ws``                     the WebSocket protocol (docs/protocol.md)
``/api/streams``            GET: every stream (schema, state, rows, rates)
``/api/streams/<name>``     GET: one stream; POST: append JSON rows (publish role)
``/api/streams/<name>/plot`` GET: a Bokeh plot spec for the browser module
``/healthz``                GET: liveness, no token needed
``/static/...``             the browser module, CSS, and BokehJS from the installed bokeh
``/`` and ``/streams/<n>``  the standalone dashboard pages
==========================  ===================================================

:class:`Server` runs the app on a background thread with its own loop (``start()``, what
``livestream.serve()`` does), on the caller's running asyncio loop (``await
start_async()``), or in the foreground (``run()``, what ``livestream serve`` does).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Awaitable, Iterable, Mapping
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

from . import protocol as P
from .errors import ConfigError, ProtocolError
from .hub import Hub, Session
from .limits import Limits
from .security import Refusal, Security
from .stream import DEFAULT_HISTORY, Stream

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "Server", "serve", "shutdown", "stream"]

log = logging.getLogger("livestream.server")

DEFAULT_MAX_MESSAGE_SIZE = Limits.max_message_size
STATIC_DIR = Path(__file__).parent / "static"


def _bokeh_static() -> str:
    import bokeh

    return str(Path(bokeh.__file__).parent / "server" / "static" / "js")


def _token_of(handler: tornado.web.RequestHandler) -> str | None:
    auth = handler.request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    # ``livestream_token`` is the name pages use through a Jupyter proxy, where ``token``
    # belongs to Jupyter: JupyterHub would send a ``token`` parameter to its Hub API to look
    # up a user, handing our secret to a third party.
    return handler.get_query_argument("token", None) or handler.get_query_argument(
        "livestream_token", None
    )


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # Refusals are expected traffic (and answered with a clear message), not warnings.
    status = handler.get_status()
    level = logging.ERROR if status >= 500 else logging.INFO if status >= 400 else logging.DEBUG
    request = handler.request
    log.log(
        level,
        "%d %s %s (%s) %.1f ms",
        status,
        request.method,
        request.path,
        request.remote_ip,
        1000.0 * request.request_time(),
    )


class _Guarded:
    """Host, origin and token checks shared by the HTTP and WebSocket handlers."""

    server: Server
    request: Any

    def _guard(self, need_token: bool = True) -> tuple[str, ...]:
        sec = self.server.security
        sec.check_host(self.request.headers.get("Host"))
        sec.check_origin(self.request.headers.get("Origin"), self.request.headers.get("Host"))
        return sec.authenticate(_token_of(self)) if need_token else ()  # type: ignore[arg-type]


class WebSocketHandler(_Guarded, tornado.websocket.WebSocketHandler):
    """``/ws``: feeds frames to the protocol and the hub; refuses bad peers before upgrade."""

    def initialize(self, server: Server) -> None:
        self.server = server
        self.session: Session | None = None
        self.roles: tuple[str, ...] = ()

    async def get(self, *args: Any, **kwargs: Any) -> None:
        try:
            self.roles = self._guard()
        except Refusal as refusal:
            self.set_status(refusal.status)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"error": {"code": refusal.code, "message": refusal.message}}))
            return
        await super().get(*args, **kwargs)

    def check_origin(self, origin: str) -> bool:
        return True  # checked exactly in get() before the upgrade, with a clear message

    def get_compression_options(self) -> dict[str, Any] | None:
        return None

    def open(self, *args: str, **kwargs: str) -> None:
        self.set_nodelay(True)
        self.session = Session(self.server.hub, self, self.roles, peer=self.request.remote_ip or "")
        self.server.hub.sessions.add(self.session)
        self.session.welcome()

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        # Tornado reads nothing more from this peer until a returned awaitable is done.
        return self.session.receive(message) if self.session is not None else None

    def on_close(self) -> None:
        if self.session is not None:
            self.session.close()

    # Transport
    def send(self, frame: str | bytes) -> Any:
        return self.write_message(frame, binary=isinstance(frame, bytes))


class _ApiHandler(_Guarded, tornado.web.RequestHandler):
    def initialize(self, server: Server) -> None:
        self.server = server
        self.roles: tuple[str, ...] = ()

    def prepare(self) -> None:
        origin = self.request.headers.get("Origin")
        try:
            if self.request.method == "OPTIONS":
                self._guard(need_token=False)  # a preflight carries no credentials
            else:
                self.roles = self._guard()
        except Refusal as refusal:
            if origin is not None and refusal.code in ("missing_token", "bad_token"):
                # The origin passed; let the page read why its token failed (a widget says so).
                self.set_header("Access-Control-Allow-Origin", origin)
                self.set_header("Vary", "Origin")
            self._fail(refusal.status, refusal.code, refusal.message)
            return
        if origin is not None:
            # The origin passed the allow-list: let pages there (a notebook) read the answer.
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")

    def options(self, *args: str) -> None:
        self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    def _fail(self, status: int, code: str, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": {"code": code, "message": message}}))

    def _need(self, role: str) -> bool:
        if role in self.roles:
            return True
        self._fail(
            403,
            "forbidden",
            f"this request needs the {role!r} role; the token grants "
            f"{', '.join(self.roles) or 'none'}",
        )
        return False

    def _json(self, obj: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(obj, allow_nan=False, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "error": {
                        "code": "internal" if status_code >= 500 else "bad_request",
                        "message": self._reason,
                    }
                }
            )
        )

    def _viewable_stream(self, name: str) -> Stream | None:
        """The stream ``name`` for a request that needs the view role; ``None`` once the
        refusal (403, or 404 naming the known streams) has been answered."""
        if not self._need("view"):
            return None
        try:
            return self.server.hub.get(name)
        except ProtocolError as err:
            self._fail(404, err.code, err.message)
            return None

    def _describe(self, stream: Stream) -> dict[str, Any]:
        info = stream.describe()
        info["subscribers"] = self.server.hub.subscriber_count(stream.name)
        return info


class StreamsHandler(_ApiHandler):
    def get(self) -> None:
        if self._need("view"):
            self._json(
                {"streams": [self._describe(s) for s in list(self.server.hub.streams.values())]}
            )


class StreamHandler(_ApiHandler):
    def get(self, name: str) -> None:
        stream = self._viewable_stream(name)
        if stream is not None:
            self._json(self._describe(stream))

    def post(self, name: str) -> None:
        """Append JSON rows: a row object, a list of row objects, {column: [values]},
        or JSON lines (one row object per line)."""
        if not self._need("publish"):
            return
        body = self.request.body
        try:
            text = body.decode("utf-8")
            try:
                data: Any = json.loads(text)
            except ValueError:
                lines = [ln for ln in text.splitlines() if ln.strip()]
                data = [json.loads(ln) for ln in lines]
            if isinstance(data, dict) and isinstance(data.get("columns"), dict):
                data = data["columns"]
            elif isinstance(data, dict) and isinstance(data.get("rows"), list):
                data = data["rows"]
            P.validate_stream_name(name)
            from .columns import to_batch

            batch = to_batch(data)  # before the stream exists: a refused body creates none
            stream = self.server.hub.stream_for_publish(name)
            offset = stream.append(batch)
        except (UnicodeDecodeError, ValueError) as exc:
            self._fail(
                400,
                "bad_message",
                "the body must be JSON: a row object, a list of row "
                'objects, {"columns": {name: [values]}}, or JSON lines; could not parse '
                f"it ({type(exc).__name__})",
            )
            return
        except ProtocolError as err:
            self._fail(400, err.code, err.message)
            return
        self._json({"stream": name, "offset": offset, "rows": batch.rows})


def _plot_spec(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from .plots import plot_spec

    return plot_spec(*args, **kwargs)


class PlotHandler(_ApiHandler):
    def _number(self, name: str, default: str, kind: type[int] | type[float]) -> Any:
        text = self.get_query_argument(name, default)
        try:
            return kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise ValueError(
                f"query parameter {name!r} must be {what}; got {text!r} (e.g. ?{name}={default})"
            ) from None

    async def get(self, name: str) -> None:
        stream = self._viewable_stream(name)
        if stream is None:
            return
        y = self.get_query_argument("y", None)
        try:
            # Importing Bokeh (the first time) and building its models, tens of milliseconds
            # per line, happen off the loop.
            spec = await asyncio.to_thread(
                _plot_spec,
                name,
                stream.schema,
                x=self.get_query_argument("x", None) or None,
                y=y.split(",") if y else None,
                kind=self.get_query_argument("kind", "line"),
                window=self._number("window", "10000", int),
                height=self._number("height", "320", int),
                interval=self._number("interval", "1000", float),
            )
        except ValueError as exc:
            self._fail(400, "bad_request", str(exc))
            return
        self._json(spec)


class HealthHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Access-Control-Allow-Origin", "*")  # says nothing secret
        self.finish('{"ok": true}')


class StaticHandler(tornado.web.StaticFileHandler):
    """Our browser module and BokehJS: public files, readable from any page (a notebook on
    another port loads them as cross-origin ES modules, which needs CORS). Every file says
    ``nosniff`` (a browser takes it as the type it is sent as, never guesses script from
    it), and an HTML file opened at its ``/static/`` address gets the pages' headers."""

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("X-Content-Type-Options", "nosniff")
        if path.endswith(".html"):
            for name, value in _PAGE_HEADERS.items():
                self.set_header(name, value)
        if path.endswith((".js", ".css", ".html")) and "bokeh" not in path:
            self.set_header("Cache-Control", "no-cache")


#: Headers of the dashboard pages (and of HTML under ``/static/``). A publisher's text only
#: ever reaches a page as text (livestream.js builds the DOM from text nodes, plots.py's
#: tooltips and labels are Bokeh text models); the policy is the second wall should that
#: ever fail: script runs only from files of this server (no inline script, no ``eval``,
#: no other origin: BokehJS comes from ``/static/js/``), sockets and fetches go to this
#: server only, no ``<base>``, forms, plugins, or framing by another site.
#: ``style-src 'unsafe-inline'``: BokehJS puts its CSS in ``<style>`` elements in each
#: view's shadow root, and styles cannot run script. ``img-src data:``: Bokeh's toolbar
#: icons and the pages' icon are ``data:`` SVGs. WebGL plots (regl builds shader code with
#: ``Function``) would need ``'unsafe-eval'``: the pages draw on canvas, never WebGL.
_PAGE_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; "
        "form-action 'none'; object-src 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class PageHandler(_Guarded, tornado.web.RequestHandler):
    """The dashboard pages: static shells under :data:`_PAGE_HEADERS`; the page takes its
    token from ``?token=`` once, into the tab's sessionStorage (livestream.js,
    ``pageToken``), and removes it from the address bar."""

    def initialize(self, server: Server, page: str) -> None:
        self.server = server
        self.page = page

    def set_default_headers(self) -> None:
        # On every answer, refusals and errors included (those are plain text).
        for name, value in _PAGE_HEADERS.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def get(self, *args: str) -> None:
        try:
            self._guard(need_token=False)
        except Refusal as refusal:
            self.set_status(refusal.status)
            self.finish(refusal.message)
            return
        path = STATIC_DIR / self.page
        if not path.exists():
            self.set_status(404)
            self.finish("page not installed")
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(path.read_bytes())


class Server:
    """A livestream server: a hub of streams behind a Tornado app.

    >>> server = Server(port=0).start()        # background thread
    >>> prices = server.stream("prices")
    >>> server.url                              # doctest: +SKIP
    'http://127.0.0.1:40123/?token=...'
    >>> server.stop()
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        tokens: Mapping[str, Iterable[str]] | None = None,
        history: int = DEFAULT_HISTORY,
        max_age: float | None = None,
        allow_origins: Iterable[str] = (),
        allow_hosts: Iterable[str] = (),
        limits: Limits | None = None,
        max_message_size: int | None = None,
        write_timeout: float | None = None,
        ping_interval: float = 20.0,
        max_streams: int | None = None,
    ) -> None:
        token = token if token is not None else os.environ.get("LIVESTREAM_TOKEN") or None
        env_origins = [o for o in os.environ.get("LIVESTREAM_ALLOW_ORIGIN", "").split(",") if o]
        self.host = host
        self.requested_port = port
        self.security = Security.create(
            token=token,
            tokens=tokens,
            allow_origins=[*allow_origins, *env_origins],
            allow_hosts=allow_hosts,
            bind_host=host,
        )
        # The keyword arguments predate ``limits`` and still override it.
        self.limits = (limits or Limits()).replace(
            max_message_size=max_message_size,
            write_timeout=write_timeout,
            max_streams=max_streams,
        )
        self.hub = Hub(history=history, max_age=max_age, limits=self.limits, server=self)
        self.max_message_size = self.limits.max_message_size
        self.ping_interval = ping_interval
        self.port: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._http: tornado.httpserver.HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    # ------------------------------------------------------------------ properties

    @property
    def token(self) -> str:
        """A token with every role."""
        return self.security.token

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The dashboard URL with the token."""
        return f"{self.base_url}/?token={self.token}"

    @property
    def ws_url(self) -> str:
        """The WebSocket URL (without the token)."""
        return self.base_url.replace("http://", "ws://", 1) + "/ws"

    def __repr__(self) -> str:
        return f"<livestream.Server {self.base_url} streams={len(self.hub.streams)}>"

    # ------------------------------------------------------------------ streams

    def stream(self, name: str, **options: Any) -> Stream:
        """Get or create the stream ``name`` (options as for :class:`Stream`)."""
        return self.hub.stream(name, **options)

    # ------------------------------------------------------------------ app

    def make_app(self) -> tornado.web.Application:
        """The Tornado application with every route (see the module docstring)."""
        args = {"server": self}
        return tornado.web.Application(
            [
                (r"/ws", WebSocketHandler, args),
                (r"/api/streams", StreamsHandler, args),
                (r"/api/streams/([^/]+)/plot", PlotHandler, args),
                (r"/api/streams/([^/]+)", StreamHandler, args),
                (r"/healthz", HealthHandler),
                (r"/static/js/(.*)", StaticHandler, {"path": _bokeh_static()}),
                (r"/static/(.*)", StaticHandler, {"path": str(STATIC_DIR)}),
                (r"/", PageHandler, {"server": self, "page": "index.html"}),
                (r"/streams/([^/]+)", PageHandler, {"server": self, "page": "stream.html"}),
            ],
            websocket_max_message_size=self.max_message_size,
            websocket_ping_interval=self.ping_interval or None,
            websocket_ping_timeout=self.ping_interval or None,
            max_body_size=self.max_message_size,
            compress_response=False,
            log_function=_log_request,
        )

    async def start_async(self) -> Server:
        """Start on the running asyncio loop (for apps that have their own loop)."""
        if self._http is not None:
            raise ConfigError("this server is already running")
        self.loop = asyncio.get_running_loop()
        self.hub.attach(self.loop)
        sockets = tornado.netutil.bind_sockets(self.requested_port, self.host)
        self.port = sockets[0].getsockname()[1]
        self._http = tornado.httpserver.HTTPServer(
            self.make_app(), max_body_size=self.max_message_size, xheaders=False
        )
        self._http.add_sockets(sockets)
        for stream in self.hub.streams.values():
            producer = stream._producer
            if producer is not None and producer.is_async and producer._task is None:
                producer.start()
        log.info("livestream serving on %s", self.base_url)
        return self

    async def stop_async(self) -> None:
        """Stop accepting, close every connection (1001) and stop the producers."""
        for stream in list(self.hub.streams.values()):
            if stream._producer is not None:
                stream._producer.stop(wait=False)
        if self._http is not None:
            self._http.stop()
            for session in list(self.hub.sessions):
                session.transport.close(1001, "server going away")
            await asyncio.wait_for(self._http.close_all_connections(), 5)
            self._http = None
        self.hub.detach()

    def start(self, timeout: float = 10.0) -> Server:
        """Start on a background thread with its own event loop; returns when listening."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()
                self._stopped.set()

        self._thread = threading.Thread(target=run, name="livestream-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise ConfigError(f"the server did not start within {timeout} s")
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a server started with :meth:`start`; waits (bounded) for its thread."""
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            try:
                await self.stop_async()
            finally:
                loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join(timeout)
        self._thread = None
        self.loop = None

    @property
    def running(self) -> bool:
        return self._http is not None

    def run(self) -> None:
        """Serve in the foreground until interrupted (Ctrl-C)."""

        async def main() -> None:
            await self.start_async()
            try:
                await asyncio.Event().wait()
            finally:
                await self.stop_async()

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            pass

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------- the default server

_default: Server | None = None
_default_lock = threading.Lock()


def serve(host: str = "127.0.0.1", port: int = 0, **options: Any) -> Server:
    """Start the process's default server on a background thread (once) and return it.

    Called again, it returns the running default server; to change its options, call
    :func:`shutdown` first. Options are those of :class:`Server` (``token``, ``history``,
    ``allow_origins``, ...). ``livestream.stream()`` starts it on first use.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = Server(host, port, **options).start()
            import atexit

            from .jupyter import stop_with_kernel

            atexit.register(shutdown)
            stop_with_kernel()  # in a kernel: stop at its shutdown request, not at exit
        return _default


def shutdown() -> None:
    """Stop the default server (streams, producers and connections with it)."""
    global _default
    with _default_lock:
        server, _default = _default, None
    if server is not None:
        server.stop()


def stream(name: str, **options: Any) -> Stream:
    """The stream ``name`` on the default server, created when new (starting the server).

    Options: ``history`` (rows kept, default 100,000), ``max_age`` (seconds kept),
    ``schema`` ({column: dtype}), ``params`` and ``actions`` (declared controls).
    """
    return serve().stream(name, **options)
