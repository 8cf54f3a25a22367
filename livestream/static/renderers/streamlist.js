// @ts-check
// renderers/streamlist.js — renderStreamList: the home page's card per stream, polled.
import { isObject } from "../codec.js";
import { formatNumber, formatRate, h, pill } from "../dom.js";
import { LivestreamError } from "../errors.js";
import { apiUrl, defaultHttpBase, diagnose, fetchJSON } from "../http.js";
/** @typedef {import("../dom.js").Handle} Handle */

/**
 * The list of a server's streams (the standalone home page): a card per stream with its
 * status, rows, rate, subscribers and columns, polled every `interval` ms from `/api/streams`.
 * A rejected token stops the polling and says so.
 * @param {HTMLElement} el
 * @param {{httpBase?: string, token?: string, interval?: number, href?: (name: string) => string, onStatus?: (status: "open"|"error"|"reconnecting", message: string) => void}} [options]
 * @returns {Handle & {refresh: () => Promise<void>}}
 */
export function renderStreamList(el, { httpBase = defaultHttpBase(), token = "", interval = 2000, href, onStatus } = {}) {
  el.classList.add("ls-stream-list");
  // No token in a link: the page it opens reads it from this tab's storage (pageToken).
  const link = href ?? ((/** @type {string} */ name) => `${httpBase}/streams/${encodeURIComponent(name)}`);
  const alert = h("div", { class: "ls-alert", role: "alert", hidden: true, dataset: { level: "error" } });
  const grid = h("div", { class: "ls-stream-grid" });
  const empty = h("div", { class: "ls-empty-state", hidden: true },
    h("div", { class: "ls-empty-title", text: "No streams yet" }),
    h("p", {}, "Streams appear here as soon as a producer creates one, for example ", h("code", { text: "ls.stream(\"prices\")" }), " in Python or ", h("code", { text: "livestream publish sensors readings.jsonl" }), "."));
  el.replaceChildren(alert, grid, empty);
  /** @type {any} */
  let timer = null;
  let stopped = false;
  let loaded = false;

  /** @param {Record<string, any>} s */
  const renderCard = (s) => {
    const state = isObject(s.state) ? s.state : {};
    const status = String(state.status ?? (state.paused ? "paused" : "idle"));
    const schema = isObject(s.schema) ? s.schema : {};
    const cols = Object.entries(schema);
    const chips = h("div", { class: "ls-chips" },
      ...cols.slice(0, 8).map(([n, d]) => h("span", { class: "ls-chip", title: String(d) }, n, h("span", { class: "ls-chip-type", text: String(d) }))),
      cols.length > 8 ? h("span", { class: "ls-chip", text: `+${cols.length - 8}` }) : null);
    const stat = (/** @type {string} */ label, /** @type {string} */ value) => h("div", { class: "ls-stat" }, h("dt", { text: label }), h("dd", { text: value }));
    return h("a", { class: "ls-card ls-stream-card", href: link(String(s.name)), dataset: { stream: String(s.name), status } },
      h("div", { class: "ls-stream-card-head" }, h("span", { class: "ls-stream-name", text: String(s.name) }), pill(status)),
      h("dl", { class: "ls-stats" },
        stat("Rows", formatNumber(typeof s.offset === "number" ? s.offset : s.rows)),
        stat("Rate", typeof s.rate === "number" ? formatRate(s.rate) : "—"),
        stat("Viewers", typeof s.subscribers === "number" ? formatNumber(s.subscribers) : "—")),
      state.status === "error" && state.error ? h("div", { class: "ls-alert", dataset: { level: "error" }, text: `Stream error: ${state.error}` }) : null,
      chips);
  };

  const refresh = async () => {
    try {
      const body = await fetchJSON(apiUrl(httpBase, "/api/streams", token));
      if (stopped) return;
      const streams = Array.isArray(body.streams) ? body.streams : [];
      streams.sort((/** @type {any} */ a, /** @type {any} */ b) => String(a.name).localeCompare(String(b.name)));
      grid.replaceChildren(...streams.map(renderCard));
      empty.hidden = streams.length > 0;
      alert.hidden = true;
      loaded = true;
      el.dataset.count = String(streams.length);
      onStatus?.("open", `${streams.length} stream${streams.length === 1 ? "" : "s"}`);
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
        return;
      }
    }
    if (!stopped) timer = setTimeout(refresh, interval);
  };
  void refresh();
  return {
    refresh,
    dispose() {
      stopped = true;
      clearTimeout(timer);
      el.replaceChildren();
      el.classList.remove("ls-stream-list");
    },
  };
}
