// @ts-check
// renderers/value.js — renderValue: a big live number with its change, a sparkline and alarms.
import { TIME_COLUMNS } from "../codec.js";
import { Connection, Subscription } from "../connection.js";
import { firstValueColumn, formatNumber, formatTime, h, isSharedError } from "../dom.js";
import { paced } from "../pace.js";
/** @typedef {import("../dom.js").Handle} Handle */

/**
 * How many fraction digits show `x` as non-zero: `digits`, or more when `x` would round to
 * zero at `digits` (a change of 0.004 shown with one digit would read "0"). Undefined
 * `digits` stays undefined (formatNumber then picks digits by magnitude).
 * @param {number} x @param {number | undefined} digits
 */
function visibleDigits(x, digits) {
  if (digits === undefined || x === 0 || !Number.isFinite(x)) return digits;
  let d = digits;
  while (d < digits + 8 && Math.abs(x) * 10 ** d < 0.5) d++;
  return d;
}

/** @param {unknown} v @returns {number | null} */
function finiteOrNull(v) {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/**
 * @typedef {number | string | null | undefined} Threshold  a number, or the name of a
 *   declared parameter of the stream (the threshold then follows its broadcast value)
 */

/**
 * A big live number: the last value of a column, its change from the previous value with
 * direction, and a sparkline of recent values.
 *
 * With `alarmAbove` / `alarmBelow`, the value is in alarm while the newest value is above /
 * below the threshold: `el.dataset.alarm` is "high" or "low", the number turns red and an
 * "Alarm" chip (a status live region saying which threshold) shows. A threshold given as a
 * string names a declared parameter of the stream and follows its value in the broadcast
 * state, so moving it from any viewer's controls (or `stream.set()`) moves the alarm.
 * @param {HTMLElement} el @param {Connection} conn @param {string} stream
 * @param {{column?: string, label?: string, digits?: number, history?: number, alarmAbove?: Threshold, alarmBelow?: Threshold, quietErrors?: boolean}} [options]
 *   `column`: default the first numeric non-time column; `digits`: the number's fraction
 *   digits, fixed (the change gets more when it would otherwise read 0); `history`: sparkline
 *   points (120); `quietErrors`: leave connection and unknown-stream errors to the container
 * @returns {Handle & {subscription: Subscription}}
 */
export function renderValue(el, conn, stream, { column, label, digits, history = 120, alarmAbove, alarmBelow, quietErrors = false } = {}) {
  el.classList.add("ls-value");
  const labelEl = h("div", { class: "ls-value-label", text: label ?? column ?? stream });
  const alarmEl = h("span", { class: "ls-value-alarm", role: "status", hidden: true });
  const headEl = h("div", { class: "ls-value-head" }, labelEl, alarmEl);
  const numberEl = h("div", { class: "ls-value-number", text: "—" });
  const changeEl = h("div", { class: "ls-value-change", dataset: { direction: "flat" } });
  const timeEl = h("div", { class: "ls-value-time" });
  const svgNS = "http://www.w3.org/2000/svg";
  const spark = document.createElementNS(svgNS, "svg");
  spark.setAttribute("class", "ls-spark");
  spark.setAttribute("viewBox", "0 0 100 28");
  spark.setAttribute("preserveAspectRatio", "none");
  spark.setAttribute("aria-hidden", "true");
  const area = document.createElementNS(svgNS, "path");
  area.setAttribute("class", "ls-spark-area");
  const line = document.createElementNS(svgNS, "path");
  line.setAttribute("class", "ls-spark-line");
  const limitLine = document.createElementNS(svgNS, "path");
  limitLine.setAttribute("class", "ls-spark-limit");
  spark.append(area, limitLine, line);
  el.replaceChildren(headEl, numberEl, changeEl, spark, timeEl);

  /** @type {string | undefined} */
  let col = column;
  /** @type {number[]} */
  let values = [];
  /** @type {number | null} */
  let lastTime = null;
  /** @type {Record<string, unknown>} the stream's parameters, for named thresholds */
  let params = {};

  /** @param {Threshold} t @returns {number | null} */
  const resolve = (t) => (typeof t === "string" ? finiteOrNull(params[t]) : finiteOrNull(t));
  /** @param {string} word @param {Threshold} t @param {number} limit */
  const describeLimit = (word, t, limit) => `${word} ${formatNumber(limit, { digits })}${typeof t === "string" ? ` (${t})` : ""}`;

  /** @param {number} v */
  const showAlarm = (v) => {
    const above = resolve(alarmAbove);
    const below = resolve(alarmBelow);
    const level = !Number.isFinite(v) ? null : above !== null && v > above ? "high" : below !== null && v < below ? "low" : null;
    const limits = [above !== null ? describeLimit("above", alarmAbove, above) : "", below !== null ? describeLimit("below", alarmBelow, below) : ""].filter(Boolean);
    el.title = limits.length ? `Alarm ${limits.join(" or ")}` : "";
    if (level) {
      el.dataset.alarm = level;
      alarmEl.hidden = false;
      alarmEl.textContent = "Alarm";
      const limit = /** @type {number} */ (level === "high" ? above : below);
      alarmEl.setAttribute("aria-label", `Alarm: ${formatNumber(v, { digits, fixed: true })} is ${describeLimit(level === "high" ? "above" : "below", level === "high" ? alarmAbove : alarmBelow, limit)}`);
    } else {
      delete el.dataset.alarm;
      alarmEl.hidden = true;
      alarmEl.textContent = "";
      alarmEl.removeAttribute("aria-label");
    }
    return { above, below };
  };

  const render = () => {
    const n = values.length;
    const v = n ? values[n - 1] : NaN;
    numberEl.textContent = formatNumber(v, { digits, fixed: true });
    numberEl.classList.toggle("ls-value-empty", !Number.isFinite(v));
    if (n >= 2 && Number.isFinite(values[n - 2])) {
      const prev = values[n - 2];
      const diff = v - prev;
      const direction = diff > 0 ? "up" : diff < 0 ? "down" : "flat";
      changeEl.dataset.direction = direction;
      const arrow = direction === "up" ? "▲" : direction === "down" ? "▼" : "■";
      const ratio = prev !== 0 ? (diff / Math.abs(prev)) * 100 : NaN;
      const pct = Number.isFinite(ratio) ? ` (${formatNumber(ratio, { digits: visibleDigits(ratio, 2), signed: true })}%)` : "";
      changeEl.textContent = `${arrow} ${formatNumber(diff, { digits: visibleDigits(diff, digits), signed: true })}${pct}`;
    } else {
      changeEl.dataset.direction = "flat";
      changeEl.textContent = "";
    }
    timeEl.textContent = lastTime !== null ? `at ${formatTime(lastTime)}` : "";
    const { above, below } = showAlarm(v);
    const finite = values.filter(Number.isFinite);
    limitLine.removeAttribute("d");
    if (finite.length >= 2) {
      const lo = Math.min(...finite);
      const hi = Math.max(...finite);
      const span = hi - lo || 1;
      const y = (/** @type {number} */ value) => (26 - ((value - lo) / span) * 24).toFixed(2);
      const step = 100 / Math.max(1, n - 1);
      let d = "";
      values.forEach((value, i) => {
        if (!Number.isFinite(value)) return;
        d += `${d ? "L" : "M"}${(i * step).toFixed(2)},${y(value)}`;
      });
      line.setAttribute("d", d);
      area.setAttribute("d", `${d}L100,28L0,28Z`);
      // A threshold within the sparkline's range is drawn as a dashed rule.
      const limits = [above, below].filter((t) => t !== null && t >= lo && t <= hi);
      if (limits.length) limitLine.setAttribute("d", limits.map((t) => `M0,${y(/** @type {number} */ (t))}H100`).join(""));
    } else {
      line.removeAttribute("d");
      area.removeAttribute("d");
    }
  };

  // Redrawn at most ten times a second, in an animation frame, however fast rows come.
  const redraw = paced(render);
  const subscription = conn.subscribe(stream, {
    last: history,
    tail: history, // a fast stream's deliveries are merged for the sparkline's rows only
    onSubscribed(info) {
      col ??= firstValueColumn(info.schema);
      if (!label) labelEl.textContent = col ?? stream;
      if (!col) numberEl.textContent = "no numeric column";
      params = info.state?.params ?? params;
      render();
    },
    onState(state) {
      params = state.params ?? {};
      render();
    },
    onData(batch) {
      if (!col) return;
      const c = batch.columns[col];
      if (!c) return;
      const start = Math.max(0, batch.rows - history);
      for (let i = start; i < batch.rows; i++) values.push(Number(c[i]));
      if (values.length > history) values = values.slice(values.length - history);
      const t = TIME_COLUMNS.map((n) => batch.columns[n]).find((x) => x instanceof Float64Array);
      lastTime = t ? t[t.length - 1] : null;
      redraw.request();
    },
    onReset() {
      values = [];
      redraw.now();
    },
    onError(err) {
      if (quietErrors && isSharedError(err)) return;
      timeEl.textContent = err.message;
      timeEl.classList.add("ls-error-text");
    },
  });
  return {
    subscription,
    dispose() {
      subscription.unsubscribe();
      redraw.cancel();
      el.replaceChildren();
      el.classList.remove("ls-value");
      delete el.dataset.alarm;
      el.title = "";
    },
  };
}
