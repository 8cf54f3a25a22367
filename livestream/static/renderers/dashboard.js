// @ts-check
// renderers/dashboard.js — renderDashboard: plot, value, table, controls and status in cards.
import { Connection } from "../connection.js";
import { formatInterval, formatNumber, h } from "../dom.js";
import { renderControls } from "./controls.js";
import { renderPlot } from "./plot.js";
import { renderStatus } from "./status.js";
import { renderTable } from "./table.js";
import { renderValue } from "./value.js";
/** @typedef {import("../dom.js").Handle} Handle */
/** @typedef {import("./plot.js").PlotOptions} PlotOptions */

/**
 * A card: a titled box. Returns the card and its body.
 * @param {string} title @param {string} [extraClass]
 */
function card(title, extraClass = "") {
  const body = h("div", { class: "ls-card-body" });
  const header = h("div", { class: "ls-card-header" }, h("h2", { class: "ls-card-title", text: title }));
  const el = h("section", { class: `ls-card ${extraClass}`.trim() }, header, body);
  return { el, header, body };
}

/**
 * A whole dashboard for one stream: plot, big value, controls, status and table in cards,
 * laid out for a phone up to a wide monitor.
 * @param {HTMLElement} el @param {Connection} conn @param {string} stream
 * @param {PlotOptions & {rows?: number, value?: string, connectionAlert?: boolean}} [options]
 *   `rows`: table rows; `value`: the column of the big value (default: the plot's first y);
 *   `connectionAlert`: false when the page itself shows connection problems
 * @returns {Handle & {plot: ReturnType<typeof renderPlot>, table: ReturnType<typeof renderTable>, controls: ReturnType<typeof renderControls>, status: ReturnType<typeof renderStatus>, value: ReturnType<typeof renderValue>}}
 */
export function renderDashboard(el, conn, stream, options = {}) {
  el.classList.add("ls-dashboard");
  const plotCard = card("Live plot", "ls-area-plot");
  const valueCard = card("Latest", "ls-area-value");
  const controlsCard = card("Controls", "ls-area-controls");
  const statusCard = card("Status", "ls-area-status");
  const tableCard = card("Newest rows", "ls-area-table");
  const main = h("div", { class: "ls-dashboard-main" }, plotCard.el, tableCard.el);
  const side = h("div", { class: "ls-dashboard-side" }, valueCard.el, controlsCard.el, statusCard.el);
  // Connection problems (a refused token, a lost server) are said once, above the cards.
  const alert = h("div", { class: "ls-alert ls-dashboard-alert", role: "alert", hidden: true });
  el.replaceChildren(alert, main, side);
  const showAlert = options.connectionAlert ?? true;
  let connectionMessage = "";
  let connectionLevel = "error";
  let streamMessage = "";
  const updateAlert = () => {
    const text = connectionMessage || streamMessage;
    alert.hidden = !text;
    alert.textContent = text;
    alert.dataset.level = connectionMessage ? connectionLevel : "error";
  };
  const stopStatus = conn.onStatus((s, message) => {
    connectionMessage = showAlert && (s === "error" || s === "reconnecting") ? message : "";
    connectionLevel = s === "error" ? "error" : "warning";
    el.dataset.connection = s;
    updateAlert();
  });
  // A missing stream is said once here too (the parts stay quiet); it clears when the
  // stream appears, since subscriptions to an unknown stream keep retrying.
  const watch = conn.subscribe(stream, {
    last: 0,
    onError(err) {
      if (err.code === "unknown_stream") {
        streamMessage = err.message;
        updateAlert();
      }
    },
    onSubscribed() {
      streamMessage = "";
      updateAlert();
    },
  });

  const parts = { quietErrors: true };
  const plot = renderPlot(plotCard.body, conn, stream, { autoHide: !options.y, ...options, ...parts });
  const controls = renderControls(controlsCard.body, conn, stream, parts);
  const status = renderStatus(statusCard.body, conn, stream, { connectionAlert: false, quietErrors: true });
  tableCard.body.classList.add("ls-card-body-flush"); // the table runs to the card's edges
  const table = renderTable(tableCard.body, conn, stream, { rows: options.rows ?? 15, ...parts });
  // The plot's first y by default, which is also renderValue's own default (the first
  // numeric non-time column) unless y was given.
  const valueColumn = options.value ?? (Array.isArray(options.y) ? options.y[0] : options.y);
  const value = renderValue(valueCard.body, conn, stream, { column: valueColumn, ...parts });
  plot.ready.then((p) => {
    const what = p.spec.kind === "ohlc"
      ? `${formatInterval(p.spec.interval ?? 1000)} candles`
      : `last ${formatNumber(p.spec.rollover)} rows`;
    const sub = `${p.spec.y?.length === 1 ? `${p.spec.y[0]} · ` : ""}${what}`;
    plotCard.header.append(h("span", { class: "ls-card-subtitle", text: sub }));
  }, () => {});
  return {
    plot, table, controls, status, value,
    dispose() {
      stopStatus();
      watch.unsubscribe();
      plot.dispose();
      table.dispose();
      controls.dispose();
      status.dispose();
      value.dispose();
      el.replaceChildren();
      el.classList.remove("ls-dashboard");
    },
  };
}
