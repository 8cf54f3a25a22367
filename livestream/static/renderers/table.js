// @ts-check
// renderers/table.js — renderTable: the newest rows of a stream, newest first.
import { isNumericDtype, isTimeColumn } from "../codec.js";
import { Connection, Subscription } from "../connection.js";
import { formatCell, formatNumber, h, isSharedError } from "../dom.js";
/** @typedef {import("../dom.js").Handle} Handle */

/**
 * A table of a stream's newest rows, newest first. The table scrolls inside its own box:
 * sideways when its columns are wider than the box, down when `height` is set; the header
 * row stays in view (sticky) either way.
 * @param {HTMLElement} el @param {Connection} conn @param {string} stream
 * @param {{rows?: number, columns?: string[], height?: number, quietErrors?: boolean}} [options]
 *   `rows`: how many (default 20); `columns`: which, in order (default: the schema's);
 *   `height`: the box's maximum height in pixels (default: tall enough for every row);
 *   `quietErrors`: leave connection and unknown-stream errors to the container (see
 *   renderDashboard)
 * @returns {Handle & {subscription: Subscription}}
 */
export function renderTable(el, conn, stream, { rows: limit = 20, columns, height, quietErrors = false } = {}) {
  el.classList.add("ls-table-view");
  const table = h("table", { class: "ls-table" });
  const thead = h("thead");
  const tbody = h("tbody");
  const empty = h("div", { class: "ls-empty", text: "Waiting for rows…" });
  table.append(thead, tbody);
  const scroller = h("div", { class: "ls-table-scroll", tabindex: "0", role: "region", "aria-label": `Newest rows of ${stream}` }, table);
  if (typeof height === "number" && height > 0) scroller.style.maxHeight = `${height}px`;
  el.replaceChildren(scroller, empty);
  /** @type {Record<string, string>} */
  let schema = {};
  /** @type {string[]} */
  let names = columns ?? [];
  /** @type {Array<{offset: number, values: unknown[]}>} newest last */
  let rows = [];
  let lastRendered = -1;
  scroller.hidden = names.length === 0; // no header to show until the schema is known

  const renderHead = () => {
    scroller.hidden = names.length === 0;
    const tr = h("tr", {}, h("th", { class: "ls-num ls-offset", text: "#", title: "row offset" }));
    for (const n of names) {
      const numeric = isNumericDtype(schema[n] ?? "") && !isTimeColumn(n, schema[n] ?? "");
      tr.append(h("th", { class: numeric ? "ls-num" : "", text: n, title: schema[n] ?? "" }));
    }
    thead.replaceChildren(tr);
  };
  const render = () => {
    empty.hidden = rows.length > 0;
    const trs = [];
    for (let i = rows.length - 1; i >= 0; i--) {
      const row = rows[i];
      const tr = h("tr", { class: row.offset > lastRendered && lastRendered >= 0 ? "ls-new" : "" },
        h("td", { class: "ls-num ls-offset", text: formatNumber(row.offset) }));
      names.forEach((n, j) => {
        const dtype = schema[n];
        const numeric = isNumericDtype(dtype ?? "") && !isTimeColumn(n, dtype ?? "");
        tr.append(h("td", { class: numeric ? "ls-num" : "", text: formatCell(row.values[j], n, dtype) }));
      });
      trs.push(tr);
    }
    tbody.replaceChildren(...trs);
    lastRendered = rows.length ? rows[rows.length - 1].offset : lastRendered;
  };

  const subscription = conn.subscribe(stream, {
    last: limit,
    columns,
    onSubscribed(info) {
      schema = info.schema ?? {};
      names = columns ?? Object.keys(schema);
      renderHead();
    },
    onData(batch) {
      const start = Math.max(0, batch.rows - limit);
      const cols = names.map((n) => batch.columns[n]);
      for (let i = start; i < batch.rows; i++) {
        rows.push({ offset: batch.offset + i, values: cols.map((c) => (c ? c[i] : undefined)) });
      }
      if (rows.length > limit) rows = rows.slice(rows.length - limit);
      render();
    },
    onReset() {
      rows = [];
      lastRendered = -1;
      render();
    },
    onError(err) {
      empty.hidden = false;
      const quiet = quietErrors && isSharedError(err);
      empty.textContent = quiet ? "No data" : err.message;
      empty.classList.toggle("ls-error-text", !quiet);
    },
  });
  return {
    subscription,
    dispose() {
      subscription.unsubscribe();
      el.replaceChildren();
      el.classList.remove("ls-table-view");
    },
  };
}
