"""Subscriber processes: many connections per process, counting what arrives in a window.

* :func:`ws_subscribers` — WebSocket subscribers of the livestream server (the protocol:
  ``welcome``, ``subscribe`` with ``last: 0``, then binary ``data`` frames) or of the raw
  Tornado broadcast (binary frames only). Both read frames with the minimal client of
  ``benchmarks.wsclient`` and look only at each frame's JSON header (``rows``, ``offset``),
  so the client side costs the same for both servers. With ``latency`` they also read the ``time``
  column and keep ``arrival - time`` per row.
* :func:`bokeh_pages` — Bokeh sessions as Chromium pages (Playwright, Debian's
  ``/usr/bin/chromium``). ``bokeh.client.pull_session`` cannot be used: Bokeh 3.9's client
  handles each PATCH-DOC by awaiting the next message from inside the handler
  (``ClientConnection._handle_messages`` → ``_next`` → ``CONNECTED_AFTER_ACK.run`` →
  ``_handle_messages``), so a sustained stream raises ``RecursionError`` after a few
  hundred messages and the session stops receiving (checked in this repo's first run; see
  docs/benchmarks.md). Each page counts the rows BokehJS streams into its document
  (``ColumnsStreamed`` document events), i.e. rows a real Bokeh viewer received and applied.
* :func:`bokeh_ws_sessions` — Bokeh sessions as minimal clients of Bokeh's own WebSocket
  protocol (``ACK``, ``PULL-DOC-REQ``, then counting rows of ``ColumnsStreamed`` events in
  each complete multi-part ``PATCH-DOC``), several per process: light enough for N = 100,
  and measuring the Bokeh server rather than a page.
* :func:`open_slow_socket` — a WebSocket subscriber that completes the handshake, sends
  ``subscribe`` and then never reads again.

Commands over the pipe: ``measure`` {t0, t1} (wall-clock seconds; answered after ``t1``),
``drain`` {end, timeout} (wait until every connection has every row up to ``end``),
``quit``. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import time
from typing import Any

import numpy as np

from . import wsclient
from .common import HOST, STREAM, TOKEN, child_setup, error_reply, read_header, read_times

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]


class _Conn:
    __slots__ = (
        "bytes_win",
        "first",
        "frames_win",
        "gap",
        "gap_win",
        "lat",
        "next",
        "resets",
        "rows_total",
        "rows_win",
        "subscribed",
    )

    def __init__(self) -> None:
        self.rows_win = 0
        self.frames_win = 0
        self.bytes_win = 0
        self.rows_total = 0
        self.gap = 0
        self.gap_win = 0
        self.resets = 0
        self.first: int | None = None
        self.next: int | None = None
        self.lat: list[np.ndarray] = []
        self.subscribed = asyncio.Event()


class _Window:
    t0 = float("inf")
    t1 = float("inf")
    latency = False


def _handlers(st: _Conn, win: type[_Window]) -> tuple[Any, Any]:
    def on_binary(frame: bytes) -> None:
        now = time.time()
        header, area = read_header(frame)
        rows, offset = header["rows"], header["offset"]
        skipped = 0
        if st.next is None:
            st.first = offset
        elif offset > st.next:
            skipped = offset - st.next
            st.gap += skipped
        st.next = offset + rows
        st.rows_total += rows
        if win.t0 <= now < win.t1:
            st.gap_win += skipped
            st.rows_win += rows
            st.frames_win += 1
            st.bytes_win += len(frame)
            if win.latency:
                st.lat.append(now * 1000.0 - read_times(frame, header, area))

    def on_text(text: str) -> None:
        msg = json.loads(text)
        kind = msg.get("type")
        if kind == "subscribed":
            st.first = st.next = msg["offset"]
            st.subscribed.set()
        elif kind == "reset":
            st.resets += 1

    return on_binary, on_text


async def _ws_main(conn: Any, kind: str, port: int, count: int, options: dict[str, Any]) -> None:
    path = "/ws" + (f"?token={TOKEN}" if kind == "livestream" else "")
    states = [_Conn() for _ in range(count)]
    sockets: list[wsclient.WSClient] = []
    limit = asyncio.Semaphore(64)
    win = _Window
    subscribe = json.dumps({"type": "subscribe", "stream": STREAM, "last": 0})

    async def open_one(st: _Conn) -> None:
        async with limit:
            on_binary, on_text = _handlers(st, win)
            ws = await wsclient.connect(HOST, port, path, on_binary, on_text, timeout=60)
            sockets.append(ws)
            if kind == "livestream":
                ws.send_text(subscribe)
                await asyncio.wait_for(st.subscribed.wait(), 30)

    await asyncio.gather(*(open_one(st) for st in states))
    conn.send({"connected": len(sockets), "pid": os.getpid(), "port": 0})
    loop = asyncio.get_running_loop()
    try:
        while True:
            msg = await loop.run_in_executor(None, conn.recv)
            cmd = msg["cmd"]
            if cmd == "quit":
                break
            if cmd == "measure":
                for st in states:
                    st.rows_win = st.frames_win = st.bytes_win = st.gap_win = 0
                    st.lat = []
                win.latency = bool(msg.get("latency"))
                win.t0, win.t1 = msg["t0"], msg["t1"]
                await asyncio.sleep(max(0.0, win.t1 - time.time()) + 0.05)
                lat = [a for st in states for a in st.lat]
                conn.send(
                    {
                        "rows": [st.rows_win for st in states],
                        "frames": [st.frames_win for st in states],
                        "bytes": [st.bytes_win for st in states],
                        "gap": [st.gap_win for st in states],
                        "resets": [st.resets for st in states],
                        "latency": np.concatenate(lat).tolist() if lat else [],
                    }
                )
            elif cmd == "drain":
                deadline = time.monotonic() + msg.get("timeout", 20.0)
                end = msg["end"]
                while time.monotonic() < deadline and any((st.next or 0) < end for st in states):
                    await asyncio.sleep(0.05)
                conn.send(
                    {
                        "received": [st.rows_total for st in states],
                        "expected": [end - (st.first or 0) for st in states],
                        "gap": [st.gap for st in states],
                        "resets": [st.resets for st in states],
                        "complete": sum((st.next or 0) >= end for st in states),
                    }
                )
            else:
                conn.send({"error": f"unknown command {cmd!r}"})
    finally:
        for ws in sockets:
            ws.close()
        await asyncio.sleep(0.1)


def ws_subscribers(conn: Any, kind: str, port: int, count: int, options: dict[str, Any]) -> None:
    """Process entry point: ``count`` WebSocket subscribers of a livestream or raw server."""
    child_setup()
    try:
        asyncio.run(_ws_main(conn, kind, port, count, options))
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(error_reply(exc))


# --------------------------------------------------------------------------- Bokeh pages

# Installed in each page once its Bokeh document exists: counts the rows streamed into it
# inside the [t0, t1) window (page clock = machine clock), and the newest row time.
PAGE_COUNTER = """
() => {
  const w = window;
  if (w.__bench) return true;
  const docs = (w.Bokeh && w.Bokeh.documents) || [];
  if (!docs.length) return false;
  const b = w.__bench = {rows: 0, frames: 0, t0: Infinity, t1: Infinity, total: 0, lags: []};
  for (const doc of docs) {
    doc.on_change((ev) => {
      if (ev.kind !== "ColumnsStreamed") return;
      const t = ev.data.time;
      const n = t.length;
      const now = Date.now();
      b.total += n;
      if (now >= b.t0 && now < b.t1) {
        b.rows += n; b.frames += 1;
        if (n) b.lags.push(now - t[n - 1]);
      }
    });
  }
  return true;
}
"""


async def _pages_main(conn: Any, url: str, count: int, options: dict[str, Any]) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 800, "height": 450})
            pages = []
            limit = asyncio.Semaphore(8)

            async def open_one() -> None:
                async with limit:
                    page = await context.new_page()
                    await page.goto(url, timeout=60_000)
                    await page.wait_for_function(PAGE_COUNTER, timeout=60_000, polling=100)
                    pages.append(page)

            await asyncio.gather(*(open_one() for _ in range(count)))
            conn.send({"connected": len(pages), "pid": os.getpid(), "port": 0})
            loop = asyncio.get_running_loop()
            while True:
                msg = await loop.run_in_executor(None, conn.recv)
                cmd = msg["cmd"]
                if cmd == "quit":
                    break
                if cmd == "measure":
                    t0, t1 = msg["t0"] * 1000.0, msg["t1"] * 1000.0
                    await asyncio.gather(
                        *(
                            pg.evaluate(
                                "([t0, t1]) => { const b = window.__bench; b.rows = 0; b.frames = 0;"
                                " b.lags = []; b.t0 = t0; b.t1 = t1; }",
                                [t0, t1],
                            )
                            for pg in pages
                        )
                    )
                    await asyncio.sleep(max(0.0, msg["t1"] - time.time()) + 0.2)
                    got = await asyncio.gather(
                        *(
                            pg.evaluate(
                                "() => { const b = window.__bench; return [b.rows, b.frames, b.lags]; }"
                            )
                            for pg in pages
                        )
                    )
                    conn.send(
                        {
                            "rows": [g[0] for g in got],
                            "frames": [g[1] for g in got],
                            "bytes": [0 for _ in got],
                            "gap": [0 for _ in got],
                            "resets": [0 for _ in got],
                            "lag": [x for g in got for x in g[2]],
                        }
                    )
                else:
                    conn.send({"error": f"unknown command {cmd!r}"})
        finally:
            await browser.close()


def bokeh_pages(conn: Any, port: int, count: int, options: dict[str, Any]) -> None:
    """Process entry point: ``count`` Chromium pages, each a session of the Bokeh app."""
    child_setup()
    try:
        asyncio.run(_pages_main(conn, f"http://{HOST}:{port}/bench", count, options))
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(error_reply(exc))


# --------------------------------------------------------------------------- Bokeh protocol


class _BokehSession:
    """One Bokeh session over Bokeh's own WebSocket protocol, as BokehJS speaks it.

    A Bokeh message is several WebSocket messages: a header (JSON: ``msgid``, ``msgtype``,
    ``num_buffers``), a metadata and a content fragment (JSON text), then for each buffer a
    text buffer header (``{"id": ...}``) and a binary payload. After the server's ``ACK``
    the session sends ``PULL-DOC-REQ`` (what BokehJS does); then every ``PATCH-DOC`` whose
    content has ``ColumnsStreamed`` events is counted: rows = length of the ``time`` column
    (a list, or an ndarray reference whose ``shape`` gives the length and whose buffer gives
    the newest row's time for the lag). Rows are counted when the whole message (with its
    buffers) has arrived. Nothing is applied to a document: this is the lightest client the
    protocol allows, to measure the server, not a page.
    """

    __slots__ = (
        "buffers_left",
        "bytes_win",
        "frames_win",
        "lag",
        "lag_id",
        "lag_value",
        "msg_bytes",
        "msg_rows",
        "msgtype",
        "pulled",
        "rows_total",
        "rows_win",
        "state",
        "ws",
    )

    def __init__(self) -> None:
        self.state = "header"
        self.msgtype = ""
        self.buffers_left = 0
        self.msg_rows = 0
        self.msg_bytes = 0
        self.lag_id: str | None = None
        self.lag_value: float | None = None
        self.rows_win = self.frames_win = self.bytes_win = self.rows_total = 0
        self.lag: list[float] = []
        self.pulled = asyncio.Event()
        self.ws: Any = None

    def _done(self) -> None:
        now = time.time()
        if self.msgtype == "ACK":
            header = json.dumps({"msgid": os.urandom(8).hex(), "msgtype": "PULL-DOC-REQ"})
            self.ws.send_text(header)
            self.ws.send_text("{}")
            self.ws.send_text("{}")
        elif self.msgtype == "PULL-DOC-REPLY":
            self.pulled.set()
        elif self.msgtype == "PATCH-DOC" and self.msg_rows:
            self.rows_total += self.msg_rows
            if _Window.t0 <= now < _Window.t1:
                self.rows_win += self.msg_rows
                self.frames_win += 1
                self.bytes_win += self.msg_bytes
                if self.lag_value is not None:
                    self.lag.append(now * 1000.0 - self.lag_value)
        self.state = "header"

    def on_text(self, text: str) -> None:
        state = self.state
        if state == "header":
            h = json.loads(text)
            self.msgtype = h["msgtype"]
            self.buffers_left = int(h.get("num_buffers") or 0)
            self.msg_rows = 0
            self.msg_bytes = len(text)
            self.lag_id = None
            self.lag_value = None
            self.state = "metadata"
        elif state == "metadata":
            self.msg_bytes += len(text)
            self.state = "content"
        elif state == "content":
            self.msg_bytes += len(text)
            if self.msgtype == "PATCH-DOC":
                for ev in json.loads(text).get("events", ()):
                    if ev.get("kind") != "ColumnsStreamed":
                        continue
                    data = ev["data"]
                    if data.get("type") == "map":  # Bokeh 3's encoding of a dict
                        data = {k: v for k, v in data["entries"]}
                    col = data["time"]
                    if isinstance(col, list):
                        self.msg_rows += len(col)
                        if col:
                            self.lag_value = float(col[-1])
                    elif isinstance(col, dict):
                        self.msg_rows += int(col["shape"][0])
                        ref = (col.get("array") or {}).get("data")
                        if isinstance(ref, dict) and "id" in ref:
                            self.lag_id = ref["id"]
            if self.buffers_left:
                self.state = "bufhdr"
            else:
                self._done()
        elif state == "bufhdr":
            self.msg_bytes += len(text)
            self.state = "buf:" + json.loads(text)["id"]
        else:
            raise ValueError(f"text frame where a buffer was expected ({state})")

    def on_binary(self, payload: bytes) -> None:
        if not self.state.startswith("buf:"):
            raise ValueError(f"binary frame in state {self.state}")
        self.msg_bytes += len(payload)
        if self.lag_id is not None and self.state[4:] == self.lag_id and len(payload) >= 8:
            self.lag_value = float(
                np.frombuffer(payload, "<f8", count=1, offset=len(payload) - 8)[0]
            )
        self.buffers_left -= 1
        if self.buffers_left:
            self.state = "bufhdr"
        else:
            self._done()


async def _bokeh_ws_main(conn: Any, port: int, count: int, options: dict[str, Any]) -> None:
    from bokeh.util.token import generate_jwt_token, generate_session_id

    sessions = [_BokehSession() for _ in range(count)]
    limit = asyncio.Semaphore(16)

    async def open_one(st: _BokehSession) -> None:
        async with limit:
            token = generate_jwt_token(generate_session_id())
            st.ws = await wsclient.connect(
                HOST,
                port,
                "/bench/ws",
                st.on_binary,
                st.on_text,
                timeout=60,
                headers=f"Sec-WebSocket-Protocol: bokeh, {token}\r\n",
            )
            await asyncio.wait_for(st.pulled.wait(), 60)

    await asyncio.gather(*(open_one(st) for st in sessions))
    conn.send({"connected": len(sessions), "pid": os.getpid(), "port": 0})
    loop = asyncio.get_running_loop()
    try:
        while True:
            msg = await loop.run_in_executor(None, conn.recv)
            cmd = msg["cmd"]
            if cmd == "quit":
                break
            if cmd == "measure":
                for st in sessions:
                    st.rows_win = st.frames_win = st.bytes_win = 0
                    st.lag = []
                _Window.t0, _Window.t1 = msg["t0"], msg["t1"]
                await asyncio.sleep(max(0.0, _Window.t1 - time.time()) + 0.05)
                conn.send(
                    {
                        "rows": [st.rows_win for st in sessions],
                        "frames": [st.frames_win for st in sessions],
                        "bytes": [st.bytes_win for st in sessions],
                        "gap": [0 for _ in sessions],
                        "resets": [0 for _ in sessions],
                        "lag": [x for st in sessions for x in st.lag],
                    }
                )
            else:
                conn.send({"error": f"unknown command {cmd!r}"})
    finally:
        for st in sessions:
            if st.ws is not None:
                st.ws.close()
        await asyncio.sleep(0.1)


def bokeh_ws_sessions(conn: Any, port: int, count: int, options: dict[str, Any]) -> None:
    """Process entry point: ``count`` Bokeh sessions speaking Bokeh's WebSocket protocol."""
    child_setup()
    try:
        asyncio.run(_bokeh_ws_main(conn, port, count, options))
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(error_reply(exc))


# --------------------------------------------------------------------------- the slow reader


def open_slow_socket(
    port: int, path: str = "/ws", subscribe: bool = True, rcvbuf: int = 64 * 1024
) -> socket.socket:
    """A WebSocket subscriber that does the handshake, subscribes, and never reads again.

    The receive buffer is kept small so that the server sees a stalled reader quickly.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((HOST, port))
    key = base64.b64encode(os.urandom(16)).decode()
    query = f"?token={TOKEN}" if subscribe else ""
    sock.sendall(
        (
            f"GET {path}{query} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)  # byte by byte: read the handshake and not one byte more
        if not chunk:
            raise ConnectionError("the server closed the connection during the handshake")
        response += chunk
    status = response.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        raise ConnectionError(f"handshake refused: {status!r}")
    if subscribe:
        payload = json.dumps({"type": "subscribe", "stream": STREAM, "last": 0}).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
    return sock
