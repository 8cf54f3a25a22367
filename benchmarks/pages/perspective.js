// perspective.js — the Perspective page of the large-window benchmark: a
// <perspective-viewer> (as perspective-python ships it, in its anywidget bundle: the
// viewer, its WebAssembly client, the datagrid and the WebGL charts) bound to the table
// "bench" of perspective-python's PerspectiveTornadoHandler at /websocket, drawn as an
// "X/Y Line" of price against time, sorted by time (the table is a rolling window: its
// rows are not in time order).
//
// Measures (window.__bench, read by benchmarks/perspective.py):
// * frames: requestAnimationFrame callbacks in [t0, t1);
// * renders: the chart plugin's draw/update calls that finished in [t0, t1) (each loads
//   the view's data and renders it);
// * lag: at the start of each render, the newest row's `time` in the view it draws (the
//   view's last row: it is sorted by time); when the render has finished and its frame has been
//   drawn (a message posted after the next animation frame), now minus that stamp is the
//   lag of the newest row drawn; the rows between it and the previous render's newest are
//   sampled at 8 points (weights: the time they span, rows at a constant offered rate).
import * as psp from "/psp/perspective-anywidget.js";

const status = document.getElementById("status");
try {
  await psp.ready;
  await customElements.whenDefined("perspective-viewer");
  const Viewer = customElements.get("perspective-viewer");
  const wasm = Viewer.__wasm_module__ ?? (await Viewer.get_wasm_module());
  const ws = new WebSocket(`ws://${location.host}/websocket`);
  ws.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("the WebSocket to /websocket failed"));
  });
  const client = new wasm.Client(
    async (bytes) => ws.send(bytes.slice().buffer),
    () => ws.close(),
  );
  ws.onmessage = (ev) => client.handle_response(ev.data);
  const table = await client.open_table("bench");
  const viewer = document.querySelector("perspective-viewer");
  await viewer.load(table);
  await viewer.restore({
    plugin: "X/Y Line",
    columns: ["time", "price"],
    sort: [["time", "asc"]],
    settings: false,
  });
  await viewer.flush();
  // The newest row of the view the chart draws (sorted by time: its last row).
  const maxTime = async (view) => {
    const n = await view.num_rows();
    if (!n) return NaN;
    const cols = await view.to_columns({ start_row: n - 1, end_row: n, start_col: 0, end_col: 1 });
    return Number(cols.time[0]);
  };

  const b = (window.__bench = {
    frames: 0, renders: 0, t0: Infinity, t1: Infinity, lags: [], lagWeights: [], errors: 0,
  });
  const inWindow = (now) => now >= b.t0 && now < b.t1;
  const tick = () => {
    if (inWindow(Date.now())) b.frames += 1;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  const afterFrame = () =>
    new Promise((resolve) => {
      requestAnimationFrame(() => {
        const ch = new MessageChannel();
        ch.port1.onmessage = () => resolve(Date.now());
        ch.port2.postMessage(0);
      });
    });
  let previous = NaN;
  const plugin = [...viewer.children].find((el) => el.tagName.startsWith("PERSPECTIVE-VIEWER-CHARTS"));
  if (!plugin) throw new Error("no charts plugin in the viewer");
  const proto = Object.getPrototypeOf(plugin);
  for (const method of ["draw", "update"]) {
    const original = proto[method];
    proto[method] = async function (...args) {
      const stamp = maxTime(args[0]).catch(() => NaN);
      const out = await original.apply(this, args);
      const [s, now] = await Promise.all([stamp, afterFrame()]);
      if (inWindow(now) && s > 1e12) {
        b.renders += 1;
        const from = previous > 1e12 ? Math.min(previous, s) : s;
        for (let j = 0; j < 8; j++) {
          b.lags.push(now - (from + ((j + 0.5) * (s - from)) / 8));
          b.lagWeights.push(Math.max(1e-9, (s - from) / 8));
        }
      }
      if (s > 1e12 && !(previous >= s)) previous = s;
      return out;
    };
  }
  let gl = "none";
  const c = document.createElement("canvas");
  const ctx = c.getContext("webgl2") || c.getContext("webgl");
  if (ctx) {
    const info = ctx.getExtension("WEBGL_debug_renderer_info");
    gl = info ? ctx.getParameter(info.UNMASKED_RENDERER_WEBGL) : ctx.getParameter(ctx.RENDERER);
  }
  window.perspectivePage = { ready: true, gl, plugin: plugin.tagName.toLowerCase() };
  status.textContent = `Perspective ${plugin.tagName.toLowerCase()}`;
} catch (err) {
  const text = String(err && err.stack ? err.stack : err);
  status.textContent = `failed: ${text}`;
  window.perspectivePage = { error: text };
}
