// @ts-check
/**
 * livestream.js — the public entry of livestream's browser code (plain ES modules, served
 * as files from `/static/`; the widgets load the same modules bundled into
 * `widget.bundle.js`). It re-exports what pages and users import; the code lives in modules
 * named for what they do:
 *
 * - `errors.js` — `LivestreamError`, `ProtocolError`.
 * - `codec.js` — protocol v1 frames (docs/protocol.md): `encodeMessage`, `decodeMessage`,
 *   `decodeBinaryFrame`, `encodeBinaryFrame`, `decodeJsonData`, the dtype lists. Binary `data`
 *   frames become typed-array views over the frame's ArrayBuffer, without copying (int64 is
 *   converted to Float64Array).
 * - `schedule.js` — `requestFrame`: DOM and BokehJS work at most once per animation frame.
 * - `http.js` — endpoints, the page token, `fetchJSON`, `diagnose`.
 * - `routes.js` — how a page reaches the server (docs/jupyter-routes.md): directly, through
 *   jupyter-server-proxy under the page's Jupyter base URL, or relayed through a widget's comm.
 * - `relay.js` — the relay transport: a socket-like object over a widget's comm.
 * - `connection.js` — `connect({url, token})`: the page's one shared `Connection` per server
 *   and token; reconnects with backoff and fails over between several URLs.
 * - `channel.js` — one stream's server subscription, shared by its local `Subscription`s:
 *   resumes with `since`/`epoch` (no gap, no duplicate), paces the server with `credit`, and
 *   hands each subscriber at most one merged batch per animation frame.
 * - `bokeh.js` — `ensureBokeh` loads BokehJS once per page, `embedPlot` embeds a figure built
 *   by `livestream/plots.py` and streams batches into its ColumnDataSource; every use of a
 *   BokehJS private internal is isolated there.
 * - `dom.js` — `h()` (a text-only element builder) and number/time formatting.
 * - `renderers/*.js` — `renderTable`, `renderValue`, `renderStatus`, `renderControls`,
 *   `renderPlot`, `renderDashboard`, `renderStreamList`: plain DOM, styled by livestream.css.
 *   Each takes `(el, conn, stream, options)` and returns `{dispose()}` (plus extras).
 * - `widget.js` — the anywidget adapter (`export default {render}`).
 *
 * Example (a page served by the livestream server):
 *
 *     import {connect, pageToken, renderTable} from "/static/livestream.js";
 *     const conn = connect({token: pageToken()});
 *     const table = renderTable(document.querySelector("#t"), conn, "prices", {rows: 20});
 *     // later: table.dispose(); conn.release();
 */

/** Version of this module (the Python package's version). */
export const VERSION = "0.1.0";

export { PROTOCOL_VERSION, TIME_COLUMNS, OFFSET_COLUMN, NUMERIC_DTYPES, BINARY_DTYPES, isTimeColumn, isNumericDtype, encodeMessage, decodeMessage, decodeJsonData, decodeBinaryFrame, encodeBinaryFrame, sliceBatch, mergeBatches } from "./codec.js";
export { LivestreamError, ProtocolError } from "./errors.js";
export { requestFrame } from "./schedule.js";
export { pageToken, defaultHttpBase, resolveEndpoints, apiUrl, fetchJSON, diagnose } from "./http.js";
export { ROUTES, jupyterBaseUrl, proxyEndpoints } from "./routes.js";
export { connect, Connection, Subscription } from "./connection.js";
export { ensureBokeh, foldTicks, applyPlotTheme, embedPlot, usesWebgl } from "./bokeh.js";
export { h, formatNumber, formatTime, prettify } from "./dom.js";
export { renderTable } from "./renderers/table.js";
export { renderValue } from "./renderers/value.js";
export { renderStatus } from "./renderers/status.js";
export { renderControls } from "./renderers/controls.js";
export { renderPlot } from "./renderers/plot.js";
export { renderDashboard } from "./renderers/dashboard.js";
export { renderStreamList } from "./renderers/streamlist.js";

// Types, for JSDoc users: `@typedef {import("./livestream.js").Batch} Batch`.
/** @typedef {import("./codec.js").Column} Column */
/** @typedef {import("./codec.js").Batch} Batch */
/** @typedef {import("./codec.js").BufferColumnHeader} BufferColumnHeader */
/** @typedef {import("./codec.js").ValuesColumnHeader} ValuesColumnHeader */
/** @typedef {import("./codec.js").StreamState} StreamState */
/** @typedef {import("./codec.js").ParamSpec} ParamSpec */
/** @typedef {import("./codec.js").ControlsSpec} ControlsSpec */
/** @typedef {import("./codec.js").SubscribedInfo} SubscribedInfo */
/** @typedef {import("./codec.js").ResetMessage} ResetMessage */
/** @typedef {import("./http.js").Endpoints} Endpoints */
/** @typedef {import("./http.js").Diagnosis} Diagnosis */
/** @typedef {import("./routes.js").RouteName} RouteName */
/** @typedef {import("./routes.js").RouteChoice} RouteChoice */
/** @typedef {import("./routes.js").Route} Route */
/** @typedef {import("./routes.js").Carrier} Carrier */
/** @typedef {import("./connection.js").ConnectionStatus} ConnectionStatus */
/** @typedef {import("./connection.js").StatusCallback} StatusCallback */
/** @typedef {import("./connection.js").SubscribeOptions} SubscribeOptions */
/** @typedef {import("./connection.js").SubscriptionStats} SubscriptionStats */
/** @typedef {import("./bokeh.js").PlotSpec} PlotSpec */
/** @typedef {import("./bokeh.js").OhlcBar} OhlcBar */
/** @typedef {import("./bokeh.js").PlotHandle} PlotHandle */
/** @typedef {import("./dom.js").Handle} Handle */
/** @typedef {import("./renderers/value.js").Threshold} Threshold */
/** @typedef {import("./renderers/plot.js").PlotOptions} PlotOptions */
