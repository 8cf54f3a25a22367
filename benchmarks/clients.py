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
import contextlib
import json
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import wsclient
from .common import (
    HOST,
    STREAM,
    TOKEN,
    child_setup,
    error_reply,
    read_header,
    read_times,
    serve_commands_async,
)

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


class Window:
    """The measuring window of a subscriber process (one per process): what arrives in
    ``[t0, t1)`` (wall-clock seconds) counts; ``latency``: keep ``arrival - time`` per row."""

    t0 = float("inf")
    t1 = float("inf")
    latency = False


class Counts:
    """What every subscriber connection counts: rows, frames and bytes in the window, its
    latencies (``lat``: arrays of ms, or lags in ms), and rows over the whole run."""

    __slots__ = ("bytes_win", "frames_win", "lat", "rows_total", "rows_win")

    def __init__(self) -> None:
        self.rows_win = self.frames_win = self.bytes_win = self.rows_total = 0
        self.lat: list[Any] = []

    def reset_window(self) -> None:
        self.rows_win = self.frames_win = self.bytes_win = 0
        self.lat = []


class OffsetCounts(Counts):
    """:class:`Counts` of a subscriber of offsets (livestream or raw Tornado frames): the
    first offset, the next one expected, rows jumped over (``gap``; in the window,
    ``gap_win``) and ``reset`` messages."""

    __slots__ = ("first", "gap", "gap_win", "next", "resets")

    def __init__(self) -> None:
        super().__init__()
        self.gap = self.gap_win = self.resets = 0
        self.first: int | None = None
        self.next: int | None = None

    def reset_window(self) -> None:
        super().reset_window()
        self.gap_win = 0

    def jump_to(self, offset: int) -> int:
        """Rows jumped over to reach a frame at ``offset`` (0 for the first frame, which
        sets ``first``, and for a frame that does not start ahead)."""
        if self.next is None:
            self.first = offset
            return 0
        return offset - self.next if offset > self.next else 0

    def took(self, now: float, offset: int, rows: int, nbytes: int, jumped: int) -> bool:
        """Count a frame of ``rows`` rows from ``offset`` that came at ``now`` after
        ``jumped`` rows were jumped over; ``True`` when it came in the window."""
        self.gap += jumped
        self.next = offset + rows
        self.rows_total += rows
        if not Window.t0 <= now < Window.t1:
            return False
        self.gap_win += jumped
        self.rows_win += rows
        self.frames_win += 1
        self.bytes_win += nbytes
        return True


def per(states: Sequence[Any], name: str) -> list[Any]:
    """``name`` of every connection, in order: a column of a reply."""
    return [getattr(st, name) for st in states]


async def measure_window(states: Sequence[Counts], msg: dict[str, Any]) -> dict[str, Any]:
    """``measure`` {t0, t1, latency}: count in that window; answered after ``t1`` with the
    figures every subscriber gives (``rows``, ``frames``, ``bytes`` per connection)."""
    for st in states:
        st.reset_window()
    Window.latency = bool(msg.get("latency"))
    Window.t0, Window.t1 = msg["t0"], msg["t1"]
    await asyncio.sleep(max(0.0, Window.t1 - time.time()) + 0.05)
    return {
        "rows": per(states, "rows_win"),
        "frames": per(states, "frames_win"),
        "bytes": per(states, "bytes_win"),
    }


def latencies(states: Sequence[Counts]) -> list[float]:
    """Every row's latency kept in the window (ms), all connections."""
    lat = [a for st in states for a in st.lat]
    return np.concatenate(lat).tolist() if lat else []


async def drain(states: Sequence[OffsetCounts], msg: dict[str, Any]) -> dict[str, Any]:
    """``drain`` {end, timeout}: wait (bounded) until every connection has every row up to
    ``end``; rows received and expected per connection, and how many are complete."""
    deadline = time.monotonic() + msg.get("timeout", 20.0)
    end = msg["end"]
    while time.monotonic() < deadline and any((st.next or 0) < end for st in states):
        await asyncio.sleep(0.05)
    return {
        "received": per(states, "rows_total"),
        "expected": [end - (st.first or 0) for st in states],
        "gap": per(states, "gap"),
        "resets": per(states, "resets"),
        "complete": sum((st.next or 0) >= end for st in states),
    }


async def connect_all(conn: Any, open_one: Any, states: list[Any], limit: int) -> None:
    """Open a connection per state (``open_one(state)``, at most ``limit`` at once), then
    tell the parent how many are connected (the process's first message)."""
    gate = asyncio.Semaphore(limit)

    async def one(st: Any) -> None:
        async with gate:
            await open_one(st)

    await asyncio.gather(*(one(st) for st in states))
    conn.send({"connected": len(states), "pid": os.getpid(), "port": 0})


def run_subscribers(main: Any, conn: Any, *args: Any) -> None:
    """A subscriber process's entry point: ``asyncio.run(main(conn, *args))``; a failure is
    sent to the parent as an error reply."""
    child_setup()
    try:
        asyncio.run(main(conn, *args))
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(error_reply(exc))


class _Conn(OffsetCounts):
    __slots__ = ("subscribed",)

    def __init__(self) -> None:
        super().__init__()
        self.subscribed = asyncio.Event()


def _handlers(st: _Conn) -> tuple[Any, Any]:
    def on_binary(frame: bytes) -> None:
        now = time.time()
        header, area = read_header(frame)
        rows, offset = header["rows"], header["offset"]
        jumped = st.jump_to(offset)
        if st.took(now, offset, rows, len(frame), jumped) and Window.latency:
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
    subscribe = json.dumps({"type": "subscribe", "stream": STREAM, "last": 0})

    async def open_one(st: _Conn) -> None:
        on_binary, on_text = _handlers(st)
        ws = await wsclient.connect(HOST, port, path, on_binary, on_text, timeout=60)
        sockets.append(ws)
        if kind == "livestream":
            ws.send_text(subscribe)
            await asyncio.wait_for(st.subscribed.wait(), 30)

    async def measure(msg: dict[str, Any]) -> dict[str, Any]:
        out = await measure_window(states, msg)
        out.update(gap=per(states, "gap_win"), resets=per(states, "resets"))
        out["latency"] = latencies(states)
        return out

    await connect_all(conn, open_one, states, 64)
    try:
        await serve_commands_async(conn, {"measure": measure, "drain": lambda m: drain(states, m)})
    finally:
        for ws in sockets:
            ws.close()
        await asyncio.sleep(0.1)


def ws_subscribers(conn: Any, kind: str, port: int, count: int, options: dict[str, Any]) -> None:
    """Process entry point: ``count`` WebSocket subscribers of a livestream or raw server."""
    run_subscribers(_ws_main, conn, kind, port, count, options)


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
            pages: list[Any] = []

            async def open_one(_: int) -> None:
                page = await context.new_page()
                await page.goto(url, timeout=60_000)
                await page.wait_for_function(PAGE_COUNTER, timeout=60_000, polling=100)
                pages.append(page)

            async def measure(msg: dict[str, Any]) -> dict[str, Any]:
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
                none = [0] * len(got)  # what a page cannot know: bytes, gaps, resets
                return {
                    "rows": [g[0] for g in got],
                    "frames": [g[1] for g in got],
                    "bytes": none,
                    "gap": none,
                    "resets": none,
                    "lag": [x for g in got for x in g[2]],
                }

            await connect_all(conn, open_one, list(range(count)), 8)
            await serve_commands_async(conn, {"measure": measure})
        finally:
            await browser.close()


def bokeh_pages(conn: Any, port: int, count: int, options: dict[str, Any]) -> None:
    """Process entry point: ``count`` Chromium pages, each a session of the Bokeh app."""
    run_subscribers(_pages_main, conn, f"http://{HOST}:{port}/bench", count, options)


# --------------------------------------------------------------------------- Bokeh protocol


class _BokehSession(Counts):
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
        "lag_id",
        "lag_value",
        "msg_bytes",
        "msg_rows",
        "msgtype",
        "pulled",
        "state",
        "ws",
    )

    def __init__(self) -> None:
        super().__init__()
        self.state = "header"
        self.msgtype = ""
        self.buffers_left = 0
        self.msg_rows = 0
        self.msg_bytes = 0
        self.lag_id: str | None = None
        self.lag_value: float | None = None
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
            if Window.t0 <= now < Window.t1:
                self.rows_win += self.msg_rows
                self.frames_win += 1
                self.bytes_win += self.msg_bytes
                if self.lag_value is not None:
                    self.lat.append(now * 1000.0 - self.lag_value)
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

    async def open_one(st: _BokehSession) -> None:
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

    async def measure(msg: dict[str, Any]) -> dict[str, Any]:
        out = await measure_window(sessions, msg)
        out["gap"] = out["resets"] = [0] * len(sessions)  # not known to a Bokeh client
        out["lag"] = [x for st in sessions for x in st.lat]
        return out

    await connect_all(conn, open_one, sessions, 16)
    try:
        await serve_commands_async(conn, {"measure": measure})
    finally:
        for st in sessions:
            if st.ws is not None:
                st.ws.close()
        await asyncio.sleep(0.1)


def bokeh_ws_sessions(conn: Any, port: int, count: int, options: dict[str, Any]) -> None:
    """Process entry point: ``count`` Bokeh sessions speaking Bokeh's WebSocket protocol."""
    run_subscribers(_bokeh_ws_main, conn, port, count, options)


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
    wsclient.handshake(sock, HOST, port, path + (f"?token={TOKEN}" if subscribe else ""))
    if subscribe:
        payload = json.dumps({"type": "subscribe", "stream": STREAM, "last": 0}).encode()
        sock.sendall(wsclient.masked(payload))
    return sock
