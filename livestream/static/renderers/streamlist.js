// @ts-check
// renderers/streamlist.js — renderStreamList: the home page's card per stream (polled), each
// with a sparkline of its first value column while in view, and the server's totals.
import { isObject } from "../codec.js";
import { Connection, Subscription } from "../connection.js";
import { firstValueColumn, formatCell, formatNumber, formatRate, h, pill, setPill } from "../dom.js";
import { LivestreamError } from "../errors.js";
import { apiUrl, defaultHttpBase, diagnose, fetchJSON } from "../http.js";
/** @typedef {import("../codec.js").Batch} Batch */
/** @typedef {import("../dom.js").Handle} Handle */

/** Rows a sparkline shows (the newest): also the `last` a card subscribes with. */
export const SPARK_POINTS = 120;
/** The fastest a sparkline is redrawn (ms): a glance, not a plot. */
export const SPARK_INTERVAL_MS = 250;
/** Names in the reader's order (one collator: `localeCompare` makes one per call). */
const byName = new Intl.Collator();
/** A card subscribes once it is this close to the viewport, and unsubscribes past it. */
const VIEW_MARGIN = "200px 0px";

/**
 * @typedef {object} Totals  the server's totals, summed from the list
 * @property {number} streams
 * @property {number} viewers  subscribers of every stream, this page's sparklines excepted
 * @property {number} rate  rows per second, over every stream
 * @property {number | null} nodes  servers behind the list (a backplane's), when it says
 */

/**
 * How many nodes a list names: a top-level `nodes` (a count or a list of names), else the
 * nodes named by its entries (each a count or a list), else null (a single server says
 * nothing). A multi-node backplane fills these in.
 * @param {Record<string, any>} body @param {Array<Record<string, any>>} streams
 * @returns {number | null}
 */
export function countNodes(body, streams) {
  const size = (/** @type {unknown} */ v) => (Array.isArray(v) ? v.length : typeof v === "number" && Number.isFinite(v) && v >= 0 ? Math.floor(v) : null);
  if (body.nodes !== undefined) return size(body.nodes);
  /** @type {Set<string>} */
  const named = new Set();
  let counted = null;
  for (const s of streams) {
    if (Array.isArray(s.nodes)) for (const n of s.nodes) named.add(String(n));
    else if (size(s.nodes) !== null) counted = Math.max(counted ?? 0, /** @type {number} */ (size(s.nodes)));
  }
  if (named.size) return Math.max(named.size, counted ?? 0);
  return counted;
}

/**
 * A sparkline: the newest {@link SPARK_POINTS} values of one column, drawn on a small
 * canvas (no BokehJS), and the newest value as text.
 */
class Sparkline {
  /** @param {HTMLElement} el  the card's trend area @param {HTMLCanvasElement} canvas */
  constructor(el, canvas) {
    this.el = el;
    this.canvas = canvas;
    this.values = new Float64Array(SPARK_POINTS);
    this.count = 0; // values held, at most SPARK_POINTS, the newest at (start + count - 1)
    this.start = 0;
    /** @type {unknown} */
    this.latest = undefined;
    this.dirty = false;
  }

  clear() {
    this.count = 0;
    this.start = 0;
    this.latest = undefined;
    this.dirty = true;
  }

  /** @param {ArrayLike<unknown>} column */
  push(column) {
    const n = column.length;
    if (!n) return;
    this.latest = column[n - 1];
    for (let i = Math.max(0, n - SPARK_POINTS); i < n; i++) {
      const v = Number(column[i]);
      const at = (this.start + this.count) % SPARK_POINTS;
      this.values[at] = v;
      if (this.count < SPARK_POINTS) this.count++;
      else this.start = (this.start + 1) % SPARK_POINTS;
    }
    this.dirty = true;
  }

  /**
   * Draw the line, and a faint area under it, in `color` (the canvas's CSS colour, read
   * once per round of drawing: reading it restyles the page, which may hold thousands).
   * @param {string} color
   */
  draw(color) {
    this.dirty = false;
    const canvas = this.canvas;
    const ratio = globalThis.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    ctx.clearRect(0, 0, width, height);
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < this.count; i++) {
      const v = this.values[(this.start + i) % SPARK_POINTS];
      if (Number.isFinite(v)) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    this.el.dataset.points = String(this.count);
    if (!(hi >= lo)) return;
    const pad = 3 * ratio;
    const span = hi - lo || 1;
    // The newest value at the right edge; a few values spread over a quarter of the width
    // at least, more of them further in (a full line spans the whole width).
    const slots = Math.max(this.count, SPARK_POINTS / 4);
    const step = (width - 2 * pad) / (slots - 1);
    const x = (/** @type {number} */ i) => pad + (slots - this.count + i) * step;
    const y = (/** @type {number} */ v) => (hi === lo ? height / 2 : height - pad - ((v - lo) / span) * (height - 2 * pad));
    ctx.lineWidth = 1.5 * ratio;
    ctx.lineJoin = "round";
    ctx.strokeStyle = color;
    ctx.beginPath();
    let first = -1;
    let last = -1;
    let pen = false;
    for (let i = 0; i < this.count; i++) {
      const v = this.values[(this.start + i) % SPARK_POINTS];
      if (!Number.isFinite(v)) {
        pen = false; // a gap, as a plot shows one
        continue;
      }
      if (first < 0) first = i;
      last = i;
      if (pen) ctx.lineTo(x(i), y(v));
      else ctx.moveTo(x(i), y(v));
      pen = true;
    }
    ctx.stroke();
    if (first >= 0 && last > first) {
      ctx.lineTo(x(last), height);
      ctx.lineTo(x(first), height);
      ctx.closePath();
      ctx.globalAlpha = 0.12;
      ctx.fillStyle = color;
      ctx.fill();
      ctx.globalAlpha = 1;
    }
  }
}

/**
 * @typedef {object} Card
 * @property {HTMLAnchorElement} el
 * @property {string} name
 * @property {string} schemaKey  the schema it was built for (JSON)
 * @property {string | undefined} column  its first value column
 * @property {string | undefined} dtype
 * @property {Sparkline} spark
 * @property {Subscription | null} sub  while the card is in view
 * @property {boolean} counted  its subscription is confirmed, so the server counts it
 * @property {number} confirmedAt  `performance.now()` of the confirmation
 * @property {Record<string, any>} entry  the newest list entry
 * @property {CardParts} parts  its elements (looked up once: a list may hold thousands)
 */

/**
 * @typedef {object} CardParts
 * @property {HTMLElement} pill @property {HTMLElement} stats @property {HTMLElement} alert
 * @property {HTMLElement} chips @property {HTMLElement} column @property {HTMLElement} value
 * @property {Record<string, HTMLElement>} stat  the figures' <dd>, by key
 * @property {HTMLElement} nodes  the Nodes figure
 */

/**
 * The list of a server's streams (the standalone home page): a card per stream with its
 * status, rows, rate, viewers, columns and (while the card is in view) a sparkline of the
 * newest values of its first value column with the newest value, polled every `interval` ms
 * (longer for long lists) from `/api/streams`; the server's totals go to `totals`. Cards
 * link to their stream's page. A rejected token stops the polling and says so.
 *
 * Only cards in view subscribe (an IntersectionObserver), each to one column and the newest
 * {@link SPARK_POINTS} rows, so a server of 10,000 streams costs a page a few subscriptions.
 * Every name and value is set as text.
 * @param {HTMLElement} el
 * @param {{httpBase?: string, token?: string, interval?: number, href?: (name: string) => string, onStatus?: (status: "open"|"error"|"reconnecting", message: string) => void, conn?: Connection | (() => Connection) | null, totals?: HTMLElement | null}} [options]
 *   `conn`: the connection sparklines subscribe through, or a function that opens it,
 *   called once a card is in view (so a refused token opens no socket; none: no
 *   sparklines); `totals`: an element to show the server's totals in
 * @returns {Handle & {refresh: () => Promise<void>, totals: () => Totals | null}}
 */
export function renderStreamList(el, { httpBase = defaultHttpBase(), token = "", interval = 2000, href, onStatus, conn: connOption = null, totals: totalsEl = null } = {}) {
  /** @type {Connection | null} */
  let conn = null;
  const connection = () => (conn ??= typeof connOption === "function" ? connOption() : connOption);
  el.classList.add("ls-stream-list");
  // No token in a link: the page it opens reads it from this tab's storage (pageToken).
  const link = href ?? ((/** @type {string} */ name) => `${httpBase}/streams/${encodeURIComponent(name)}`);
  const alert = h("div", { class: "ls-alert", role: "alert", hidden: true, dataset: { level: "error" } });
  const grid = h("div", { class: "ls-stream-grid" });
  const empty = h("div", { class: "ls-empty-state", hidden: true },
    h("div", { class: "ls-empty-title", text: "No streams yet" }),
    h("p", {}, "Streams appear here as soon as a producer creates one, for example ", h("code", { text: "ls.stream(\"prices\")" }), " in Python or ", h("code", { text: "livestream publish sensors readings.jsonl" }), "."));
  el.replaceChildren(alert, grid, empty);

  /** @type {Map<string, HTMLElement>} */
  const totalFields = new Map();
  if (totalsEl) {
    totalsEl.classList.add("ls-totals");
    totalsEl.replaceChildren(...[["streams", "Streams"], ["viewers", "Viewers"], ["rate", "Rows/s"], ["nodes", "Nodes"]].map(([key, label]) => {
      const value = h("dd", { text: "—" });
      totalFields.set(key, value);
      return h("div", { class: "ls-total", dataset: { total: key }, hidden: key === "nodes" }, h("dt", { text: label }), value);
    }));
  }

  /** @type {any} */
  let timer = null;
  let stopped = false;
  let loaded = false;
  /** @type {Totals | null} */
  let lastTotals = null;
  /** @type {Map<string, Card>} */
  const cards = new Map();
  /** @type {WeakMap<Element, Card>} */
  const byElement = new WeakMap();

  // ------------------------------------------------------------------ sparklines in view
  /** @type {Set<Card>} */
  const dirty = new Set();
  let drawTimer = /** @type {any} */ (null);
  let lastDraw = -Infinity;
  const drawDirty = () => {
    drawTimer = null;
    lastDraw = performance.now();
    /** @type {string | null} */
    let color = null;
    for (const card of dirty) {
      color ??= getComputedStyle(card.spark.canvas).color;
      card.spark.draw(color);
      const v = card.spark.latest;
      const out = card.parts.value;
      out.textContent = v === undefined ? "—" : formatCell(v, card.column ?? "", card.dtype);
      if (typeof v === "number") out.dataset.value = String(v);
    }
    dirty.clear();
  };
  const scheduleDraw = (/** @type {Card} */ card) => {
    dirty.add(card);
    if (drawTimer !== null || stopped) return;
    const wait = Math.max(0, lastDraw + SPARK_INTERVAL_MS - performance.now());
    drawTimer = setTimeout(() => requestAnimationFrame(drawDirty), wait);
  };
  /** @param {Card} card */
  const watch = (card) => {
    if (!connOption || card.sub || !card.column || stopped) return;
    const conn = connection();
    if (!conn) return;
    card.spark.clear(); // it starts again from the newest rows
    card.counted = false;
    const column = card.column;
    card.sub = conn.subscribe(card.name, {
      last: SPARK_POINTS,
      columns: [column],
      onSubscribed: () => {
        card.counted = true;
        card.confirmedAt = performance.now();
      },
      onData: (/** @type {Batch} */ batch) => {
        const values = batch.columns[column];
        if (values === undefined) return;
        card.spark.push(/** @type {ArrayLike<unknown>} */ (values));
        scheduleDraw(card);
      },
      onReset: () => {
        card.spark.clear();
        scheduleDraw(card);
      },
      onError: () => {
        card.counted = false;
      },
    });
    card.el.dataset.watching = "true";
  };
  /** @param {Card} card */
  const unwatch = (card) => {
    card.sub?.unsubscribe();
    card.sub = null;
    card.counted = false;
    delete card.el.dataset.watching;
  };
  const inView = typeof IntersectionObserver === "function"
    ? new IntersectionObserver((entries) => {
      for (const e of entries) {
        const card = byElement.get(e.target);
        if (!card) continue;
        if (e.isIntersecting) watch(card);
        else unwatch(card);
      }
    }, { rootMargin: VIEW_MARGIN })
    : null;

  // ------------------------------------------------------------------ cards
  /** @param {Record<string, any>} s @returns {Card} */
  const buildCard = (s) => {
    const name = String(s.name);
    /** @type {Record<string, HTMLElement>} */
    const stat = {};
    /** @type {Record<string, HTMLElement>} */
    const figure = {};
    for (const [key, label] of [["rows", "Rows"], ["rate", "Rate"], ["viewers", "Viewers"], ["nodes", "Nodes"]]) {
      stat[key] = h("dd", { text: "—" });
      figure[key] = h("div", { class: "ls-stat", dataset: { stat: key }, hidden: key === "nodes" }, h("dt", { text: label }), stat[key]);
    }
    const parts = {
      pill: pill("idle"),
      stats: h("dl", { class: "ls-stats" }, figure.rows, figure.rate, figure.viewers, figure.nodes),
      alert: h("div", { class: "ls-alert", hidden: true, dataset: { level: "error" } }),
      chips: h("div", { class: "ls-chips" }),
      column: h("span", { class: "ls-trend-column" }),
      value: h("span", { class: "ls-trend-value", text: "—" }),
      stat,
      nodes: figure.nodes,
    };
    const canvas = /** @type {HTMLCanvasElement} */ (h("canvas", { class: "ls-trend-canvas", "aria-hidden": "true" }));
    const trend = h("div", { class: "ls-trend", hidden: true }, h("div", { class: "ls-trend-head" }, parts.column, parts.value), canvas);
    const el = /** @type {HTMLAnchorElement} */ (h("a", { class: "ls-card ls-stream-card", href: link(name), dataset: { stream: name } },
      h("div", { class: "ls-stream-card-head" }, h("span", { class: "ls-stream-name", text: name, title: name }), parts.pill),
      trend, parts.stats, parts.alert, parts.chips));
    const spark = new Sparkline(trend, canvas);
    /** @type {Card} */
    const card = { el, name, schemaKey: "", column: undefined, dtype: undefined, spark, sub: null, counted: false, confirmedAt: 0, entry: s, parts };
    byElement.set(el, card);
    return card;
  };
  /** @param {Card} card @param {string} key @param {string} value */
  const setStat = (card, key, value) => {
    const dd = card.parts.stat[key];
    if (dd.textContent !== value) dd.textContent = value;
  };
  /**
   * @param {Card} card @param {Record<string, any>} s
   * @param {(card: Card) => number} own  this page's count among the stream's subscribers
   */
  const updateCard = (card, s, own) => {
    card.entry = s;
    const el = card.el;
    const state = isObject(s.state) ? s.state : {};
    const status = String(state.status ?? (state.paused ? "paused" : "idle"));
    if (el.dataset.status !== status) {
      el.dataset.status = status;
      setPill(card.parts.pill, status);
    }
    setStat(card, "rows", formatNumber(typeof s.offset === "number" ? s.offset : s.rows));
    setStat(card, "rate", typeof s.rate === "number" ? formatRate(s.rate) : "—");
    setStat(card, "viewers", typeof s.subscribers === "number" ? formatNumber(Math.max(0, s.subscribers - own(card))) : "—");
    const nodes = countNodes(s, []);
    if (card.parts.nodes.hidden !== (nodes === null)) {
      card.parts.nodes.hidden = nodes === null;
      card.parts.stats.classList.toggle("ls-stats-4", nodes !== null);
    }
    if (nodes !== null) setStat(card, "nodes", formatNumber(nodes));
    const error = state.status === "error" && state.error ? `Stream error: ${state.error}` : "";
    if (card.parts.alert.textContent !== error) {
      card.parts.alert.textContent = error;
      card.parts.alert.hidden = !error;
    }

    const schema = isObject(s.schema) ? /** @type {Record<string, string>} */ (s.schema) : {};
    const schemaKey = JSON.stringify(schema);
    if (schemaKey === card.schemaKey) return;
    card.schemaKey = schemaKey;
    const cols = Object.entries(schema);
    card.parts.chips.replaceChildren(
      ...cols.slice(0, 8).map(([n, d]) => h("span", { class: "ls-chip", title: String(d) }, String(n), h("span", { class: "ls-chip-type", text: String(d) }))),
      ...(cols.length > 8 ? [h("span", { class: "ls-chip", text: `+${cols.length - 8}` })] : []));
    const column = firstValueColumn(schema);
    if (column !== card.column) {
      const watching = card.sub !== null;
      unwatch(card);
      card.column = column;
      card.dtype = column === undefined ? undefined : schema[column];
      card.spark.clear();
      const sparkEl = card.spark.el;
      sparkEl.hidden = column === undefined;
      card.parts.column.textContent = column ?? "";
      card.parts.value.textContent = "—";
      sparkEl.dataset.column = column ?? "";
      if (watching || !inView) watch(card);
    }
  };

  /** @param {Totals} t */
  const showTotals = (t) => {
    lastTotals = t;
    if (!totalsEl) return;
    const set = (/** @type {string} */ key, /** @type {string} */ text) => {
      const dd = totalFields.get(key);
      if (dd && dd.textContent !== text) dd.textContent = text;
    };
    set("streams", formatNumber(t.streams));
    set("viewers", formatNumber(t.viewers));
    set("rate", formatNumber(t.rate, { digits: t.rate < 10 ? 1 : 0 }));
    const nodesEl = /** @type {HTMLElement} */ (totalsEl.querySelector('[data-total="nodes"]'));
    nodesEl.hidden = t.nodes === null;
    if (t.nodes !== null) set("nodes", formatNumber(t.nodes));
  };

  /** @type {Promise<void> | null} */
  let inFlight = null;
  /** Ask for the list now (one request at a time; the next poll is timed from its answer). */
  const refresh = () => {
    clearTimeout(timer);
    inFlight ??= poll().finally(() => {
      inFlight = null;
    });
    return inFlight;
  };
  const poll = async () => {
    const asked = performance.now();
    let wait = interval;
    try {
      const body = await fetchJSON(apiUrl(httpBase, "/api/streams", token));
      if (stopped) return;
      const streams = (Array.isArray(body.streams) ? body.streams : []).filter(isObject);
      streams.sort((/** @type {any} */ a, /** @type {any} */ b) => byName.compare(String(a.name), String(b.name)));
      // The server counts this page's sparkline subscriptions among each stream's
      // subscribers: not viewers. One confirmed before the list was asked for is counted.
      const own = (/** @type {Card} */ card) => (card.sub && card.counted && card.confirmedAt < asked ? 1 : 0);
      const seen = new Set();
      const order = [];
      let viewers = 0;
      let rate = 0;
      for (const s of streams) {
        const name = String(s.name);
        if (seen.has(name)) continue;
        seen.add(name);
        let card = cards.get(name);
        const fresh = !card;
        if (!card) {
          card = buildCard(s);
          cards.set(name, card);
        }
        updateCard(card, s, own);
        if (fresh) inView?.observe(card.el);
        order.push(card.el);
        if (typeof s.subscribers === "number" && Number.isFinite(s.subscribers)) viewers += Math.max(0, s.subscribers - own(card));
        if (typeof s.rate === "number" && Number.isFinite(s.rate)) rate += s.rate;
      }
      for (const [name, card] of cards) {
        if (seen.has(name)) continue;
        unwatch(card);
        inView?.unobserve(card.el);
        dirty.delete(card);
        cards.delete(name);
      }
      // Move nodes only when the order changed: a moved element loses its focus and scroll.
      const now = grid.children;
      if (now.length !== order.length || order.some((c, i) => now[i] !== c)) grid.replaceChildren(...order);
      empty.hidden = order.length > 0;
      alert.hidden = true;
      loaded = true;
      el.dataset.count = String(order.length);
      showTotals({ streams: order.length, viewers, rate, nodes: countNodes(body, streams) });
      onStatus?.("open", `${order.length} stream${order.length === 1 ? "" : "s"}`);
      // A long list is heavy to describe: ask for it less often (10,000 streams: every 20 s).
      wait = Math.min(30_000, Math.max(interval, order.length * 2));
    } catch (err) {
      if (stopped) return;
      const e = /** @type {LivestreamError} */ (err);
      const rejected = e.status === 401 || e.status === 403;
      let message = e.message;
      if (rejected || e.code === "unreachable") message = (await diagnose(httpBase, token)).message || message;
      alert.hidden = false;
      alert.textContent = message;
      if (!loaded) grid.replaceChildren();
      onStatus?.(rejected ? "error" : "reconnecting", message);
      if (rejected) {
        stopped = true; // a rejected token will not start working by itself
        for (const card of cards.values()) unwatch(card);
        return;
      }
    }
    if (!stopped) timer = setTimeout(refresh, wait);
  };
  void refresh();
  return {
    refresh,
    totals: () => lastTotals,
    dispose() {
      stopped = true;
      clearTimeout(timer);
      clearTimeout(drawTimer);
      inView?.disconnect();
      for (const card of cards.values()) unwatch(card);
      cards.clear();
      dirty.clear();
      el.replaceChildren();
      el.classList.remove("ls-stream-list");
      totalsEl?.replaceChildren();
    },
  };
}
