"""The relay route: protocol frames through a widget's comm, for pages that cannot reach the server.

A notebook page normally opens its own WebSocket to the kernel's livestream server, directly
or through jupyter-server-proxy (see docs/jupyter-routes.md). Where neither is possible
(VS Code's webview, Colab), the browser module sends the same protocol frames to the kernel
as custom messages of the widget's comm, and :class:`Relay` hands them to the server's hub
as one more session; the server's frames go back the same way. Nothing about the protocol
changes: a relay session is a :class:`~livestream.session.Session` like a socket's, paced by the
same credit.

Messages (the ``content`` of the widget's custom messages; ``id`` names one relay socket of
one page, so several pages and reconnects can share a widget):

=================================================  ==========================================
page → kernel                                      kernel → page
=================================================  ==========================================
``{ls: "open", id}``                               ``{ls: "opened", id}``, then frames; or
                                                   ``{ls: "closed", id, code, reason}``
``{ls: "frame", id, text}``, or a binary frame as  ``{ls: "frame", id, text}``, or a binary
the message's one buffer                           frame as the one buffer
``{ls: "close", id, code, reason}``                (the session ends)
``{ls: "get", id, path}``: a GET of the server     ``{ls: "response", id, status, type}`` with
(BokehJS, plot specs; ``/api/``, ``/static/``,     the body as the one buffer
``/healthz`` only)
``{ls: "hello", origin}``: admit this page's       ``{ls: "admitted", origin, ok, message}``
origin (for the direct and proxy routes)
=================================================  ==========================================

Threads: where the kernel handles widget messages on its main shell thread (ipykernel 6,
and possibly VS Code and Colab), it does so only while no cell runs, so through the relay
nothing moves while the kernel is busy; ipykernel 7 with JupyterLab's subshells handles them
on another thread and the relay keeps moving (docs/jupyter-routes.md). The direct and proxy
routes keep moving everywhere: use them where you can. Everything a session does happens on the server's
loop thread (``call_soon_threadsafe``); frames leave from there too (ipykernel sends comm
messages from any thread through its IOPub thread).

Authentication: a relay session gets the roles of the widget's token; the comm itself is
authenticated by Jupyter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .security import Refusal
from .session import Session

if TYPE_CHECKING:
    from .server import Server

__all__ = ["MAX_SESSIONS", "Relay"]

log = logging.getLogger("livestream.relay")

#: Relay sockets one widget keeps at once; a page that went away never says so, and the
#: oldest session makes room for a new one.
MAX_SESSIONS = 16
#: What a page may GET through the relay: the server's API, its static files, its health.
_GET_PREFIXES = ("/api/", "/static/", "/healthz")
_GET_TIMEOUT = 60.0

Send = Callable[[dict[str, Any], Sequence[bytes] | None], None]


class _CommTransport:
    """A hub transport over one relay socket: frames leave through the widget's comm."""

    def __init__(self, relay: Relay, sid: str) -> None:
        self.relay = relay
        self.sid = sid
        self.session: Session | None = None
        self.closed = False
        # A frame the session is still working on, and the frames that arrived behind it.
        self.pending: Awaitable[None] | None = None
        self.backlog: deque[str | bytes] = deque()

    def send(self, frame: str | bytes) -> None:
        if self.closed:
            raise ConnectionError("the relay socket is closed")
        if isinstance(frame, bytes):
            self.relay._send({"ls": "frame", "id": self.sid}, [frame])
        else:
            self.relay._send({"ls": "frame", "id": self.sid, "text": frame}, None)
        # No write completion to wait for: the page paces the server with `credit`.
        return None

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.relay._send({"ls": "closed", "id": self.sid, "code": code, "reason": reason}, None)
        self.relay._forget(self.sid)
        if self.session is not None:
            self.session.close()


class Relay:
    """The kernel's end of the relay route for one widget.

    ``server`` is the widget's server in this kernel (``None`` for a widget watching a
    server elsewhere, which the relay cannot reach); ``token`` the widget's token, whose roles
    the relay sessions get; ``send(content, buffers)`` sends a custom message to the
    widget's views (``widget.send``). Register :meth:`handle` with ``widget.on_msg``.
    """

    def __init__(self, server: Server | None, token: str, send: Send, *, url: str = "") -> None:
        self.server = server
        self.token = token
        self.url = url
        self._send_message = send
        # Touched on the server's loop thread only.
        self._sessions: dict[str, _CommTransport] = {}

    # ------------------------------------------------------------------ from the shell thread

    def handle(self, _widget: Any, content: Any, buffers: Sequence[Any] | None = None) -> None:
        """``widget.on_msg`` callback: one custom message from a view of the widget."""
        if not isinstance(content, dict):
            return
        kind = content.get("ls")
        if kind == "hello":
            self._hello(content.get("origin"))
            return
        sid = content.get("id")
        if not isinstance(sid, str) or not sid or len(sid) > 100:
            return
        if kind == "frame":
            text = content.get("text")
            payload: str | bytes | None = (
                text if isinstance(text, str) else (bytes(buffers[0]) if buffers else None)
            )
            if payload is not None:
                self._on_loop(self._frame, sid, payload)
        elif kind == "open":
            self._open(sid)
        elif kind == "close":
            self._on_loop(self._close, sid)
        elif kind == "get":
            self._get(sid, content.get("path"))

    def _hello(self, origin: Any) -> None:
        if not isinstance(origin, str):
            return
        server = self.server
        if server is None:
            host = origin.split("://", 1)[-1].rsplit(":", 1)[0]
            ok, message = (
                False,
                (
                    f"this widget watches the server at {self.url}, outside this kernel: start that "
                    f"server with --allow-origin {origin} --allow-host {host} to admit this page"
                ),
            )
        else:
            try:
                changed = server.security.admit_page(origin)
            except ConfigError as err:
                ok, message = False, str(err)
            else:
                ok, message = True, ""
                if changed:
                    log.info(
                        "admitted the notebook page at %s (reported by a widget's comm)", origin
                    )
        self._send({"ls": "admitted", "origin": origin, "ok": ok, "message": message}, None)

    def _open(self, sid: str) -> None:
        server = self.server
        if server is None:
            self._refuse(
                sid,
                1008,
                f"the relay route serves only this kernel's own livestream "
                f"server; this widget watches {self.url}. Use the direct or proxy "
                "route for it, or serve its streams from this kernel.",
            )
            return
        if server.loop is None or not server.running:
            self._refuse(
                sid,
                1001,
                "the kernel's livestream server is not running; run "
                "ls.serve() (or re-run the cell that made the stream)",
            )
            return
        try:
            roles = server.security.authenticate(self.token)
        except Refusal as refusal:
            self._refuse(sid, 1008, refusal.message)
            return
        self._on_loop(self._start, sid, roles)

    def _get(self, sid: str, path: Any) -> None:
        server = self.server
        where = path.split("?", 1)[0] if isinstance(path, str) else ""
        if (
            not isinstance(path, str)
            or not where.startswith(_GET_PREFIXES)
            or ".." in where
            or "\\" in where
            or "//" in where
            or len(path) > 8192
        ):
            self._send(
                {"ls": "response", "id": sid, "status": 400, "type": "text/plain"},
                [b"the relay GETs only /api/, /static/ and /healthz paths of the server"],
            )
            return
        if server is None or server.loop is None or not server.running:
            self._send(
                {"ls": "response", "id": sid, "status": 502, "type": "text/plain"},
                [b"the relay serves only this kernel's own, running livestream server"],
            )
            return
        asyncio.run_coroutine_threadsafe(self._fetch(server, sid, path), server.loop)

    def _refuse(self, sid: str, code: int, reason: str) -> None:
        self._send({"ls": "closed", "id": sid, "code": code, "reason": reason}, None)

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self.server.loop if self.server is not None else None
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the server stopped meanwhile
            loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        """End every relay session of this widget (the widget is being closed)."""
        self._on_loop(self._close_all)

    # ------------------------------------------------------------------ on the server's loop

    def _start(self, sid: str, roles: tuple[str, ...]) -> None:
        server = self.server
        assert server is not None
        old = self._sessions.get(sid)
        if old is not None:
            old.close(1008, "the page opened this relay socket again")
        while len(self._sessions) >= MAX_SESSIONS:
            oldest = next(iter(self._sessions.values()))
            oldest.close(1008, "too many relay sockets for one widget; closing the oldest")
        transport = _CommTransport(self, sid)
        session = Session(server.hub, transport, roles, peer="comm")
        transport.session = session
        self._sessions[sid] = transport
        server.hub.sessions.add(session)
        self._send({"ls": "opened", "id": sid}, None)
        session.welcome()

    def _frame(self, sid: str, payload: str | bytes) -> None:
        transport = self._sessions.get(sid)
        if transport is None or transport.session is None:
            self._refuse(sid, 1001, "this relay socket is gone (the server restarted?)")
            return
        server = self.server
        if server is not None and len(payload) > server.max_message_size:
            transport.close(
                1009,
                f"message of {len(payload)} bytes is over the {server.max_message_size}-byte limit",
            )
            return
        if transport.pending is not None:
            transport.backlog.append(payload)  # in order, after the frame still at work
            return
        pending = transport.session.receive(payload)
        if pending is not None:
            transport.pending = pending
            pending.add_done_callback(  # type: ignore[attr-defined]
                lambda _: self._next_frame(sid, transport)
            )

    def _next_frame(self, sid: str, transport: _CommTransport) -> None:
        transport.pending = None
        if transport.backlog and not transport.closed:
            self._frame(sid, transport.backlog.popleft())

    def _close(self, sid: str) -> None:
        transport = self._sessions.get(sid)
        if transport is not None:
            transport.closed = True
            self._forget(sid)
            if transport.session is not None:
                transport.session.close()

    def _close_all(self) -> None:
        for transport in list(self._sessions.values()):
            transport.close(1001, "the widget was closed")

    def _forget(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    async def _fetch(self, server: Server, sid: str, path: str) -> None:
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest

        client = AsyncHTTPClient(force_instance=True)
        try:
            response = await client.fetch(
                HTTPRequest(f"{server.base_url}{path}", request_timeout=_GET_TIMEOUT),
                raise_error=False,
            )
            status = response.code if response.code != 599 else 502
            body = response.body or b""
            kind = response.headers.get("Content-Type", "")
        except Exception as exc:  # the page is told; the kernel goes on
            status, body, kind = (
                502,
                f"the kernel could not GET {path}: {exc}".encode(),
                "text/plain",
            )
        finally:
            client.close()
        self._send({"ls": "response", "id": sid, "status": status, "type": kind}, [body])

    # ------------------------------------------------------------------ out

    def _send(self, content: dict[str, Any], buffers: Sequence[bytes] | None) -> None:
        try:
            self._send_message(content, buffers)
        except Exception:  # a closed comm; its sessions end with the widget
            log.debug("relay message not sent", exc_info=True)

    @property
    def sessions(self) -> int:
        """How many relay sessions are open (read it on the server's loop for an exact count)."""
        return len(self._sessions)
