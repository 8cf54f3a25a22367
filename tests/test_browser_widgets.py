"""The notebook widgets' browser side (widget.js + livestream.js) in Chromium, without Jupyter.

Each test builds the real Python widget (``LivePlot(stream, ...)`` and friends), takes what
anywidget would send to the browser (its ``_esm``, ``_css`` and the synced traits ``kind``,
``url``, ``token``, ``stream``, ``options``), and renders it in a page that stands in for the
notebook, with a minimal anywidget-like model (get / set / save_changes / on / off over a
plain object: the host's API, not ours). The page is an empty shell served by a throwaway
``http.server`` on another loopback port, so it is cross-origin to the livestream server as
a notebook is. (A page fulfilled by Playwright's router, or about:blank, will not do: Chromium's
Local Network Access checks count such a page as public and block its requests to
127.0.0.1, and about:blank's opaque origin is refused by the server.) Each widget's module
is imported from its own blob URL, as anywidget does, so every widget runs its own copy of
the module, and they must still share the page's one WebSocket.

The plot data is read from BokehJS itself (``Bokeh.documents`` and the element's
``data-source-id``), and compared with the rows the server holds.

Chromium must be installed at /usr/bin/chromium; these tests fail, never skip, without it.
"""

from __future__ import annotations

import http.server
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from bokeh.layouts import column
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure
from playwright.sync_api import Browser, Page, expect
from support import open_pages, refused_amplitude

import livestream as ls
from livestream import Bool, Float
from livestream.errors import ConfigError
from livestream.plots import plot_spec
from livestream.server import Server
from livestream.widgets import LiveWidget, _module_source

pytestmark = pytest.mark.browser

#: Generous: two cores shared with other test runs.
WAIT_MS = 20_000

SHELL = """<!doctype html>
<html><head><meta charset="utf-8"><title>notebook stand-in</title><style id="widget-css"></style>
<style>body { margin: 16px; font: 14px system-ui, sans-serif; } .cell { margin: 0 0 16px; }</style>
</head><body></body></html>"""

#: Installed before any page script: counts the WebSockets the page opens.
COUNT_SOCKETS = """(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); window.__sockets.push(String(args[0])); }
  };
})();"""

#: Render one widget the way anywidget does: import its ESM from a blob URL, call
#: `render({model, el})`, keep the cleanup it returns. The model records every change saved.
MOUNT = """async ({id, esm, css, values}) => {
  document.getElementById("widget-css").textContent = css;
  const state = {...values};
  const listeners = new Map();
  const dirty = new Set();
  const model = {
    state, saved: [],
    get: (k) => state[k],
    set: (k, v) => { state[k] = v; dirty.add(k); },
    save_changes() {
      for (const k of dirty) {
        this.saved.push([k, state[k]]);
        for (const cb of listeners.get(`change:${k}`) ?? []) cb();
      }
      dirty.clear();
    },
    on: (event, cb) => { if (!listeners.has(event)) listeners.set(event, new Set()); listeners.get(event).add(cb); },
    off: (event, cb) => { if (cb) listeners.get(event)?.delete(cb); else listeners.delete(event); },
  };
  const url = URL.createObjectURL(new Blob([esm], {type: "text/javascript"}));
  const module = await import(url);
  const el = document.createElement("div");
  el.id = id;
  el.className = "cell";
  document.body.append(el);
  const widget = module.default;
  const cleanup = await (widget.render ?? (await widget()).render)({model, el});
  (window.__widgets ??= {})[id] = {model, el, cleanup, module};
}"""

#: The ColumnDataSource of the plot inside widget `id`, as {length, columns}.
SOURCE_OF = """(id) => {
  const target = document.getElementById(id)?.querySelector("[data-source-id]");
  if (!target || !window.Bokeh) return null;
  for (const doc of Bokeh.documents) {
    const source = doc.get_model_by_id(target.dataset.sourceId);
    if (source) {
      const columns = {};
      for (const [name, values] of Object.entries(source.data)) columns[name] = Array.from(values);
      return {length: source.get_length() ?? 0, columns};
    }
  }
  return null;
}"""

SOURCE_LENGTH = f"""([id, n]) => {{
  const s = ({SOURCE_OF})(id);
  return s !== null && s.length >= n;
}}"""


@pytest.fixture(scope="module")
def notebook_url() -> Iterator[str]:
    """The URL of an empty notebook stand-in page on its own loopback port."""

    class Shell(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = SHELL.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Shell)
    thread = threading.Thread(target=httpd.serve_forever, name="notebook-shell", daemon=True)
    thread.start()
    yield f"http://localhost:{httpd.server_address[1]}/notebook.html"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def notebook(browser: Browser, notebook_url: str) -> Iterator[Page]:
    """A page standing in for a notebook, at an origin of its own; fails the test on a
    JavaScript error in the page."""
    with open_pages(browser, width=1100, init_script=COUNT_SOCKETS) as open_:
        yield open_(notebook_url)


def mount(page: Page, widget: LiveWidget, id: str) -> None:
    """Render ``widget`` into a new element with this id, as anywidget would."""
    values = {
        name: getattr(widget, name)
        for name in ("kind", "url", "token", "stream", "options", "status", "message", "route")
    }
    page.evaluate(MOUNT, {"id": id, "esm": widget._esm, "css": widget._css, "values": values})


def model_status(page: Page, id: str) -> str:
    return str(page.evaluate("(id) => window.__widgets[id].model.state.status", id))


def wait_status(page: Page, id: str, status: str) -> None:
    page.wait_for_function(
        "([id, status]) => window.__widgets[id]?.model.state.status === status",
        arg=[id, status],
        timeout=WAIT_MS,
    )


def source_of(page: Page, id: str) -> dict[str, Any]:
    result = page.evaluate(SOURCE_OF, id)
    assert result is not None, f"no Bokeh source in widget {id}"
    return dict(result)


def wait_source(page: Page, id: str, at_least: int) -> dict[str, Any]:
    page.wait_for_function(SOURCE_LENGTH, arg=[id, at_least], timeout=WAIT_MS)
    return source_of(page, id)


def wait_until(cond: Callable[[], Any], what: str, timeout: float = WAIT_MS / 1000) -> Any:
    """Poll a Python-side condition (server state) every 20 ms, bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout} s for {what}")
        time.sleep(0.02)


#: Put the elements with these ids side by side in a flex row, as an ipywidgets HBox does.
HBOX = """([id, children]) => {
  const box = document.createElement("div");
  box.id = id;
  box.style.display = "flex";
  document.body.append(box);
  for (const child of children) box.append(document.getElementById(child));
}"""


def set_width(page: Page, id: str, width: int | None) -> None:
    """Give the cell ``id`` a fixed width in pixels (None: back to the page's width)."""
    page.evaluate(
        "([id, w]) => { document.getElementById(id).style.width = w === null ? '' : w + 'px'; }",
        [id, width],
    )


# ------------------------------------------------------------------------------ every kind


def test_every_kind_renders_live_data_over_one_shared_socket(
    server: Server, wave: Any, notebook: Page
) -> None:
    widgets = {
        "plot": ls.LivePlot(wave, y="y"),
        "table": ls.LiveTable(wave, rows=5),
        "value": ls.LiveValue(wave, "y", label="Wave"),
        "controls": ls.Controls(wave),
        "status": ls.Status(wave),
        "dashboard": ls.Dashboard(wave, y="y", rows=4),
    }
    for id, widget in widgets.items():
        mount(notebook, widget, id)
    page = notebook

    first = wait_source(page, "plot", 5)["length"]
    assert wait_source(page, "plot", first + 10)["length"] > first, "the plot stopped growing"
    expect(page.locator("#table .ls-table tbody tr")).to_have_count(5, timeout=WAIT_MS)
    expect(page.locator("#value .ls-value-label")).to_have_text("Wave")
    expect(page.locator("#value .ls-value-number")).not_to_have_text("—", timeout=WAIT_MS)
    expect(page.locator('#controls [data-param="amp"] input[type=number]')).to_have_value(
        "1", timeout=WAIT_MS
    )
    expect(page.locator("#status .ls-conn-pill")).to_have_attribute("data-status", "open")
    expect(page.locator("#status .ls-stream-pill")).to_have_attribute(
        "data-status", "running", timeout=WAIT_MS
    )
    received = page.locator("#status .ls-stat dd").first
    expect(received).not_to_have_text("—", timeout=WAIT_MS)
    wait_source(page, "dashboard", 5)
    expect(page.locator("#dashboard .ls-table tbody tr")).to_have_count(4, timeout=WAIT_MS)

    for id in widgets:
        wait_status(page, id, "open")
        assert page.locator(f"#{id} > .ls-widget-alert").is_hidden(), f"{id} shows an alert"
    # Six widgets, six copies of the module: one socket, one server session.
    sockets = page.evaluate("() => window.__sockets")
    assert len(sockets) == 1, f"expected one shared WebSocket, the page opened {sockets}"
    assert len(server.hub.sessions) == 1
    # The plot holds exactly the server's rows, in order, typed.
    plot = source_of(page, "plot")
    assert set(plot["columns"]) == {"time", "y"}
    rows = wave.read(0)
    times = np.asarray(rows.columns["time"])
    n = plot["length"]
    assert plot["columns"]["time"] == times[:n].tolist()


# ------------------------------------------------------------------------------ OHLC


def _ticks(n: int, start: float, seed: int) -> dict[str, list[float]]:
    rng = random.Random(seed)
    price = 100.0
    times, prices = [], []
    for i in range(n):
        price = round(price * math.exp(rng.gauss(0, 0.002)), 4)
        times.append(start + i * 37.0)
        prices.append(price)
    return {"time": times, "price": prices, "volume": [rng.randint(1, 50) * 10 for _ in range(n)]}


def _bars(times: np.ndarray, prices: np.ndarray, interval: float) -> list[tuple[float, ...]]:
    """OHLC bars from ticks, the straightforward way (the reference for the browser's)."""
    bars: dict[float, list[float]] = {}
    for t, p in zip(times.tolist(), prices.tolist(), strict=True):
        start = math.floor(t / interval) * interval
        bar = bars.get(start)
        if bar is None:
            bars[start] = [p, p, p, p]
        else:
            bar[1] = max(bar[1], p)
            bar[2] = min(bar[2], p)
            bar[3] = p
    return [(t, *bar) for t, bar in sorted(bars.items())]


def test_ohlc_bars_are_built_from_the_server_ticks_across_frames(
    server: Server, notebook: Page
) -> None:
    interval = 250.0
    stream = server.stream(
        "ticks", history=10_000, schema={"time": "float64", "price": "float64", "volume": "int64"}
    )
    ticks = _ticks(400, start=math.floor(time.time()) * 1000.0 + 11.0, seed=7)
    stream.append({k: v[:50] for k, v in ticks.items()})
    mount(notebook, ls.LivePlot(stream, kind="ohlc", interval=interval), "candles")
    page = notebook
    wait_source(page, "candles", 1)
    # A bar that spans two frames: rows 50..59 continue the bar that rows ..49 began.
    stream.append({k: v[50:60] for k, v in ticks.items()})
    last_before = math.floor(ticks["time"][59] / interval) * interval
    page.wait_for_function(
        f"([id, t]) => {{ const s = ({SOURCE_OF})(id); return s && s.columns.time.at(-1) === t; }}",
        arg=["candles", last_before],
        timeout=WAIT_MS,
    )
    # Several appends in a row: the server may merge them into one frame, the page into one
    # flush; either way the bars must come out the same.
    for lo in range(60, 400, 17):
        stream.append({k: v[lo : lo + 17] for k, v in ticks.items()})

    held = stream.read(0)
    expected = _bars(np.asarray(held.columns["time"]), np.asarray(held.columns["price"]), interval)
    page.wait_for_function(
        f"""([id, n, close]) => {{
          const s = ({SOURCE_OF})(id);
          return s && s.length === n && s.columns.close.at(-1) === close;
        }}""",
        arg=["candles", len(expected), expected[-1][4]],
        timeout=WAIT_MS,
    )
    got = source_of(page, "candles")["columns"]
    bars = list(zip(got["time"], got["open"], got["high"], got["low"], got["close"], strict=True))
    assert len(bars) < held.rows, "fewer bars than ticks"
    assert len(bars) == len(expected) >= 30
    assert bars == expected
    for (_, o, high, low, c), color in zip(bars, got["color"], strict=True):
        assert high >= max(o, c) and low <= min(o, c)
        assert color == ("#16a34a" if c >= o else "#dc2626")
    assert all(t % interval == 0 for t, *_ in bars)
    wait_status(page, "candles", "open")


def test_ohlc_folding_in_embed_plot_handles_late_ticks_and_clear(
    notebook: Page, server: Server
) -> None:
    """embedPlot directly, with hand-made batches: a late tick, a NaN, and clear()."""
    spec = plot_spec("t", {"time": "float64", "price": "float64"}, kind="ohlc", interval=1000)
    esm = _module_source()
    result = notebook.evaluate(
        """async ({esm, spec, base}) => {
          const url = URL.createObjectURL(new Blob([esm], {type: "text/javascript"}));
          const m = await import(url);
          const el = document.createElement("div");
          document.body.append(el);
          const plot = await m.embedPlot(el, spec, {httpBase: base});
          const frame = () => new Promise((r) => m.requestFrame(r));
          const batch = (offset, time, price) => ({stream: "t", offset, rows: time.length,
            columns: {time: Float64Array.from(time), price: Float64Array.from(price)}});
          const snapshot = () => ["time", "open", "high", "low", "close", "color"].map(
            (c) => Array.from(plot.source.data[c]));
          plot.append(batch(0, [1000, 1500, 1999], [10, 12, 11]));
          plot.append(batch(3, [2100, 2200], [11, NaN]));
          await frame();
          const first = snapshot();
          plot.append(batch(5, [1700, 2300, 3000], [13, 9, 8]));  // 1700 is late: bar 1000
          await frame();
          const second = snapshot();
          plot.clear();
          const cleared = plot.source.get_length() ?? 0;
          plot.append(batch(8, [5000], [7]));
          await frame();
          const third = snapshot();
          const docs = Bokeh.documents.length;
          plot.dispose();
          return {first, second, cleared, third, docs, after: Bokeh.documents.length};
        }""",
        {"esm": esm, "spec": spec, "base": server.base_url},
    )
    up, down = "#16a34a", "#dc2626"
    assert result["first"] == [[1000, 2000], [10, 11], [12, 11], [10, 11], [11, 11], [up, up]]
    assert result["second"] == [
        [1000, 2000, 3000],
        [10, 11, 8],
        [13, 11, 8],
        [10, 9, 8],
        [11, 9, 8],  # the late tick raised bar 1000's high, not its close
        [up, down, up],
    ]
    assert result["cleared"] == 0
    assert result["third"] == [[5000], [7], [7], [7], [7], [up]]
    assert result["after"] == result["docs"] - 1


def test_a_plot_made_before_the_stream_has_rows_fetches_its_spec_then_draws(
    server: Server, notebook: Page
) -> None:
    """No schema yet: the widget carries options, and the browser asks the plot endpoint
    (kind, interval) once rows exist, then applies what the endpoint does not take."""
    stream = server.stream("later", history=5_000)
    widget = ls.LivePlot(stream, kind="ohlc", interval=500, title="Later candles", webgl=True)
    assert "spec" not in widget.options
    mount(notebook, widget, "later")
    expect(notebook.locator("#later .ls-plot-placeholder")).to_be_visible(timeout=WAIT_MS)
    ticks = _ticks(120, start=math.floor(time.time()) * 1000.0, seed=3)
    stream.append({k: v[:60] for k, v in ticks.items()})
    wait_source(notebook, "later", 1)
    stream.append({k: v[60:] for k, v in ticks.items()})
    held = stream.read(0)
    expected = _bars(np.asarray(held.columns["time"]), np.asarray(held.columns["price"]), 500.0)
    page = notebook
    page.wait_for_function(
        f"""([id, n, close]) => {{
          const s = ({SOURCE_OF})(id);
          return s && s.length === n && s.columns.close.at(-1) === close;
        }}""",
        arg=["later", len(expected), expected[-1][4]],
        timeout=WAIT_MS,
    )
    got = source_of(page, "later")["columns"]
    assert (
        list(zip(got["time"], got["open"], got["high"], got["low"], got["close"], strict=True))
        == expected
    )
    figure_props = page.evaluate(
        """() => Bokeh.documents.flatMap((d) => [...d.all_models])
              .filter((m) => m.type === "Figure").map((m) => [m.output_backend, m.title?.text?.text])"""
    )
    # A PlainText title, never TeX; WebGL was asked, but here it is a software renderer
    # (SwiftShader), where the page draws with canvas.
    assert figure_props == [["canvas", "Later candles"]]


# ------------------------------------------------------------------------------ bring your own


def test_bring_your_own_layout_gets_the_mapped_columns_and_keeps_its_look(
    server: Server, wave: Any, notebook: Page
) -> None:
    source = ColumnDataSource(data={"t": [], "v": []})
    top = figure(x_axis_type="datetime", height=200, sizing_mode="stretch_width")
    top.line("t", "v", source=source, legend_label="wave", color="#7c3aed")
    top.xaxis.major_label_text_color = "#123456"
    bottom = figure(x_range=top.x_range, height=120, sizing_mode="stretch_width")
    bottom.scatter("t", "v", source=source, size=3)
    layout = column(top, bottom, sizing_mode="stretch_width")
    mount(
        notebook,
        ls.LivePlot(wave, figure=layout, source=source, columns={"time": "t", "y": "v"}),
        "mine",
    )
    got = wait_source(notebook, "mine", 20)
    assert set(got["columns"]) == {"t", "v"}
    rows = wave.read(0)
    n = got["length"]
    assert got["columns"]["t"] == np.asarray(rows.columns["time"])[:n].tolist()
    assert got["columns"]["v"] == np.asarray(rows.columns["y"])[:n].tolist()
    # The user's styling is left alone (no theme pass over a figure of one's own).
    colors = notebook.evaluate(
        """() => Bokeh.documents.flatMap((d) => [...d.all_models])
              .filter((m) => m.type === "DatetimeAxis").map((m) => m.major_label_text_color)"""
    )
    assert "#123456" in colors
    assert notebook.locator("#mine .ls-legend").is_hidden()
    # The figure's own legend keeps its swatches painted while rows stream in: BokehJS
    # rebuilds them blank on every data change, and would paint them only a frame later.
    frames = notebook.evaluate(SWATCHES_PAINTED_PER_FRAME, 45)
    assert len(frames) == 45
    blank = [i for i, painted in enumerate(frames) if not painted]
    assert not blank, f"legend swatches blank in frames {blank} of {len(frames)}"
    wait_status(notebook, "mine", "open")


#: For ``n`` animation frames, whether every swatch of every BokehJS legend on the page has
#: painted pixels, read once each frame's callbacks (the plot's data updates) have run.
SWATCHES_PAINTED_PER_FRAME = """async (n) => {
  const legends = () => {
    const found = [];
    const queue = [...Bokeh.index];
    const seen = new Set();
    while (queue.length) {
      const view = queue.shift();
      if (seen.has(view)) continue;
      seen.add(view);
      if (view.model.type === "Legend") found.push(view);
      queue.push(...view.children());
    }
    return found;
  };
  const painted = (canvas) => {
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) return true;
    return false;
  };
  const frames = [];
  for (let i = 0; i < n; i++) {
    await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
    const swatches = legends().flatMap((view) => view.entries.map((entry) => entry.glyph.canvas));
    frames.push(swatches.length > 0 && swatches.every(painted));
  }
  return frames;
}"""


# ------------------------------------------------------------------------------ WebGL


def test_a_large_window_asks_webgl_but_draws_with_canvas_on_software_webgl(
    server: Server, wave: Any, notebook: Page
) -> None:
    """Widgets ask WebGL above 20,000 points; the page draws with canvas when its WebGL is
    a software renderer (Chromium here has no GPU: SwiftShader), where canvas is faster."""
    widget = ls.LivePlot(wave, y="y", window=50_000)
    assert "webgl" in str(widget.options)
    mount(notebook, widget, "big")
    wait_source(notebook, "big", 10)
    renderer = notebook.evaluate(
        """() => { const gl = document.createElement("canvas").getContext("webgl");
              if (!gl) return "none";
              const info = gl.getExtension("WEBGL_debug_renderer_info");
              return String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER)); }"""
    )
    assert renderer == "none" or re.search(r"swiftshader|llvmpipe|software", renderer, re.I), (
        renderer
    )
    backend = notebook.evaluate(
        """() => Bokeh.documents.flatMap((d) => [...d.all_models])
              .filter((m) => m.type === "Figure").map((m) => m.output_backend)"""
    )
    assert backend == ["canvas"]
    scripts = notebook.evaluate(
        "() => [...document.scripts].map((s) => s.src).filter((s) => s.includes('/static/js/'))"
    )
    assert scripts == [
        f"{server.base_url}/static/js/bokeh.min.js",
        f"{server.base_url}/static/js/bokeh-api.min.js",  # Document.from_json (embedPlot)
    ]


# ------------------------------------------------------------------------------ cleanup


def test_cleanup_drops_the_bokeh_document_and_the_server_subscription(
    server: Server, wave: Any, notebook: Page
) -> None:
    mount(notebook, ls.LivePlot(wave, y="y"), "gone")
    wait_source(notebook, "gone", 5)
    wait_until(lambda: server.hub.subscriber_count("wave") == 1, "the plot's subscription")
    documents = notebook.evaluate("() => Bokeh.documents.length")
    notebook.evaluate("() => window.__widgets.gone.cleanup()")
    assert notebook.evaluate("() => Bokeh.documents.length") == documents - 1
    assert notebook.evaluate("() => document.getElementById('gone').childElementCount") == 0
    wait_until(lambda: server.hub.subscriber_count("wave") == 0, "the unsubscribe")
    wait_until(lambda: len(server.hub.sessions) == 0, "the socket to close after the last widget")


# ------------------------------------------------------------------------------ errors


def test_a_wrong_token_is_said_in_the_widget_and_not_retried(
    server: Server, wave: Any, notebook: Page
) -> None:
    mount(notebook, ls.LivePlot(wave, y="y", token="not-the-token"), "denied")
    wait_status(notebook, "denied", "error")
    banner = notebook.locator("#denied > .ls-widget-alert")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Access denied")
    expect(banner).to_contain_text("token")
    message = notebook.evaluate("() => window.__widgets.denied.model.state.message")
    assert "token" in message
    assert notebook.evaluate("() => window.__sockets") == [], "a rejected token opened a socket"


def test_an_unreachable_server_is_said_in_the_widget(notebook: Page) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    widget = ls.LiveTable("prices", url=f"http://127.0.0.1:{closed_port}", token="whatever-token")
    mount(notebook, widget, "nowhere")
    banner = notebook.locator("#nowhere > .ls-widget-alert")
    expect(banner).to_contain_text("Cannot reach the livestream server", timeout=WAIT_MS)
    expect(banner).to_contain_text(f"127.0.0.1:{closed_port}")
    wait_status(notebook, "nowhere", "reconnecting")


def test_a_producer_in_error_is_said_in_the_widgets(server: Server, notebook: Page) -> None:
    stream = server.stream("flaky", schema={"time": "float64", "temp": "float64"})
    calls = {"n": 0}

    @stream.producer(every=0.02)
    def read() -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] > 5:
            raise ValueError("sensor unplugged")
        return {"time": time.time() * 1000.0, "temp": 20.0 + calls["n"]}

    mount(notebook, ls.LiveValue(stream, "temp"), "value")
    mount(notebook, ls.LivePlot(stream), "plot")
    mount(notebook, ls.Status(stream), "status")
    for id in ("value", "plot"):
        banner = notebook.locator(f"#{id} > .ls-widget-alert")
        expect(banner).to_contain_text(
            "Stream error: ValueError: sensor unplugged", timeout=WAIT_MS
        )
    expect(notebook.locator("#status .ls-status .ls-alert")).to_contain_text("sensor unplugged")
    expect(notebook.locator("#value .ls-value-number")).to_have_text("25")


def test_controls_show_a_refused_value_and_follow_the_broadcast_state(
    server: Server, wave: Any, notebook: Page
) -> None:
    mount(notebook, ls.Controls(wave), "a")
    mount(notebook, ls.Controls(wave), "b")
    refused_amplitude(notebook, "#a", WAIT_MS)
    assert wave.params["amp"] == 1.0

    wave.pause()  # from Python: every viewer's controls follow
    for id in ("a", "b"):  # one Pause toggle, pressed while the stream is paused
        toggle = notebook.locator(f"#{id} .ls-run-toggle")
        expect(toggle).to_have_attribute("aria-pressed", "true", timeout=WAIT_MS)
    notebook.locator("#b .ls-run-toggle").click()
    expect(notebook.locator("#a .ls-run-toggle")).to_have_attribute(
        "aria-pressed", "false", timeout=WAIT_MS
    )
    wait_until(lambda: not wave.paused, "the resume to reach the stream")


# ------------------------------------------------------------------------------ live values


def test_live_value_alarm_follows_the_value_and_a_named_threshold(
    server: Server, notebook: Page
) -> None:
    lab = server.stream(
        "lab",
        schema={"time": "float64", "temp": "float64"},
        params={"max_temp": Float(25.0, min=0.0, max=50.0, label="Max temp")},
    )
    t0 = time.time() * 1000.0
    lab.append({"time": [t0], "temp": [24.0]})
    mount(notebook, ls.LiveValue(lab, "temp", alarm_above="max_temp", digits=1), "hot")
    mount(notebook, ls.LiveValue(lab, "temp", alarm_below=10, digits=1), "cold")
    mount(notebook, ls.Controls(lab), "knobs")
    page = notebook
    hot, cold = page.locator("#hot .ls-value"), page.locator("#cold .ls-value")
    calm = page.locator("#hot .ls-value:not([data-alarm])")
    expect(hot.locator(".ls-value-number")).to_have_text("24.0", timeout=WAIT_MS)
    expect(calm).to_have_count(1)
    expect(hot.locator(".ls-value-alarm")).to_be_hidden()

    # Above the threshold: red, with an "Alarm" chip saying which threshold.
    lab.append({"time": [t0 + 100], "temp": [26.0]})
    expect(hot).to_have_attribute("data-alarm", "high", timeout=WAIT_MS)
    chip = page.locator("#hot").get_by_role("status")
    expect(chip).to_be_visible()
    expect(chip).to_have_text(re.compile("^alarm$", re.I))
    expect(chip).to_have_attribute("aria-label", "Alarm: 26.0 is above 25 (max_temp)")
    red = hot.locator(".ls-value-number").evaluate("(el) => getComputedStyle(el).color")
    assert red == "rgb(207, 34, 46)", f"the number in alarm is {red}, not red"
    expect(page.locator("#cold .ls-value:not([data-alarm])")).to_have_count(1)

    # The named threshold follows the parameter: raised from another viewer's controls, the
    # alarm ends without a new row; lowered from Python, it is back.
    threshold = page.locator('#knobs [data-param="max_temp"] input[type=number]')
    expect(threshold).to_have_value("25", timeout=WAIT_MS)
    threshold.fill("30")
    threshold.press("Enter")
    expect(calm).to_have_count(1, timeout=WAIT_MS)
    assert lab.params["max_temp"] == 30.0
    expect(hot).to_have_attribute("title", "Alarm above 30 (max_temp)")
    lab.set(max_temp=20.0)
    expect(hot).to_have_attribute("data-alarm", "high", timeout=WAIT_MS)

    # Below a number: the other value's alarm.
    lab.append({"time": [t0 + 200], "temp": [5.0]})
    expect(cold).to_have_attribute("data-alarm", "low", timeout=WAIT_MS)
    expect(page.locator("#cold").get_by_role("status")).to_have_attribute(
        "aria-label", "Alarm: 5.0 is below 10"
    )
    expect(calm).to_have_count(1)


def test_live_value_thresholds_are_checked_in_python(server: Server) -> None:
    lab = server.stream(
        "lab", params={"max_temp": Float(25.0, min=0.0, max=50.0), "heating": Bool(True)}
    )
    widget = ls.LiveValue(lab, "temp", alarm_above="max_temp", alarm_below=3)
    assert widget.options == {"column": "temp", "alarmAbove": "max_temp", "alarmBelow": 3.0}
    with pytest.raises(ConfigError, match=r"'max_tmp' names no parameter .*are max_temp\."):
        ls.LiveValue(lab, "temp", alarm_above="max_tmp")
    with pytest.raises(ConfigError, match=r"'heating' is a bool parameter .*not a number"):
        ls.LiveValue(lab, "temp", alarm_below="heating")
    with pytest.raises(ConfigError, match="finite number"):
        ls.LiveValue(lab, "temp", alarm_above=math.nan)
    with pytest.raises(ConfigError, match="finite number"):
        ls.LiveValue(lab, "temp", alarm_above=True)
    # A stream of another server: its parameters are not known here, the name is passed on.
    remote = ls.LiveValue("lab", url=server.base_url, token="t", alarm_above="max_temp")
    assert remote.options["alarmAbove"] == "max_temp"


def test_live_values_side_by_side_stand_apart_and_show_small_changes(
    server: Server, notebook: Page
) -> None:
    temps = server.stream("temps", schema={"time": "float64", "a": "float64", "b": "float64"})
    t0 = time.time() * 1000.0
    temps.append({"time": [t0], "a": [21.8], "b": [3.0]})
    mount(notebook, ls.LiveValue(temps, "a", digits=1), "a")
    mount(notebook, ls.LiveValue(temps, "b", digits=1), "b")
    notebook.evaluate(HBOX, ["row", ["a", "b"]])
    expect(notebook.locator("#b .ls-value-number")).to_have_text("3.0", timeout=WAIT_MS)
    # A change smaller than the digits shown still reads as a change, not "▼ 0".
    temps.append({"time": [t0 + 100], "a": [21.796], "b": [3.0]})
    expect(notebook.locator("#a .ls-value-change")).to_have_text(
        "▼ -0.004 (-0.02%)", timeout=WAIT_MS
    )
    expect(notebook.locator("#a .ls-value-number")).to_have_text("21.8")
    boxes = notebook.evaluate(
        """() => ["a", "b"].map((id) => {
          const el = document.querySelector(`#${id} .ls-value`);
          const r = el.getBoundingClientRect();
          return {left: r.left, right: r.right, border: getComputedStyle(el).borderTopWidth};
        })"""
    )
    gap = boxes[1]["left"] - boxes[0]["right"]
    assert gap >= 8, f"two values in a row are {gap}px apart"
    assert [b["border"] for b in boxes] == ["1px", "1px"]


# ------------------------------------------------------------------------------ layout

#: Controls (inputs, buttons) inside each element matched by a selector that stick out of it.
STICKING_OUT = """(selectors) => {
  const out = [];
  for (const selector of selectors) {
    for (const box of document.querySelectorAll(selector)) {
      const b = box.getBoundingClientRect();
      for (const el of box.querySelectorAll("input, button, select")) {
        const r = el.getBoundingClientRect();
        if (!r.width) continue;
        if (r.right > b.right + 0.5 || r.left < b.left - 0.5) {
          out.push(`${el.tagName} ${el.type} in ${selector}: ${r.left}-${r.right} of ${b.left}-${b.right}`);
        }
      }
    }
  }
  return out;
}"""


def test_controls_stay_inside_narrow_widgets_and_a_phone_page(
    server: Server, wave: Any, notebook: Page
) -> None:
    mount(notebook, ls.Dashboard(wave, y="y", rows=3), "dash")
    mount(notebook, ls.Controls(wave), "knobs")
    page = notebook
    set_width(page, "dash", 600)
    set_width(page, "knobs", 230)
    expect(page.locator('#dash [data-param="amp"] input[type=number]')).to_have_value(
        "1", timeout=WAIT_MS
    )
    for width in (1100, 375):
        if width == 375:
            page.set_viewport_size({"width": 375, "height": 800})
            set_width(page, "dash", None)
            set_width(page, "knobs", None)
        # The dashboard lays out by its own width: one column of cards, each as wide as it.
        widths = page.evaluate(
            """() => {
              const dash = document.querySelector("#dash .ls-dashboard").getBoundingClientRect();
              return {dash: dash.width, cards: [...document.querySelectorAll("#dash .ls-card")]
                .map((c) => c.getBoundingClientRect().width)};
            }"""
        )
        assert widths["cards"], "no cards"
        assert all(abs(w - widths["dash"]) < 1 for w in widths["cards"]), (width, widths)
        out = page.evaluate(STICKING_OUT, ["#dash .ls-card", "#knobs"])
        assert not out, f"at a {width}px page: {out}"
        numbers = page.locator(".ls-range-row input[type=number]").evaluate_all(
            "(els) => els.map((el) => el.getBoundingClientRect().width)"
        )
        assert len(numbers) == 2 and min(numbers) >= 56, numbers


#: JupyterLab's own rules for definition lists in outputs (which float each dt at 20%).
HOST_DL_CSS = """
.jp-OutputArea-output dl, .jp-OutputArea-output dt, .jp-OutputArea-output dd { display: block; }
.jp-OutputArea-output dl { width: 100%; overflow: hidden; padding: 0; margin: 0; }
.jp-OutputArea-output dt { font-weight: bold; float: left; width: 20%; padding: 0; margin: 0; }
.jp-OutputArea-output dd { float: left; width: 80%; padding: 0; margin: 0; }
"""

#: Record, at every change of the table in #rows, its newest offset and the status offset.
WATCH_OFFSETS = """() => {
  window.__offsets = [];
  const tbody = document.querySelector("#rows tbody");
  new MutationObserver(() => {
    const newest = tbody.querySelector("td.ls-offset")?.textContent;
    const status = document.querySelector('#status [data-stat="offset"] dd').textContent;
    window.__offsets.push([newest, status]);
  }).observe(tbody, {childList: true, subtree: true}); // rows are kept, their text changes
}"""


def test_status_keeps_pace_with_the_table_and_lays_out_in_a_host_page(
    server: Server, notebook: Page
) -> None:
    feed = server.stream("feed", schema={"time": "float64", "v": "float64"})
    t0 = time.time() * 1000.0
    feed.append({"time": [t0], "v": [1.0]})
    page = notebook
    page.add_style_tag(content=HOST_DL_CSS)
    mount(page, ls.LiveTable(feed, rows=3), "rows")
    mount(page, ls.Status(feed), "status")
    mount(page, ls.Dashboard(feed, y="v", rows=3), "dash")
    page.evaluate(
        """() => { for (const id of ["status", "dash"]) {
          const host = document.createElement("div");
          host.className = "jp-OutputArea-output";
          document.body.append(host);
          host.append(document.getElementById(id));
        } }"""
    )
    wait_status(page, "status", "open")
    expect(page.locator("#rows tbody tr")).to_have_count(1, timeout=WAIT_MS)
    page.evaluate(WATCH_OFFSETS)
    for k in range(1, 6):
        feed.append({"time": [t0 + k], "v": [float(k)]})
        expect(page.locator("#rows tbody td.ls-offset").first).to_have_text(str(k), timeout=WAIT_MS)
    seen = page.evaluate("() => window.__offsets")
    assert [table for table, _ in seen][-1] == "5"
    lagging = [(table, status) for table, status in seen if table != status]
    assert not lagging, f"the status offset lagged the table (table, status): {lagging}"

    # Each figure is its label above its value, on one line each, two or more per row.
    for root in ("#status", "#dash"):
        stats = page.locator(f"{root} .ls-stat").evaluate_all(
            """(els) => els.map((el) => {
              const dt = el.querySelector("dt").getBoundingClientRect();
              const dd = el.querySelector("dd").getBoundingClientRect();
              return {dt: [dt.left, dt.top, dt.bottom, dt.height], dd: [dd.left, dd.top]};
            })"""
        )
        assert len(stats) == 4
        for stat in stats:
            (dt_left, _, dt_bottom, dt_height), (dd_left, dd_top) = stat["dt"], stat["dd"]
            assert abs(dt_left - dd_left) < 1 and dt_bottom <= dd_top + 1, (root, stat)
            assert dt_height < 20, f"{root}: a label wraps: {stat}"
        assert stats[0]["dt"][1] == stats[1]["dt"][1], f"{root}: one figure per row"


#: The geometry of the table in widget `id`: its box, the table, and the scroll box.
TABLE_GEOMETRY = """(id) => {
  const el = document.getElementById(id);
  const scroller = el.querySelector(".ls-table-scroll");
  const rect = (e) => { const r = e.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
  return {
    widget: rect(el), scroller: rect(scroller), table: rect(el.querySelector(".ls-table")),
    lastRow: rect(el.querySelector("tbody tr:last-child")),
    scrollWidth: scroller.scrollWidth, clientWidth: scroller.clientWidth,
    scrollHeight: scroller.scrollHeight, clientHeight: scroller.clientHeight,
    clientTop: scroller.clientTop,
  };
}"""


def test_a_wide_table_scrolls_in_its_box_with_its_header_in_view(
    server: Server, notebook: Page
) -> None:
    columns = {f"sensor_{i:02d}": "float64" for i in range(16)}
    wide = server.stream("wide", schema={"time": "float64", **columns})
    t0 = time.time() * 1000.0
    wide.append({"time": [t0 + i for i in range(12)], **{c: [1234.5678] * 12 for c in columns}})
    page = notebook
    with pytest.raises(ConfigError, match="height must be a whole number of pixels"):
        ls.LiveTable(wide, height=10)
    mount(page, ls.LiveTable(wide, rows=10, height=160), "tall")
    mount(page, ls.LiveTable(wide, rows=4, columns=["time", "sensor_00"]), "short")
    set_width(page, "tall", 480)
    set_width(page, "short", 480)
    expect(page.locator("#tall tbody tr")).to_have_count(10, timeout=WAIT_MS)
    expect(page.locator("#short tbody tr")).to_have_count(4, timeout=WAIT_MS)

    # Every row of a table without a height shows in full, inside the widget's box.
    short = page.evaluate(TABLE_GEOMETRY, "short")
    assert short["table"]["left"] >= short["widget"]["left"] - 0.5, short
    assert short["table"]["right"] <= short["widget"]["right"] + 0.5, short
    assert short["lastRow"]["bottom"] <= short["widget"]["bottom"] + 0.5, short
    assert short["scrollHeight"] <= short["clientHeight"], "a table without a height scrolls"

    # The wide one scrolls sideways and down in a box no wider than the widget.
    tall = page.evaluate(TABLE_GEOMETRY, "tall")
    assert tall["scroller"]["right"] <= tall["widget"]["right"] + 0.5, tall
    assert tall["scrollWidth"] > tall["clientWidth"], "the wide table does not scroll sideways"
    assert tall["clientHeight"] <= 160 < tall["scrollHeight"], tall
    # At the far end, the last column is in view and the header row still on top.
    page.locator("#tall .ls-table-scroll").evaluate(
        "(el) => el.scrollTo(el.scrollWidth, el.scrollHeight)"
    )
    header = page.evaluate(
        """() => {
          const scroller = document.querySelector("#tall .ls-table-scroll");
          const box = scroller.getBoundingClientRect();
          const last = [...scroller.querySelectorAll("th")].at(-1).getBoundingClientRect();
          return {box: [box.left, box.right, box.top + scroller.clientTop], last: [last.left, last.right, last.top],
                  scrolled: [scroller.scrollLeft, scroller.scrollTop]};
        }"""
    )
    (left, right, top), (th_left, th_right, th_top) = header["box"], header["last"]
    assert min(header["scrolled"]) > 0, header
    assert left <= th_left and th_right <= right + 0.5, f"the last column is out of view: {header}"
    assert abs(th_top - top) < 1, f"the header row scrolled away: {header}"
    expect(page.locator("#tall th").last).to_have_text("sensor_15")


def test_a_large_plot_streams_at_a_pace_and_a_small_one_every_frame(
    notebook: Page, server: Server
) -> None:
    """embedPlot directly: rows appended at every animation frame go into a 1,000-point
    plot at every frame, but into a full 100,000-point plot at most every 100 ms (BokehJS
    redraws every point at each `stream`), and none of them is lost."""
    schema = {"time": "float64", "price": "float64"}
    specs = {
        "small": plot_spec("t", schema, window=1_000),
        "big": plot_spec("t", schema, window=100_000),
    }
    result = notebook.evaluate(
        """async ({esm, specs, base}) => {
          const url = URL.createObjectURL(new Blob([esm], {type: "text/javascript"}));
          const m = await import(url);
          const frame = () => new Promise((r) => m.requestFrame(r));
          const batch = (offset, rows) => {
            const time = Float64Array.from({length: rows}, (_, i) => offset + i);
            return {stream: "t", offset, rows, columns: {time, price: time}};
          };
          const run = async (spec, fill) => {
            const el = document.createElement("div");
            document.body.append(el);
            const plot = await m.embedPlot(el, spec, {httpBase: base});
            let calls = 0;
            const stream = plot.source.stream.bind(plot.source);
            plot.source.stream = (data, rollover) => { calls++; return stream(data, rollover); };
            plot.append(batch(0, fill));
            await new Promise((r) => setTimeout(r, 150));
            await frame();
            calls = 0;
            let offset = fill, frames = 0;
            const t0 = performance.now();
            while (performance.now() - t0 < 1000) {
              plot.append(batch(offset, 10));
              offset += 10;
              await frame();
              frames++;
            }
            const during = calls;
            await new Promise((r) => setTimeout(r, 150));
            await frame();
            const time = Array.from(plot.source.data.time);
            plot.dispose();
            el.remove();
            return {calls: during, frames, length: time.length, last: time[time.length - 1],
                    appended: offset};
          };
          return {small: await run(specs.small, 500), big: await run(specs.big, 100000)};
        }""",
        {"esm": _module_source(), "specs": specs, "base": server.base_url},
    )
    small, big = result["small"], result["big"]
    assert small["frames"] >= 10, small
    assert small["calls"] >= 0.8 * small["frames"], f"the small plot skipped frames: {small}"
    assert big["frames"] >= 10, big
    assert big["calls"] <= 13, f"the full plot streamed more often than every 100 ms: {big}"
    for got, window in ((small, 1_000), (big, 100_000)):
        # A slow machine draws fewer frames in the second, and so appends fewer rows: the
        # plot keeps them all until the window is full, then the newest `window`.
        assert got["length"] == min(window, got["appended"]), got
        assert got["last"] == got["appended"] - 1, got
