// @ts-check
// renderers/status.js — renderStatus: connection and stream status pills and live figures.
import { Connection, Subscription } from "../connection.js";
import { STATUS_TEXT, formatDuration, formatNumber, formatRate, h, isConnectionError, isSharedError, pill, setPill } from "../dom.js";
/** @typedef {import("../codec.js").StreamState} StreamState */
/** @typedef {import("../dom.js").Handle} Handle */

/**
 * Connection and stream status: status pills, an error message when there is one, and live
 * figures (rows, rate, lag, offset). Without `stream`, the connection's status only.
 * @param {HTMLElement} el @param {Connection} conn @param {string} [stream]
 * @param {{compact?: boolean, connectionAlert?: boolean, quietErrors?: boolean}} [options]
 *   `compact`: pills only (messages go to their tooltips); `connectionAlert`: show connection
 *   problems as well as stream errors (default true; false when the page shows them
 *   elsewhere); `quietErrors`: leave an unknown stream to the container too
 * @returns {Handle & {subscription: Subscription | null}}
 */
export function renderStatus(el, conn, stream, { compact = false, connectionAlert = true, quietErrors = false } = {}) {
  el.classList.add("ls-status");
  const connPill = pill("connecting", "Connecting");
  connPill.classList.add("ls-conn-pill");
  const streamPill = stream ? pill("idle", "idle") : null;
  streamPill?.classList.add("ls-stream-pill");
  const pills = h("div", { class: "ls-status-pills" }, connPill, streamPill);
  const message = h("div", { class: "ls-alert", role: "status", hidden: true });
  /** @type {Record<string, HTMLElement>} */
  const figures = {};
  const grid = h("dl", { class: "ls-stats" });
  for (const [key, text] of [["rows", "Received"], ["rate", "Rate"], ["lag", "Lag"], ["offset", "Last offset"]]) {
    figures[key] = h("dd", { text: "—" });
    grid.append(h("div", { class: "ls-stat", dataset: { stat: key } }, h("dt", { text }), figures[key]));
  }
  el.replaceChildren(pills);
  if (!compact) el.append(message);
  if (stream && !compact) el.append(grid);
  if (compact) pills.classList.add("ls-compact");

  /** @type {StreamState | null} */
  let state = null;
  /** @type {string} the last subscription error (unknown stream, ...) */
  let subError = "";
  let connMessage = "";
  let connStatus = "connecting";
  const showMessage = () => {
    const streamError = state?.status === "error" ? `Stream error: ${state.error ?? "the producer failed"}` : subError;
    const connProblem = connectionAlert && connStatus !== "open" && connStatus !== "connecting" ? connMessage : "";
    const text = connProblem || streamError;
    message.hidden = !text;
    message.textContent = text;
    message.dataset.level = connStatus === "reconnecting" && !streamError ? "warning" : "error";
  };
  const stopStatus = conn.onStatus((status, msg) => {
    connStatus = status;
    connMessage = msg;
    setPill(connPill, status, STATUS_TEXT[status] ?? status);
    connPill.title = msg;
    showMessage();
  });
  /** @type {Subscription | null} */
  let subscription = null;
  /** @type {any} */
  let timer = null;
  /** Rows and last offset: called on every batch, so they move with the table. */
  const showOffset = () => {
    const s = /** @type {Subscription} */ (subscription).stats();
    figures.rows.textContent = formatNumber(s.rows);
    figures.offset.textContent = s.lastOffset === null ? "—" : formatNumber(s.lastOffset);
  };
  if (stream) {
    subscription = conn.subscribe(stream, {
      last: 0,
      tail: 0, // it shows counts (stats), no rows
      onData() {
        if (!compact) showOffset();
      },
      onState(s) {
        state = s;
        subError = "";
        if (streamPill) {
          setPill(streamPill, s.status ?? (s.paused ? "paused" : "running"), s.status ?? "");
          streamPill.title = s.status === "error" ? `Stream error: ${s.error ?? ""}` : `Stream ${s.status}`;
        }
        showMessage();
      },
      onError(err) {
        const connectionLevel = isConnectionError(err);
        if (streamPill) {
          setPill(streamPill, "error", err.code === "unknown_stream" ? "not found" : connectionLevel ? "no access" : "error");
          streamPill.title = err.message;
        }
        // Connection problems are the connection pill's (and its message's) business.
        subError = connectionLevel || (quietErrors && isSharedError(err)) ? "" : err.message;
        showMessage();
      },
    });
    if (!compact) {
      figures.rows.title = "rows received by this page";
      figures.offset.title = "offset of the newest row received";
      // Rate and lag change with time, not only with data: refreshed twice a second.
      const tick = () => {
        const s = /** @type {Subscription} */ (subscription).stats();
        figures.rate.textContent = formatRate(s.rate);
        figures.lag.textContent = formatDuration(s.lag);
        showOffset();
      };
      timer = setInterval(tick, 500);
      tick();
    }
  }
  return {
    subscription,
    dispose() {
      stopStatus();
      clearInterval(timer);
      subscription?.unsubscribe();
      el.replaceChildren();
      el.classList.remove("ls-status");
    },
  };
}
