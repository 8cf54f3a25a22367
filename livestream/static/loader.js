// @ts-check
// loader.js — the anywidget module (`_esm`) of every livestream widget model: a few KB that
// import the widget code (widget.bundle.js) and its stylesheet once per page, so neither the
// page nor a saved notebook carries them once per widget. livestream/widgets.py fills in
// __LIVESTREAM_BUNDLE__ (a hash of the bundle and the stylesheet: a new build is a new URL).
//
// Where from, in the order of the widget's route (docs/jupyter-routes.md): the livestream
// server's /static/ (direct; the server sends CORS headers for it), the same through
// jupyter-server-proxy under the page's Jupyter base URL (proxy), else through this widget's
// comm, the kernel fetching the files from its server (relay: VS Code, Colab). Self-contained
// on purpose: it must work before any livestream code is on the page.

/**
 * @typedef {object} LoaderModel  the subset of the anywidget model API the loader uses
 * @property {(name: string) => any} get
 * @property {(name: string, value: any) => void} set
 * @property {() => void} save_changes
 * @property {(event: string, cb: (...args: any[]) => void) => void} on
 * @property {(event: string, cb?: (...args: any[]) => void) => void} off
 * @property {(content: any, callbacks?: any, buffers?: ArrayBuffer[]) => void} [send]
 */
/** @typedef {{default: {render: (ctx: {model: any, el: HTMLElement}) => Promise<() => void>}}} WidgetModule */

const VERSION = "__LIVESTREAM_BUNDLE__";
const BUNDLE = `/static/widget.bundle.js?v=${VERSION}`;
const STYLESHEET = `/static/livestream.css?v=${VERSION}`;
/** The page's one load, shared by every model's copy of this module (anywidget imports each
 * model's `_esm` from a blob URL of its own). */
const LOADS = Symbol.for("livestream.widget-loads.v1");
/** How long a direct or proxied import may take before the next way is tried. */
const HTTP_MS = 5000;
/** How long the kernel may take to answer a relayed GET (it answers only when idle). */
const RELAY_MS = 300_000;

/**
 * @template T
 * @param {Promise<T>} promise @param {number} ms @param {string} what
 * @returns {Promise<T>}
 */
function within(promise, ms, what) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms);
  });
  return /** @type {Promise<T>} */ (Promise.race([promise, late])).finally(() => clearTimeout(timer));
}

/**
 * Whether the page has this version's stylesheet; another version's (a widget of an earlier
 * build, before the cell was re-run) is removed.
 */
function hasStylesheet() {
  const el = /** @type {HTMLElement | null} */ (document.getElementById("livestream-css"));
  if (el?.dataset.version === VERSION) return true;
  el?.remove();
  return false;
}

/** @param {string} href */
function addStylesheet(href) {
  if (hasStylesheet()) return Promise.resolve();
  const link = Object.assign(document.createElement("link"), { id: "livestream-css", rel: "stylesheet", href });
  link.dataset.version = VERSION;
  const loaded = new Promise((resolve, reject) => {
    link.onload = resolve;
    link.onerror = () => {
      link.remove(); // the next way may add its own
      reject(new Error(`could not load ${href}`));
    };
  });
  document.head.append(link);
  return loaded;
}

/**
 * The bundle and stylesheet over HTTP from `base` (the server's, or its proxied, address).
 * @param {string} base @returns {Promise<WidgetModule>}
 */
async function overHttp(base) {
  const module = await within(import(`${base}${BUNDLE}`), HTTP_MS, `loading ${base}${BUNDLE}`);
  await within(addStylesheet(`${base}${STYLESHEET}`), HTTP_MS, `loading ${base}${STYLESHEET}`);
  return module;
}

/**
 * A GET of the livestream server through the widget's comm (livestream/relay.py).
 * @param {LoaderModel} model @param {string} path @returns {Promise<ArrayBuffer>}
 */
function relayGet(model, path) {
  const send = model.send;
  if (typeof send !== "function") return Promise.reject(new Error("this host has no widget messages (no relay)"));
  const id = `load-${Math.random().toString(36).slice(2)}`;
  return within(new Promise((resolve, reject) => {
    const onMessage = (/** @type {any} */ content, /** @type {any[] | undefined} */ buffers) => {
      if (content?.ls !== "response" || content.id !== id) return;
      model.off("msg:custom", onMessage);
      const body = buffers?.[0];
      if (content.status !== 200 || !body) reject(new Error(`the kernel answered GET ${path} with HTTP ${content.status}`));
      else resolve(body instanceof ArrayBuffer ? body : body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
    };
    model.on("msg:custom", onMessage);
    send.call(model, { ls: "get", id, path });
  }), RELAY_MS, `the kernel's answer to GET ${path} (is it busy?)`);
}

/**
 * The bundle and stylesheet through the widget's comm.
 * @param {LoaderModel} model @returns {Promise<WidgetModule>}
 */
async function overRelay(model) {
  const [code, css] = await Promise.all([relayGet(model, BUNDLE), relayGet(model, STYLESHEET)]);
  if (!hasStylesheet()) {
    const style = Object.assign(document.createElement("style"), { id: "livestream-css" });
    style.dataset.version = VERSION;
    style.textContent = new TextDecoder().decode(css);
    document.head.append(style);
  }
  const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
  try {
    return await import(url);
  } finally {
    URL.revokeObjectURL(url);
  }
}

/**
 * The server's address through jupyter-server-proxy, when this page is Jupyter's and the
 * server is on its loopback interface (as routes.js's proxyEndpoints).
 * @param {string} base @returns {string | null}
 */
function proxied(base) {
  const el = document.getElementById("jupyter-config-data");
  let root = document.body?.dataset.baseUrl ?? null;
  try {
    if (el?.textContent) root = JSON.parse(el.textContent).baseUrl ?? root;
  } catch { /* not JSON: keep the body's */ }
  if (typeof root !== "string" || !root.startsWith("/")) return null;
  const u = new URL(base);
  if (u.protocol !== "http:" || !["127.0.0.1", "localhost", "[::1]"].includes(u.hostname)) return null;
  const prefix = root.endsWith("/") ? root : `${root}/`;
  return `${location.origin}${prefix}proxy/${u.port || "80"}${u.pathname.replace(/\/+$/, "")}`;
}

/**
 * Load the widget code once per page, the first way that works from the widget's route on.
 * @param {LoaderModel} model @returns {Promise<WidgetModule>}
 */
async function load(model) {
  const base = String(model.get("url") || "").replace(/\/+$/, "");
  const route = String(model.get("requested_route") || "auto");
  const order = { direct: ["direct", "proxy", "relay"], proxy: ["proxy", "relay"], relay: ["relay"] }[route] ?? ["direct", "proxy", "relay"];
  /** @type {string[]} */
  const failures = [];
  for (const way of order) {
    try {
      // An https page may not load http:// (mixed content): not even a try, as routes.js.
      const mixed = location.protocol === "https:" && base.startsWith("http:");
      if (way === "direct" && base && !mixed) return await overHttp(base);
      const viaProxy = way === "proxy" && base ? proxied(base) : null;
      if (viaProxy) return await overHttp(viaProxy);
      if (way === "relay") return await overRelay(model);
    } catch (err) {
      failures.push(`${way}: ${/** @type {Error} */ (err).message}`);
    }
  }
  throw new Error(`the widget code could not be loaded: ${failures.join("; ") || "no route to try"}`);
}

/** @param {LoaderModel} model @returns {Promise<WidgetModule>} */
function widgetCode(model) {
  /** @type {Map<string, Promise<WidgetModule>>} */
  const loads = /** @type {any} */ (globalThis)[LOADS] ??= new Map();
  let pending = loads.get(VERSION);
  if (!pending) {
    pending = load(model);
    loads.set(VERSION, pending);
    // A failed load is not kept: the next widget (or a re-run) tries again.
    pending.catch(() => loads.delete(VERSION));
  }
  return pending;
}

/** Retry delays while the code cannot be loaded (the server may start later), in ms. */
const RETRY_MS = [1000, 2000, 4000, 8000];

export default {
  /** @param {{model: LoaderModel, el: HTMLElement}} ctx */
  async render({ model, el }) {
    let disposed = false;
    /** @type {(() => void) | undefined} */
    let cleanup;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let retry;
    /** @param {Error} err @param {number} attempt */
    const fail = (err, attempt) => {
      // Say so in the widget and in Python (`status`, `message`), never a silent blank, as
      // the widget itself would; and try again: the server may be started later.
      const base = String(model.get("url") || "");
      const message = `Cannot reach the livestream server at ${base}. Is it running? Start it with \`livestream serve\` or ls.serve(). (${err.message})`;
      const alert = Object.assign(document.createElement("div"), { className: "ls-alert ls-widget-alert", role: "alert", textContent: message });
      el.replaceChildren(alert);
      el.dataset.livestreamStatus = "reconnecting";
      if (model.get("status") !== "reconnecting" || model.get("message") !== message) {
        model.set("status", "reconnecting");
        model.set("message", message);
        model.save_changes();
      }
      retry = setTimeout(() => attempt_(attempt + 1), RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]);
    };
    /** @param {number} attempt */
    const attempt_ = async (attempt) => {
      let module;
      try {
        module = await widgetCode(model);
      } catch (err) {
        if (!disposed) fail(/** @type {Error} */ (err), attempt);
        return;
      }
      if (disposed) return;
      el.replaceChildren();
      delete el.dataset.livestreamStatus;
      cleanup = await module.default.render({ model, el });
      if (disposed) cleanup();
    };
    await attempt_(0);
    return () => {
      disposed = true;
      clearTimeout(retry);
      cleanup?.();
    };
  },
};
