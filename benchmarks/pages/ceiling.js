// ceiling.js — the in-page ceiling of the large-window benchmark: BokehJS alone, no
// server, no socket, no decoding. Columns are generated before the run; at each animation
// frame the page streams the rows due by then (one `source.stream(columns, window)` per
// frame) into a line plot like the livestream page's (datetime x, stretch width, 320 px
// high, 1-px line above 20,000 points).
//
// Query parameters: `window` (rows the plot keeps, the rollover), `rate` (rows/s offered
// from the start; `ceiling.setRate(r)` changes it), `backend` (`canvas` or `webgl`),
// `spacing` (ms between the first window's rows).
// A row's `time` is the moment it was due (the offered schedule), so the lag the probe
// measures counts the wait for the next frame as well as the drawing.
(async () => {
  const status = document.getElementById("status");
  const params = new URLSearchParams(location.search);
  const window_ = Math.max(1, Number(params.get("window")) || 10000);
  let rate = Number(params.get("rate")) || 0;
  const backend = params.get("backend") === "webgl" ? "webgl" : "canvas";

  // Pre-generated prices: a random walk of 2^20 values, reused as a ring.
  const RING = 1 << 20;
  const walk = new Float64Array(RING);
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) - 0.5;
  let v = 100;
  for (let i = 0; i < RING; i++) walk[i] = v += rand() * 0.02;
  let cursor = 0;
  const prices = (n) => {
    const out = new Float64Array(n);
    let done = 0;
    while (done < n) {
      const k = Math.min(n - done, RING - cursor);
      out.set(walk.subarray(cursor, cursor + k), done);
      done += k;
      cursor = (cursor + k) % RING;
    }
    return out;
  };

  // The first window: `window_` rows `spacing` ms apart (default: as the offered rate, or
  // 100 k rows/s, would space them), ending now.
  const spacing = Number(params.get("spacing")) || 1000 / (rate || 100000);
  const start = Date.now();
  const time0 = new Float64Array(window_);
  for (let i = 0; i < window_; i++) time0[i] = start - (window_ - i) * spacing;
  const source = new Bokeh.ColumnDataSource({ data: { time: time0, price: prices(window_) } });
  const p = Bokeh.Plotting.figure({
    height: 320,
    sizing_mode: "stretch_width",
    x_axis_type: "datetime",
    output_backend: backend,
    tools: "pan,xwheel_zoom,box_zoom,reset,save",
    toolbar_location: "right",
  });
  p.line({ field: "time" }, { field: "price" }, { source, line_width: window_ > 20000 ? 1 : 2 });
  await Bokeh.Plotting.show(p, document.getElementById("plot"));

  let rateStart = Date.now();
  let sent = 0;
  const frame = () => {
    if (rate > 0) {
      const now = Date.now();
      const due = Math.floor(((now - rateStart) * rate) / 1000);
      const n = due - sent;
      if (n > 0) {
        const step = 1000 / rate;
        const time = new Float64Array(n);
        for (let i = 0; i < n; i++) time[i] = rateStart + (sent + i) * step;
        source.stream({ time, price: prices(n) }, window_);
        sent = due;
      }
    }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);

  // Which renderer draws: canvas 2D, or WebGL and the GL renderer's name (SwiftShader on a
  // machine without a GPU).
  let gl = "none";
  try {
    const c = document.createElement("canvas");
    const ctx = c.getContext("webgl2") || c.getContext("webgl");
    if (ctx) {
      const info = ctx.getExtension("WEBGL_debug_renderer_info");
      gl = info ? ctx.getParameter(info.UNMASKED_RENDERER_WEBGL) : ctx.getParameter(ctx.RENDERER);
    }
  } catch (err) {
    gl = `error: ${err}`;
  }
  window.ceiling = {
    ready: true,
    backend,
    gl,
    window: window_,
    source,
    get rate() {
      return rate;
    },
    setRate(r) {
      rate = Number(r) || 0;
      rateStart = Date.now();
      sent = 0;
    },
    length: () => source.get_length(),
  };
  status.textContent = `BokehJS ${Bokeh.version}, ${backend}, window ${window_}`;
})().catch((err) => {
  document.getElementById("status").textContent = `failed: ${err && err.stack ? err.stack : err}`;
  window.ceiling = { error: String(err && err.stack ? err.stack : err) };
});
