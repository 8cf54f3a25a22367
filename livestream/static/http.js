// @ts-check
// http.js — where the server is (endpoints, the page's token), GETs of its API with a
// timeout, and `diagnose`: why a server cannot be reached, in words for the user.
import { isObject } from "./codec.js";
import { LivestreamError } from "./errors.js";

/**
 * @typedef {object} Endpoints
 * @property {string} httpBase  e.g. "http://127.0.0.1:8765" (no trailing slash; may hold a prefix)
 * @property {string} wsUrl     e.g. "ws://127.0.0.1:8765/ws" (without the token)
 * @property {string} token
 * @property {string} key       registry key: one connection per page per key
 */

/** Where a page keeps its token: this tab's sessionStorage, under this key. */
const PAGE_TOKEN_KEY = "livestream.token";

/**
 * This page's livestream token, for pages served by the livestream server only (inside
 * Jupyter the page's token belongs to Jupyter). A page may arrive with `?token=` (the URL
 * `livestream serve` prints): the token is then moved to this tab's sessionStorage and
 * removed from the address bar at once (`history.replaceState`, the other query parameters
 * kept), so that it never stays in a URL that the page, its history or a screenshot could
 * leak. Without `?token=`, the token this tab stored earlier: links between the pages carry
 * none. Call it first thing on a page.
 * @returns {string}
 */
export function pageToken() {
  if (typeof location === "undefined") return "";
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get("token");
  /** @type {Storage | null} */
  let storage = null;
  try {
    storage = sessionStorage;
  } catch {
    // Storage turned off: the token lasts as long as this page.
  }
  if (fromUrl === null) return storage?.getItem(PAGE_TOKEN_KEY) ?? "";
  storage?.setItem(PAGE_TOKEN_KEY, fromUrl);
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url.href);
  return fromUrl;
}

/**
 * The HTTP base of the server this module was loaded from (`.../static/livestream.js` →
 * `...`), else the page's origin.
 * @returns {string}
 */
export function defaultHttpBase() {
  const here = import.meta.url;
  if (/^https?:/.test(here) && here.includes("/static/")) {
    return here.slice(0, here.lastIndexOf("/static/"));
  }
  return typeof location === "undefined" ? "http://127.0.0.1" : location.origin;
}

/**
 * Work out the HTTP base and WebSocket URL of a server from whatever the caller has: an http(s)
 * base (with an optional prefix), or a ws(s) URL ending in `/ws`. A `token` query parameter in
 * `url` is used when `token` is not given.
 * @param {{url?: string, token?: string}} [options]
 * @returns {Endpoints}
 */
export function resolveEndpoints({ url, token } = {}) {
  const u = new URL(url ?? defaultHttpBase(), typeof location === "undefined" ? undefined : location.href);
  const tok = token ?? u.searchParams.get("token") ?? "";
  const secure = u.protocol === "https:" || u.protocol === "wss:";
  if (!["http:", "https:", "ws:", "wss:"].includes(u.protocol)) {
    throw new LivestreamError(`a livestream server URL must start with http(s):// or ws(s)://, got ${JSON.stringify(url)}`, "bad_url");
  }
  let path = u.pathname.replace(/\/+$/, "");
  if (path.endsWith("/ws")) path = path.slice(0, -3);
  const httpBase = `${secure ? "https:" : "http:"}//${u.host}${path}`;
  const wsUrl = `${secure ? "wss:" : "ws:"}//${u.host}${path}/ws`;
  return { httpBase, wsUrl, token: tok, key: `${wsUrl}#${tok}` };
}

/**
 * `{httpBase}{path}` with `token` (and other params) in the query string.
 * @param {string} httpBase @param {string} path @param {string} token
 * @param {Record<string, string | number | undefined | null>} [params]
 * @param {string} [tokenParam]  the query parameter that carries the token: `token`, or
 *   `livestream_token` through a Jupyter proxy (where `token` is Jupyter's own credential)
 */
export function apiUrl(httpBase, path, token, params = {}, tokenParam = "token") {
  const q = new URLSearchParams();
  if (token) q.set(tokenParam, token);
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const qs = q.toString();
  return `${httpBase}${path}${qs ? (path.includes("?") ? "&" : "?") + qs : ""}`;
}

/**
 * GET a JSON document. Failures become a LivestreamError: code `unreachable` when nothing
 * answered (or CORS hid the answer), else the server's `{"error": {code, message}}` or
 * `http_<status>`, with `status` set. `credentials`: "omit" (default) for the livestream
 * server itself, "same-origin" through a Jupyter proxy (which needs Jupyter's login cookie).
 * @param {string} url @param {{timeout?: number, credentials?: RequestCredentials}} [options]
 * @returns {Promise<any>}
 */
export async function fetchJSON(url, { timeout = 8000, credentials = "omit" } = {}) {
  const abort = typeof AbortController === "function" ? new AbortController() : null;
  const timer = setTimeout(() => abort?.abort(), timeout);
  let response;
  try {
    response = await fetch(url, { signal: abort?.signal, cache: "no-store", credentials });
  } catch (err) {
    const why = abort?.signal.aborted ? `no answer within ${timeout / 1000} s` : /** @type {Error} */ (err).message;
    throw new LivestreamError(`cannot reach ${redactToken(url)} (${why})`, "unreachable");
  } finally {
    clearTimeout(timer);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const e = isObject(body) && isObject(body.error) ? body.error : {};
    const message = typeof e.message === "string" ? e.message : `${response.status} ${response.statusText}`.trim();
    throw new LivestreamError(message, typeof e.code === "string" ? e.code : `http_${response.status}`, { status: response.status });
  }
  if (body === null) throw new LivestreamError(`${redactToken(url)} did not answer JSON`, "bad_response", { status: response.status });
  return body;
}

/** @param {string} url */
function redactToken(url) {
  return url.replace(/([?&]token=)[^&]*/, "$1…");
}

/**
 * @typedef {{kind: "ok"|"unreachable"|"rejected"|"unknown", message: string, code?: string, status?: number}} Diagnosis
 *   `code` and `status`: the refusing answer's error code and HTTP status, when there was one
 */

/**
 * Tell "server unreachable" from "token rejected" with plain HTTP (a refused WebSocket
 * upgrade shows the browser nothing but a close): GET `/healthz` and `/api/streams?token=`.
 * @param {string} httpBase @param {string} token
 * @param {{timeout?: number, credentials?: RequestCredentials, tokenParam?: string}} [options]
 *   `credentials` and `tokenParam` as for {@link fetchJSON} and {@link apiUrl}
 * @returns {Promise<Diagnosis>}
 */
export async function diagnose(httpBase, token, { timeout = 4000, credentials = "omit", tokenParam = "token" } = {}) {
  const [health, streams] = await Promise.allSettled([
    fetchJSON(`${httpBase}/healthz`, { timeout, credentials }),
    fetchJSON(apiUrl(httpBase, "/api/streams", token, {}, tokenParam), { timeout, credentials }),
  ]);
  if (streams.status === "fulfilled") return { kind: "ok", message: "" };
  const err = /** @type {LivestreamError} */ (streams.reason);
  if (err.status === 401 || err.status === 403) {
    // The server's message says what to check (it names where the token comes from).
    const why = err.message.replace(/[.\s]+$/, "");
    return { kind: "rejected", message: `Access denied (HTTP ${err.status}): ${why}.`, code: err.code, status: err.status };
  }
  if (health.status === "rejected" && /** @type {LivestreamError} */ (health.reason).code === "unreachable") {
    return {
      kind: "unreachable",
      message: `Cannot reach the livestream server at ${httpBase}. Is it running? Start it with \`livestream serve\` or ls.serve().`,
    };
  }
  return { kind: "unknown", message: `The server at ${httpBase} answered: ${err.message}`, code: err.code, status: err.status };
}
