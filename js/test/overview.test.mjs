// overview.js: the rows a large plot draws (a view's rows, then the tail after its end),
// the bar grid of an OHLC view and its candles; bokeh.js: which WebGL renderers are software.
// Run: `npm test --prefix js` (tests/test_js.py runs it in the suite).
import assert from "node:assert/strict";
import { test } from "node:test";

import { isSoftwareRenderer } from "../../livestream/static/bokeh.js";
import { OFFSET_COLUMN } from "../../livestream/static/codec.js";
import { LARGE_WINDOW, barGrid, candles, joinRows, usesViews, viewRows } from "../../livestream/static/overview.js";

const view = viewRows({
  type: "view", first: 0, stop: 10, end: 10, exact: false, epoch: "e1", offsets_column: "@offset",
  columns: { "@offset": [0, 4, 9], t: [0, 4, 9], y: [1, null, 3] },
});

test("a JSON view becomes typed columns, null as NaN, the offsets apart", () => {
  assert.deepEqual(Array.from(view.offsets), [0, 4, 9]);
  assert.deepEqual(Object.keys(view.columns), ["t", "y"]);
  assert.ok(Number.isNaN(view.columns.y[1]));
  assert.deepEqual([view.first, view.stop, view.end, view.exact, view.epoch], [0, 10, 10, false, "e1"]);
});

test("the tail is drawn from the view's end on, without the rows the view covers", () => {
  const tail = [
    { stream: "s", offset: 8, rows: 4, columns: { t: Float64Array.of(8, 9, 10, 11), y: Float64Array.of(8, 9, 10, 11) } },
    { stream: "s", offset: 12, rows: 2, columns: { t: Float64Array.of(12, 13), y: Float64Array.of(12, 13) } },
  ];
  const { columns, rows } = joinRows(view, tail, ["t", "y", OFFSET_COLUMN]);
  assert.equal(rows, 7);
  assert.deepEqual(Array.from(columns.t), [0, 4, 9, 10, 11, 12, 13]);
  assert.deepEqual(Array.from(columns[OFFSET_COLUMN]), [0, 4, 9, 10, 11, 12, 13]);
  assert.deepEqual(Array.from(columns.y).slice(3), [10, 11, 12, 13]);
  // Without a view, every tail row; a column the rows lack is NaN.
  const alone = joinRows(null, tail, ["missing"]);
  assert.equal(alone.rows, 6);
  assert.ok(Array.from(alone.columns.missing).every(Number.isNaN));
});

test("which plots draw views", () => {
  assert.equal(usesViews({ kind: "line", rollover: LARGE_WINDOW + 1, y: ["y"], item: {}, source_id: "", columns: {} }), true);
  assert.equal(usesViews({ kind: "line", rollover: LARGE_WINDOW, y: ["y"], item: {}, source_id: "", columns: {} }), false);
  assert.equal(usesViews({ kind: "bar", rollover: 10_000_000, y: ["y"], item: {}, source_id: "", columns: {} }), false);
  assert.equal(usesViews({ kind: "ohlc", rollover: 5_000, x: "time", y: ["price"], item: {}, source_id: "", columns: {} }), true);
  assert.equal(usesViews({ kind: "ohlc", rollover: 200, x: "time", y: ["price"], item: {}, source_id: "", columns: {} }), false);
});

test("the bar grid: the interval while bars fit the pixels, else a multiple of it", () => {
  assert.deepEqual(barGrid(1_000, 60_999, 1_000, 800), { lo: 1_000, bar: 1_000, n: 60 });
  assert.deepEqual(barGrid(1_500, 61_000, 1_000, 800), { lo: 1_000, bar: 1_000, n: 61 }); // x1 on an edge opens a bar
  const wide = barGrid(0, 10_000_000, 1_000, 800);
  assert.equal(wide.bar, 13_000);
  assert.ok(wide.n <= 800 && wide.lo + wide.n * wide.bar > 10_000_000);
});

test("candles: a row on an edge goes right; first, max, min and last of each bar", () => {
  const times = [0, 500, 999, 1000, 1500, 2999, 3000];
  const prices = [5, 9, 6, 7, 2, 4, 8];
  assert.deepEqual(candles(times, prices, { lo: 0, bar: 1000, n: 3 }), [
    { time: 0, open: 5, high: 9, low: 5, close: 6 },
    { time: 1000, open: 7, high: 7, low: 2, close: 2 },
    { time: 2000, open: 4, high: 4, low: 4, close: 4 },
  ]); // 3000 is past the third bar: left out
});

test("software WebGL renderers are told apart from GPUs", () => {
  for (const name of [
    "ANGLE (Google, Vulkan 1.3.0 (SwiftShader Device (Subzero) (0x0000C0DE)), SwiftShader driver)",
    "llvmpipe (LLVM 15.0.6, 256 bits)", "Google SwiftShader", "Software Rasterizer",
  ]) assert.equal(isSoftwareRenderer(name), true, name);
  for (const name of ["ANGLE (NVIDIA, NVIDIA GeForce RTX 3060 Direct3D11 vs_5_0 ps_5_0)", "Apple M2", "Mesa Intel(R) UHD Graphics 620 (KBL GT2)"]) {
    assert.equal(isSoftwareRenderer(name), false, name);
  }
});
