// @ts-check
// bokeh.js — BokehJS: loaded once per page, a plot spec embedded, batches streamed into its
// ColumnDataSource once per frame, OHLC folding, themes, and (at the end) every use of a
// BokehJS private internal, one function each.
import { OFFSET_COLUMN, mergeBatches } from "./codec.js";
import { h } from "./dom.js";
import { LivestreamError } from "./errors.js";
import { defaultHttpBase } from "./http.js";
import { PLOT_MAX_INTERVAL_MS, requestFrame } from "./schedule.js";
/** @typedef {import("./codec.js").Batch} Batch */
/** @typedef {import("./codec.js").Column} Column */

/**
 * @typedef {any} BokehObject  a BokehJS object (the library, a document, model or view):
 *   BokehJS ships no types a plain-JS module can use, so this is the one `any` for them.
 */

const BOKEH_KEY = Symbol.for("livestream.bokeh.v1");
/** @type {Map<string, Promise<void>>} script URL → load, shared by every copy of this module */
export const scriptLoads = /** @type {any} */ (globalThis)[BOKEH_KEY] ??= new Map();

/** @param {string} src @returns {Promise<void>} */
export function loadScript(src) {
  let p = scriptLoads.get(src);
  if (!p) {
    p = new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.async = false;
      s.crossOrigin = "anonymous";
      s.onload = () => resolve();
      s.onerror = () => {
        scriptLoads.delete(src);
        reject(new LivestreamError(`could not load ${src}; is the livestream server running, and does it serve /static/js?`, "unreachable"));
      };
      document.head.appendChild(s);
    });
    scriptLoads.set(src, p);
  }
  return p;
}

/**
 * Load BokehJS from the livestream server once per page (a shared promise), unless the page
 * already has the wanted version, and return that version's `Bokeh` object.
 * @param {string} httpBase  the server's HTTP base, e.g. "http://127.0.0.1:8765"
 * @param {{version?: string, gl?: boolean, api?: boolean, widgets?: boolean, tables?: boolean, load?: (path: string) => Promise<void>}} [options]
 *   `version`: the version the plot was built with (json_item's `version`); `gl`: also load
 *   bokeh-gl for WebGL output; `api`: also load bokeh-api (`Bokeh.Document` and the
 *   plotting API); `widgets`, `tables`: the matching bundles; `load`: how to load
 *   a script of the server by its path (default: a script tag at `httpBase` + path; a
 *   connection's `loadScript` follows its route)
 * @returns {Promise<BokehObject>}
 */
export async function ensureBokeh(httpBase, { version, gl = false, api = false, widgets = false, tables = false, load } = {}) {
  const loadPath = load ?? ((/** @type {string} */ path) => loadScript(`${httpBase}${path}`));
  const w = /** @type {any} */ (globalThis);
  const pick = () => {
    const B = w.Bokeh;
    if (!B) return null;
    if (!version || B.version === version) return B;
    return B[version] ?? null;
  };
  if (!pick()) await loadPath("/static/js/bokeh.min.js");
  const bokeh = pick();
  if (!bokeh) {
    throw new LivestreamError(`BokehJS ${version ?? ""} did not register itself after loading ${httpBase}/static/js/bokeh.min.js`, "bokeh_missing");
  }
  const extras = [];
  if (gl) extras.push("bokeh-gl");
  if (api) extras.push("bokeh-api");
  if (widgets) extras.push("bokeh-widgets");
  if (tables) extras.push("bokeh-tables");
  for (const name of extras) await loadPath(`/static/js/${name}.min.js`);
  return bokeh;
}

/**
 * @typedef {object} PlotSpec  What `GET /api/streams/<name>/plot` returns (livestream/plots.py).
 * @property {{doc: BokehObject, root_id: string, target_id: string | null, version?: string}} item
 *   `bokeh.embed.json_item` of a figure or a layout
 * @property {string} source_id  the ColumnDataSource the stream feeds (one per plot)
 * @property {Record<string, string>} columns  stream column → source column; for `ohlc`, the
 *   two stream columns read: `{[x]: "time", [price]: "close"}`
 * @property {number} rollover  rows (for `ohlc`: bars) kept in the browser
 * @property {string | null} [x]  null for a figure of the user's own (`kind` "custom")
 * @property {string[]} [y]
 * @property {string} [kind]  line, scatter, step, area, bar, ohlc, or custom
 * @property {number} [interval]  `ohlc`: x units (ms on a time axis) per bar
 * @property {{up: string, down: string}} [colors]  `ohlc`: candle colours
 */

/**
 * @typedef {{time: number, open: number, high: number, low: number, close: number}} OhlcBar
 *   One candlestick: `time` is the start of its interval.
 */

/**
 * Fold ticks into OHLC bars of `interval` x units (milliseconds on a time axis). A bar
 * covers `[k * interval, (k + 1) * interval)`; its open is its first tick, close its last,
 * high and low the extremes. `bars` (oldest first, as `source` holds them) is updated in
 * place: a tick in the newest bar's interval updates it, a later one starts a new bar, a
 * late tick updates high and low of the older bar it belongs to (dropped when that bar is
 * no longer held). Ticks whose time or price is not finite are skipped.
 * @param {OhlcBar[]} bars  the bars so far, oldest first (changed in place)
 * @param {ArrayLike<number>} times @param {ArrayLike<number>} prices
 * @param {number} interval
 * @returns {{changed: Set<number>, added: number}} `changed`: indices of bars that existed
 *   before the call and changed; `added`: how many bars were appended at the end
 */
export function foldTicks(bars, times, prices, interval) {
  const before = bars.length;
  /** @type {Set<number>} */
  const changed = new Set();
  for (let i = 0; i < times.length; i++) {
    const t = Number(times[i]);
    const p = Number(prices[i]);
    if (!Number.isFinite(t) || !Number.isFinite(p)) continue;
    const start = Math.floor(t / interval) * interval;
    const last = bars.length - 1;
    if (last < 0 || start > bars[last].time) {
      bars.push({ time: start, open: p, high: p, low: p, close: p });
      continue;
    }
    let at = last;
    if (start < bars[last].time) {
      // A late tick: find its bar (binary search: bars are in time order).
      let lo = 0;
      let hi = last - 1;
      at = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        const bt = bars[mid].time;
        if (bt === start) {
          at = mid;
          break;
        }
        if (bt < start) lo = mid + 1;
        else hi = mid - 1;
      }
      if (at < 0) continue; // older than the bars held, or in a gap between them
    }
    const bar = bars[at];
    if (p > bar.high) bar.high = p;
    if (p < bar.low) bar.low = p;
    if (at === last) bar.close = p;
    if (at < before) changed.add(at);
  }
  return { changed, added: bars.length - before };
}

/**
 * @typedef {object} PlotHandle
 * @property {(batch: Batch) => void} append  queue rows; streamed into the source once per frame
 * @property {() => void} clear  empty the source (after a reset)
 * @property {(columns: Record<string, ArrayLike<number>> | (() => Record<string, ArrayLike<number>>)) => void} replace
 *   set the whole source (stream columns, OFFSET_COLUMN for the offset) at the next paced
 *   frame; a function is called then, once, however often `replace` was called meanwhile
 * @property {(columns: () => Record<string, ArrayLike<unknown>>) => void} replaceSource
 *   as `replace`, with the source's own column names (OHLC bars: time, open, high, low,
 *   close, color)
 * @property {(lo: number, hi: number) => void} setXRange  show x from lo to hi
 * @property {(onRange: (lo: number, hi: number) => void, onReset: () => void) => () => void} onRangeChange
 *   call `onRange` when the user zooms or pans (BokehJS's RangesUpdate event), `onReset`
 *   after the reset tool; returns a function that stops both
 * @property {() => void} dispose  close the views and drop the document
 * @property {BokehObject} source  the BokehJS ColumnDataSource
 * @property {BokehObject} document  the BokehJS Document
 * @property {BokehObject} views  the ViewManager: null until the source first holds rows
 *   (the figure is drawn from then on; `el.dataset.attached` is then "true")
 * @property {PlotSpec} spec
 */

export const PLOT_COLORS = {
  light: { text: "#57606a", line: "#d0d7de", surface: "#ffffff" },
  dark: { text: "#9ea7b3", line: "#3d444d", surface: "#151b23" },
};

/**
 * Recolour a plot's text and rules for a light or dark page (the figure itself is transparent).
 * @param {BokehObject} doc @param {"light"|"dark"} theme
 */
export function applyPlotTheme(doc, theme) {
  const c = PLOT_COLORS[theme];
  for (const m of doc.all_models) {
    const props = m.properties ?? {};
    /** @type {Record<string, unknown>} */
    const attrs = {};
    const setIf = (/** @type {string} */ name, /** @type {unknown} */ value) => {
      if (name in props && m[name] !== null) attrs[name] = value;
    };
    setIf("major_label_text_color", c.text);
    setIf("axis_label_text_color", c.text);
    setIf("axis_line_color", c.line);
    setIf("major_tick_line_color", c.line);
    setIf("grid_line_color", c.line);
    setIf("label_text_color", c.text);
    if (m.type === "Title") setIf("text_color", c.text);
    if (m.type === "Legend") {
      setIf("background_fill_color", c.surface);
      setIf("inactive_fill_color", c.surface);
    }
    if (Object.keys(attrs).length) m.setv(attrs);
  }
}

/** @param {HTMLElement} el @returns {"light"|"dark"} */
function pageTheme(el) {
  const explicit = el.closest("[data-theme]")?.getAttribute("data-theme");
  if (explicit === "dark" || explicit === "light") return explicit;
  // The widget's own color-scheme (livestream.css sets it from the host's theme: JupyterLab,
  // VS Code, data-theme) decides; only "light dark" (no host signal) falls back to the OS.
  const scheme = typeof getComputedStyle === "function" ? getComputedStyle(el).colorScheme : "";
  if (scheme === "dark" || scheme === "light") return scheme;
  if (document.body?.dataset.jpThemeLight === "false") return "dark"; // JupyterLab dark themes
  if (document.body?.dataset.jpThemeLight === "true") return "light";
  return typeof matchMedia === "function" && matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

/**
 * Embed a plot built by livestream/plots.py into `el` and return a handle that streams batches
 * into its ColumnDataSource (`source.stream(columns, rollover)`, at most once per animation
 * frame). `el.dataset.sourceId` is set to the source's id.
 *
 * The spec's `kind` decides how rows become source rows: most kinds copy the mapped columns
 * (`spec.columns`, stream → source; `__offset__` is made from each batch's offset); `ohlc`
 * folds ticks into candlesticks (see {@link foldTicks}): the newest bar is patched in place
 * (`source.patch`) while its ticks arrive, and new bars are streamed with `rollover`;
 * `custom` (a figure or layout of the user's own) keeps the figure's own look. BokehJS is
 * loaded from the server first, with bokeh-gl when the item draws with WebGL.
 * @param {HTMLElement} el
 * @param {PlotSpec} spec
 * @param {{httpBase?: string, loadScript?: (path: string) => Promise<void>, theme?: "light"|"dark"|"auto", autoHide?: boolean, htmlLegend?: boolean}} [options]
 *   `httpBase`: where to load BokehJS from when the page lacks it (default: this module's
 *   server), or `loadScript`: how to load it by path (a connection's, which follows its
 *   route); `autoHide`: when the first rows arrive, hide y columns whose scale is over 10×
 *   off the first one's (they stay in the legend: click to show); `htmlLegend`: replace the
 *   figure's legend with one above the plot, in the page's style (default true); `theme`:
 *   recolour axes and text for a light or dark page (default "auto"; a custom figure is
 *   only recoloured when a theme is named)
 * @returns {Promise<PlotHandle>}
 */
export async function embedPlot(el, spec, { httpBase = defaultHttpBase(), loadScript: load, theme = "auto", autoHide = false, htmlLegend = true } = {}) {
  // WebGL only on a real GPU: Chromium's software WebGL is several times slower than canvas.
  if (usesWebgl(spec) && softwareWebgl()) spec = withBackend(spec, "canvas");
  const gl = usesWebgl(spec);
  const bokeh = await ensureBokeh(httpBase, { version: spec.item.version, gl, api: true, load });
  const custom = spec.kind === "custom";
  const ohlc = spec.kind === "ohlc";
  const interval = Number(spec.interval ?? 1000);
  if (ohlc && !(interval > 0)) throw new LivestreamError(`an ohlc plot needs a positive interval, got ${spec.interval}`, "bad_plot");
  el.dataset.sourceId = spec.source_id;
  el.dataset.kind = spec.kind ?? "";
  el.classList.add("ls-plot-target");
  const legendEl = h("div", { class: "ls-legend", role: "group", "aria-label": "Series", hidden: true });
  const waiting = h("div", { class: "ls-plot-placeholder ls-plot-waiting" }, "Waiting for the first rows…");
  const target = h("div", { class: "ls-plot-root" }, waiting);
  el.replaceChildren(legendEl, target);
  // The document first, its views later: BokehJS paints a figure as soon as its views are
  // built, and a DataRange1d over an empty source has no start or end, so every paint of
  // an empty figure logs "could not set initial ranges" (BokehJS's RangeManager). So the
  // views are built once the source holds rows (at once when it already does, as a custom
  // figure's may), and until then the plot shows a placeholder. `Document.from_json` (from
  // bokeh-api) and `embed.add_document_standalone` are the two halves of `embed_item`.
  if (typeof bokeh.Document?.from_json !== "function") {
    throw new LivestreamError(`BokehJS ${bokeh.version} has no Document.from_json after loading bokeh-api.min.js`, "bokeh_missing");
  }
  const document_ = bokeh.Document.from_json(spec.item.doc);
  const source = document_?.get_model_by_id(spec.source_id);
  if (!source) {
    forgetDocument(bokeh, document_);
    throw new LivestreamError(`the plot has no ColumnDataSource with id ${spec.source_id}`, "bad_plot");
  }
  const root = document_.get_model_by_id(spec.item.root_id) ?? document_.roots()[0];
  /** @type {BokehObject} the ViewManager, once the views are built */
  let views = null;
  /** @type {Promise<BokehObject> | null} */
  let attaching = null;
  const attach = () => {
    attaching ??= (async () => {
      target.replaceChildren();
      const built = await bokeh.embed.add_document_standalone(document_, target);
      if (disposed) {
        built.clear();
        return built;
      }
      views = built;
      // After a reset empties the source, a paint would log the warning again.
      quietInitialRanges(views);
      for (const legendView of visibleLegends(views)) paintSwatchesOnRebuild(legendView);
      el.dataset.attached = "true";
      return views;
    })();
    attaching.catch((err) => {
      if (!disposed) target.replaceChildren(h("div", { class: "ls-plot-placeholder ls-error-text" }, `Cannot draw the plot: ${err?.message ?? err}`));
    });
    return attaching;
  };
  const colorScheme = typeof matchMedia === "function" && !(custom && theme === "auto") ? matchMedia("(prefers-color-scheme: dark)") : null;
  const restyle = () => applyPlotTheme(document_, theme === "auto" ? pageTheme(el) : theme);
  if (!custom || theme !== "auto") restyle();
  colorScheme?.addEventListener?.("change", restyle);
  // Fewer x ticks on narrow screens, so time labels never overlap (our own figures only).
  // At least 3: with the tickers of plots.py (steps at most 2x apart) a window then always
  // holds two ticks or more; a lone tick would get a year-only label from Bokeh.
  const figure = custom ? null : root;
  const fitTicks = () => {
    const n = Math.max(3, Math.min(8, Math.floor(el.clientWidth / 110)));
    for (const axis of figure?.below ?? []) {
      if (axis?.ticker && "desired_num_ticks" in (axis.ticker.properties ?? {}) && axis.ticker.desired_num_ticks !== n) {
        axis.ticker.desired_num_ticks = n;
      }
    }
  };
  fitTicks();
  const resizes = figure && typeof ResizeObserver === "function" ? new ResizeObserver(() => fitTicks()) : null;
  resizes?.observe(el);
  const several = !custom && !ohlc && (spec.y?.length ?? 0) > 1;
  let hidePending = autoHide && several;
  const legend = htmlLegend && several ? buildLegend(legendEl, document_, source, spec) : null;

  const mapping = Object.entries(spec.columns);
  const colors = spec.colors ?? { up: "#16a34a", down: "#dc2626" };
  const xColumn = spec.x ?? OFFSET_COLUMN;
  const priceColumn = spec.y?.[0] ?? "price";
  /** @type {OhlcBar[]} the bars the source holds, oldest first (ohlc only) */
  let bars = [];
  /** @type {Batch[]} */
  let queued = [];
  /** rows the source holds (at most `spec.rollover`), which set how often it is redrawn */
  let held = 0;
  let disposed = false;
  let lastFlush = -Infinity;
  /** @type {ReturnType<typeof setTimeout> | null} */
  let paceTimer = null;
  /** @type {Record<string, ArrayLike<number>> | (() => Record<string, ArrayLike<number>>) | null} */
  let replacement = null;
  /** `replacement` names the source's columns (replaceSource), not the stream's */
  let replacementRaw = false;

  /** @param {Batch} batch @param {string} name @returns {ArrayLike<number> | null} */
  const numbers = (batch, name) => {
    if (name === OFFSET_COLUMN) {
      const offsets = new Float64Array(batch.rows);
      for (let i = 0; i < batch.rows; i++) offsets[i] = batch.offset + i;
      return offsets;
    }
    const col = batch.columns[name];
    return col === undefined ? null : /** @type {ArrayLike<number>} */ (col);
  };
  /** @param {Batch} batch */
  const streamBars = (batch) => {
    const times = numbers(batch, xColumn);
    const prices = numbers(batch, priceColumn);
    if (!times || !prices) {
      console.warn(`livestream: the ohlc plot needs columns "${xColumn}" and "${priceColumn}"; the data of "${batch.stream}" lacks one`);
      return;
    }
    const held = bars.length;
    const { changed, added } = foldTicks(bars, times, prices, interval);
    const color = (/** @type {OhlcBar} */ b) => (b.close >= b.open ? colors.up : colors.down);
    if (changed.size) {
      /** @type {Record<string, Array<[number, unknown]>>} */
      const patches = { open: [], high: [], low: [], close: [], color: [] };
      for (const i of changed) {
        const b = bars[i];
        patches.open.push([i, b.open]);
        patches.high.push([i, b.high]);
        patches.low.push([i, b.low]);
        patches.close.push([i, b.close]);
        patches.color.push([i, color(b)]);
      }
      source.patch(patches);
    }
    if (added) {
      const fresh = bars.slice(held);
      source.stream({
        time: Float64Array.from(fresh, (b) => b.time),
        open: Float64Array.from(fresh, (b) => b.open),
        high: Float64Array.from(fresh, (b) => b.high),
        low: Float64Array.from(fresh, (b) => b.low),
        close: Float64Array.from(fresh, (b) => b.close),
        color: fresh.map(color),
      }, spec.rollover);
      if (bars.length > spec.rollover) bars = bars.slice(bars.length - spec.rollover);
    }
  };
  const flush = () => {
    if (!disposed && replacement) {
      const next = typeof replacement === "function" ? replacement() : replacement;
      replacement = null;
      /** @type {Record<string, ArrayLike<unknown>>} */
      const data = replacementRaw ? { ...next } : {};
      if (!replacementRaw) {
        for (const [streamColumn, sourceColumn] of mapping) data[sourceColumn] = next[streamColumn] ?? new Float64Array(0);
      }
      source.data = data;
      held = Object.values(data)[0]?.length ?? 0;
    }
    if (disposed || queued.length === 0) return;
    const batch = mergeBatches(queued);
    queued = [];
    if (ohlc) {
      streamBars(batch);
      return;
    }
    /** @type {Record<string, Column>} */
    const data = {};
    for (const [streamColumn, sourceColumn] of mapping) {
      const col = streamColumn === OFFSET_COLUMN ? numbers(batch, streamColumn) : batch.columns[streamColumn];
      if (col === undefined || col === null) {
        console.warn(`livestream: plot column "${streamColumn}" is missing from the data of "${batch.stream}"`);
        return;
      }
      data[sourceColumn] = /** @type {Column} */ (col);
    }
    if (hidePending) {
      hidePending = false;
      hideOffScale(document_, source, spec, batch);
      legend?.sync();
    }
    source.stream(data, spec.rollover);
    held = Math.min(spec.rollover, held + batch.rows);
  };
  const flushNow = () => {
    lastFlush = performance.now();
    flush();
    if (!attaching && !disposed && (source.get_length() ?? 0) > 0) void attach();
  };
  /**
   * Stream into the source in the next animation frame, but not more often than every
   * `held / 1000` ms (at most {@link PLOT_MAX_INTERVAL_MS}): BokehJS re-indexes and redraws
   * every point at each `stream`, so a large window redrawn at every frame saturates the
   * page (100,000 points: about 10 fps and a lag of a quarter second) while a paced one
   * keeps it near 60 fps and the lag near 15 ms (docs/benchmarks.md, section 7). Rows that
   * arrive meanwhile wait in `queued` and go in together.
   */
  const schedule = () => {
    if (paceTimer !== null) return;
    // A view-driven plot (replace) redraws at most every VIEW_PLOT_INTERVAL_MS: each redraw
    // also rebuilds BokehJS's hit-test index of every point.
    const pace = replacement ? Math.max(VIEW_PLOT_INTERVAL_MS, held / 1000) : held / 1000;
    const wait = lastFlush + Math.min(PLOT_MAX_INTERVAL_MS, pace) - performance.now();
    if (wait <= 0) {
      requestFrame(flushNow);
      return;
    }
    paceTimer = setTimeout(() => {
      paceTimer = null;
      requestFrame(flushNow);
    }, wait);
  };
  const stopPacing = () => {
    if (paceTimer !== null) clearTimeout(paceTimer);
    paceTimer = null;
  };
  if ((source.get_length() ?? 0) > 0) void attach();
  return {
    spec,
    source,
    document: document_,
    get views() {
      return views;
    },
    append(batch) {
      if (disposed || batch.rows === 0) return;
      const last = queued[queued.length - 1];
      if (last && last.offset + last.rows !== batch.offset) flush();
      queued.push(batch);
      schedule();
    },
    replace(columns) {
      if (disposed) return;
      replacement = columns;
      replacementRaw = false;
      schedule();
    },
    replaceSource(columns) {
      if (disposed) return;
      replacement = /** @type {() => Record<string, ArrayLike<number>>} */ (columns);
      replacementRaw = true;
      schedule();
    },
    setXRange(lo, hi) {
      const range = figure?.x_range;
      if (!range || !(hi > lo) || (range.start === lo && range.end === hi)) return;
      range.setv({ start: lo, end: hi });
    },
    onRangeChange(onRange, onReset) {
      let live = true;
      // Model.on_event: plain functions are called with the event (x0, x1: the new x-range).
      figure?.on_event?.("rangesupdate", (/** @type {BokehObject} */ e) => {
        if (live && !disposed) onRange(Number(e.x0), Number(e.x1));
      });
      figure?.on_event?.("reset", () => {
        if (live && !disposed) onReset();
      });
      return () => {
        live = false;
      };
    },
    clear() {
      replacement = null;
      queued = [];
      bars = [];
      held = 0;
      /** @type {Record<string, unknown[]>} */
      const empty = {};
      for (const name of Object.keys(source.data ?? {})) empty[name] = [];
      for (const [, sourceColumn] of mapping) empty[sourceColumn] ??= [];
      source.data = empty;
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      stopPacing();
      queued = [];
      bars = [];
      colorScheme?.removeEventListener?.("change", restyle);
      resizes?.disconnect();
      try {
        views?.clear();
      } catch (err) {
        console.warn("livestream: closing plot views failed", err);
      }
      forgetDocument(bokeh, document_);
      el.replaceChildren();
      delete el.dataset.sourceId;
      delete el.dataset.kind;
      delete el.dataset.attached;
    },
  };
}

/**
 * Whether a plot spec draws with WebGL (then BokehJS needs its bokeh-gl bundle): a model's
 * `output_backend` says "webgl" (not merely a column or a label that spells it).
 * @param {PlotSpec} spec
 */
export function usesWebgl(spec) {
  const pending = [spec.item?.doc];
  while (pending.length) {
    const v = pending.pop();
    if (!v || typeof v !== "object") continue;
    if (!Array.isArray(v) && v.output_backend === "webgl") return true;
    for (const x of Object.values(v)) if (x && typeof x === "object") pending.push(x);
  }
  return false;
}

/** The shortest time between two redraws of a view-driven plot (ms): 20 a second. */
export const VIEW_PLOT_INTERVAL_MS = 50;

/** @type {boolean | null} */
let softwareGl = null;

/**
 * Whether this browser's WebGL is drawn in software (SwiftShader, llvmpipe, or a renderer
 * calling itself "Software"): there, canvas is faster. Asked once per page.
 */
export function softwareWebgl() {
  if (softwareGl !== null) return softwareGl;
  softwareGl = false;
  try {
    const canvas = document.createElement("canvas");
    const gl = /** @type {WebGLRenderingContext | null} */ (canvas.getContext("webgl") ?? canvas.getContext("experimental-webgl"));
    if (!gl) {
      softwareGl = true; // no WebGL at all: canvas
      return softwareGl;
    }
    const info = gl.getExtension("WEBGL_debug_renderer_info");
    const name = String(info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER));
    softwareGl = isSoftwareRenderer(name);
    gl.getExtension("WEBGL_lose_context")?.loseContext();
  } catch {
    softwareGl = true;
  }
  return softwareGl;
}

/** @param {string} renderer  WebGL's renderer string @returns {boolean} */
export function isSoftwareRenderer(renderer) {
  return /swiftshader|llvmpipe|softpipe|software/i.test(renderer);
}

/**
 * A spec whose figures draw with `backend` ("canvas" or "webgl").
 * @param {PlotSpec} spec @param {string} backend @returns {PlotSpec}
 */
export function withBackend(spec, backend) {
  const doc = structuredClone(spec.item.doc);
  const pending = [doc];
  while (pending.length) {
    const v = pending.pop();
    if (!v || typeof v !== "object") continue;
    if (!Array.isArray(v) && "output_backend" in v) v.output_backend = backend;
    for (const x of Object.values(v)) if (x && typeof x === "object") pending.push(x);
  }
  return { ...spec, item: { ...spec.item, doc } };
}

/**
 * The views of the visible legends of an embedded item (a layout's figures included).
 * @param {BokehObject} views  the ViewManager `embed_item` returned
 * @returns {BokehObject[]}
 */
function visibleLegends(views) {
  /** @type {BokehObject[]} */
  const found = [];
  const seen = new Set();
  const queue = [...(views?.roots ?? [])];
  while (queue.length) {
    const view = queue.shift();
    if (!view || seen.has(view)) continue;
    seen.add(view);
    if (view.model?.type === "Legend" && view.model.visible) found.push(view);
    if (typeof view.children === "function") queue.push(...view.children());
  }
  return found;
}

/**
 * Keep a BokehJS legend's swatches painted while its source streams. BokehJS rebuilds a
 * legend's items, with blank swatch canvases, on every change of its renderers' data (one
 * of those changes comes from an async step after the plot's paint), and paints them only
 * with the plot's next paint: over a streaming source the swatches are blank in about one
 * frame out of three, and stay blank when the stream stops between the two. So paint them
 * right after each rebuild (they are tiny canvases). Without the internals this leans on
 * (see below), the legend behaves as before.
 * @param {BokehObject} legendView
 */
function paintSwatchesOnRebuild(legendView) {
  afterLegendRebuild(legendView, () => {
    try {
      paintLegendSwatches(legendView);
    } catch {
      // Not laid out yet: the plot's own paint draws them.
    }
  });
}

/**
 * The glyph renderers drawing each y column of a plot's source.
 * @param {BokehObject} doc @param {BokehObject} source @returns {Map<string, BokehObject[]>}
 */
function renderersByColumn(doc, source) {
  /** @type {Map<string, BokehObject[]>} */
  const out = new Map();
  for (const m of doc.all_models) {
    if (m.type !== "GlyphRenderer" || m.data_source !== source) continue;
    const g = m.glyph;
    const field = g?.y?.field ?? g?.top?.field ?? g?.y2?.field;
    if (typeof field !== "string") continue;
    if (!out.has(field)) out.set(field, []);
    /** @type {BokehObject[]} */ (out.get(field)).push(m);
  }
  return out;
}

/**
 * An HTML legend above the plot (chips with the series colours; click one to hide or show
 * its series), replacing the figure's own legend.
 * @param {HTMLElement} el @param {BokehObject} doc @param {BokehObject} source @param {PlotSpec} spec
 */
function buildLegend(el, doc, source, spec) {
  const byColumn = renderersByColumn(doc, source);
  for (const m of doc.all_models) if (m.type === "Legend") m.visible = false;
  /** @type {Array<[HTMLElement, BokehObject[]]>} */
  const chips = [];
  for (const y of spec.y ?? []) {
    const renderers = byColumn.get(y) ?? [];
    if (!renderers.length) continue;
    const g = renderers[renderers.length - 1].glyph;
    const color = g?.line_color?.value ?? g?.fill_color?.value ?? "currentColor";
    const swatch = h("span", { class: "ls-legend-swatch", "aria-hidden": "true" });
    swatch.style.background = String(color);
    const chip = h("button", { type: "button", class: "ls-legend-item", dataset: { column: y } }, swatch, y);
    chip.addEventListener("click", () => {
      const visible = !renderers[0].visible;
      for (const r of renderers) r.visible = visible;
      sync();
    });
    chips.push([chip, renderers]);
  }
  const sync = () => {
    for (const [chip, renderers] of chips) {
      const on = renderers.some((r) => r.visible);
      chip.setAttribute("aria-pressed", String(on));
      chip.title = on ? "Click to hide" : "Click to show";
    }
  };
  el.replaceChildren(...chips.map(([c]) => c));
  el.hidden = chips.length === 0;
  sync();
  return { sync };
}

/**
 * Hide the renderers of y columns whose typical magnitude is over 10× off the first y's, so
 * that, say, a volume in thousands does not flatten a price near 100. They stay in the legend.
 * @param {BokehObject} doc @param {BokehObject} source @param {PlotSpec} spec @param {Batch} batch
 */
function hideOffScale(doc, source, spec, batch) {
  const ys = spec.y ?? [];
  const magnitude = (/** @type {string} */ name) => {
    const col = batch.columns[name];
    if (!col || Array.isArray(col)) return NaN;
    let m = 0;
    for (let i = 0; i < col.length; i++) if (Number.isFinite(col[i])) m = Math.max(m, Math.abs(col[i]));
    return m;
  };
  const ref = magnitude(ys[0]);
  if (!(ref > 0)) return;
  const hide = new Set(ys.slice(1).filter((y) => {
    const m = magnitude(y);
    return m > 0 && (m / ref > 10 || ref / m > 10);
  }));
  if (hide.size === 0) return;
  for (const [field, renderers] of renderersByColumn(doc, source)) {
    if (hide.has(field)) for (const r of renderers) r.visible = false;
  }
}

// ---------------------------------------------------------------------------------------------
// BokehJS private internals: every use of one is here, one function each. None is public API,
// so pyproject.toml bounds bokeh to the versions tested, and tests/test_bokeh_internals.py
// fails when a BokehJS release changes one.
// ---------------------------------------------------------------------------------------------

/**
 * `LegendView._render_items()` (private): BokehJS calls it to rebuild a legend's items,
 * with blank swatch canvases, whenever its renderers' data changes. Run `after` right after
 * each rebuild. Does nothing when the method is missing.
 * @param {BokehObject} legendView @param {() => void} after
 */
function afterLegendRebuild(legendView, after) {
  const rebuild = legendView._render_items;
  if (typeof rebuild !== "function" || typeof legendView._paint_glyphs !== "function") return;
  legendView._render_items = function (/** @type {unknown[]} */ ...args) {
    const result = rebuild.apply(this, args);
    after();
    return result;
  };
}

/**
 * `LegendView._paint_glyphs()` (private): paints the legend's swatch canvases (throws when
 * the legend is not laid out yet).
 * @param {BokehObject} legendView
 */
function paintLegendSwatches(legendView) {
  legendView._paint_glyphs();
}

/**
 * `Bokeh.documents` (undocumented): the array of every document BokehJS embedded on the page.
 * BokehJS has no API to forget one, and without this every re-rendered plot leaks its
 * document and models: splice it out.
 * @param {BokehObject} bokeh @param {BokehObject} doc
 */
function forgetDocument(bokeh, doc) {
  const docs = bokeh?.documents;
  const i = Array.isArray(docs) && doc ? docs.indexOf(doc) : -1;
  if (i >= 0) docs.splice(i, 1);
}

/**
 * `PlotView._range_manager.warn_initial_ranges` (private): BokehJS's RangeManager logs
 * "could not set initial ranges" at every paint while a DataRange1d has no start or end,
 * that is while its source is empty. A plot's views are built only once its source holds
 * rows (see embedPlot); this switches the warning off for the plot views of `views`, for
 * when a reset empties the source again. BokehJS does the same for its own internal plots.
 * Does nothing when the field is missing.
 * @param {BokehObject} views  a ViewManager
 */
function quietInitialRanges(views) {
  const seen = new Set();
  const queue = [...(views?.roots ?? [])];
  while (queue.length) {
    const view = queue.shift();
    if (!view || seen.has(view)) continue;
    seen.add(view);
    const manager = view._range_manager;
    if (manager && typeof manager.warn_initial_ranges === "boolean") manager.warn_initial_ranges = false;
    if (typeof view.children === "function") queue.push(...view.children());
  }
}
