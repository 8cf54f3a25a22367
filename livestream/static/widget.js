// @ts-check
// widget.js — the anywidget adapter: `export default {render}` over the same modules as the
// standalone pages. esbuild bundles it with them into widget.bundle.js (js/build.mjs), which
// every widget model loads once per page (livestream/widgets.py). The shared connection
// registry lives on globalThis, so every widget on a page shares one socket per server even
// if the bundle were evaluated more than once.

export * from "./livestream.js"; // the bundle is also the public API (tests, power users)
import { connect } from "./connection.js";
import { h } from "./dom.js";
import { renderControls } from "./renderers/controls.js";
import { renderDashboard } from "./renderers/dashboard.js";
import { renderPlot } from "./renderers/plot.js";
import { renderStatus } from "./renderers/status.js";
import { renderTable } from "./renderers/table.js";
import { renderValue } from "./renderers/value.js";
/** @typedef {import("./connection.js").Connection} Connection */
/** @typedef {import("./routes.js").Carrier} Carrier */
/** @typedef {import("./routes.js").RouteChoice} RouteChoice */

/**
 * @typedef {object} WidgetModel  the subset of the anywidget model API used here
 * @property {(name: string) => any} get
 * @property {(name: string, value: any) => void} set
 * @property {() => void} save_changes
 * @property {(event: string, cb: (...args: any[]) => void) => void} on
 * @property {(event: string, cb?: (...args: any[]) => void) => void} off
 * @property {(content: any, callbacks?: any, buffers?: ArrayBuffer[]) => void} [send]
 *   custom messages to the kernel (the relay route and origin admission use them)
 */

/** Kinds that show connection problems and producer errors themselves. */
const SELF_REPORTING = new Set(["status", "dashboard"]);

/**
 * Render one widget view: `kind` picks the renderer; `url`, `token` and `stream` say what to
 * show; `options` carries the renderer's options (a plot's spec among them);
 * `requested_route` is how to reach the server ("auto": the first of direct, proxy, relay
 * that works). The view reports its connection state back to Python in `status`,
 * `message` and `route` (the route in use, also in `data-livestream-route`), and says what is
 * wrong in the widget itself: above the content, a banner shows a refused token, an
 * unreachable or lost server, and a producer in error (status and dashboard views have
 * their own places for these), so a widget is never a silent blank.
 * @param {{model: WidgetModel, el: HTMLElement}} ctx
 * @returns {Promise<() => void>} cleanup, called when the view is removed (cell re-run)
 */
async function renderWidget({ model, el }) {
  const kind = String(model.get("kind"));
  const stream = String(model.get("stream") || "");
  const options = /** @type {Record<string, any>} */ (model.get("options") || {});
  const classes = ["ls-root", "ls-widget", `ls-widget-${kind}`];
  el.classList.add(...classes);
  const banner = h("div", { class: "ls-alert ls-widget-alert", role: "alert", hidden: true });
  // The renderer draws into `body`, inside `frame`: the frame is the size container of the
  // container queries in livestream.css (a container cannot query itself).
  const body = h("div", { class: "ls-widget-body" });
  const frame = h("div", { class: "ls-widget-frame" }, body);
  el.replaceChildren(banner, frame);
  /** @type {Connection} */
  let conn;
  // The model's comm carries the relay and asks the kernel to admit the page's origin; a
  // host without custom messages simply has no relay route.
  const carrier = typeof model.send === "function" ? /** @type {Carrier} */ (/** @type {unknown} */ (model)) : null;
  try {
    const route = /** @type {RouteChoice} */ (String(model.get("requested_route") || "auto"));
    conn = connect({ url: String(model.get("url")), token: String(model.get("token")), route, carrier });
  } catch (err) {
    // A malformed URL: nothing to connect to, say so.
    const message = /** @type {Error} */ (err).message;
    banner.hidden = false;
    banner.textContent = message;
    el.dataset.livestreamStatus = "error";
    model.set("status", "error");
    model.set("message", message);
    model.save_changes();
    return () => {
      el.replaceChildren();
      el.classList.remove(...classes);
    };
  }
  const ownBanner = !SELF_REPORTING.has(kind);
  let connectionText = "";
  let connectionLevel = "error";
  let streamText = "";
  const showBanner = () => {
    const text = connectionText || streamText;
    banner.hidden = !ownBanner || !text;
    banner.textContent = text;
    banner.dataset.level = connectionText ? connectionLevel : "error";
  };
  /** @param {string} status @param {string} [message] */
  const report = (status, message = "") => {
    const route = conn.route?.name ?? "";
    el.dataset.livestreamStatus = status;
    if (route) el.dataset.livestreamRoute = route;
    connectionText = status === "error" || status === "reconnecting" ? message : "";
    connectionLevel = status === "error" ? "error" : "warning";
    showBanner();
    if (model.get("status") === status && model.get("message") === message && model.get("route") === route) return;
    model.set("status", status);
    model.set("message", message);
    model.set("route", route);
    model.save_changes();
  };
  const stopStatus = conn.onStatus(report);
  // The producer's state (running, paused, error) for the banner; controls show it in
  // their own alert, so they do not need it here.
  const watch = ownBanner && kind !== "controls" && stream
    ? conn.subscribe(stream, {
      last: 0,
      onState(state) {
        streamText = state.status === "error" ? `Stream error: ${state.error ?? "the producer failed"}` : "";
        showBanner();
      },
      onError() { /* the view below says what is wrong with the stream */ },
    })
    : null;
  /** @type {{dispose: () => void}} */
  let handle;
  switch (kind) {
    case "plot":
      handle = renderPlot(body, conn, stream, options);
      break;
    case "table":
      handle = renderTable(body, conn, stream, options);
      break;
    case "value":
      handle = renderValue(body, conn, stream, options);
      break;
    case "controls":
      handle = renderControls(body, conn, stream, options);
      break;
    case "status":
      handle = renderStatus(body, conn, stream || undefined, options);
      break;
    case "dashboard":
      handle = renderDashboard(body, conn, stream, options);
      break;
    default:
      banner.hidden = false;
      banner.textContent = `livestream: unknown widget kind ${JSON.stringify(kind)}; update the livestream package so that Python and the browser module match`;
      handle = { dispose() {} };
  }
  return () => {
    stopStatus();
    watch?.unsubscribe();
    handle.dispose();
    if (carrier) conn.removeCarrier(carrier);
    conn.release();
    el.replaceChildren();
    el.classList.remove(...classes);
    delete el.dataset.livestreamStatus;
    delete el.dataset.livestreamRoute;
  };
}

export default { render: renderWidget };
