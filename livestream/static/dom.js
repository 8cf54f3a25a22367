// @ts-check
// dom.js — h(), the text-only element builder (never markup from data), and the number,
// time and status formatting the renderers share.
import { isNumericDtype, isTimeColumn } from "./codec.js";
import { LivestreamError } from "./errors.js";

/**
 * Create an element. `attrs`: `class`, `text`, `dataset`, event handlers (`onclick`), other
 * attributes; children: nodes or strings (as text, never HTML).
 * @param {string} tag @param {Record<string, any>} [attrs] @param {Array<Node | string | null | undefined | false>} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== "string") /** @type {any} */ (el)[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

/** @type {Map<string, Intl.NumberFormat>} */
const numberFormats = new Map();
/** @param {number} digits @param {boolean} [signed] @param {boolean} [fixed] */
function numberFormat(digits, signed = false, fixed = false) {
  const key = `${digits}:${signed}:${fixed}`;
  let f = numberFormats.get(key);
  if (!f) {
    /** @type {Intl.NumberFormatOptions} */
    const options = { maximumFractionDigits: digits, minimumFractionDigits: fixed ? digits : 0 };
    try {
      // "negative": no sign on a value that rounds to zero ("0", not "-0").
      f = new Intl.NumberFormat(undefined, { ...options, signDisplay: signed ? "exceptZero" : /** @type {any} */ ("negative") });
    } catch {
      f = new Intl.NumberFormat(undefined, { ...options, signDisplay: signed ? "exceptZero" : "auto" });
    }
    numberFormats.set(key, f);
  }
  return f;
}

/**
 * A number for people: grouping, and about five significant digits for fractions.
 * @param {unknown} v @param {{digits?: number, signed?: boolean, fixed?: boolean}} [options]
 *   `digits`: at most this many fraction digits (default: by magnitude); `fixed`: exactly
 *   `digits` (21.0, not 21); `signed`: a sign on positive values too
 */
export function formatNumber(v, { digits, signed = false, fixed = false } = {}) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "bigint") return v.toLocaleString();
  if (typeof v !== "number") return String(v);
  if (Number.isNaN(v)) return "—";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "−∞";
  const a = Math.abs(v);
  if (digits === undefined) {
    fixed = false;
    if (Number.isInteger(v)) digits = 0;
    else if (a >= 1000) digits = 2;
    else if (a >= 1) digits = 4;
    else if (a === 0) digits = 0;
    else digits = Math.min(10, 4 - Math.floor(Math.log10(a)));
  }
  if (a >= 1e15 || (a > 0 && a < 1e-9)) return v.toExponential(3);
  return numberFormat(digits, signed, fixed).format(v);
}

/**
 * A time (ms since the epoch) as local `HH:MM:SS.mmm`, with the date when it is not today.
 * @param {unknown} ms
 */
export function formatTime(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "—";
  const d = new Date(ms);
  const pad = (/** @type {number} */ n, w = 2) => String(n).padStart(w, "0");
  const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return clock;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock}`;
}

/** @param {number | null} ms */
export function formatDuration(ms) {
  if (ms === null || !Number.isFinite(ms)) return "—";
  const a = Math.abs(ms);
  if (a < 1000) return `${Math.round(ms)} ms`;
  if (a < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (a < 3600000) return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

/** A bar length for a label: 250 ms, 1 s, 1.5 min, 4 h. @param {number} ms */
export function formatInterval(ms) {
  const trim = (/** @type {number} */ v) => String(Number(v.toFixed(1)));
  if (ms < 1000) return `${trim(ms)} ms`;
  if (ms < 60000) return `${trim(ms / 1000)} s`;
  if (ms < 3600000) return `${trim(ms / 60000)} min`;
  return `${trim(ms / 3600000)} h`;
}

/** @param {number} rate */
export function formatRate(rate) {
  if (!Number.isFinite(rate) || rate <= 0) return "0/s";
  return `${formatNumber(rate, { digits: rate < 10 ? 1 : 0 })}/s`;
}

/** @param {unknown} v @param {string} name @param {string | undefined} dtype */
export function formatCell(v, name, dtype) {
  if (isTimeColumn(name, dtype ?? "")) return formatTime(v);
  if (dtype === "bool") return v ? "true" : "false";
  if (typeof v === "object" && v !== null) return JSON.stringify(v);
  return formatNumber(v);
}

const ICONS = {
  pause: "M6 4h4v16H6zM14 4h4v16h-4z",
  play: "M7 4.5v15a.5.5 0 0 0 .77.42l11.5-7.5a.5.5 0 0 0 0-.84L7.77 4.08A.5.5 0 0 0 7 4.5z",
};

/** @param {keyof typeof ICONS} name */
export function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "ls-icon");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

/** @param {string} status */
export function pill(status, text = status) {
  return h("span", { class: "ls-pill", dataset: { status } }, h("span", { class: "ls-pill-dot", "aria-hidden": "true" }), text);
}

/** @param {HTMLElement} el @param {string} status @param {string} [text] */
export function setPill(el, status, text = status) {
  el.dataset.status = status;
  const label = el.lastChild;
  if (label && label.nodeType === 3) label.textContent = text;
  else el.append(text);
}

export const STATUS_TEXT = {
  connecting: "Connecting", open: "Live", reconnecting: "Reconnecting", closed: "Closed", error: "Error",
};

/**
 * @typedef {object} Handle
 * @property {() => void} dispose  unsubscribe, stop timers, empty the element
 */

/** @param {LivestreamError} err  whether the error is about the connection, not the stream */
export function isConnectionError(err) {
  return ["token_rejected", "closed", "unreachable", "timeout"].includes(err.code) || err.status === 401 || err.status === 403;
}

/**
 * Whether a part of a larger view (`quietErrors`) should leave `err` to its container: a
 * refused token, a lost server or a missing stream concern the whole dashboard, said once.
 * @param {LivestreamError} err
 */
export function isSharedError(err) {
  return isConnectionError(err) || err.code === "unknown_stream" || err.status === 404;
}

/** "server_room" → "Server room": a label for a name that has none. @param {string} name */
export function prettify(name) {
  const words = name.replace(/[_-]+/g, " ").trim();
  return words ? words[0].toUpperCase() + words.slice(1) : name;
}

/** @param {Record<string, string> | null} schema */
export function firstValueColumn(schema) {
  if (!schema) return undefined;
  return Object.entries(schema).find(([n, d]) => isNumericDtype(d) && !isTimeColumn(n, d))?.[0];
}
