// @ts-check
// renderers/table.js — renderTable: the newest rows of a stream, newest first.
import { isNumericDtype, isTimeColumn } from "../codec.js";
import { Connection, Subscription } from "../connection.js";
import { formatCell, formatNumber, h, isSharedError } from "../dom.js";
import { paced } from "../pace.js";
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
  /** @type {HTMLTableRowElement[]} the body's rows, kept: a redraw changes their text only */
  let trs = [];
  const render = () => {
    empty.hidden = rows.length > 0;
    // New rows flash while they come slowly enough to be read; when every row is new at
    // each redraw (a fast stream), flashing them all only costs the page its frames.
    const flash = lastRendered >= 0 && rows.length > 0 && rows[0].offset <= lastRendered;
    const width = names.length + 1;
    if (trs.length !== rows.length || (trs[0] && trs[0].cells.length !== width)) {
      trs = rows.map(() => {
        const tr = /** @type {HTMLTableRowElement} */ (h("tr", {}, h("td", { class: "ls-num ls-offset" })));
        for (const n of names) {
          const dtype = schema[n];
          const numeric = isNumericDtype(dtype ?? "") && !isTimeColumn(n, dtype ?? "");
          tr.append(h("td", { class: numeric ? "ls-num" : "" }));
        }
        return tr;
      });
      tbody.replaceChildren(...trs);
    }
    /** @param {HTMLElement} cell @param {string} text */
    const set = (cell, text) => {
      if (cell.textContent !== text) cell.textContent = text;
    };
    for (let i = rows.length - 1, k = 0; i >= 0; i--, k++) {
      const row = rows[i];
      const tr = trs[k];
      const isNew = flash && row.offset > lastRendered;
      if (isNew) {
        // Restart the flash: a class toggled off and on again in one frame would not.
        tr.classList.remove("ls-new");
        void tr.offsetWidth;
      }
      tr.classList.toggle("ls-new", isNew);
      set(tr.cells[0], formatNumber(row.offset));
      names.forEach((n, j) => set(tr.cells[j + 1], formatCell(row.values[j], n, schema[n])));
    }
    lastRendered = rows.length ? rows[rows.length - 1].offset : lastRendered;
  };
  // Rebuilt at most ten times a second, in an animation frame, however fast rows come.
  const redraw = paced(render);

  const subscription = conn.subscribe(stream, {
    last: limit,
    tail: limit, // a fast stream's deliveries are merged for the rows shown only
    columns,
    onSubscribed(info) {
      schema = info.schema ?? {};
      names = columns ?? Object.keys(schema);
      renderHead();
      trs = [];
    },
    onData(batch) {
      const start = Math.max(0, batch.rows - limit);
      const cols = names.map((n) => batch.columns[n]);
      for (let i = start; i < batch.rows; i++) {
        rows.push({ offset: batch.offset + i, values: cols.map((c) => (c ? c[i] : undefined)) });
      }
      if (rows.length > limit) rows = rows.slice(rows.length - limit);
      redraw.request();
    },
    onReset() {
      rows = [];
      lastRendered = -1;
      redraw.now();
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
      redraw.cancel();
      el.replaceChildren();
      el.classList.remove("ls-table-view");
    },
  };
}
