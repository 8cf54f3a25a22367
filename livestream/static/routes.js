// @ts-check
// routes.js — the routes a page may reach a server by (direct, proxy, relay) and the
// facts `auto` decides on: the page's Jupyter base URL, the proxied address, loopback hosts.
/** @typedef {import("./http.js").Endpoints} Endpoints */

/** @typedef {"direct"|"proxy"|"relay"} RouteName */
/** @typedef {"auto" | RouteName} RouteChoice */

/**
 * @typedef {object} Route  One way to reach a server.
 * @property {RouteName} name
 * @property {string} httpBase  where HTTP requests go (direct, proxy); the server's own base
 *   URL for the relay, which fetches through the kernel
 * @property {string} wsUrl  where the WebSocket goes (the relay: the server's own URL, for messages)
 * @property {RequestCredentials} credentials  "same-origin" through Jupyter's proxy (it needs
 *   Jupyter's login cookie), "omit" to the server itself
 * @property {string} tokenParam  the query parameter carrying the token: `livestream_token`
 *   through Jupyter's proxy, where `token` is Jupyter's (and JupyterHub's) own credential
 */

/**
 * @typedef {object} Carrier  What the relay needs of an anywidget model: its custom messages.
 * @property {(content: any, callbacks?: any, buffers?: ArrayBuffer[]) => void} send
 * @property {(event: string, cb: (...args: any[]) => void) => void} on
 * @property {(event: string, cb?: (...args: any[]) => void) => void} off
 */

/** The routes, in the order `auto` tries them. */
export const ROUTES = Object.freeze(["direct", "proxy", "relay"]);
/** How long `auto` gives a route's HTTP probe before trying the next one: the direct port
 * answers at once or not at all; the proxy goes through a Jupyter server that may be busy. */
export const PROBE_MS = { direct: 2000, proxy: 5000, relay: 0 };
/** How long a forced route's probe may take. */
export const FORCED_PROBE_MS = 8000;
/** How long a GET through the relay may wait for the kernel (it answers only when idle). */
export const RELAY_GET_MS = 300_000;

/**
 * The base URL of the Jupyter server that served this page ("/" or "/user/NAME/"), or null on
 * a page that is not Jupyter's. JupyterLab, Notebook 7 and Voila put it in the JSON of
 * `<script id="jupyter-config-data">`; the classic notebook in `<body data-base-url>`.
 * @returns {string | null}
 */
export function jupyterBaseUrl() {
  if (typeof document === "undefined") return null;
  /** @param {unknown} base */
  const clean = (base) => (typeof base === "string" && base.startsWith("/") ? (base.endsWith("/") ? base : `${base}/`) : null);
  const el = document.getElementById("jupyter-config-data");
  if (el?.textContent) {
    try {
      const base = clean(JSON.parse(el.textContent).baseUrl);
      if (base) return base;
    } catch { /* not JSON: look in the next place */ }
  }
  return clean(document.body?.dataset.baseUrl);
}

/** @param {string} hostname */
function isLoopbackHost(hostname) {
  const h = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * Whether the livestream server admits this page's origin without being told: the loopback
 * origins over http are its defaults. Any other page (JupyterHub, a remote or https Jupyter)
 * asks the kernel to admit it, over the widget's comm, which Jupyter has authenticated.
 * @returns {boolean}
 */
export function pageOriginIsDefault() {
  if (typeof location === "undefined") return true;
  return location.protocol === "http:" && isLoopbackHost(location.hostname);
}

/**
 * The same server through jupyter-server-proxy: `{page origin}{baseUrl}proxy/{port}/...`.
 * Only for a plain-http server on loopback: the proxy reaches `localhost:{port}` on the
 * Jupyter server's machine, where the kernel (and its server) runs.
 * @param {Endpoints} endpoints @param {string} baseUrl
 * @returns {{httpBase: string, wsUrl: string} | null}
 */
export function proxyEndpoints(endpoints, baseUrl) {
  if (typeof location === "undefined") return null;
  const u = new URL(endpoints.httpBase);
  if (u.protocol !== "http:" || !isLoopbackHost(u.hostname)) return null;
  const path = `${baseUrl}proxy/${u.port || "80"}${u.pathname.replace(/\/+$/, "")}`;
  const ws = location.protocol === "https:" ? "wss:" : "ws:";
  return { httpBase: `${location.origin}${path}`, wsUrl: `${ws}//${location.host}${path}/ws` };
}
