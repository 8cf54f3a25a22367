"""The Tornado application and the ways to run it.

Routes (their handlers are in :mod:`livestream.handlers`):

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

What one HTTP request may cost (docs/security.md, "Limits"); what the handlers check and
refuse (token before body, body limits, no token in logs, JSON errors) is listed in
:mod:`livestream.handlers`:

* A route that reads no body refuses one over 64 KiB from its ``Content-Length`` (413),
  before its handler runs (:class:`_Application`).
* ``header_timeout`` bounds how long a connection may take to send a request's headers
  (and how long an idle keep-alive connection is kept); ``body_timeout`` how long its body
  may take. Either closes the connection. An upgraded WebSocket is bound by neither.
* When accepting fails (no file descriptors left), the server stops accepting for a short,
  growing pause, logs one summary line every few seconds at most, and goes on serving the
  connections it has. At start it raises the soft ``RLIMIT_NOFILE`` to the hard limit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.ioloop
import tornado.netutil
import tornado.web

from .errors import ConfigError
from .handlers import (
    _UNREAD_BODY_LIMIT,
    STATIC_DIR,
    HealthHandler,
    PageHandler,
    PlotHandler,
    StaticHandler,
    StreamHandler,
    StreamsHandler,
    WebSocketHandler,
    _BodyRefusedHandler,
    _bokeh_static,
    _declared_length,
    _install_redaction,
    _log_request,
    _NotFoundHandler,
)
from .hub import Hub
from .limits import Limits
from .security import Security
from .streams import DEFAULT_HISTORY, Stream

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "Server"]

log = logging.getLogger("livestream.server")

DEFAULT_MAX_MESSAGE_SIZE = Limits.max_message_size


class _Application(tornado.web.Application):
    """Tornado's application, refusing large bodies on routes that read none from their
    headers: Tornado would buffer the whole body before the handler checks the token."""

    def get_handler_delegate(
        self,
        request: tornado.httputil.HTTPServerRequest,
        target_class: type[tornado.web.RequestHandler],
        target_kwargs: dict[str, Any] | None = None,
        path_args: list[bytes] | None = None,
        path_kwargs: dict[str, bytes] | None = None,
    ) -> tornado.web._HandlerDelegate:
        if not target_class._stream_request_body:
            declared = _declared_length(request)
            if declared is not None and declared > _UNREAD_BODY_LIMIT:
                return super().get_handler_delegate(
                    request, _BodyRefusedHandler, {"declared": declared}
                )
        return super().get_handler_delegate(
            request, target_class, target_kwargs, path_args, path_kwargs
        )


class _Acceptor:
    """Accepts connections on one listening socket, and outlasts running out of file
    descriptors (or any other accept failure): it stops accepting for a pause that grows
    from 50 ms to 1 s while failures go on, logs one summary line every 5 s at most (how
    many accepts failed and why, then that accepting works again), and meanwhile the
    connections already open are served as usual. Tornado's own accept handler lets
    ``EMFILE`` escape into the loop, which logs a traceback for every attempt."""

    FIRST_PAUSE = 0.05
    LONGEST_PAUSE = 1.0
    REPORT_EVERY = 5.0
    #: Accepts per readiness event, so that a flood of connections cannot starve the loop.
    BATCH = 128

    def __init__(
        self, sock: socket.socket, on_connection: Callable[[socket.socket, Any], None]
    ) -> None:
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.on_connection = on_connection
        self.loop = tornado.ioloop.IOLoop.current()
        self.pause = self.FIRST_PAUSE
        self.listening = False
        self.removed = False
        self.resume_timer: object | None = None
        self.report_timer: object | None = None
        self.troubled = False  # failures were reported; "accepting again" is owed
        self.failures = 0  # since the last report
        self.failing_since = 0.0
        self.reason = ""
        self.reported_at = -self.REPORT_EVERY

    def start(self) -> Callable[[], None]:
        """Start accepting; returns the function that stops it (as Tornado's does)."""
        self._listen()
        return self.remove

    def remove(self) -> None:
        self.removed = True
        if self.listening:
            self.loop.remove_handler(self.sock)
            self.listening = False
        for timer in (self.resume_timer, self.report_timer):
            if timer is not None:
                self.loop.remove_timeout(timer)
        self.resume_timer = self.report_timer = None

    def _listen(self) -> None:
        self.loop.add_handler(self.sock, self._ready, tornado.ioloop.IOLoop.READ)
        self.listening = True

    def _ready(self, fd: Any, events: int) -> None:
        for _ in range(self.BATCH):
            if self.removed or not self.listening:
                return
            try:
                connection, address = self.sock.accept()
            except BlockingIOError:
                return  # accepted every waiting connection
            except ConnectionAbortedError:
                continue  # closed while still in the queue
            except OSError as exc:
                self._back_off(exc)
                return
            self.pause = self.FIRST_PAUSE
            self.on_connection(connection, address)

    def _back_off(self, exc: OSError) -> None:
        # The socket stays readable while connections wait, so stop watching it: the loop
        # would otherwise spin on accepts that cannot succeed.
        self.loop.remove_handler(self.sock)
        self.listening = False
        if not self.failures:
            self.failing_since = self.loop.time()
        self.failures += 1
        self.reason = exc.strerror or str(exc)
        self.resume_timer = self.loop.call_later(self.pause, self._resume)
        self.pause = min(2 * self.pause, self.LONGEST_PAUSE)
        self._report()

    def _resume(self) -> None:
        self.resume_timer = None
        if not self.removed:
            self._listen()

    def _report(self) -> None:
        now = self.loop.time()
        if now - self.reported_at < self.REPORT_EVERY:
            if self.report_timer is None:
                self.report_timer = self.loop.call_at(
                    self.reported_at + self.REPORT_EVERY, self._report_due
                )
            return
        if self.failures:
            log.warning(
                "could not accept %d connection(s) on port %d over %.1f s (%s); accepting "
                "pauses for up to %g s at a time and connections already open are still "
                "served. Raise the open-files limit (ulimit -n) or serve fewer connections.",
                self.failures,
                self.port,
                now - self.failing_since,
                self.reason,
                self.LONGEST_PAUSE,
            )
            self.failures = 0
            self.troubled = True
        elif self.troubled:
            log.warning("accepting connections on port %d again", self.port)
            self.troubled = False
        else:
            return
        self.reported_at = now
        # Come back to report further failures, or that accepting works again.
        self.report_timer = self.loop.call_at(now + self.REPORT_EVERY, self._report_due)

    def _report_due(self) -> None:
        self.report_timer = None
        if not self.removed:
            self._report()


class _HTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTP server with our accept handler (:class:`_Acceptor`)."""

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = _Acceptor(sock, self._handle_connection).start()


_nofile_raised = False


def _raise_open_file_limit() -> None:
    """Raise the process's soft limit on open files to its hard limit (once): each
    connection holds a descriptor, and the soft limit is often 1024."""
    global _nofile_raised
    if _nofile_raised:
        return
    _nofile_raised = True
    try:
        import resource
    except ImportError:  # Windows has no such limit
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Some systems refuse a soft limit of "infinity"; a million is plenty.
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= want:
        log.debug("the open-files limit is %s already", soft)
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as exc:
        log.debug("could not raise the open-files limit from %d to %d: %s", soft, want, exc)
        return
    log.info("raised the open-files limit from %d to %d (the hard limit)", soft, want)


#: The interpreter's switch interval while a server runs (seconds; Python's default is
#: 0.005). See docs/explanation.md, "Producer threads and the GIL".
SWITCH_INTERVAL = 0.0005
_switch_lock = threading.Lock()
_switch: dict[str, Any] = {"servers": 0, "saved": None, "set": None}


def _lower_switch_interval(value: float | None) -> None:
    """While servers run, let a thread that waits for the GIL get it within ``value``
    seconds rather than Python's 5 ms: a producer thread that lets the GIL go to wake the
    loop (or a loop that lets it go to write) otherwise waits up to 5 ms to take it back
    from the other, the tail of every hand-off between them. Only lowered, and only when
    nobody set another value; restored when the last server stops."""
    with _switch_lock:
        if _switch["servers"] == 0 and value is not None:
            current = sys.getswitchinterval()
            if value < current:
                _switch["saved"], _switch["set"] = current, value
                sys.setswitchinterval(value)
        _switch["servers"] += 1


def _restore_switch_interval() -> None:
    with _switch_lock:
        _switch["servers"] = max(0, _switch["servers"] - 1)
        if _switch["servers"] == 0 and _switch["saved"] is not None:
            if sys.getswitchinterval() == _switch["set"]:  # nobody changed it since
                sys.setswitchinterval(_switch["saved"])
            _switch["saved"] = _switch["set"] = None


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
        redis: str | None = None,
        switch_interval: float | None = SWITCH_INTERVAL,
    ) -> None:
        token = token if token is not None else os.environ.get("LIVESTREAM_TOKEN") or None
        redis = redis if redis is not None else os.environ.get("LIVESTREAM_REDIS") or None
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
        #: The Redis backplane when ``redis`` (a URL) is given: then this server is one node
        #: of a service that several servers share (docs/redis.md).
        self.backplane: Any = None
        if redis:
            from .backplanes import from_url

            self.backplane = from_url(redis)
        self.hub = Hub(
            history=history,
            max_age=max_age,
            limits=self.limits,
            server=self,
            backplane=self.backplane,
        )
        self.max_message_size = self.limits.max_message_size
        _install_redaction()
        self.ping_interval = ping_interval
        self.port: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._http: tornado.httpserver.HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        if switch_interval is not None and not switch_interval > 0:
            raise ConfigError(
                f"switch_interval must be a number of seconds above 0, or None to leave "
                f"the interpreter's as it is; got {switch_interval!r}"
            )
        #: The interpreter's switch interval while this server runs (see
        #: :data:`SWITCH_INTERVAL`); None leaves it alone.
        self.switch_interval = switch_interval
        self._switch_lowered = False

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
        redis = f" redis={self.backplane.shown}" if self.backplane is not None else ""
        return f"<livestream.Server {self.base_url} streams={len(self.hub.streams)}{redis}>"

    # ------------------------------------------------------------------ streams

    def stream(self, name: str, **options: Any) -> Stream:
        """Get or create the stream ``name`` (options as for :class:`Stream`)."""
        return self.hub.stream(name, **options)

    # ------------------------------------------------------------------ app

    def make_app(self) -> tornado.web.Application:
        """The Tornado application with every route (see the module docstring)."""
        args = {"server": self}
        return _Application(
            [
                (r"/ws", WebSocketHandler, args),
                (r"/api/streams", StreamsHandler, args),
                (r"/api/streams/([^/]+)/plot", PlotHandler, args),
                (r"/api/streams/([^/]+)", StreamHandler, args),
                (r"/healthz", HealthHandler, args),
                (r"/static/js/(.*)", StaticHandler, {"path": _bokeh_static()}),
                (r"/static/(.*)", StaticHandler, {"path": str(STATIC_DIR)}),
                (r"/", PageHandler, {"server": self, "page": "index.html"}),
                (r"/streams/([^/]+)", PageHandler, {"server": self, "page": "stream.html"}),
            ],
            default_handler_class=_NotFoundHandler,
            websocket_max_message_size=self.limits.max_message_size,
            websocket_ping_interval=self.ping_interval or None,
            websocket_ping_timeout=self.ping_interval or None,
            compress_response=False,
            log_function=_log_request,
        )

    def _bind(self) -> list[socket.socket]:
        """The listening sockets; a port or host that cannot be had is a :class:`ConfigError`
        that says why and what to pass instead (no traceback for a busy port)."""
        import errno

        host, port = self.host, self.requested_port
        where = f"{host}:{port}"
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ConfigError(f"port must be a whole number from 0 to 65535; got {port!r}")
        try:
            return tornado.netutil.bind_sockets(port, host)
        except socket.gaierror as exc:
            raise ConfigError(
                f"cannot listen on {where}: the host {host!r} does not resolve "
                f"({exc.strerror}); pass an IP address such as 127.0.0.1, or 0.0.0.0 for "
                "every interface"
            ) from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"cannot listen on {where}: the port is in use (by another livestream "
                    "server?); pick another port (0 picks a free one: port=0 in Python, "
                    "--port 0 on the command line) or stop the server that holds it"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(
                    f"cannot listen on {where}: {host} is not an address of this machine; "
                    "pass 127.0.0.1 (this machine only), 0.0.0.0 (every interface) or one of "
                    "its own addresses"
                ) from None
            if exc.errno == errno.EACCES:
                raise ConfigError(
                    f"cannot listen on {where}: permission denied (ports below 1024 need "
                    "root); choose a port from 1024 up, or 0 for a free one"
                ) from None
            raise ConfigError(
                f"cannot listen on {where}: {exc.strerror or exc}; check the host and port"
            ) from None

    async def start_async(self) -> Server:
        """Start on the running asyncio loop (for apps that have their own loop).

        Raises :class:`ConfigError` when the port is in use or the host is not this
        machine's; nothing is left running then."""
        if self._http is not None:
            raise ConfigError("this server is already running")
        sockets = self._bind()  # before anything starts, so a failure leaves nothing behind
        self.loop = asyncio.get_running_loop()
        self.hub.attach(self.loop)
        if self.backplane is not None:
            try:
                await self.backplane.start(self.hub)
            except BaseException:
                self.hub.detach()
                for sock in sockets:
                    sock.close()
                raise
        _raise_open_file_limit()
        self.port = sockets[0].getsockname()[1]
        self._http = _HTTPServer(
            self.make_app(),
            xheaders=False,
            # Tornado waits this long for a request's headers, idle keep-alive included.
            idle_connection_timeout=self.limits.header_timeout,
            body_timeout=self.limits.body_timeout,
            # What a route that reads no body may buffer; the POST route raises it for its
            # own (streamed) body once the token has been checked.
            max_body_size=_UNREAD_BODY_LIMIT,
        )
        self._http.add_sockets(sockets)
        _lower_switch_interval(self.switch_interval)
        self._switch_lowered = True
        self.hub.start_producers()
        log.info("livestream serving on %s", self.base_url)
        return self

    async def stop_async(self) -> None:
        """Stop accepting, close every connection (1001) and stop the producers."""
        self.hub.stop_producers()
        if self._http is not None:
            self._http.stop()
            for session in list(self.hub.sessions):
                session.transport.close(1001, "server going away")
            await asyncio.wait_for(self._http.close_all_connections(), 5)
            self._http = None
        if self.backplane is not None:
            await self.backplane.stop()
        self.hub.detach()
        if self._switch_lowered:
            self._switch_lowered = False
            _restore_switch_interval()

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
