// probe.js — what the large-window benchmark measures inside a page that draws with BokehJS
// (the ceiling page and the livestream page alike). Evaluated by Playwright as a function;
// it answers false until the page has a Bokeh document and a plot view to watch.
//
// * rows: rows of every `ColumnsStreamed` event (each `source.stream(...)`) in [t0, t1);
// * frames: requestAnimationFrame callbacks in [t0, t1);
// * lag: for rows streamed in [t0, t1), the time from the row's creation (its `time` value,
//   ms since the epoch, stamped where the row was made) to the end of the frame that drew
//   it: a plot view's `repainted` signal says the paint that holds the rows has run (in an
//   animation frame callback); a message posted from there runs after that frame's
//   rendering step. Each streamed batch gives 8 stamps spread over its rows, each standing
//   for a 1/8 of them (`lagWeights`), so the percentiles are over rows, not over batches;
// * replaces: a source's whole `data` set anew (a plot that redraws a view of its rows
//   rather than streaming them in, as a zoom-aware plot does; a plot emptied by a reset
//   counts too); `viewLags`: for each, the lag of its newest row (the last `time`) at the
//   end of the frame that drew it; `viewDrawn`: [end of that frame, newest row's `time`]
//   pairs, from which the harness reads how fast the newest row drawn advances (rows the
//   page takes in on that path: every row up to the newest is in the view it draws).
() => {
  const w = window;
  if (w.__bench) return true;
  const B = w.Bokeh;
  if (!B || !B.documents || !B.documents.length || !B.index) return false;
  const plots = [...B.index.query((v) => v.repainted && typeof v.repainted.connect === "function")];
  if (!plots.length) return false;
  const b = (w.__bench = {
    rows: 0, events: 0, replaces: 0, frames: 0, paints: 0, t0: Infinity, t1: Infinity,
    lags: [], lagWeights: [], streamLags: [], viewLags: [], viewDrawn: [],
  });
  const SAMPLES = 8;
  let undrawn = []; // [stamp, weight] of rows streamed and not yet painted
  let undrawnViews = []; // the newest stamp of each data set anew and not yet painted
  const inWindow = (now) => now >= b.t0 && now < b.t1;
  for (const doc of B.documents) {
    doc.on_change((ev) => {
      if (ev.kind === "ModelChanged" && ev.attr === "data" && inWindow(Date.now())) {
        b.replaces += 1;
        const data = ev.value;
        const col = data instanceof Map ? data.get("time") : data && data.time;
        if (col && col.length && col[col.length - 1] > 1e12) undrawnViews.push(col[col.length - 1]);
      }
      if (ev.kind !== "ColumnsStreamed") return;
      const t = ev.data.time || Object.values(ev.data)[0];
      const n = t ? t.length : 0;
      if (!n) return;
      const now = Date.now();
      if (!inWindow(now)) return;
      b.rows += n;
      b.events += 1;
      b.streamLags.push(now - t[n - 1]);
      if (!(t[n - 1] > 1e12)) return; // not a wall-clock stamp
      const k = Math.min(SAMPLES, n);
      for (let j = 0; j < k; j++) undrawn.push(t[Math.floor(((j + 0.5) * n) / k)], n / k);
    });
  }
  const channel = new MessageChannel();
  let drawn = [];
  let drawnViews = [];
  channel.port1.onmessage = () => {
    const now = Date.now();
    for (const stamp of drawnViews) {
      b.viewLags.push(now - stamp);
      b.viewDrawn.push(now, stamp);
    }
    drawnViews = [];
    const batch = drawn;
    drawn = [];
    for (let i = 0; i < batch.length; i += 2) {
      b.lags.push(now - batch[i]);
      b.lagWeights.push(batch[i + 1]);
    }
  };
  for (const view of plots) {
    view.repainted.connect(() => {
      if (!undrawn.length && !undrawnViews.length) return;
      if (inWindow(Date.now())) b.paints += 1;
      drawn = drawn.concat(undrawn);
      undrawn = [];
      drawnViews = drawnViews.concat(undrawnViews);
      undrawnViews = [];
      channel.port2.postMessage(0);
    });
  }
  const tick = () => {
    if (inWindow(Date.now())) b.frames += 1;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  return true;
}
