// @ts-check
// renderers/plot.js — renderPlot: a live Bokeh plot of a stream (spec fetched unless given).
import { PLOT_COLORS, embedPlot } from "../bokeh.js";
import { OFFSET_COLUMN, isObject } from "../codec.js";
import { Connection, Subscription } from "../connection.js";
import { h, isConnectionError, isSharedError } from "../dom.js";
import { LivestreamError } from "../errors.js";
import { usesViews, viewPlot } from "../overview.js";
/** @typedef {import("../bokeh.js").PlotHandle} PlotHandle */
/** @typedef {import("../bokeh.js").PlotSpec} PlotSpec */
/** @typedef {import("../dom.js").Handle} Handle */

/**
 * @typedef {object} PlotOptions
 * @property {PlotSpec} [spec]  a plot spec; default: fetched from the server's plot endpoint
 * @property {string} [x] @property {string | string[]} [y] @property {string} [kind]
 * @property {number} [window]  passed to the plot endpoint when `spec` is not given
 * @property {number} [interval]  `ohlc`: x units (ms) per bar, for the plot endpoint
 * @property {number} [height]  pixels, for the plot endpoint
 * @property {boolean} [webgl]  draw a fetched spec with WebGL
 * @property {string} [title]  a title for a fetched spec's figure
 * @property {"light"|"dark"|"auto"} [theme]
 * @property {boolean} [autoHide]  hide y columns on a very different scale at first (see embedPlot)
 * @property {boolean} [quietErrors]  leave connection and unknown-stream errors to the container
 */

/**
 * A live Bokeh plot of a stream: fetches the plot spec (unless given), embeds it, subscribes
 * for the plotted columns and streams them in. `onReady` and the returned promise give the
 * {@link PlotHandle}.
 * @param {HTMLElement} el @param {Connection} conn @param {string} stream
 * @param {PlotOptions} [options]
 * A plot whose window holds more than {@link import("../overview.js").LARGE_WINDOW} rows
 * (line, step, area, scatter) draws the server's views of the visible x-range instead of
 * every row, and follows the live edge exactly (overview.js).
 * @returns {Handle & {ready: Promise<PlotHandle>, subscription: () => Subscription | null, overview: () => import("../overview.js").ViewPlot | null}}
 */
export function renderPlot(el, conn, stream, options = {}) {
  el.classList.add("ls-plot");
  const placeholder = h("div", { class: "ls-plot-placeholder" }, h("span", { class: "ls-spinner", "aria-hidden": "true" }), "Loading plot…");
  el.replaceChildren(placeholder);
  let disposed = false;
  /** @type {Subscription | null} */
  let subscription = null;
  /** @type {Subscription | null} waits for the stream to exist or to get rows */
  let waiter = null;
  /** @type {PlotHandle | null} */
  let plot = null;
  /** @type {import("../overview.js").ViewPlot | null} */
  let overview = null;
  /** @param {LivestreamError} err */
  const showError = (err) => {
    const quiet = options.quietErrors === true && isSharedError(err);
    el.replaceChildren(h("div", { class: `ls-plot-placeholder${quiet ? "" : " ls-error-text"}` },
      quiet ? "Plot unavailable" : `Cannot show the plot: ${err.message}`));
  };
  const fetchSpec = () => {
    const y = Array.isArray(options.y) ? options.y.join(",") : options.y;
    return /** @type {Promise<PlotSpec>} */ (conn.getJSON(`/api/streams/${encodeURIComponent(stream)}/plot`, {
      x: options.x, y, kind: options.kind, window: options.window, interval: options.interval, height: options.height,
    }));
  };
  /**
   * Wait until the stream exists (`exists`), or until it has a schema or rows (`rows`).
   * @param {"exists" | "rows"} what @returns {Promise<void>}
   */
  const waitFor = (what) => new Promise((resolve) => {
    const done = () => {
      waiter?.unsubscribe();
      waiter = null;
      resolve();
    };
    waiter = conn.subscribe(stream, {
      last: 1,
      onSubscribed: (info) => {
        if (what === "exists" || Object.keys(info.schema ?? {}).length) done();
      },
      onData: (batch) => {
        if (batch.rows) done();
      },
      onError: (err) => {
        if (err.code === "unknown_stream" || isConnectionError(err)) showError(err);
      },
    });
  });
  const ready = (async () => {
    let spec = options.spec;
    // Ask for the spec once the stream has a schema: asked before, the endpoint answers 404
    // or 400, and the browser logs each as a failed resource in the console.
    if (!spec) await waitFor("rows");
    if (disposed) throw new LivestreamError("the plot was disposed", "disposed");
    let badRequests = 0;
    while (!spec) {
      try {
        spec = await fetchSpec();
      } catch (err) {
        const e = /** @type {LivestreamError} */ (err);
        if (disposed) throw e;
        // A page opened before its producer started: wait for the stream, or for its first
        // rows (no schema, nothing to plot yet), then ask again.
        if (e.status === 404 && !isConnectionError(e)) {
          showError(e);
          await waitFor("exists");
        } else if (e.status === 400 && badRequests++ < 2) {
          showError(e);
          await waitFor("rows");
        } else {
          throw e;
        }
        if (disposed) throw new LivestreamError("the plot was disposed", "disposed");
      }
    }
    if (disposed) throw new LivestreamError("the plot was disposed", "disposed");
    if (!options.spec) spec = withFigureOptions(spec, options);
    const target = h("div", { class: "ls-plot-canvas" });
    el.replaceChildren(target);
    const handle = await embedPlot(target, spec, { loadScript: (path) => conn.loadScript(path), theme: options.theme, autoHide: options.autoHide });
    if (disposed) {
      handle.dispose();
      throw new LivestreamError("the plot was disposed", "disposed");
    }
    plot = handle;
    el.dataset.sourceId = spec.source_id;
    if (usesViews(spec)) {
      overview = viewPlot(conn, stream, handle, { width: () => target.clientWidth });
      subscription = overview.subscription;
      el.dataset.views = "true";
      return handle;
    }
    subscription = conn.subscribe(stream, {
      // Candles are built from ticks: take every tick the server holds, since how many
      // make `rollover` bars is unknown. Other kinds take the rows they keep.
      last: spec.kind === "ohlc" ? undefined : spec.rollover,
      columns: Object.keys(spec.columns).filter((c) => c !== OFFSET_COLUMN),
      onData: (batch) => handle.append(batch),
      onReset: () => handle.clear(),
    });
    return handle;
  })();
  ready.catch((err) => {
    if (!disposed) showError(err);
  });
  return {
    ready,
    subscription: () => subscription,
    overview: () => overview,
    dispose() {
      disposed = true;
      waiter?.unsubscribe();
      overview?.dispose();
      subscription?.unsubscribe();
      plot?.dispose();
      el.replaceChildren();
      el.classList.remove("ls-plot");
      delete el.dataset.sourceId;
      delete el.dataset.views;
    },
  };
}

/**
 * A fetched plot spec with the options the plot endpoint does not take: WebGL output and a
 * title, set on the JSON of the item's figure before it is embedded.
 * @param {PlotSpec} spec @param {PlotOptions} options @returns {PlotSpec}
 */
function withFigureOptions(spec, options) {
  if (!options.webgl && !options.title) return spec;
  const doc = structuredClone(spec.item.doc);
  for (const root of doc?.roots ?? []) {
    const attrs = root?.attributes;
    if (!attrs || root.name !== "Figure") continue;
    if (options.webgl) attrs.output_backend = "webgl";
    if (options.title) {
      // A PlainText model, not a string: BokehJS reads a string title for TeX delimiters.
      const text = { type: "object", name: "PlainText", id: `${root.id}-title-text`, attributes: { text: String(options.title) } };
      const title = attrs.title;
      if (isObject(title) && isObject(title.attributes)) title.attributes.text = text;
      else {
        attrs.title = {
          type: "object", name: "Title", id: `${root.id}-title`,
          attributes: { text, text_font_size: "14px", text_font_style: "bold", text_color: PLOT_COLORS.light.text },
        };
      }
    }
  }
  return { ...spec, item: { ...spec.item, doc } };
}
