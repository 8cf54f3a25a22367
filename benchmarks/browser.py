"""Scenario 7: what a Chromium page ingests into a Bokeh plot with a 100,000-row window.

The livestream server runs in its own process with a producer thread at an offered rate
(100 appends a second); Debian's Chromium (``/usr/bin/chromium``, driven by Playwright from
this process) opens the server's standalone page ``/streams/bench?window=100000`` — the
dashboard the server ships: a live Bokeh plot (``ColumnDataSource.stream`` with
``rollover=100000``), the newest-rows table, the latest value, controls and status.

Measured inside the page over a window, on the machine's one clock:

* rows/s ingested: rows BokehJS streamed into the plot's document (``ColumnsStreamed``
  document events, which every ``source.stream`` raises);
* frames per second: ``requestAnimationFrame`` callbacks;
* lag: at each ``stream`` into the plot, ``Date.now()`` minus the newest row's ``time``
  (the producer's ``time.time()`` at append).
"""

from __future__ import annotations

import time
from typing import Any

from . import ls_server
from .clients import CHROMIUM, CHROMIUM_ARGS
from .common import HOST, TOKEN, percentile, start_process

# Counts ColumnsStreamed rows and animation frames in [t0, t1) (milliseconds).
PAGE_PROBE = """
() => {
  const w = window;
  if (w.__bench) return true;
  const docs = (w.Bokeh && w.Bokeh.documents) || [];
  if (!docs.length) return false;
  const b = w.__bench = {rows: 0, events: 0, frames: 0, t0: Infinity, t1: Infinity, lags: []};
  for (const doc of docs) {
    doc.on_change((ev) => {
      if (ev.kind !== "ColumnsStreamed") return;
      const now = Date.now();
      if (now < b.t0 || now >= b.t1) return;
      const t = ev.data.time || Object.values(ev.data)[0];
      const n = t.length;
      b.rows += n; b.events += 1;
      if (n && t[n - 1] > 1e12) b.lags.push(now - t[n - 1]);
    });
  }
  const tick = () => {
    const now = Date.now();
    if (now >= b.t0 && now < b.t1) b.frames += 1;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  return true;
}
"""


def _window(page: Any, seconds: float) -> dict[str, Any]:
    t0 = time.time() * 1000.0 + 200.0
    t1 = t0 + seconds * 1000.0
    page.evaluate(
        "([t0, t1]) => { const b = window.__bench; b.rows = 0; b.events = 0; "
        "b.frames = 0; b.lags = []; b.t0 = t0; b.t1 = t1; }",
        [t0, t1],
    )
    time.sleep(seconds + 0.5)
    got = page.evaluate(
        "() => { const b = window.__bench; "
        "return {rows: b.rows, events: b.events, frames: b.frames, lags: b.lags}; }"
    )
    lags = got["lags"]
    return {
        "rows_per_s": got["rows"] / seconds,
        "streams_per_s": got["events"] / seconds,
        "fps": got["frames"] / seconds,
        "lag_p50": percentile(lags, 50),
        "lag_p99": percentile(lags, 99),
        "lag_max": max(lags) if lags else float("nan"),
    }


def livestream_page(
    rates: list[int], *, seconds: float, warmup: float, log: Any
) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    rows: list[dict[str, Any]] = []
    server = start_process(ls_server.serve, {})
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                # The stream needs rows (a schema and a time column) before the page asks
                # for its plot; a short trickle provides them.
                server.call("produce", batch=10, rate=1000, duration=5)
                time.sleep(0.5)
                page.goto(
                    f"http://{HOST}:{server.port}/streams/bench?token={TOKEN}"
                    "&window=100000&x=time&y=price",
                    timeout=60_000,
                )
                page.wait_for_function(PAGE_PROBE, timeout=60_000, polling=100)
                server.call("stop")
                for rate in rates:
                    batch = max(1, rate // 100)
                    log(
                        f"  browser: livestream page, {rate:,} rows/s offered "
                        f"({batch} rows x 100 appends/s)"
                    )
                    server.call("produce", batch=batch, rate=rate, duration=warmup + seconds + 30)
                    time.sleep(warmup)
                    r = _window(page, seconds)
                    produced = server.call("stop")
                    r.update(
                        server="livestream page",
                        offered=rate,
                        appended_per_s=produced["appended"] / max(1e-9, produced["elapsed"]),
                    )
                    rows.append(r)
                    log(
                        f"    {r['rows_per_s']:,.0f} rows/s into the plot, {r['fps']:.0f} fps, "
                        f"lag p50 {r['lag_p50']:.0f} ms, p99 {r['lag_p99']:.0f} ms"
                    )
                    time.sleep(1.0)
            finally:
                browser.close()
    finally:
        server.stop()
    return rows
