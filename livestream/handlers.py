"""The HTTP and WebSocket request handlers behind the routes of :mod:`livestream.server`.

Each handler is a thin adapter: it checks the request (``Host``, ``Origin``, token, role),
hands the work to the hub, a session or :mod:`livestream.plots`, and writes the answer.
This module owns them, the decoding of POSTed bodies, the request log line and keeping
secrets out of logs; :mod:`livestream.server` owns the routes, the application and the
HTTP server that runs them, and the :class:`~livestream.server.Server` the handlers are
given (imported here for type checking only: the arrows point down, server -> handlers).

May import: columns, errors, limits, plots, protocol, security, session, streams (never
server, hub only through ``server.hub``).

What one HTTP request may cost (docs/security.md, "Limits"):

* Token, ``Origin`` and ``Host`` are checked from the headers, before any body is read. Only
  ``POST /api/streams/<name>`` reads a body; it streams it in, up to
  ``min(max_message_size, max_json_size)`` bytes, refusing a larger one (413, ``too_large``)
  from its ``Content-Length`` or as soon as it grows past the limit. Every other route
  refuses a body over 64 KiB from its ``Content-Length`` (413). A refused body is not read:
  the answer says ``Connection: close`` and the connection closes once it is written.
* No token reaches a log line: the query values ``token=`` and ``livestream_token=`` and
  ``Authorization`` headers are redacted from what Tornado and livestream log.
* API errors (400, 404, 405, 413, 500) answer JSON ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import sys
from collections.abc import Awaitable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import tornado.http1connection
import tornado.httputil
import tornado.web
import tornado.websocket

from . import protocol as P
from .columns import Batch
from .errors import BadMessage, ProtocolError
from .limits import Limits
from .security import Refusal
from .session import Session
from .streams import Stream

if TYPE_CHECKING:
    from .server import Server

__all__ = [
    "HealthHandler",
    "PageHandler",
    "PlotHandler",
    "StaticHandler",
    "StreamHandler",
    "StreamsHandler",
    "WebSocketHandler",
]

# The request log and the handlers' errors are the server's: one logger for operators to
# configure, as before the handlers had a module of their own.
log = logging.getLogger("livestream.server")

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


# ---------------------------------------------------------------------- secrets out of logs

# A token travels in the query (``token=``, ``livestream_token=``; percent-encoded when the
# URL sits inside another one) or in an ``Authorization`` header; Tornado's own log lines
# print the request's URI with its query.
_SECRET_QUERY = re.compile(r"(?i)((?:livestream_)?token(?:=|%3d))[^&\s'\"#;,)]+")
_SECRET_HEADER = re.compile(
    r"(?i)(authorization[\"']?\s*[:=,]\s*[\"']?(?:(?:bearer|basic|token)\s+)?)[^\s'\",;}]+"
)
#: The loggers that can print a request: Tornado's, asyncio's, and ours (every
#: ``livestream.*`` logger that exists when a server is made).
_REQUEST_LOGGERS = ("tornado.access", "tornado.application", "tornado.general", "asyncio")


def _redact(text: str) -> str:
    """``text`` with token values and ``Authorization`` credentials replaced by ``***``."""
    return _SECRET_HEADER.sub(r"\1***", _SECRET_QUERY.sub(r"\1***", text))


class _RedactSecrets(logging.Filter):
    """Replaces tokens in a log record's message and traceback text before any handler
    formats it (a logger's filter sees only the records logged on that logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        clean = _redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _redact(record.exc_text)
        if record.stack_info:
            record.stack_info = _redact(record.stack_info)
        return True


_redactor = _RedactSecrets()


def _install_redaction() -> None:
    names = [*_REQUEST_LOGGERS, "livestream"]
    names += [n for n in list(logging.root.manager.loggerDict) if n.startswith("livestream.")]
    for name in names:
        logger = logging.getLogger(name)
        if _redactor not in logger.filters:
            logger.addFilter(_redactor)


# ---------------------------------------------------------------------- request bodies

#: Routes other than ``POST /api/streams/<name>`` read no body: one declaring more than
#: this is refused from its headers (413), and Tornado buffers at most this much of one.
_UNREAD_BODY_LIMIT = 64 * 1024
#: A POSTed body larger than this is parsed and converted on a worker thread.
_DECODE_OFF_LOOP = 64 * 1024
#: What Tornado is told a streamed body may reach: our ``data_received`` enforces the real
#: limit, with a clear 413; Tornado's own check would answer a bare 400 instead.
_UNBOUNDED = sys.maxsize

_BODY_SHAPES = (
    'a row object, a list of row objects, {"columns": {name: [values]}}, {"rows": [...]}, '
    "or JSON lines (one row object per line)"
)


def _declared_length(request: tornado.httputil.HTTPServerRequest) -> int | None:
    """The request's ``Content-Length`` as a number; ``None`` when absent or malformed
    (Tornado answers a malformed one with 400 itself)."""
    text = request.headers.get("Content-Length")
    if text is None:
        return None
    try:
        return int(text.split(",")[0].strip())
    except ValueError:
        return None


def _shape(data: Any) -> tuple[int, int]:
    """(columns, cells) a parsed body converts to, counted before converting it: rows
    that name different columns each get every column, so a few KiB of JSON could
    otherwise ask for billions of cells."""
    if isinstance(data, dict):
        return len(data), sum(len(v) if isinstance(v, list) else 1 for v in data.values())
    if isinstance(data, list):
        names: set[str] = set()
        for row in data:
            if isinstance(row, dict):
                names.update(row)
        return len(names), len(data) * len(names)
    return 0, 0


def _decode_body(body: bytes, limits: Limits) -> Batch:
    """A POSTed body as a checked :class:`Batch` (on a worker thread for large bodies).

    Raises :class:`ProtocolError`: ``bad_message`` for what is not JSON of a known shape,
    ``too_large`` past ``max_columns`` or ``max_cells``, ``schema_mismatch`` for values.
    """
    from .columns import check_cells, to_batch

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadMessage(
            f"the body must be UTF-8 encoded JSON; byte {exc.start} "
            f"({body[exc.start]:#04x}) is not valid UTF-8"
        ) from None
    try:
        try:
            data: Any = json.loads(text)
        except ValueError:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise BadMessage(
            f"the body must be JSON: {_BODY_SHAPES}; could not parse it "
            f"({type(exc).__name__}: {str(exc)[:80]})"
        ) from None
    except RecursionError:
        raise BadMessage(
            f"the body must be JSON: {_BODY_SHAPES}; it is nested too deeply to parse"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("columns"), dict):
        data = data["columns"]
    elif isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    columns, cells = _shape(data)
    P.check_publish_size("the body", columns, cells, limits)
    try:
        return check_cells(to_batch(data), max_depth=limits.max_depth)
    except RecursionError:
        raise BadMessage("a value in the body is nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise BadMessage(
            f"the body must be JSON: {_BODY_SHAPES}; could not convert it "
            f"({type(exc).__name__}: {str(exc)[:80]})"
        ) from None


class _Guarded:
    """Host, origin and token checks shared by the HTTP and WebSocket handlers."""

    server: Server
    request: Any

    def _guard(self, need_token: bool = True) -> tuple[str, ...]:
        sec = self.server.security
        sec.check_host(self.request.headers.get("Host"))
        sec.check_origin(self.request.headers.get("Origin"), self.request.headers.get("Host"))
        return sec.authenticate(_token_of(self)) if need_token else ()  # type: ignore[arg-type]

    def _request_summary(self) -> str:
        # Tornado's summary, in its error log lines, prints the URI with the query: the token.
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"


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


def _http_error_detail(exc: tornado.web.HTTPError) -> str:
    """What Tornado says about an ``HTTPError`` it raised (e.g. "Invalid body: ...")."""
    if not exc.log_message:
        return ""
    try:
        return exc.log_message % exc.args if exc.args else exc.log_message
    except (TypeError, ValueError):
        return exc.log_message


class _JsonHandler(tornado.web.RequestHandler):
    """A handler whose every error answers JSON ``{"error": {"code", "message"}}``, and
    whose log lines name the path, never the query (which may hold the token)."""

    #: Set when the HTTP method starts: a streamed body has then been read in full.
    _body_read = False

    def _fail(self, status: int, code: str, message: str) -> None:
        if self._stream_request_body and not self._body_read:
            self._abandon_body()
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"error": {"code": code, "message": message}}))

    def _abandon_body(self) -> None:
        """Answer before the body is read: the connection closes once the answer is out,
        and Tornado drops whatever of the body arrives until then."""
        self.set_header("Connection", "close")
        connection = self.request.connection
        if isinstance(connection, tornado.http1connection.HTTP1Connection):
            # Tornado's own size check would write a second, bare 400 after our answer.
            connection.set_max_body_size(_UNBOUNDED)

    def _allowed_methods(self) -> list[str]:
        base = tornado.web.RequestHandler
        return [
            m
            for m in self.SUPPORTED_METHODS
            if getattr(type(self), m.lower(), None) is not getattr(base, m.lower(), None)
        ]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        method, path = self.request.method, self.request.path
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == 405:
            allowed = ", ".join(self._allowed_methods())
            self.set_header("Allow", allowed)
            code = "method_not_allowed"
            message = f"{method} is not allowed on {path}; it answers {allowed}"
        elif status_code == 404:
            code, message = "not_found", f"nothing at {path}"
        elif status_code >= 500:
            code = "internal"
            message = "the server failed to answer this request; its log says why"
        else:
            detail = _http_error_detail(exc) if isinstance(exc, tornado.web.HTTPError) else ""
            code = "too_large" if status_code == 413 else "bad_request"
            message = f"the request could not be handled: {detail or self._reason}"
        self._fail(status_code, code, message)

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(value, tornado.web.HTTPError):
            # Answered with a JSON message; the request's own log line has the status.
            log.debug(
                "%d %s %s: %s", value.status_code, self.request.method, self.request.path, value
            )
            return
        log.error(
            "internal error answering %s %s",
            self.request.method,
            self.request.path,
            exc_info=value,
        )

    def _request_summary(self) -> str:
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"


class _ApiHandler(_Guarded, _JsonHandler):
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
        return self.server.hub.describe_stream(stream)


class StreamsHandler(_ApiHandler):
    async def get(self) -> None:
        if not self._need("view"):
            return
        # Described and encoded a slice per loop turn, as the WebSocket `list` is: ten
        # thousand streams take ~100 ms, which must not hold the loop in one piece.
        entries = [P.encode_stream_info(s) async for s in self.server.hub.describe_streams_async()]
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish('{"streams":[' + ",".join(entries) + "]}")


@tornado.web.stream_request_body
class StreamHandler(_ApiHandler):
    """``/api/streams/<name>``: GET describes the stream; POST appends JSON rows.

    The body is streamed in after the token, origin, host and role have been checked from
    the headers, and refused (413) past ``min(max_message_size, max_json_size)`` bytes,
    from its ``Content-Length`` or as soon as it grows past that.
    """

    def prepare(self) -> None:
        self._body = bytearray()
        self._limit = _UNREAD_BODY_LIMIT
        super().prepare()
        if self._finished or self.request.method == "OPTIONS":
            return
        if self.request.method == "POST":
            if not self._need("publish"):
                return
            limits = self.server.limits
            self._limit = min(limits.max_message_size, limits.max_json_size)
        declared = _declared_length(self.request)
        if declared is not None and declared > self._limit:
            self._too_large(declared)
            return
        connection = self.request.connection
        if self._limit > _UNREAD_BODY_LIMIT and isinstance(
            connection, tornado.http1connection.HTTP1Connection
        ):
            connection.set_max_body_size(_UNBOUNDED)  # data_received counts

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        if len(self._body) + len(chunk) > self._limit:
            self._too_large(None)
            return
        self._body += chunk

    def _too_large(self, declared: int | None) -> None:
        method, path = self.request.method, self.request.path
        size = f"{declared} bytes" if declared is not None else f"more than {self._limit} bytes"
        if method != "POST":
            self._fail(
                413,
                "too_large",
                f"{method} {path} reads no request body, and this one is {size} (at most "
                f"{self._limit} bytes are accepted here); send the request without a body",
            )
            return
        self._fail(
            413,
            "too_large",
            f"a request body of {size} is over this server's limit of {self._limit} bytes for "
            "a POST (min of max_message_size and max_json_size); split the rows over several "
            "requests, publish large batches as binary WebSocket frames (docs/protocol.md), "
            "or start the server with a higher --max-json-size",
        )

    def get(self, name: str) -> None:
        self._body_read = True
        stream = self._viewable_stream(name)
        if stream is not None:
            self._json(self._describe(stream))

    async def post(self, name: str) -> None:
        """Append JSON rows: a row object, a list of row objects, {column: [values]},
        or JSON lines (one row object per line)."""
        self._body_read = True
        body, self._body = bytes(self._body), bytearray()
        limits = self.server.limits
        try:
            P.validate_stream_name(name)
            if len(body) > _DECODE_OFF_LOOP:
                # Parsing and converting a large body would hold the loop for its duration.
                loop = asyncio.get_running_loop()
                try:
                    batch = await loop.run_in_executor(
                        self.server.hub.decoder(), _decode_body, body, limits
                    )
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
                    # The hub stopped its decoders: the server is stopping.
                    self._fail(503, "unavailable", "the server is stopping; send the rows again")
                    return
            else:
                batch = _decode_body(body, limits)
            # Converted before the stream exists: a refused body creates none.
            hub = self.server.hub
            stream = hub.stream_for_publish(name)
            stored = hub.backplane.publish(stream, batch, None, None)
            offset, _ = await stored if inspect.isawaitable(stored) else stored
        except ProtocolError as err:
            status = {"too_large": 413, "unavailable": 503}.get(err.code, 400)
            self._fail(status, err.code, err.message)
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


class HealthHandler(_JsonHandler):
    def initialize(self, server: Server) -> None:
        self.server = server

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Access-Control-Allow-Origin", "*")  # says nothing secret
        backplane = self.server.backplane
        if backplane is None:
            self.finish('{"ok": true}')
            return
        # The Redis URL without its password, and whether this node reaches Redis now.
        health = backplane.health()
        self.finish(json.dumps({"ok": bool(health["connected"]), **health}))


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
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
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


class _NotFoundHandler(_JsonHandler):
    """Every path no route matches: a JSON 404 that lists the routes."""

    def prepare(self) -> None:
        self._fail(
            404,
            "not_found",
            f"nothing at {self.request.path}; the routes are /ws, /api/streams, "
            "/api/streams/<name>, /api/streams/<name>/plot, /healthz, /static/..., / and "
            "/streams/<name>",
        )


@tornado.web.stream_request_body
class _BodyRefusedHandler(_JsonHandler):
    """Answers, in place of a route that reads no body, a request declaring a large one:
    413 from the headers, before any of the body is read."""

    def initialize(self, declared: int) -> None:
        self.declared = declared

    def prepare(self) -> None:
        self._fail(
            413,
            "too_large",
            f"{self.request.method} {self.request.path} reads no request body, and this one "
            f"declares {self.declared} bytes (at most {_UNREAD_BODY_LIMIT} are accepted here); "
            "send the request without a body",
        )

    def data_received(self, chunk: bytes) -> None:
        pass  # never called: the answer is out before the body is read
