// @ts-check
// connection.js — connect(): the page's one shared Connection per server (or list of servers
// to fail over between) and token: route discovery, reconnect with backoff, failover, resume
// by since/epoch, requests and publishes. Each stream it carries is a Channel, with the
// Subscriptions handed to renderers (channel.js; Subscription is re-exported from here).
import { loadScript, scriptLoads } from "./bokeh.js";
import { Channel, Subscription } from "./channel.js";
import { PROTOCOL_VERSION, decodeMessage, encodeMessage, isObject, utf8Decoder } from "./codec.js";
import { LivestreamError } from "./errors.js";
import { apiUrl, diagnose, fetchJSON, resolveEndpoints } from "./http.js";
import { RelaySocket, relayGet } from "./relay.js";
import { FORCED_PROBE_MS, PROBE_MS, ROUTES, jupyterBaseUrl, pageOriginIsDefault, proxyEndpoints } from "./routes.js";
/** @typedef {import("./codec.js").Batch} Batch */
/** @typedef {import("./codec.js").ResetMessage} ResetMessage */
/** @typedef {import("./codec.js").StreamState} StreamState */
/** @typedef {import("./codec.js").SubscribedInfo} SubscribedInfo */
/** @typedef {import("./http.js").Diagnosis} Diagnosis */
/** @typedef {import("./http.js").Endpoints} Endpoints */
/** @typedef {import("./routes.js").Carrier} Carrier */
/** @typedef {import("./routes.js").Route} Route */
/** @typedef {import("./routes.js").RouteChoice} RouteChoice */
/** @typedef {import("./routes.js").RouteName} RouteName */

// The renderers and livestream.js take Subscription from here, beside Connection.
export { Subscription };

/** @typedef {import("./channel.js").SubscribeOptions} SubscribeOptions */
/** @typedef {import("./channel.js").SubscriptionStats} SubscriptionStats */

/** @typedef {"connecting"|"open"|"reconnecting"|"closed"|"error"} ConnectionStatus */
/** @typedef {(status: ConnectionStatus, message: string) => void} StatusCallback */

/**
 * How long to wait before each attempt to reach a server again: the n-th attempt in a row
 * waits `min(cap, first * 2**n)` ms times a random factor in [0.5, 1.5), never more than
 * `cap`; the count starts again once a connection proved healthy: it stayed open
 * `resetAfter` ms, or the server answered a request on it (a resubscribe, a publish...).
 * @typedef {object} Backoff
 * @property {number} [first]  ms before the first attempt (default 250)
 * @property {number} [cap]  the longest wait in ms (default 5000)
 * @property {number} [resetAfter]  ms a connection must stay open to count as healthy (default 10000)
 */

/**
 * Something that happened to the connection (`conn.events`, `conn.onEvent`); the same kinds
 * as the Python client's `ConnectionEvent`. URLs never carry a token.
 * @typedef {object} ConnectionEvent
 * @property {"connected"|"disconnected"|"connect_failed"|"resubscribed"|"reset"|"gave_up"} kind
 * @property {string} url  the server's ws URL (the one given, whatever the route)
 * @property {string} detail  `connected`: "first", "reconnected" or "failed over from URL";
 *   `disconnected`, `connect_failed`, `gave_up`: why; `reset`: the reason
 * @property {string} [stream]  `resubscribed`, `reset`: the stream
 * @property {number | null} [offset]  `resubscribed`: the `since` asked for; `reset`: the new offset
 * @property {string | null} [epoch]
 * @property {number} at  `Date.now()`
 */
/** @typedef {(event: ConnectionEvent) => void} EventCallback */

const REGISTRY_KEY = Symbol.for("livestream.connections.v1");
// On globalThis, not in module scope: anywidget may evaluate this module more than once per
// page (one copy per widget class), and every copy must share the same sockets.
/** @type {Map<string, Connection>} */
const registry = /** @type {any} */ (globalThis)[REGISTRY_KEY] ??= new Map();

const BACKOFF_START_MS = 250;
const BACKOFF_MAX_MS = 5000;
const BACKOFF_RESET_MS = 10000;
const MAX_EVENTS = 1000;
const REQUEST_TIMEOUT_MS = 10000;
const HEARTBEAT_MS = 20000;

/**
 * Connect to a livestream server, sharing the page's one socket per server, token and route.
 * Each call takes a reference; call `conn.release()` when done (the socket closes a moment
 * after the last reference goes).
 *
 * Routes (`route`, default "auto": the first of these that works): "direct" to `url`;
 * "proxy", the same server through jupyter-server-proxy under the Jupyter base URL of the page
 * (JupyterHub, remote or https Jupyter); "relay", frames carried by a widget's comm through
 * the kernel (VS Code, Colab), which needs a `carrier`.
 *
 * Several servers (nodes of one service, docs/failover.md): `url: [urlA, urlB]`. The page
 * connects to the first; when the connection is lost or an attempt fails it tries the next,
 * with a jittered, bounded backoff, resubscribes every stream from its offset and resends
 * publishes not yet acknowledged. `conn.url` is the server in use; `conn.onEvent` and
 * `conn.events` tell what happened.
 * @param {{url?: string | string[], token?: string, route?: RouteChoice, carrier?: Carrier | null, backoff?: Backoff, giveUpAfter?: number | null}} [options]
 *   `url`: http(s) base or ws(s) URL of the server, or a list of them (default: the server
 *   this module came from); `token`: the servers' token (default: a `token=` in each `url`);
 *   `carrier`: the widget model whose comm may carry the relay and ask the kernel to admit
 *   the page's origin (give it back with `conn.removeCarrier(model)`); `backoff`: see
 *   {@link Backoff}; `giveUpAfter`: ms without any server after which the connection stops
 *   trying (status "error", every subscriber's `onError`; default: never)
 * @returns {Connection}
 */
export function connect(options = {}) {
  const given = Array.isArray(options.url) ? options.url : [options.url];
  if (given.length === 0) throw new LivestreamError("connect() needs at least one server URL in `url`", "bad_url");
  const servers = given.map((url) => resolveEndpoints({ url, token: options.token }));
  const keys = servers.map((e) => e.key);
  const dup = keys.find((k, i) => keys.indexOf(k) !== i);
  if (dup !== undefined) throw new LivestreamError(`the server ${dup.split("#")[0]} is given twice in \`url\`; give each server once`, "bad_url");
  const route = options.route || "auto";
  if (route !== "auto" && !ROUTES.includes(route)) {
    throw new LivestreamError(`route must be one of auto, ${ROUTES.join(", ")}; got ${JSON.stringify(route)}`, "bad_route");
  }
  const joined = keys.join("|");
  const key = route === "auto" ? joined : `${joined}#${route}`;
  let conn = registry.get(key);
  if (!conn || conn.status === "closed") {
    conn = new Connection({ ...servers[0], key }, { route, carrier: options.carrier, servers, backoff: options.backoff, giveUpAfter: options.giveUpAfter });
    registry.set(key, conn);
  } else if (options.carrier) {
    conn.addCarrier(options.carrier);
  }
  conn.retain();
  return conn;
}

/** A shared WebSocket connection to one server. Create it with {@link connect}. */
export class Connection {
  /**
   * @param {Endpoints} endpoints  the first server (its `key` names the connection)
   * @param {{route?: RouteChoice, carrier?: Carrier | null, servers?: Endpoints[], backoff?: Backoff, giveUpAfter?: number | null}} [options]
   *   as for {@link connect}; `servers`: every server, in order (default: `endpoints` alone)
   */
  constructor(endpoints, { route = "auto", carrier = null, servers, backoff = {}, giveUpAfter = null } = {}) {
    /** @type {Endpoints} the server in use or being tried, as given (the direct route) */
    this.endpoints = endpoints;
    /** @readonly @type {Endpoints[]} every server this connection may use, in order */
    this.servers = servers && servers.length ? servers : [endpoints];
    /** index in `servers` of the server in use */
    this.serverIndex = 0;
    /** the token of the server in use */
    this.token = this.servers[0].token;
    /** @readonly */ this.key = endpoints.key;
    /** @readonly @type {Required<Backoff>} */
    this.backoff = { first: backoff.first ?? BACKOFF_START_MS, cap: backoff.cap ?? BACKOFF_MAX_MS, resetAfter: backoff.resetAfter ?? BACKOFF_RESET_MS };
    if (!(this.backoff.first > 0 && this.backoff.first <= this.backoff.cap) || !(this.backoff.resetAfter >= 0)) {
      throw new LivestreamError(`backoff needs 0 < first <= cap and resetAfter >= 0 (ms); got ${JSON.stringify(backoff)}`, "bad_argument");
    }
    /** @readonly ms without a server after which the connection gives up (null: never) */
    this.giveUpAfter = giveUpAfter ?? null;
    /** @readonly this connection's publisher id, sent with each publish with a `seq` */
    this.publisher = randomId();
    this._seq = 0;
    /** @type {ConnectionEvent[]} what happened, oldest first (the last 1,000) */
    this.events = [];
    /** @type {Set<EventCallback>} */
    this._eventListeners = new Set();
    /** @type {Map<string, string>} why each server failed since the last open socket */
    this._serverFailures = new Map();
    this._attempt = 0;
    this._openedAt = 0;
    /** @type {number | null} Date.now() when the last socket closed (null: one is open or none was) */
    this._downSince = null;
    /** @type {string | null} the server whose connection was lost, until another opens */
    this._lostUrl = null;
    /** @type {Set<string>} servers that refused this page or token since the last open socket */
    this._refusals = new Set();
    this._gaveUp = false;
    /** whether the server answered a request on the open socket (it is healthy then) */
    this._answered = false;
    /** @readonly the route asked for */ this.requestedRoute = route;
    /** @type {Route | null} the route in use, once found */
    this.route = null;
    /** @type {Carrier[]} widget models whose comms may carry the relay */
    this._carriers = [];
    /** @type {Promise<{ok: boolean, message: string}> | null} the kernel's answer to "admit this page" */
    this._admission = null;
    /** @type {Array<(route: Route) => void>} */
    this._routeWaiters = [];
    /** @type {ConnectionStatus} */
    this.status = "connecting";
    /** Human-readable explanation of `status`. */
    this.message = "";
    /** @type {Record<string, any> | null} the server's `welcome` message */
    this.welcome = null;
    /** @type {WebSocket | null} */
    this._ws = null;
    this._socketGeneration = 0;
    this._failures = 0;
    this._everOpened = false;
    this._refs = 0;
    this._closing = false;
    /** @type {any} */ this._retryTimer = null;
    /** @type {any} */ this._heartbeat = null;
    /** @type {any} */ this._releaseTimer = null;
    this._lastMessageAt = 0;
    this._nextId = 1;
    /** @type {Set<StatusCallback>} */
    this._statusListeners = new Set();
    /** @type {Map<string, Channel>} */
    this._channels = new Map();
    /** @type {Map<number, {resolve: (v: any) => void, reject: (e: LivestreamError) => void, timer: any, expect: string, resend: ({type: string} & Record<string, unknown>) | null}>} */
    this._requests = new Map();
    /** @type {Array<{type: string} & Record<string, unknown>>} messages waiting for the socket */
    this._outbox = [];
    this._onOnline = () => {
      if (this._retryTimer !== null) this._retryNow();
    };
    if (typeof addEventListener === "function") addEventListener("online", this._onOnline);
    if (carrier) this.addCarrier(carrier);
    // A page the server does not admit by default asks the kernel now, while the direct
    // route is probed, so that the proxy route is ready as soon as possible.
    if (!pageOriginIsDefault() && route !== "relay" && this._carrier()) void this._admit();
    void this._open();
  }

  /** The server in use (or being tried): its ws URL as given, without the token. */
  get url() {
    return this.endpoints.wsUrl;
  }

  /** HTTP base of the server on the route in use (before one is found: the given one). */
  get httpBase() {
    return this.route?.httpBase ?? this.endpoints.httpBase;
  }

  /** WebSocket URL (without the token) on the route in use. */
  get wsUrl() {
    return this.route?.wsUrl ?? this.endpoints.wsUrl;
  }

  /**
   * Let a widget model carry this connection's relay and admission requests (done by
   * {@link connect} with `carrier`). Give it back with {@link removeCarrier} before the
   * model goes away.
   * @param {Carrier} carrier
   */
  addCarrier(carrier) {
    if (typeof carrier?.send !== "function" || typeof carrier.on !== "function" || this._carriers.includes(carrier)) return;
    this._carriers.push(carrier);
    // A relay that lost its carrier waits for a new one: go now.
    if (this.route?.name === "relay" && this._retryTimer !== null) this._retryNow();
  }

  /** @param {Carrier} carrier */
  removeCarrier(carrier) {
    this._carriers = this._carriers.filter((c) => c !== carrier);
    const ws = /** @type {any} */ (this._ws);
    // The relay goes with its widget's comm; another widget of the page carries it on.
    if (ws?.relay && ws.carrier === carrier) ws.close(1001, "the widget carrying the relay was removed");
  }

  /** @returns {Carrier | null} */
  _carrier() {
    return this._carriers[0] ?? null;
  }

  /**
   * The route in use, once found (the first connection attempt finds it).
   * @returns {Promise<Route>}
   */
  routeReady() {
    if (this.route) return Promise.resolve(this.route);
    return new Promise((resolve) => this._routeWaiters.push(resolve));
  }

  /**
   * GET a JSON document of the server (`path` such as "/api/streams") over the route in use,
   * with the token. Errors as for {@link fetchJSON}.
   * @param {string} path @param {Record<string, string | number | undefined | null>} [params]
   * @returns {Promise<any>}
   */
  async getJSON(path, params = {}) {
    const route = await this.routeReady();
    if (route.name !== "relay") {
      return fetchJSON(apiUrl(route.httpBase, path, this.token, params, route.tokenParam), { credentials: route.credentials });
    }
    const carrier = this._carrier();
    if (!carrier) throw new LivestreamError("no widget on this page can carry the relay to the kernel", "unreachable");
    const reply = await relayGet(carrier, apiUrl("", path, this.token, params));
    let body = null;
    try {
      body = JSON.parse(utf8Decoder.decode(reply.body));
    } catch {
      body = null;
    }
    if (reply.status < 200 || reply.status >= 300) {
      const e = isObject(body) && isObject(body.error) ? body.error : {};
      const message = typeof e.message === "string" ? e.message : `HTTP ${reply.status} through the kernel`;
      throw new LivestreamError(message, typeof e.code === "string" ? e.code : `http_${reply.status}`, { status: reply.status });
    }
    if (body === null) throw new LivestreamError(`${path} did not answer JSON through the kernel`, "bad_response", { status: reply.status });
    return body;
  }

  /**
   * Load a script the server serves (`path` such as "/static/js/bokeh.min.js") over the route
   * in use, once per page.
   * @param {string} path @returns {Promise<void>}
   */
  async loadScript(path) {
    const route = await this.routeReady();
    if (route.name !== "relay") return loadScript(`${route.httpBase}${path}`);
    const key = `relay:${path}`;
    let p = scriptLoads.get(key);
    if (!p) {
      const carrier = this._carrier();
      if (!carrier) throw new LivestreamError("no widget on this page can carry the relay to the kernel", "unreachable");
      p = relayGet(carrier, path).then((reply) => {
        if (reply.status !== 200) throw new LivestreamError(`could not load ${path} through the kernel (HTTP ${reply.status})`, "unreachable");
        const url = URL.createObjectURL(new Blob([reply.body], { type: "text/javascript" }));
        return loadScript(url);
      });
      p.catch(() => scriptLoads.delete(key));
      scriptLoads.set(key, p);
    }
    return p;
  }

  /** Roles the server granted this token (from `welcome`), or null before it arrived. */
  get roles() {
    const roles = this.welcome?.roles;
    return Array.isArray(roles) ? /** @type {string[]} */ (roles) : null;
  }

  /** Whether this token may send controls (true until `welcome` says otherwise). */
  get canControl() {
    const roles = this.roles;
    return roles === null || roles.includes("control") || roles.includes("all") || roles.includes("admin");
  }

  /** Take a reference (done by {@link connect}). */
  retain() {
    this._refs++;
    if (this._releaseTimer !== null) {
      clearTimeout(this._releaseTimer);
      this._releaseTimer = null;
    }
  }

  /** Drop a reference; the socket closes shortly after the last one (a re-run cell reuses it). */
  release() {
    this._refs = Math.max(0, this._refs - 1);
    if (this._refs === 0 && this._releaseTimer === null) {
      this._releaseTimer = setTimeout(() => {
        this._releaseTimer = null;
        if (this._refs === 0) this.close();
      }, 1000);
    }
  }

  /** Close the socket now for every user of this connection; it is not reopened. */
  close() {
    if (this._closing) return;
    this._closing = true;
    if (registry.get(this.key) === this) registry.delete(this.key);
    if (typeof removeEventListener === "function") removeEventListener("online", this._onOnline);
    clearTimeout(this._retryTimer);
    clearInterval(this._heartbeat);
    this._retryTimer = null;
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onclose = ws.onerror = ws.onmessage = ws.onopen = null;
      try {
        ws.close(1000, "closed by the page");
      } catch { /* already closed */ }
    }
    this._failRequests(new LivestreamError("the connection was closed", "closed"));
    for (const ch of this._channels.values()) ch.dispose();
    this._channels.clear();
    this._setStatus("closed", "Closed");
  }

  /**
   * Be told about the connection's status now and on every change.
   * @param {StatusCallback} callback @returns {() => void} a function that stops the calls
   */
  onStatus(callback) {
    this._statusListeners.add(callback);
    try {
      callback(this.status, this.message);
    } catch (err) {
      console.error("livestream: status callback failed", err);
    }
    return () => this._statusListeners.delete(callback);
  }

  /**
   * Be told about each {@link ConnectionEvent} from now on (`conn.events` holds the past ones).
   * @param {EventCallback} callback @returns {() => void} a function that stops the calls
   */
  onEvent(callback) {
    this._eventListeners.add(callback);
    return () => this._eventListeners.delete(callback);
  }

  /**
   * @param {ConnectionEvent["kind"]} kind @param {string} url @param {string} [detail]
   * @param {{stream?: string, offset?: number | null, epoch?: string | null}} [fields]
   */
  _event(kind, url, detail = "", fields = {}) {
    /** @type {ConnectionEvent} */
    const event = { kind, url, detail, ...fields, at: Date.now() };
    this.events.push(event);
    if (this.events.length > MAX_EVENTS) this.events.splice(0, this.events.length - MAX_EVENTS);
    for (const cb of [...this._eventListeners]) {
      try {
        cb(event);
      } catch (err) {
        console.error("livestream: event callback failed", err);
      }
    }
  }

  /**
   * Subscribe to a stream. Any number of subscribers on a page share one server subscription
   * per stream; each gets its own `last` rows, columns and callbacks.
   * @param {string} stream @param {SubscribeOptions} [options]
   * @returns {Subscription}
   */
  subscribe(stream, options = {}) {
    if (typeof stream !== "string" || !stream) throw new LivestreamError(`subscribe needs a stream name, got ${JSON.stringify(stream)}`, "bad_argument");
    if (this._closing) throw new LivestreamError("this connection is closed; call connect() again", "closed");
    let channel = this._channels.get(stream);
    if (!channel) {
      channel = new Channel(this, stream);
      this._channels.set(stream, channel);
    }
    const sub = new Subscription(channel, options);
    channel.add(sub);
    return sub;
  }

  /**
   * Send a control (`pause`, `resume`, `set`, or a declared action) and wait for its `ack`.
   * Rejects with the server's error (e.g. `invalid_param`, `forbidden`) when refused.
   * @param {string} stream @param {string} action @param {Record<string, unknown>} [params]
   * @param {{timeout?: number}} [options]
   * @returns {Promise<{ok?: boolean, state?: StreamState} & Record<string, unknown>>}
   */
  control(stream, action, params = {}, { timeout = REQUEST_TIMEOUT_MS } = {}) {
    return this.request({ type: "control", stream, action, params }, { timeout, expect: "ack" });
  }

  /**
   * The server's streams (`list`).
   * @returns {Promise<Array<{name: string, schema: Record<string, string>, rows: number, offset: number, state: StreamState} & Record<string, unknown>>>}
   */
  async list() {
    const reply = await this.request({ type: "list" }, { expect: "streams" });
    return Array.isArray(reply.streams) ? reply.streams : [];
  }

  /**
   * Append rows to a stream (needs the `publish` role). Columns travel as JSON, with this
   * connection's `publisher` id and the next `seq`: a publish not yet acknowledged when the
   * connection is lost is sent again (same `publisher` and `seq`) on the next connection, to
   * the same or the next server, so a server that deduplicates stores it once.
   * @param {string} stream @param {Record<string, ArrayLike<unknown>>} columns
   * @param {{timeout?: number}} [options]
   * @returns {Promise<{offset?: number} & Record<string, unknown>>}
   */
  publish(stream, columns, { timeout = REQUEST_TIMEOUT_MS } = {}) {
    /** @type {Record<string, unknown[]>} */
    const json = {};
    for (const [k, v] of Object.entries(columns)) json[k] = Array.from(v, (x) => (typeof x === "number" && Number.isNaN(x) ? null : x));
    return this.request({ type: "publish", stream, columns: json, publisher: this.publisher, seq: ++this._seq }, { expect: "ack", timeout, resend: true });
  }

  /**
   * Send a request and wait for the reply carrying the same `id`. Sent when the socket is
   * open (queued until then); times out after `timeout` ms.
   * @param {{type: string} & Record<string, unknown>} msg
   * @param {{timeout?: number, expect?: string, resend?: boolean}} [options]  `resend`: send
   *   it again on the next socket when the one it went out on is lost before the answer
   * @returns {Promise<Record<string, any>>}
   */
  request(msg, { timeout = REQUEST_TIMEOUT_MS, expect = "", resend = false } = {}) {
    if (this._closing) return Promise.reject(new LivestreamError("this connection is closed; call connect() again", "closed"));
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._requests.delete(id);
        const pending = this.status === "open" ? "the server did not answer" : `not connected (${this.message || this.status})`;
        reject(new LivestreamError(`${msg.type} timed out after ${timeout / 1000} s: ${pending}`, "timeout"));
      }, timeout);
      const sent = { ...msg, id };
      this._requests.set(id, { resolve, reject, timer, expect, resend: resend ? sent : null });
      this._send(sent, true);
    });
  }

  // -- internals ------------------------------------------------------------------------------

  /** @param {ConnectionStatus} status @param {string} message */
  _setStatus(status, message) {
    if (status === this.status && message === this.message) return;
    this.status = status;
    this.message = message;
    for (const cb of [...this._statusListeners]) {
      try {
        cb(status, message);
      } catch (err) {
        console.error("livestream: status callback failed", err);
      }
    }
  }

  /**
   * @param {{type: string} & Record<string, unknown>} msg
   * @param {boolean} [queue] keep it for the next socket when not open (requests); otherwise
   *   drop it (subscriptions are re-sent on open anyway)
   */
  _send(msg, queue = false) {
    const ws = this._ws;
    if (ws && ws.readyState === 1) {
      ws.send(encodeMessage(msg));
      return true;
    }
    if (queue) this._outbox.push(msg);
    return false;
  }

  /** @param {LivestreamError} err */
  _failRequests(err) {
    for (const [id, req] of this._requests) {
      clearTimeout(req.timer);
      req.reject(err);
      this._requests.delete(id);
    }
    this._outbox = [];
  }

  async _open() {
    if (this._closing) return;
    const first = !this._everOpened && this._failures === 0;
    if (first || this.route === null || (this._failures > 0 && this._failures % 3 === 0)) {
      // Before the first socket and after repeated failures: find a route that answers, and
      // ask plain HTTP what is wrong when none does.
      this._setStatus(first ? "connecting" : "reconnecting", first ? `Connecting to ${this.endpoints.httpBase}…` : this.message);
      const { route, diagnosis } = await this._findRoute();
      if (this._closing) return;
      this.route = route;
      for (const resolve of this._routeWaiters.splice(0)) resolve(route);
      if (diagnosis.kind === "rejected") {
        if (this.servers.length === 1) {
          this._giveUp(diagnosis.message);
          return;
        }
        // Another server of the list may take this token (or this page): try it.
        this._failures++;
        this._diagnosis = diagnosis;
        this._serverFailed(diagnosis.message, true);
        if (this._closing || this._gaveUp) return;
        this._nextServer();
        this._scheduleRetry({ code: 1008, reason: diagnosis.message }, false);
        return;
      }
      this._diagnosis = diagnosis;
    }
    this._connectSocket();
  }

  /**
   * Note why the server in use failed; once every server of a list has failed since the
   * last open socket, and each refused this page or token, stop trying.
   * @param {string} why @param {boolean} [refused]
   */
  _serverFailed(why, refused = false) {
    this._serverFailures.set(this.url, why);
    if (refused) this._refusals.add(this.url);
    this._event("connect_failed", this.url, why);
    if (this.servers.length > 1 && this._refusals.size === this.servers.length) {
      this._giveUp(`Every server refused this page or token: ${this._failureList()}`);
    }
  }

  /** Each server's URL (no token) and why it failed, for a message. */
  _failureList() {
    return this.servers.map((e) => `${e.wsUrl} (${(this._serverFailures.get(e.wsUrl) ?? "not tried yet").replace(/\.$/, "")})`).join("; ");
  }

  /** Move on to the next server of the list (its route is found again). */
  _nextServer() {
    // The relay reaches the kernel's own server, whatever the list says.
    if (this.servers.length < 2 || this.route?.name === "relay") return;
    this.serverIndex = (this.serverIndex + 1) % this.servers.length;
    this.endpoints = this.servers[this.serverIndex];
    this.token = this.endpoints.token;
    this.route = null;
    this._diagnosis = null;
  }

  /**
   * The routes to try, in order: the one asked for, or for "auto" every one this page can use.
   * @returns {{routes: Route[], unusable: string}}  `unusable`: why the asked-for route cannot be used here
   */
  _candidates() {
    const want = this.requestedRoute;
    const { httpBase, wsUrl } = this.endpoints;
    /** @type {Route[]} */
    const routes = [];
    const reasons = [];
    const mixed = typeof location !== "undefined" && location.protocol === "https:" && httpBase.startsWith("http:");
    if (want === "direct" || (want === "auto" && !mixed)) {
      routes.push({ name: "direct", httpBase, wsUrl, credentials: "omit", tokenParam: "token" });
    }
    if (want === "auto" || want === "proxy") {
      const base = jupyterBaseUrl();
      const proxied = base === null ? null : proxyEndpoints(this.endpoints, base);
      if (proxied) {
        routes.push({ name: "proxy", ...proxied, credentials: "same-origin", tokenParam: "livestream_token" });
      } else {
        reasons.push(base === null
          ? "the proxy route needs a page served by Jupyter (JupyterLab, Notebook 7, JupyterHub)"
          : `the proxy route reaches only a server on the Jupyter server's own loopback (http://127.0.0.1:PORT); this one is at ${httpBase}`);
      }
    }
    if ((want === "auto" || want === "relay") && this._carrier()) {
      routes.push({ name: "relay", httpBase, wsUrl, credentials: "omit", tokenParam: "token" });
    } else if (want === "relay") {
      reasons.push("the relay route needs a notebook widget (its comm carries the frames)");
    }
    return { routes, unusable: reasons.join("; ") };
  }

  /**
   * Try the candidate routes in order; the first whose HTTP probe answers wins. The relay,
   * which has no HTTP, wins when reached. When no route works, the first candidate is kept
   * (the socket attempts and their messages go on there) with what went wrong.
   * @returns {Promise<{route: Route, diagnosis: Diagnosis}>}
   */
  async _findRoute() {
    const forced = this.requestedRoute !== "auto";
    let askedKernel = false;
    for (;;) {
      const { routes, unusable } = this._candidates();
      if (routes.length === 0) {
        const route = { name: /** @type {RouteName} */ (forced ? this.requestedRoute : "direct"), httpBase: this.endpoints.httpBase, wsUrl: this.endpoints.wsUrl, credentials: /** @type {RequestCredentials} */ ("omit"), tokenParam: "token" };
        const message = `Cannot use the ${route.name} route: ${unusable || "a page served over https cannot reach an http:// server"}.`;
        // A relay waiting for a widget to carry it is not a lost cause: one may come.
        return { route, diagnosis: { kind: this.requestedRoute === "relay" ? "unknown" : "rejected", message } };
      }
      /** @type {{route: Route, diagnosis: Diagnosis} | null} */
      let failed = null;
      let refusedPage = false;
      for (const route of routes) {
        if (route.name === "relay") {
          if (refusedPage && !askedKernel) break; // ask the kernel first: it may admit the page
          return { route, diagnosis: { kind: "ok", message: "" } };
        }
        const diagnosis = await diagnose(route.httpBase, this.token, {
          timeout: forced ? FORCED_PROBE_MS : PROBE_MS[route.name], credentials: route.credentials, tokenParam: route.tokenParam,
        });
        if (this._closing || diagnosis.kind === "ok") return { route, diagnosis };
        if (route.name === "proxy") {
          if (diagnosis.code === "bad_host" || diagnosis.code === "bad_origin") {
            refusedPage = true;
          } else if (diagnosis.code && !["missing_token", "bad_token"].includes(diagnosis.code)) {
            // Jupyter's answer, not ours: no proxy there, or a lapsed Jupyter login.
            diagnosis.kind = "unknown";
            diagnosis.message = diagnosis.status === 404
              ? `Jupyter at ${location.origin} has no proxy to port ${new URL(this.endpoints.httpBase).port}: install jupyter-server-proxy where Jupyter runs (pip install jupyter-server-proxy) and restart Jupyter.`
              : `Jupyter's proxy at ${route.httpBase} answered: ${diagnosis.message}`;
          }
        }
        failed ??= { route, diagnosis };
      }
      if (refusedPage && !askedKernel && this._carrier()) {
        // The server refuses this page (its host or origin) until the kernel admits it.
        askedKernel = true;
        this._setStatus(this.status, "Waiting for the kernel to admit this page's origin…");
        const answer = await this._admit();
        if (this._closing) return { route: routes[0], diagnosis: { kind: "unknown", message: "closed" } };
        if (answer.ok) continue; // every route again, in order: the direct one may work now
        return { route: failed?.route ?? routes[0], diagnosis: { kind: "rejected", message: answer.message } };
      }
      // Nothing answered: keep the first route tried, and what it said.
      return failed ?? { route: routes[0], diagnosis: { kind: "unknown", message: "" } };
    }
  }

  /**
   * Ask the kernel, over a widget's comm, to admit this page's origin (once per connection).
   * @returns {Promise<{ok: boolean, message: string}>}
   */
  _admit() {
    if (this._admission) return this._admission;
    const carrier = this._carrier();
    if (!carrier || typeof location === "undefined") {
      return Promise.resolve({ ok: false, message: "no widget on this page can ask the kernel to admit its origin" });
    }
    const origin = location.origin;
    this._admission = new Promise((resolve) => {
      const onMessage = (/** @type {unknown} */ content) => {
        if (!isObject(content) || content.ls !== "admitted" || content.origin !== origin) return;
        carrier.off("msg:custom", onMessage);
        resolve({ ok: content.ok === true, message: String(content.message ?? "") });
      };
      carrier.on("msg:custom", onMessage);
      carrier.send({ ls: "hello", origin });
    });
    return this._admission;
  }

  /** @param {string} message @param {string} [code] */
  _giveUp(message, code = "token_rejected") {
    // A rejected token will not start working by itself: stop retrying, say why.
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._gaveUp = true;
    this._failRequests(new LivestreamError(message, code));
    for (const ch of this._channels.values()) ch.fail(new LivestreamError(message, code));
    this._event("gave_up", this.url, message);
    this._setStatus("error", message);
  }

  _connectSocket() {
    /** @type {WebSocket | RelaySocket} */
    let ws;
    try {
      if (this.route?.name === "relay") {
        const carrier = this._carrier();
        if (!carrier) {
          // Its widget was removed; another may come (a re-run cell): wait for it.
          this._failures++;
          this._scheduleRetry({ code: 1001, reason: "no widget on this page carries the relay" }, false);
          return;
        }
        ws = new RelaySocket(carrier);
      } else {
        const param = this.route?.tokenParam ?? "token";
        ws = new WebSocket(this.token ? `${this.wsUrl}?${param}=${encodeURIComponent(this.token)}` : this.wsUrl);
      }
    } catch (err) {
      this._giveUp(`Cannot open a WebSocket to ${this.wsUrl}: ${/** @type {Error} */ (err).message}`);
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = /** @type {WebSocket} */ (ws);
    const generation = ++this._socketGeneration;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      const kind = !this._everOpened ? "first" : this._lostUrl !== null && this._lostUrl !== this.url ? `failed over from ${this._lostUrl}` : "reconnected";
      this._everOpened = true;
      this._failures = 0;
      this._lastMessageAt = this._openedAt = Date.now();
      this._answered = false;
      this._downSince = null;
      this._lostUrl = null;
      this._serverFailures.clear();
      this._refusals.clear();
      const how = this.route?.name === "relay" ? " through the kernel (relay)" : this.route?.name === "proxy" ? " through Jupyter's proxy" : "";
      this._setStatus("open", `Connected to ${this.route?.name === "relay" ? this.endpoints.httpBase : this.httpBase}${how}`);
      this._event("connected", this.url, kind);
      const outbox = this._outbox;
      this._outbox = [];
      // Publishes sent on a lost socket and not answered go again first, in their order.
      for (const [id, req] of this._requests) if (req.resend && !outbox.some((m) => m.id === id)) this._send(req.resend, true);
      for (const msg of outbox) this._send(msg, true);
      for (const ch of this._channels.values()) ch.onSocketOpen();
      clearInterval(this._heartbeat);
      this._heartbeat = setInterval(() => this._beat(/** @type {WebSocket} */ (ws)), HEARTBEAT_MS);
    };
    ws.onmessage = (/** @type {{data: string | ArrayBuffer}} */ event) => {
      if (generation !== this._socketGeneration) return;
      this._lastMessageAt = Date.now();
      this._dispatch(event.data);
    };
    ws.onerror = () => { /* the close event that follows carries what we can know */ };
    ws.onclose = (/** @type {{code: number, reason: string, wasClean: boolean}} */ event) => {
      if (generation !== this._socketGeneration || this._closing) return;
      clearInterval(this._heartbeat);
      this._ws = null;
      for (const ch of this._channels.values()) ch.onSocketClosed();
      for (const [id, req] of this._requests) {
        // Sent on the lost socket: their answers will never come (a publish goes again).
        if (!req.resend && !this._outbox.some((m) => m.id === id)) {
          clearTimeout(req.timer);
          req.reject(new LivestreamError(`the connection was lost before the server answered (close code ${event.code})`, "closed"));
          this._requests.delete(id);
        }
      }
      if (opened) {
        this._failures = 0;
        // A connection that stayed up a while, or on which the server answered a request, was
        // healthy: the backoff starts again.
        if (this._answered || Date.now() - this._openedAt >= this.backoff.resetAfter) this._attempt = 0;
        this._lostUrl = this.url;
        this._downSince = Date.now();
        this._event("disconnected", this.url, closeReason(event));
      } else {
        this._failures++;
        this._downSince ??= Date.now();
        this._serverFailed(this._diagnosis?.kind === "unreachable" ? this._diagnosis.message : closeReason(event));
        if (this._gaveUp) return;
      }
      if (event.code === 1008) {
        // Policy violation after the upgrade, e.g. the token was revoked: check before retrying.
        this._failures = Math.max(this._failures, 3);
      }
      this._nextServer();
      this._scheduleRetry(event, opened);
    };
  }

  /** @param {{code: number, reason: string}} event @param {boolean} wasOpen */
  _scheduleRetry(event, wasOpen) {
    if (this.giveUpAfter !== null && this._downSince !== null && Date.now() - this._downSince >= this.giveUpAfter) {
      const waited = ((Date.now() - this._downSince) / 1000).toFixed(1);
      const what = this.servers.length === 1 ? `Cannot reach ${this.url}` : `Cannot reach any of the ${this.servers.length} servers`;
      this._giveUp(`${what} (tried for ${waited} s): ${this.servers.length === 1 ? this._serverFailures.get(this.url) ?? closeReason(event) : this._failureList()}`, "unreachable");
      return;
    }
    const { first: start, cap } = this.backoff;
    let delay = Math.min(cap, Math.min(cap, start * 2 ** Math.min(this._attempt, 32)) * (0.5 + Math.random()));
    this._attempt++;
    if (this.giveUpAfter !== null && this._downSince !== null) delay = Math.max(0, Math.min(delay, this._downSince + this.giveUpAfter - Date.now()));
    delay = Math.round(delay);
    const seconds = (delay / 1000).toFixed(1);
    let message;
    let status = /** @type {ConnectionStatus} */ ("reconnecting");
    if (this.servers.length > 1 && this._serverFailures.size === this.servers.length) {
      status = "error";
      message = `Cannot reach any of the ${this.servers.length} servers: ${this._failureList()}. Retrying in ${seconds} s…`;
    } else if (wasOpen) {
      message = `Connection lost (${closeReason(event)}); reconnecting in ${seconds} s…`;
    } else if (this._diagnosis?.kind === "unreachable") {
      message = `${this._diagnosis.message} Retrying in ${seconds} s…`;
    } else if (this._diagnosis?.kind === "ok" && this._failures >= 3) {
      status = "error";
      const origin = typeof location === "undefined" ? "this page" : location.origin;
      message = `The server answers HTTP but refused the WebSocket at ${this.wsUrl}. If ${origin} is not a loopback origin, start the server with --allow-origin ${origin}. Retrying in ${seconds} s…`;
    } else {
      message = `Cannot connect to ${this.wsUrl} (${closeReason(event)}); retrying in ${seconds} s…`;
    }
    this._setStatus(status, message);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      void this._open();
    }, delay);
  }

  _retryNow() {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    void this._open();
  }

  /** @param {WebSocket} ws */
  _beat(ws) {
    if (ws !== this._ws || ws.readyState !== 1) return;
    // Through the relay, silence means a busy kernel, not a dead connection.
    if (!(/** @type {any} */ (ws).relay) && Date.now() - this._lastMessageAt > 2.5 * HEARTBEAT_MS) {
      ws.close(4000, "no message from the server");
      return;
    }
    this._send({ type: "ping" });
  }

  /** @param {string | ArrayBuffer} data */
  _dispatch(data) {
    let msg;
    try {
      // JSON data gets its columns typed with the stream's schema.
      msg = decodeMessage(data, (stream) => this._channels.get(stream)?.schema ?? undefined);
    } catch (err) {
      console.warn("livestream: ignoring a bad frame from the server:", err);
      return;
    }
    const channel = typeof msg.stream === "string" ? this._channels.get(msg.stream) : undefined;
    switch (msg.type) {
      case "welcome":
        this.welcome = msg;
        if (msg.protocol !== PROTOCOL_VERSION) {
          console.warn(`livestream: the server speaks protocol ${msg.protocol}; this page speaks ${PROTOCOL_VERSION}`);
        }
        return;
      case "data":
        channel?.onData(/** @type {Batch} */ (/** @type {unknown} */ (msg)), this._socketGeneration);
        return;
      case "subscribed":
        this._answered = true;
        channel?.onSubscribed(/** @type {SubscribedInfo & {id?: number}} */ (/** @type {unknown} */ (msg)));
        return;
      case "reset":
        channel?.onReset(/** @type {ResetMessage} */ (/** @type {unknown} */ (msg)));
        return;
      case "state":
        channel?.onState(msg.state);
        return;
      case "error":
        this._onError(msg);
        return;
      case "pong":
      case "unsubscribed":
        return;
      default: {
        const req = msg.id !== undefined ? this._requests.get(msg.id) : undefined;
        if (req) {
          this._answered = true;
          this._requests.delete(msg.id);
          clearTimeout(req.timer);
          req.resolve(msg);
        }
      }
    }
  }

  /** @param {Record<string, any>} msg */
  _onError(msg) {
    const err = new LivestreamError(String(msg.message ?? "the server reported an error"), String(msg.code ?? "error"), { id: msg.id });
    if (msg.id !== undefined) {
      const req = this._requests.get(msg.id);
      if (req) {
        this._requests.delete(msg.id);
        clearTimeout(req.timer);
        req.reject(err);
        return;
      }
      for (const ch of this._channels.values()) {
        if (ch.requestId === msg.id) {
          ch.onSubscribeError(err);
          return;
        }
      }
    }
    const channel = typeof msg.stream === "string" ? this._channels.get(msg.stream) : undefined;
    if (channel) {
      channel.fail(err);
    } else {
      console.warn(`livestream: server error ${err.code}: ${err.message}`);
    }
  }
}

/** A random publisher id: 32 hex digits. */
function randomId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** @param {{code: number, reason: string}} event  a WebSocket close event, or the relay's */
function closeReason(event) {
  const known = {
    1000: "closed normally", 1001: "server going away", 1006: "no answer or connection dropped",
    1008: "policy violation", 1009: "message too big", 1011: "server error", 4001: "too many bad messages",
  };
  const text = /** @type {Record<number, string>} */ (known)[event.code] ?? "closed";
  return event.reason ? `${text}: ${event.reason}` : `${text}, code ${event.code}`;
}
