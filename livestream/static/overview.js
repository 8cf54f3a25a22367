// @ts-check
// overview.js — large windows: a plot of millions of rows draws the server's `view` of
// the visible x-range at its pixel width (M4 rows: each pixel column's first, last, lowest
// and highest row), then the rows arriving after the view's `end` exactly (the tail).
// Zooming and panning ask a new view; panning back to the live edge, or the reset tool,
// resumes following new rows. See docs/explanation.md, "Large windows".
import { foldTicks } from "./bokeh.js";
import { OFFSET_COLUMN } from "./codec.js";
import { Connection, Subscription } from "./connection.js";
/** @typedef {import("./bokeh.js").PlotHandle} PlotHandle */
/** @typedef {import("./bokeh.js").PlotSpec} PlotSpec */
/** @typedef {import("./codec.js").Batch} Batch */
/** @typedef {import("./bokeh.js").OhlcBar} OhlcBar */

/** Plots whose window holds more rows than this draw views instead of every row. */
export const LARGE_WINDOW = 50_000;
/** Kinds whose M4 rows draw the same pixels as every row (scatter: min/max per bucket). */
export const VIEW_KINDS = ["line", "step", "area", "scatter"];
/** Wait this long after the last zoom or pan step before asking its view (ms). */
export const ZOOM_DEBOUNCE_MS = 100;
/** While following, ask a fresh view at least this often (ms)... */
export const FOLLOW_REFRESH_MS = 1000;
/** ...and sooner once the tail holds more than this many rows per pixel, but not more
 * often than every {@link FOLLOW_MIN_MS}. */
export const TAIL_ROWS_PER_PIXEL = 4;
export const FOLLOW_MIN_MS = 100;
/** The server's limit on `width`. */
const MAX_WIDTH = 20_000;

/** OHLC plots whose window holds more bars than this draw views (bars then merge so
 * that there are at most as many as the plot has pixels). */
export const LARGE_OHLC_WINDOW = 1_000;

/** @param {PlotSpec} spec @returns {boolean} whether this plot draws views */
export function usesViews(spec) {
  if (!Array.isArray(spec.y) || spec.y.length === 0) return false;
  if (spec.kind === "ohlc") return Number(spec.rollover) > LARGE_OHLC_WINDOW && typeof spec.x === "string";
  return VIEW_KINDS.includes(spec.kind ?? "") && Number(spec.rollover) > LARGE_WINDOW;
}

/**
 * The bar grid of an OHLC view of x0..x1 at `width` pixels: bars of `bar` x units (the
 * interval, or a multiple of it so that there are at most `width` bars), the first
 * starting at `lo` (a multiple of `bar`), `n` of them, the last holding x1.
 * @param {number} x0 @param {number} x1 @param {number} interval @param {number} width
 * @returns {{lo: number, bar: number, n: number}}
 */
export function barGrid(x0, x1, interval, width) {
  const k = Math.max(1, Math.ceil((x1 - x0) / (interval * Math.max(1, width))));
  const bar = k * interval;
  const lo = Math.floor(x0 / bar) * bar;
  const n = Math.floor((x1 - lo) / bar) + 1;
  return { lo, bar, n };
}

/**
 * Candles from the rows of a view (ticks in offset order): a row at x goes to bar
 * `floor((x - lo) / bar)` (a row on an edge opens the bar on its right); the bar's first row
 * is its open, its last its close, its extremes high and low. The M4 rows of a bucket are
 * exactly these four, so candles of a view are the candles of every tick. Bars without a
 * row are left out; rows outside the `n` bars are skipped.
 * @param {ArrayLike<number>} times @param {ArrayLike<number>} prices
 * @param {{lo: number, bar: number, n: number}} grid @returns {OhlcBar[]}
 */
export function candles(times, prices, { lo, bar, n }) {
  /** @type {OhlcBar[]} */
  const bars = [];
  let current = -1;
  for (let i = 0; i < times.length; i++) {
    const t = Number(times[i]);
    const p = Number(prices[i]);
    if (!Number.isFinite(t) || !Number.isFinite(p)) continue;
    const k = Math.floor((t - lo) / bar);
    if (k < 0 || k >= n) continue;
    if (k !== current) {
      current = k;
      bars.push({ time: lo + k * bar, open: p, high: p, low: p, close: p });
      continue;
    }
    const b = bars[bars.length - 1];
    if (p > b.high) b.high = p;
    if (p < b.low) b.low = p;
    b.close = p;
  }
  return bars;
}

/**
 * @typedef {object} ViewRows  What a plot holds of one view answer.
 * @property {Float64Array} offsets  the rows' offsets, ascending
 * @property {Record<string, Float64Array>} columns  the rows' values by stream column
 * @property {number} first @property {number} stop @property {number} end
 * @property {boolean} exact @property {string} epoch
 */

/**
 * A JSON `view` answer as typed columns (null, sent for NaN, becomes NaN again).
 * @param {Record<string, any>} msg @returns {ViewRows}
 */
export function viewRows(msg) {
  const cols = msg.columns ?? {};
  const offsetsName = String(msg.offsets_column ?? "@offset");
  /** @param {unknown} values */
  const floats = (values) => {
    const list = Array.isArray(values) ? values : [];
    const out = new Float64Array(list.length);
    for (let i = 0; i < list.length; i++) out[i] = list[i] === null ? NaN : Number(list[i]);
    return out;
  };
  /** @type {Record<string, Float64Array>} */
  const columns = {};
  for (const [name, values] of Object.entries(cols)) if (name !== offsetsName) columns[name] = floats(values);
  return {
    offsets: floats(cols[offsetsName]),
    columns,
    first: Number(msg.first), stop: Number(msg.stop), end: Number(msg.end),
    exact: msg.exact === true, epoch: String(msg.epoch ?? ""),
  };
}

/**
 * The rows to draw: the view's rows, then the tail's rows from the view's `end` on (each
 * batch holds consecutive offsets). `names` are stream columns; OFFSET_COLUMN is the offset.
 * @param {ViewRows | null} view @param {Batch[]} tail @param {string[]} names
 * @returns {{columns: Record<string, Float64Array>, rows: number}}
 */
export function joinRows(view, tail, names) {
  const end = view ? view.end : -Infinity;
  let rows = view ? view.offsets.length : 0;
  for (const b of tail) rows += Math.max(0, Math.min(b.rows, b.offset + b.rows - end));
  /** @type {Record<string, Float64Array>} */
  const columns = {};
  for (const name of names) {
    const out = new Float64Array(rows);
    let at = 0;
    if (view) {
      const src = name === OFFSET_COLUMN ? view.offsets : view.columns[name];
      if (src) out.set(src, 0);
      else out.fill(NaN, 0, view.offsets.length);
      at = view.offsets.length;
    }
    for (const b of tail) {
      const skip = Math.max(0, Math.min(b.rows, end - b.offset));
      const n = b.rows - skip;
      if (n <= 0) continue;
      if (name === OFFSET_COLUMN) {
        for (let i = 0; i < n; i++) out[at + i] = b.offset + skip + i;
      } else {
        const col = /** @type {ArrayLike<number> | undefined} */ (b.columns[name]);
        if (col) for (let i = 0; i < n; i++) out[at + i] = Number(col[skip + i]);
        else out.fill(NaN, at, at + n);
      }
      at += n;
    }
    columns[name] = out;
  }
  return { columns, rows };
}

/**
 * The rows of a batch from offset `end` on.
 * @param {Batch} b @param {number} end @returns {Batch}
 */
function trimBatch(b, end) {
  const skip = Math.max(0, Math.min(b.rows, end - b.offset));
  if (skip === 0) return b;
  /** @type {Record<string, any>} */
  const columns = {};
  for (const [name, col] of Object.entries(b.columns)) columns[name] = col.slice(skip);
  return { ...b, offset: b.offset + skip, rows: b.rows - skip, columns };
}

/**
 * The newest finite value of a column among a view and a tail (the live edge in x units).
 * @param {ViewRows | null} view @param {Batch[]} tail @param {string} name
 */
function newestX(view, tail, name) {
  for (let k = tail.length - 1; k >= 0; k--) {
    const b = tail[k];
    if (!b.rows) continue;
    if (name === OFFSET_COLUMN) return b.offset + b.rows - 1;
    const col = /** @type {ArrayLike<number> | undefined} */ (b.columns[name]);
    if (col) for (let i = col.length - 1; i >= 0; i--) if (Number.isFinite(col[i])) return Number(col[i]);
  }
  const src = view ? (name === OFFSET_COLUMN ? view.offsets : view.columns[name]) : null;
  if (src) for (let i = src.length - 1; i >= 0; i--) if (Number.isFinite(src[i])) return src[i];
  return NaN;
}

/**
 * @typedef {object} ViewPlot
 * @property {Subscription} subscription  the live edge
 * @property {() => boolean} following  whether new rows are followed
 * @property {() => void} follow  follow the live edge again (as the reset tool does)
 * @property {(lo: number, hi: number) => void} zoom  show the x-range lo..hi (x units)
 * @property {() => {views: number, cancelled: number, rows: number, tail: number, exact: boolean, first: number, stop: number, end: number, range: [number, number] | null}} stats
 * @property {() => void} dispose
 */

/**
 * Drive a large plot by views: ask the view of the window, draw it with the tail after it,
 * refresh it while following, and ask a view of each x-range the user zooms or pans to.
 * @param {Connection} conn @param {string} stream @param {PlotHandle} handle
 * @param {{width?: () => number}} [options]  `width`: the plot's width in pixels
 * @returns {ViewPlot}
 */
export function viewPlot(conn, stream, handle, options = {}) {
  const spec = handle.spec;
  const xName = spec.x ?? OFFSET_COLUMN;
  const x = xName === OFFSET_COLUMN ? null : xName;
  const ys = /** @type {string[]} */ (spec.y ?? []);
  const read = [...new Set([...(x ? [x] : []), ...ys])];
  const names = Object.keys(spec.columns);
  const windowRows = Number(spec.rollover);
  const key = `plot:${stream}:${Math.random().toString(36).slice(2, 10)}`;
  // Read when a view is asked only: reading an element's width forces a layout.
  let lastWidth = 800;
  const width = () => {
    const w = options.width?.() ?? 0;
    lastWidth = Math.max(1, Math.min(MAX_WIDTH, Math.round(w > 0 ? w : lastWidth)));
    return lastWidth;
  };
  const ohlc = spec.kind === "ohlc";
  const interval = Number(spec.interval ?? 1000);
  /** @type {{lo: number, bar: number, n: number}} the bar grid of the last OHLC view asked */
  let grid = { lo: 0, bar: interval, n: 0 };
  /** @type {{lo: number, bar: number, n: number}} the grid of the view drawn */
  let drawnGrid = grid;
  /** x decreases somewhere in the history: views are asked by offset */
  let byOffset = false;
  /** @type {[number, number] | null} the offsets shown while zoomed, by offset */
  let offsetRange = null;
  /** the x of the history's first row (OHLC: where the bars of a long window start) */
  let firstX = NaN;
  let disposed = false;
  let following = true;
  /** @type {number | null} the x span kept while following a zoomed-in plot */
  let span = null;
  /** @type {[number, number] | null} the x-range shown while not following */
  let range = null;
  /** @type {ViewRows | null} */
  let view = null;
  /** @type {Batch[]} rows after the view's end (following only) */
  let tail = [];
  let tailRows = 0;
  /** rows in the whole history at the last whole-history view (to pick the request) */
  let historyRows = 0;
  let inFlight = 0;
  let lastAsked = -Infinity;
  let liveX = NaN;
  let views = 0;
  let cancelled = 0;
  /** @type {ReturnType<typeof setTimeout> | null} */
  let debounce = null;
  /** @type {ReturnType<typeof setTimeout> | null} */
  let soon = null;

  const request = () => {
    /** @type {Record<string, unknown>} */
    const msg = { type: "view", stream, width: width(), columns: ys, read, key, format: "json" };
    if (ohlc && !Number.isFinite(firstX)) {
      // First, where the history starts (a view of one bucket: its first and last rows),
      // so that a window longer than the history is not drawn as a sliver at its right.
      msg.x = x;
      msg.range = null;
      msg.width = 1;
      return msg;
    }
    if (ohlc) {
      // Bars aligned to the grid, one bucket per bar; the range ends just before the bar
      // after the last (its high end is inclusive).
      const [x0, x1] = !following && range ? range
        : [Math.max(firstX, liveX - (span ?? windowRows * interval)), liveX];
      grid = barGrid(x0, x1, interval, /** @type {number} */ (msg.width));
      const hi = grid.lo + grid.n * grid.bar;
      msg.x = x;
      msg.width = grid.n;
      msg.range = [grid.lo, hi - Math.abs(hi) * Number.EPSILON];
      return msg;
    }
    if (byOffset) {
      // x goes back somewhere in the history: views by offset, drawn against x as they are.
      msg.x = null;
      msg.range = !following && offsetRange ? offsetRange
        : view && historyRows > windowRows ? [Math.max(0, view.end - windowRows), Number.MAX_SAFE_INTEGER] : null;
    } else if (!following && range) {
      msg.x = x;
      msg.range = range;
    } else if (following && span !== null && Number.isFinite(liveX)) {
      msg.x = x;
      msg.range = [liveX - span, liveX];
    } else if (historyRows > windowRows && view) {
      // The window is the newest `windowRows` rows of a longer history: ask them by offset.
      msg.x = null;
      msg.range = [Math.max(0, view.end - windowRows), Number.MAX_SAFE_INTEGER];
    } else {
      msg.x = x;
      msg.range = null;
    }
    return msg;
  };

  /** @param {boolean} [force] a zoom or pan: ask even while a view is being computed */
  const ask = (force = false) => {
    if (disposed || (inFlight > 0 && !force)) return;
    if (ohlc && !Number.isFinite(liveX)) return; // the newest tick's time sets the grid
    const msg = request();
    const askedGrid = grid;
    const wasFollowing = following;
    inFlight++;
    lastAsked = performance.now();
    conn.request(/** @type {any} */ (msg), { expect: "view" }).then((answer) => {
      inFlight--;
      if (disposed) return;
      if (answer.cancelled) {
        cancelled++;
        return;
      }
      if (wasFollowing !== following) return; // the user zoomed meanwhile: its view follows
      const rows = viewRows(answer);
      if (ohlc && !Number.isFinite(firstX)) {
        const times = rows.columns[xName] ?? new Float64Array(0);
        firstX = times.length ? Math.min(...Array.from(times).filter(Number.isFinite)) : NaN;
        if (Number.isFinite(firstX)) ask(true);
        return;
      }
      views++;
      if (msg.range === null) historyRows = rows.stop - rows.first;
      view = rows;
      drawnGrid = askedGrid;
      // The tail keeps only rows from the view's end on.
      tail = tail.filter((b) => b.offset + b.rows > rows.end);
      tailRows = tail.reduce((n, b) => n + b.offset + b.rows - Math.max(b.offset, rows.end), 0);
      if (!Number.isFinite(liveX)) liveX = newestX(rows, tail, xName);
      draw();
    }, (err) => {
      inFlight--;
      if (disposed) return;
      console.warn(`livestream: the view of "${stream}" failed: ${err?.message ?? err}`);
      if (!byOffset && x !== null && err?.code === "bad_message" && /decreases/.test(String(err?.message))) {
        byOffset = true;
        ask(true);
        return;
      }
      if (!soon) soon = setTimeout(() => { soon = null; ask(); }, FOLLOW_REFRESH_MS);
    });
  };

  const colors = spec.colors ?? { up: "#16a34a", down: "#dc2626" };
  const priceName = ys[0];
  const drawBars = () => handle.replaceSource(() => {
    const bars = view ? candles(view.columns[xName] ?? [], view.columns[priceName] ?? [], drawnGrid) : [];
    if (following) {
      const { columns } = joinRows(null, tail.map((b) => (view ? trimBatch(b, view.end) : b)), [xName, priceName]);
      foldTicks(bars, columns[xName], columns[priceName], drawnGrid.bar);
    }
    if (following && span !== null && Number.isFinite(liveX)) handle.setXRange(liveX - span, liveX);
    return {
      time: Float64Array.from(bars, (b) => b.time),
      open: Float64Array.from(bars, (b) => b.open),
      high: Float64Array.from(bars, (b) => b.high),
      low: Float64Array.from(bars, (b) => b.low),
      close: Float64Array.from(bars, (b) => b.close),
      color: bars.map((b) => (b.close >= b.open ? colors.up : colors.down)),
    };
  });
  // Joined once per paint (BokehJS's frame), however many batches came meanwhile.
  const draw = () => ohlc ? drawBars() : handle.replace(() => {
    const { columns } = joinRows(view, following ? tail : [], names);
    if (following && span !== null && Number.isFinite(liveX)) handle.setXRange(liveX - span, liveX);
    return columns;
  });

  const subscription = conn.subscribe(stream, {
    last: ohlc ? 1 : 0, // an OHLC plot's grid starts from the newest tick's time
    columns: read,
    onData: (batch) => {
      const first = !Number.isFinite(liveX);
      liveX = newestX(null, [batch], xName);
      if (first && !view) ask(true);
      if (!following || !view) return;
      const fresh = batch.offset + batch.rows - Math.max(batch.offset, view.end);
      if (fresh <= 0) return;
      tail.push(batch);
      tailRows += fresh;
      draw();
      if (tailRows > TAIL_ROWS_PER_PIXEL * lastWidth && performance.now() - lastAsked > FOLLOW_MIN_MS) ask();
    },
    onReset: () => {
      firstX = NaN;
      view = null;
      tail = [];
      tailRows = 0;
      historyRows = 0;
      handle.clear();
      ask(true);
    },
  });
  const timer = setInterval(() => {
    if (following && performance.now() - lastAsked >= FOLLOW_REFRESH_MS) ask();
  }, FOLLOW_REFRESH_MS / 4);

  /**
   * By offset (x goes back): the offsets of the drawn rows whose x is within lo..hi.
   * @param {number} lo @param {number} hi @returns {[number, number] | null}
   */
  const offsetsWithin = (lo, hi) => {
    const { columns } = joinRows(view, tail, [xName, OFFSET_COLUMN]);
    const xs = columns[xName];
    const offs = columns[OFFSET_COLUMN];
    let a = Infinity;
    let b = -Infinity;
    for (let i = 0; i < xs.length; i++) {
      if (xs[i] >= lo && xs[i] <= hi) {
        a = Math.min(a, offs[i]);
        b = Math.max(b, offs[i]);
      }
    }
    return a <= b ? [a, b] : null;
  };
  /** @param {number} lo @param {number} hi */
  const zoom = (lo, hi) => {
    if (!(Number.isFinite(lo) && Number.isFinite(hi)) || hi < lo) return;
    // At the live edge (the range's right end reaches the newest row): follow, keeping the span.
    const edge = Number.isFinite(liveX) && hi >= liveX - 0.05 * (hi - lo);
    if (edge) {
      following = true;
      span = hi - lo;
      range = null;
    } else {
      following = false;
      span = null;
      range = [lo, hi];
      if (byOffset) offsetRange = offsetsWithin(lo, hi);
      tail = [];
      tailRows = 0;
    }
    ask(true);
  };
  const follow = () => {
    following = true;
    span = null;
    range = null;
    ask(true);
  };
  const stopRanges = handle.onRangeChange((lo, hi) => {
    if (debounce) clearTimeout(debounce);
    debounce = setTimeout(() => {
      debounce = null;
      zoom(lo, hi);
    }, ZOOM_DEBOUNCE_MS);
  }, () => {
    if (debounce) clearTimeout(debounce);
    debounce = null;
    follow();
  });
  ask(true);

  return {
    subscription,
    following: () => following,
    follow,
    zoom,
    stats: () => ({
      views, cancelled, rows: view?.offsets.length ?? 0, tail: tailRows, exact: view?.exact ?? false,
      first: view?.first ?? -1, stop: view?.stop ?? -1, end: view?.end ?? -1, range,
    }),
    dispose() {
      disposed = true;
      clearInterval(timer);
      if (debounce) clearTimeout(debounce);
      if (soon) clearTimeout(soon);
      stopRanges();
      subscription.unsubscribe();
    },
  };
}
