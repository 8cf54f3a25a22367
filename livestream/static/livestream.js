// @ts-check
/**
 * livestream.js — the one browser module of livestream (plain ES module, no build step).
 *
 * It serves the standalone dashboard pages (`/`, `/streams/<name>`) and the anywidget widgets
 * alike: a widget's `render({el, model})` calls `connect()` and one of the `render*` functions
 * below, and returns the handle's `dispose` as its cleanup.
 *
 * Layers, each usable on its own:
 *
 * 1. Codec — `encodeMessage`, `decodeMessage`, `decodeBinaryFrame`, `encodeBinaryFrame`,
 *    `decodeJsonData`: protocol v1 (docs/protocol.md). Binary `data` frames become typed-array
 *    views over the frame's ArrayBuffer, without copying (int64 is converted to Float64Array).
 * 2. Connection — `connect({url, token})` returns the page's one shared `Connection` per
 *    server and token. It reconnects with backoff and resumes every subscription with
 *    `since`/`epoch` (no gap, no duplicate), paces the server with `credit`, and hands each
 *    subscriber at most one merged batch per animation frame. It reaches the server by the
 *    first route that works (docs/jupyter-routes.md): directly, through jupyter-server-proxy
 *    under the page's Jupyter base URL, or relayed through a widget's comm by the kernel.
 * 3. Bokeh — `ensureBokeh(httpBase)` loads BokehJS from the livestream server once per page;
 *    `embedPlot(el, plotSpec)` embeds a figure built by `livestream/plots.py` and streams
 *    batches into its ColumnDataSource, once per animation frame.
 * 4. Renderers — `renderTable`, `renderValue`, `renderStatus`, `renderControls`,
 *    `renderPlot`, `renderDashboard`, `renderStreamList`: plain DOM, styled by livestream.css.
 *    Each takes `(el, conn, stream, options)` and returns `{dispose()}` (plus extras).
 *
 * Example (a page served by the livestream server):
 *
 *     import {connect, pageToken, renderTable} from "/static/livestream.js";
 *     const conn = connect({token: pageToken()});
 *     const table = renderTable(document.querySelector("#t"), conn, "prices", {rows: 20});
 *     // later: table.dispose(); conn.release();
 */

// ---------------------------------------------------------------------------------------------
// Constants and errors
// ---------------------------------------------------------------------------------------------

/** Version of this module. */
export const VERSION = "0.1.0";
/** The wire protocol version this module speaks. */
export const PROTOCOL_VERSION = 1;
/** Column names taken as time (ms since the Unix epoch), in order of preference. */
export const TIME_COLUMNS = Object.freeze(["time", "timestamp", "t"]);
/** The synthetic plot column holding each row's stream offset (see livestream/plots.py). */
export const OFFSET_COLUMN = "__offset__";

/** Base class of every error this module raises or reports. */
export class LivestreamError extends Error {
  /**
   * @param {string} message what happened, what was expected, and the fix when known
   * @param {string} [code] a protocol error code (`unknown_stream`, `forbidden`, ...) or a
   *   local one (`unreachable`, `token_rejected`, `timeout`, `closed`, `http_<status>`)
   * @param {{status?: number, id?: unknown}} [detail]
   */
  constructor(message, code = "error", detail = {}) {
    super(message);
    this.name = "LivestreamError";
    /** @type {string} */
    this.code = code;
    /** @type {number | undefined} HTTP status, for errors from fetch */
    this.status = detail.status;
  }
}

/** A frame or message that does not follow the protocol. */
export class ProtocolError extends LivestreamError {
  /** @param {string} message */
  constructor(message) {
    super(message, "protocol_error");
    this.name = "ProtocolError";
  }
}

// ---------------------------------------------------------------------------------------------
// Codec
// ---------------------------------------------------------------------------------------------

/**
 * @typedef {Float64Array | Float32Array | Int32Array | Uint8Array | Array<unknown>} Column
 *   A column of values: a typed array for numeric dtypes, a plain array otherwise.
 */
/**
 * @typedef {object} Batch  Rows `offset .. offset + rows - 1` of a stream, by column.
 * @property {string} stream
 * @property {number} offset  offset of the first row
 * @property {number} rows    number of rows (every column has this length)
 * @property {Record<string, Column>} columns
 */
/**
 * @typedef {{name: string, dtype: string, offset: number, nbytes: number}} BufferColumnHeader
 * @typedef {{name: string, values: unknown[], dtype?: string}} ValuesColumnHeader
 */
/**
 * @typedef {object} StreamState  Broadcast stream state (`state` message).
 * @property {"idle"|"running"|"paused"|"stopped"|"error"|string} status
 * @property {boolean} paused
 * @property {Record<string, unknown>} params
 * @property {string} [error]  set when status is "error"
 */
/**
 * @typedef {object} ParamSpec
 * @property {"float"|"int"|"bool"|"choice"|string} type
 * @property {unknown} [default]
 * @property {number} [min]
 * @property {number} [max]
 * @property {number} [step]
 * @property {unknown[]} [choices]
 * @property {string} [label]
 */
/**
 * @typedef {{params?: Record<string, ParamSpec>, actions?: Record<string, {label?: string}>}} ControlsSpec
 */
/**
 * @typedef {object} SubscribedInfo  The `subscribed` reply.
 * @property {string} stream
 * @property {string} epoch
 * @property {Record<string, string>} schema
 * @property {ControlsSpec} controls
 * @property {StreamState} state
 * @property {number} offset  the offset of the first row that will be sent
 */
/**
 * @typedef {{type: "reset", stream: string, epoch: string, offset: number, reason: string}} ResetMessage
 */

/** @type {Record<string, {ctor: Float64ArrayConstructor | Float32ArrayConstructor | Int32ArrayConstructor | BigInt64ArrayConstructor | Uint8ArrayConstructor, size: number}>} */
const BUFFER_DTYPES = {
  float64: { ctor: Float64Array, size: 8 },
  float32: { ctor: Float32Array, size: 4 },
  int32: { ctor: Int32Array, size: 4 },
  int64: { ctor: BigInt64Array, size: 8 },
  uint8: { ctor: Uint8Array, size: 1 },
  bool: { ctor: Uint8Array, size: 1 },
};
/** Dtypes that may travel as raw buffers in binary frames. */
export const BINARY_DTYPES = Object.freeze(Object.keys(BUFFER_DTYPES));
const NUMERIC_DTYPES = new Set([
  "float64", "float32", "float16", "int64", "int32", "int16", "int8",
  "uint64", "uint32", "uint16", "uint8",
]);
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const utf8Decoder = new TextDecoder();
const utf8Encoder = new TextEncoder();

/** @param {unknown} v @returns {v is Record<string, any>} */
function isObject(v) {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** @param {unknown} v */
function describe(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (v instanceof ArrayBuffer) return "an ArrayBuffer";
  if (typeof Blob !== "undefined" && v instanceof Blob) return "a Blob";
  return `a ${typeof v}`;
}

/** @param {string} name @returns {boolean} */
export function isTimeColumn(name, dtype = "float64") {
  return TIME_COLUMNS.includes(name) || dtype.startsWith("datetime");
}

/** @param {string} dtype */
export function isNumericDtype(dtype) {
  return NUMERIC_DTYPES.has(dtype);
}

/**
 * Encode a client message (`subscribe`, `control`, `credit`, ...) as the JSON text of a frame.
 * @param {{type: string} & Record<string, unknown>} msg
 * @returns {string}
 */
export function encodeMessage(msg) {
  if (!isObject(msg) || typeof msg.type !== "string" || !msg.type) {
    throw new ProtocolError(`a message must be an object with a string "type", got ${describe(msg)}`);
  }
  return JSON.stringify(msg);
}

/**
 * Decode one WebSocket frame from the server: a text frame (JSON) or a binary `data` frame.
 * `data` messages come back as {@link Batch} objects (plus `type: "data"`), whichever form
 * they travelled in.
 * @param {string | ArrayBuffer | ArrayBufferView} data  the frame (`ws.binaryType = "arraybuffer"`)
 * @param {Record<string, string> | ((stream: string) => Record<string, string> | undefined)} [schema]
 *   the stream's schema (or a lookup by stream name), to type the columns of JSON data
 * @returns {Record<string, any> & {type: string}}
 */
export function decodeMessage(data, schema) {
  if (typeof data === "string") {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (err) {
      throw new ProtocolError(`a text frame must hold one JSON object; parsing failed: ${/** @type {Error} */ (err).message}`);
    }
    if (!isObject(msg) || typeof msg.type !== "string") {
      throw new ProtocolError(`a message must be a JSON object with a string "type", got ${describe(msg)}`);
    }
    if (msg.type === "data") {
      const s = typeof schema === "function" ? (typeof msg.stream === "string" ? schema(msg.stream) : undefined) : schema;
      return { ...decodeJsonData(msg, s), type: "data" };
    }
    return /** @type {any} */ (msg);
  }
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
    return { ...decodeBinaryFrame(data), type: "data" };
  }
  throw new ProtocolError(`a frame must be a string or an ArrayBuffer, got ${describe(data)}; set ws.binaryType = "arraybuffer"`);
}

/**
 * Turn one JSON column into the same kind of column a binary frame would give.
 * @param {string} name
 * @param {unknown} values
 * @param {string | undefined} dtype
 * @returns {Column}
 */
function jsonColumn(name, values, dtype) {
  if (!Array.isArray(values)) {
    throw new ProtocolError(`column "${name}" must be a JSON array of values, got ${describe(values)}`);
  }
  const numeric = dtype === undefined
    ? values.some((v) => typeof v === "number") && values.every((v) => v === null || typeof v === "number")
    : NUMERIC_DTYPES.has(dtype) || dtype === "bool";
  if (!numeric) return values;
  let out;
  switch (dtype) {
    case "float32": out = new Float32Array(values.length); break;
    case "int32": out = new Int32Array(values.length); break;
    case "uint8": case "bool": out = new Uint8Array(values.length); break;
    default: out = new Float64Array(values.length); // float64, int64 (as in binary frames), others
  }
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    // null is NaN in float columns; in an integer column it can only be a server bug, so 0.
    out[i] = v === null ? NaN : typeof v === "boolean" ? Number(v) : /** @type {number} */ (v);
  }
  return out;
}

/** @param {Record<string, any>} msg @param {string} what */
function checkDataHeader(msg, what) {
  if (typeof msg.stream !== "string") throw new ProtocolError(`${what} needs a string "stream", got ${describe(msg.stream)}`);
  if (!Number.isInteger(msg.offset) || msg.offset < 0) {
    throw new ProtocolError(`${what} needs a non-negative integer "offset", got ${JSON.stringify(msg.offset)}`);
  }
  if (msg.rows !== undefined && (!Number.isInteger(msg.rows) || msg.rows < 0)) {
    throw new ProtocolError(`${what} has an invalid "rows": ${JSON.stringify(msg.rows)}`);
  }
}

/** @param {Record<string, Column>} columns @param {number | undefined} rows @param {string} what */
function checkRows(columns, rows, what) {
  const names = Object.keys(columns);
  const n = rows ?? (names.length ? columns[names[0]].length : 0);
  for (const name of names) {
    if (columns[name].length !== n) {
      throw new ProtocolError(`${what}: column "${name}" has ${columns[name].length} values, expected rows = ${n}`);
    }
  }
  return n;
}

/**
 * Decode the JSON form of a `data` message: `columns` is `{name: [values]}`; null means NaN in
 * float columns. With a schema, numeric columns become typed arrays like in binary frames.
 * @param {Record<string, any>} msg
 * @param {Record<string, string>} [schema]
 * @returns {Batch}
 */
export function decodeJsonData(msg, schema) {
  checkDataHeader(msg, "a data message");
  if (!isObject(msg.columns)) throw new ProtocolError(`a JSON data message needs "columns" {name: [values]}, got ${describe(msg.columns)}`);
  /** @type {Record<string, Column>} */
  const columns = {};
  for (const [name, values] of Object.entries(msg.columns)) {
    columns[name] = jsonColumn(name, values, schema?.[name]);
  }
  const rows = checkRows(columns, msg.rows, `data for "${msg.stream}" at offset ${msg.offset}`);
  return { stream: msg.stream, offset: msg.offset, rows, columns };
}

/**
 * Decode a binary `data` frame: uint32 LE header length H, H bytes of UTF-8 JSON header,
 * zero padding to an 8-byte boundary, then the buffer area. Each buffer column becomes a typed
 * array *view* over `buffer` (no copy); int64 becomes a Float64Array copy (Bokeh needs numbers);
 * a buffer that is not aligned for its type (never the case for a conforming server) is copied.
 * @param {ArrayBuffer | ArrayBufferView} buffer  the whole frame
 * @returns {Batch}
 */
export function decodeBinaryFrame(buffer) {
  const bytes = buffer instanceof ArrayBuffer
    ? new Uint8Array(buffer)
    : new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  if (bytes.byteLength < 4) throw new ProtocolError(`a binary frame needs at least 4 bytes, got ${bytes.byteLength}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getUint32(0, true);
  if (4 + headerLength > bytes.byteLength) {
    throw new ProtocolError(`binary frame header length ${headerLength} exceeds the frame (${bytes.byteLength} bytes)`);
  }
  let header;
  try {
    header = JSON.parse(utf8Decoder.decode(bytes.subarray(4, 4 + headerLength)));
  } catch (err) {
    throw new ProtocolError(`binary frame header is not UTF-8 JSON: ${/** @type {Error} */ (err).message}`);
  }
  if (!isObject(header)) throw new ProtocolError(`binary frame header must be a JSON object, got ${describe(header)}`);
  if (header.type !== undefined && header.type !== "data") {
    throw new ProtocolError(`binary frames carry "data" messages, got type ${JSON.stringify(header.type)}`);
  }
  checkDataHeader(header, "a binary data frame");
  if (!Array.isArray(header.columns)) {
    throw new ProtocolError(`a binary frame header needs "columns" [{name, dtype, offset, nbytes} | {name, values}], got ${describe(header.columns)}`);
  }
  const area = (4 + headerLength + 7) & ~7; // the buffer area starts 8-byte aligned
  const areaBytes = bytes.byteLength - area;
  /** @type {Record<string, Column>} */
  const columns = {};
  for (const col of header.columns) {
    if (!isObject(col) || typeof col.name !== "string") {
      throw new ProtocolError(`each binary frame column needs a "name", got ${JSON.stringify(col)}`);
    }
    if ("values" in col) {
      columns[col.name] = jsonColumn(col.name, col.values, col.dtype);
      continue;
    }
    const spec = BUFFER_DTYPES[col.dtype];
    if (!spec) {
      throw new ProtocolError(`column "${col.name}" has dtype ${JSON.stringify(col.dtype)}; binary columns must be one of ${BINARY_DTYPES.join(", ")}`);
    }
    const { offset, nbytes } = col;
    if (!Number.isInteger(offset) || !Number.isInteger(nbytes) || offset < 0 || nbytes < 0 || offset + nbytes > areaBytes) {
      throw new ProtocolError(`column "${col.name}" spans bytes ${offset}..${offset + nbytes} of a ${areaBytes}-byte buffer area`);
    }
    if (nbytes % spec.size !== 0) {
      throw new ProtocolError(`column "${col.name}" (${col.dtype}) has ${nbytes} bytes, not a multiple of ${spec.size}`);
    }
    const start = bytes.byteOffset + area + offset;
    const length = nbytes / spec.size;
    let array;
    if (!LITTLE_ENDIAN && spec.size > 1) {
      array = readBigEndianHost(view, area + offset, length, col.dtype);
    } else if (start % spec.size === 0) {
      array = new spec.ctor(/** @type {ArrayBuffer} */ (bytes.buffer), start, length); // the zero-copy view
    } else {
      array = new spec.ctor(/** @type {ArrayBuffer} */ (bytes.slice(area + offset, area + offset + nbytes).buffer));
    }
    if (array instanceof BigInt64Array) {
      const floats = new Float64Array(length);
      for (let i = 0; i < length; i++) floats[i] = Number(array[i]);
      array = floats;
    }
    columns[col.name] = /** @type {Column} */ (array);
  }
  const rows = checkRows(columns, header.rows, `binary data for "${header.stream}" at offset ${header.offset}`);
  return { stream: header.stream, offset: header.offset, rows, columns };
}

/**
 * Slow path for big-endian hosts (no browser in use today): read little-endian values.
 * @param {DataView} view @param {number} at @param {number} n @param {string} dtype
 */
function readBigEndianHost(view, at, n, dtype) {
  const out = dtype === "float32" ? new Float32Array(n) : dtype === "int32" ? new Int32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (dtype === "float64") out[i] = view.getFloat64(at + 8 * i, true);
    else if (dtype === "float32") out[i] = view.getFloat32(at + 4 * i, true);
    else if (dtype === "int32") out[i] = view.getInt32(at + 4 * i, true);
    else out[i] = Number(view.getBigInt64(at + 8 * i, true));
  }
  return out;
}

/**
 * Encode a binary frame (for `publish` from the browser, and for tests): typed-array columns
 * go into the buffer area, 8-byte aligned; other arrays travel as JSON `values`.
 * @param {Record<string, unknown>} header  `type`, `stream`, `offset`, `rows`, ...
 * @param {Record<string, Column | BigInt64Array>} columns
 * @param {Record<string, string>} [dtypes]  overrides (e.g. `{flag: "bool"}` for a Uint8Array)
 * @returns {ArrayBuffer}
 */
export function encodeBinaryFrame(header, columns, dtypes = {}) {
  /** @type {Array<BufferColumnHeader | ValuesColumnHeader>} */
  const cols = [];
  /** @type {Array<[number, Uint8Array]>} */
  const parts = [];
  let size = 0;
  for (const [name, values] of Object.entries(columns)) {
    if (ArrayBuffer.isView(values)) {
      const dtype = dtypes[name] ?? dtypeOf(values);
      const raw = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
      cols.push({ name, dtype, offset: size, nbytes: raw.byteLength });
      parts.push([size, raw]);
      size += (raw.byteLength + 7) & ~7;
    } else {
      cols.push({ name, values: Array.from(values) });
    }
  }
  const head = utf8Encoder.encode(JSON.stringify({ type: "data", ...header, columns: cols }));
  const area = (4 + head.byteLength + 7) & ~7;
  const out = new Uint8Array(area + size);
  new DataView(out.buffer).setUint32(0, head.byteLength, true);
  out.set(head, 4);
  for (const [at, raw] of parts) out.set(raw, area + at);
  return out.buffer;
}

/** @param {ArrayBufferView} a */
function dtypeOf(a) {
  if (a instanceof Float64Array) return "float64";
  if (a instanceof Float32Array) return "float32";
  if (a instanceof Int32Array) return "int32";
  if (a instanceof BigInt64Array) return "int64";
  if (a instanceof Uint8Array) return "uint8";
  throw new ProtocolError(`cannot send ${a.constructor.name} columns; use ${BINARY_DTYPES.join(", ")}`);
}

/**
 * Rows `start .. end - 1` of a batch (indices within the batch), as views where possible.
 * @param {Batch} batch @param {number} start @param {number} [end]
 * @returns {Batch}
 */
export function sliceBatch(batch, start, end = batch.rows) {
  start = Math.max(0, Math.min(start, batch.rows));
  end = Math.max(start, Math.min(end, batch.rows));
  if (start === 0 && end === batch.rows) return batch;
  /** @type {Record<string, Column>} */
  const columns = {};
  for (const [name, col] of Object.entries(batch.columns)) {
    columns[name] = Array.isArray(col) ? col.slice(start, end) : col.subarray(start, end);
  }
  return { stream: batch.stream, offset: batch.offset + start, rows: end - start, columns };
}

/**
 * Concatenate contiguous batches of one stream into one (a single batch is returned as is,
 * keeping its zero-copy views).
 * @param {Batch[]} batches
 * @returns {Batch}
 */
export function mergeBatches(batches) {
  if (batches.length === 0) throw new LivestreamError("mergeBatches needs at least one batch");
  if (batches.length === 1) return batches[0];
  const rows = batches.reduce((n, b) => n + b.rows, 0);
  /** @type {Record<string, Column>} */
  const columns = {};
  for (const name of Object.keys(batches[0].columns)) {
    const parts = batches.map((b) => b.columns[name]);
    if (parts.some((p) => p === undefined)) continue;
    columns[name] = concatColumns(parts, rows);
  }
  return { stream: batches[0].stream, offset: batches[0].offset, rows, columns };
}

/** @param {Column[]} parts @param {number} total @returns {Column} */
function concatColumns(parts, total) {
  const first = parts[0];
  if (!Array.isArray(first) && parts.every((p) => !Array.isArray(p) && p.constructor === first.constructor)) {
    const Ctor = /** @type {any} */ (first.constructor);
    const out = new Ctor(total);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
  /** @type {unknown[]} */
  const out = [];
  for (const p of parts) for (let i = 0; i < p.length; i++) out.push(p[i]);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Frame scheduling: work that touches the DOM or BokehJS runs at most once per animation frame
// ---------------------------------------------------------------------------------------------

/** The longest a plot waits between two `stream` calls (ms); see `embedPlot`. */
const PLOT_MAX_INTERVAL_MS = 100;

/** @type {Set<() => void>} */
const frameTasks = new Set();
let frameScheduled = false;

/**
 * Run `task` in the next animation frame (tasks added before then run once, together). In a
 * hidden tab, where requestAnimationFrame does not fire, a 250 ms timer runs them instead.
 * @param {() => void} task
 */
export function requestFrame(task) {
  frameTasks.add(task);
  if (frameScheduled) return;
  frameScheduled = true;
  /** @type {any} */ let raf = null;
  /** @type {any} */ let timer = null;
  const run = () => {
    if (raf !== null && typeof cancelAnimationFrame === "function") cancelAnimationFrame(raf);
    if (timer !== null) clearTimeout(timer);
    frameScheduled = false;
    const tasks = [...frameTasks];
    frameTasks.clear();
    for (const t of tasks) {
      try {
        t();
      } catch (err) {
        console.error("livestream: a frame task failed", err);
      }
    }
  };
  if (typeof requestAnimationFrame === "function") raf = requestAnimationFrame(run);
  timer = setTimeout(run, typeof requestAnimationFrame === "function" ? 250 : 16);
}

// ---------------------------------------------------------------------------------------------
// Endpoints, HTTP helpers and diagnosis
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Routes: how a page reaches the server — directly, through Jupyter's proxy, or relayed by the
// kernel through a widget's comm
// ---------------------------------------------------------------------------------------------

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
const PROBE_MS = { direct: 2000, proxy: 5000, relay: 0 };
/** How long a forced route's probe may take. */
const FORCED_PROBE_MS = 8000;
/** How long a GET through the relay may wait for the kernel (it answers only when idle). */
const RELAY_GET_MS = 300_000;

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
function pageOriginIsDefault() {
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

function randomId() {
  const c = /** @type {any} */ (globalThis).crypto;
  return typeof c?.randomUUID === "function" ? c.randomUUID() : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * An ArrayBuffer of exactly a received buffer's bytes (binary frames must start at offset 0:
 * their columns are viewed as typed arrays, aligned from the buffer's start).
 * @param {unknown} b @returns {ArrayBuffer | null}
 */
function ownBuffer(b) {
  if (b instanceof ArrayBuffer) return b;
  if (ArrayBuffer.isView(b)) {
    const { buffer, byteOffset, byteLength } = b;
    if (byteOffset === 0 && byteLength === buffer.byteLength && buffer instanceof ArrayBuffer) return buffer;
    return /** @type {ArrayBuffer} */ (buffer.slice(byteOffset, byteOffset + byteLength));
  }
  return null;
}

/**
 * A WebSocket look-alike whose frames travel through a widget's comm: the kernel hands them to
 * its livestream server (livestream/relay.py) and sends the server's frames back the same way.
 * The relay route, for pages that can reach neither the server nor a Jupyter proxy to it
 * (VS Code, Colab). Messages from the page reach the kernel only while it is idle.
 *
 * Messages (the custom-message content of the widget; `id` names one relay socket):
 * page → kernel `{ls: "open"|"frame"|"close", id, text?}` (a binary frame as the buffer);
 * kernel → page `{ls: "opened"|"frame"|"closed", id, text?, code?, reason?}`.
 */
class RelaySocket {
  /** @param {Carrier} carrier */
  constructor(carrier) {
    this.carrier = carrier;
    this.id = randomId();
    /** 0 connecting, 1 open, 3 closed: as WebSocket.readyState */
    this.readyState = 0;
    this.binaryType = "arraybuffer";
    /** Marks this socket as a relay: silence is a busy kernel, not a dead connection. */
    this.relay = true;
    /** @type {null | (() => void)} */ this.onopen = null;
    /** @type {null | ((event: {data: string | ArrayBuffer}) => void)} */ this.onmessage = null;
    /** @type {null | ((event: unknown) => void)} */ this.onerror = null;
    /** @type {null | ((event: {code: number, reason: string, wasClean: boolean}) => void)} */ this.onclose = null;
    this._onMessage = (/** @type {unknown} */ content, /** @type {unknown[] | undefined} */ buffers) => this._receive(content, buffers);
    carrier.on("msg:custom", this._onMessage);
    carrier.send({ ls: "open", id: this.id });
  }

  /** @param {string | ArrayBuffer} data */
  send(data) {
    if (this.readyState !== 1) throw new LivestreamError("the relay is not open", "closed");
    if (typeof data === "string") this.carrier.send({ ls: "frame", id: this.id, text: data });
    else this.carrier.send({ ls: "frame", id: this.id }, undefined, [data]);
  }

  /** @param {number} [code] @param {string} [reason] */
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    try {
      this.carrier.send({ ls: "close", id: this.id, code, reason });
    } catch { /* the widget's comm is gone: so is the kernel's end */ }
    this._closed(code, reason);
  }

  /** @param {unknown} content @param {unknown[] | undefined} buffers */
  _receive(content, buffers) {
    if (!isObject(content) || content.id !== this.id) return;
    if (content.ls === "opened" && this.readyState === 0) {
      this.readyState = 1;
      this.onopen?.();
    } else if (content.ls === "frame" && this.readyState === 1) {
      const data = typeof content.text === "string" ? content.text : ownBuffer(buffers?.[0]);
      if (data !== null) this.onmessage?.({ data });
    } else if (content.ls === "closed") {
      this._closed(Number(content.code) || 1006, String(content.reason ?? ""));
    }
  }

  /** @param {number} code @param {string} reason */
  _closed(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.carrier.off("msg:custom", this._onMessage);
    // Later, as a WebSocket's close event comes.
    setTimeout(() => this.onclose?.({ code, reason, wasClean: code === 1000 }), 0);
  }
}

/**
 * GET `path` of the server through the kernel (the relay route's HTTP): BokehJS, plot specs.
 * @param {Carrier} carrier @param {string} path  e.g. "/static/js/bokeh.min.js"
 * @returns {Promise<{status: number, type: string, body: ArrayBuffer}>}
 */
function relayGet(carrier, path) {
  const id = randomId();
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      carrier.off("msg:custom", onMessage);
    };
    const timer = setTimeout(() => {
      done();
      reject(new LivestreamError(`the kernel did not answer GET ${path.replace(/\?.*/, "")} within ${RELAY_GET_MS / 1000} s (is it busy?)`, "unreachable"));
    }, RELAY_GET_MS);
    const onMessage = (/** @type {unknown} */ content, /** @type {unknown[] | undefined} */ buffers) => {
      if (!isObject(content) || content.ls !== "response" || content.id !== id) return;
      done();
      resolve({ status: Number(content.status) || 0, type: String(content.type ?? ""), body: ownBuffer(buffers?.[0]) ?? new ArrayBuffer(0) });
    };
    carrier.on("msg:custom", onMessage);
    carrier.send({ ls: "get", id, path });
  });
}

// ---------------------------------------------------------------------------------------------
// Connection: one WebSocket per page per server and token
// ---------------------------------------------------------------------------------------------

/** @typedef {"connecting"|"open"|"reconnecting"|"closed"|"error"} ConnectionStatus */
/** @typedef {(status: ConnectionStatus, message: string) => void} StatusCallback */

/**
 * @typedef {object} SubscribeOptions
 * @property {number} [last]  how many of the newest rows to start with (default: the whole
 *   history window the server holds)
 * @property {string[]} [columns]  only these columns (default: all)
 * @property {"binary"|"json"} [format]  wire form of data frames (default "binary")
 * @property {(batch: Batch, sub: Subscription) => void} [onData]  new rows, at most once per
 *   animation frame, merged
 * @property {(msg: ResetMessage, sub: Subscription) => void} [onReset]  drop what you hold:
 *   rows were lost (fell out of history) or the stream restarted; the current window follows
 * @property {(state: StreamState, sub: Subscription) => void} [onState]
 * @property {(info: SubscribedInfo, sub: Subscription) => void} [onSubscribed]
 * @property {(err: LivestreamError, sub: Subscription) => void} [onError]
 */

/**
 * @typedef {object} SubscriptionStats
 * @property {number} rows  rows delivered to this subscriber
 * @property {number} rate  rows per second over the last few seconds
 * @property {number | null} lastOffset  offset of the newest row delivered
 * @property {number | null} lag  ms: now − the newest time value when the stream has a time
 *   column, else now − the last frame
 * @property {number | null} lastFrameAt  `Date.now()` of the last delivery
 */

const REGISTRY_KEY = Symbol.for("livestream.connections.v1");
// On globalThis, not in module scope: anywidget may evaluate this module more than once per
// page (one copy per widget class), and every copy must share the same sockets.
/** @type {Map<string, Connection>} */
const registry = /** @type {any} */ (globalThis)[REGISTRY_KEY] ??= new Map();

const RATE_WINDOW_MS = 5000;
const BACKOFF_START_MS = 250;
const BACKOFF_MAX_MS = 5000;
const REQUEST_TIMEOUT_MS = 10000;
const HEARTBEAT_MS = 20000;
const INITIAL_CREDIT = 2;

/**
 * Connect to a livestream server, sharing the page's one socket per server, token and route.
 * Each call takes a reference; call `conn.release()` when done (the socket closes a moment
 * after the last reference goes).
 *
 * Routes (`route`, default "auto": the first of these that works): "direct" to `url`;
 * "proxy", the same server through jupyter-server-proxy under the Jupyter base URL of the page
 * (JupyterHub, remote or https Jupyter); "relay", frames carried by a widget's comm through
 * the kernel (VS Code, Colab), which needs a `carrier`.
 * @param {{url?: string, token?: string, route?: RouteChoice, carrier?: Carrier | null}} [options]
 *   `url`: http(s) base or ws(s) URL of the server (default: the server this module came
 *   from); `token`: the server's token (default: a `token=` in `url`); `carrier`: the widget
 *   model whose comm may carry the relay and ask the kernel to admit the page's origin (give
 *   it back with `conn.removeCarrier(model)`)
 * @returns {Connection}
 */
export function connect(options = {}) {
  const endpoints = resolveEndpoints(options);
  const route = options.route || "auto";
  if (route !== "auto" && !ROUTES.includes(route)) {
    throw new LivestreamError(`route must be one of auto, ${ROUTES.join(", ")}; got ${JSON.stringify(route)}`, "bad_route");
  }
  const key = route === "auto" ? endpoints.key : `${endpoints.key}#${route}`;
  let conn = registry.get(key);
  if (!conn || conn.status === "closed") {
    conn = new Connection({ ...endpoints, key }, { route, carrier: options.carrier });
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
   * @param {Endpoints} endpoints
   * @param {{route?: RouteChoice, carrier?: Carrier | null}} [options]  as for {@link connect}
   */
  constructor(endpoints, { route = "auto", carrier = null } = {}) {
    /** @readonly the server as given (the direct route) */ this.endpoints = endpoints;
    /** @readonly */ this.token = endpoints.token;
    /** @readonly */ this.key = endpoints.key;
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
    /** @type {Map<number, {resolve: (v: any) => void, reject: (e: LivestreamError) => void, timer: any, expect: string}>} */
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
   * Append rows to a stream (needs the `publish` role). Columns travel as JSON.
   * @param {string} stream @param {Record<string, ArrayLike<unknown>>} columns
   * @returns {Promise<{offset?: number} & Record<string, unknown>>}
   */
  publish(stream, columns) {
    /** @type {Record<string, unknown[]>} */
    const json = {};
    for (const [k, v] of Object.entries(columns)) json[k] = Array.from(v, (x) => (typeof x === "number" && Number.isNaN(x) ? null : x));
    return this.request({ type: "publish", stream, columns: json }, { expect: "ack" });
  }

  /**
   * Send a request and wait for the reply carrying the same `id`. Sent when the socket is
   * open (queued until then); times out after `timeout` ms.
   * @param {{type: string} & Record<string, unknown>} msg
   * @param {{timeout?: number, expect?: string}} [options]
   * @returns {Promise<Record<string, any>>}
   */
  request(msg, { timeout = REQUEST_TIMEOUT_MS, expect = "" } = {}) {
    if (this._closing) return Promise.reject(new LivestreamError("this connection is closed; call connect() again", "closed"));
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._requests.delete(id);
        const pending = this.status === "open" ? "the server did not answer" : `not connected (${this.message || this.status})`;
        reject(new LivestreamError(`${msg.type} timed out after ${timeout / 1000} s: ${pending}`, "timeout"));
      }, timeout);
      this._requests.set(id, { resolve, reject, timer, expect });
      this._send({ ...msg, id }, true);
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
    if (first || (this._failures > 0 && this._failures % 3 === 0)) {
      // Before the first socket and after repeated failures: find a route that answers, and
      // ask plain HTTP what is wrong when none does.
      this._setStatus(first ? "connecting" : "reconnecting", first ? `Connecting to ${this.endpoints.httpBase}…` : this.message);
      const { route, diagnosis } = await this._findRoute();
      if (this._closing) return;
      this.route = route;
      for (const resolve of this._routeWaiters.splice(0)) resolve(route);
      if (diagnosis.kind === "rejected") {
        this._giveUp(diagnosis.message);
        return;
      }
      this._diagnosis = diagnosis;
    }
    this._connectSocket();
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

  /** @param {string} message */
  _giveUp(message) {
    // A rejected token will not start working by itself: stop retrying, say why.
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._failRequests(new LivestreamError(message, "token_rejected"));
    for (const ch of this._channels.values()) ch.fail(new LivestreamError(message, "token_rejected"));
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
          this._scheduleRetry(/** @type {CloseEvent} */ ({ code: 1001, reason: "no widget on this page carries the relay" }), false);
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
      this._everOpened = true;
      this._failures = 0;
      this._lastMessageAt = Date.now();
      const how = this.route?.name === "relay" ? " through the kernel (relay)" : this.route?.name === "proxy" ? " through Jupyter's proxy" : "";
      this._setStatus("open", `Connected to ${this.route?.name === "relay" ? this.endpoints.httpBase : this.httpBase}${how}`);
      const outbox = this._outbox;
      this._outbox = [];
      for (const msg of outbox) this._send(msg, true);
      for (const ch of this._channels.values()) ch.onSocketOpen();
      clearInterval(this._heartbeat);
      this._heartbeat = setInterval(() => this._beat(/** @type {WebSocket} */ (ws)), HEARTBEAT_MS);
    };
    ws.onmessage = (event) => {
      if (generation !== this._socketGeneration) return;
      this._lastMessageAt = Date.now();
      this._dispatch(event.data);
    };
    ws.onerror = () => { /* the close event that follows carries what we can know */ };
    ws.onclose = (event) => {
      if (generation !== this._socketGeneration || this._closing) return;
      clearInterval(this._heartbeat);
      this._ws = null;
      for (const ch of this._channels.values()) ch.onSocketClosed();
      for (const [id, req] of this._requests) {
        // Sent on the lost socket: their answers will never come.
        if (!this._outbox.some((m) => m.id === id)) {
          clearTimeout(req.timer);
          req.reject(new LivestreamError(`the connection was lost before the server answered (close code ${event.code})`, "closed"));
          this._requests.delete(id);
        }
      }
      if (opened) {
        this._failures = 0;
      } else {
        this._failures++;
      }
      if (event.code === 1008) {
        // Policy violation after the upgrade, e.g. the token was revoked: check before retrying.
        this._failures = Math.max(this._failures, 3);
      }
      this._scheduleRetry(event, opened);
    };
  }

  /** @param {CloseEvent} event @param {boolean} wasOpen */
  _scheduleRetry(event, wasOpen) {
    const attempt = Math.max(1, this._failures);
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** (attempt - 1));
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    const seconds = (delay / 1000).toFixed(1);
    let message;
    let status = /** @type {ConnectionStatus} */ ("reconnecting");
    if (wasOpen) {
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

/** @param {CloseEvent} event */
function closeReason(event) {
  const known = {
    1000: "closed normally", 1001: "server going away", 1006: "no answer or connection dropped",
    1008: "policy violation", 1009: "message too big", 1011: "server error", 4001: "too many bad messages",
  };
  const text = /** @type {Record<number, string>} */ (known)[event.code] ?? "closed";
  return event.reason ? `${text}: ${event.reason}` : `${text}, code ${event.code}`;
}

/**
 * The page side of one stream on one connection: a single server subscription shared by every
 * local {@link Subscription}. It resumes by offset, grants credit, and delivers each local
 * subscriber the rows it has not seen yet, merged, once per animation frame.
 */
class Channel {
  /** @param {Connection} conn @param {string} stream */
  constructor(conn, stream) {
    this.conn = conn;
    this.stream = stream;
    /** @type {Set<Subscription>} */
    this.subs = new Set();
    /** @type {"idle"|"pending"|"active"} */
    this.wire = "idle";
    /** Whether data frames now belong to the current server subscription (and earn credit). */
    this.ready = false;
    /** @type {number | null} id of the subscribe request in flight or last answered */
    this.requestId = null;
    /** @type {string | null} */ this.epoch = null;
    /** @type {Record<string, string> | null} */ this.schema = null;
    /** @type {SubscribedInfo | null} */ this.info = null;
    /** @type {StreamState | null} */ this.state = null;
    /** @type {number | null} the next row offset expected from the server */
    this.wireNext = null;
    /** @type {string[] | null} columns of the current server subscription (null: all) */
    this.wireColumns = null;
    /** @type {Array<{kind: "data", batch: Batch, request: number | null, generation: number} | {kind: "reset", msg: ResetMessage} | {kind: "subscribed", msg: SubscribedInfo, request: number}>} */
    this.queue = [];
    this.syncQueued = false;
    /** @type {any} */ this.retryTimer = null;
    this.flush = () => this._flush();
  }

  /** @param {Subscription} sub */
  add(sub) {
    this.subs.add(sub);
    this.scheduleSync();
  }

  /** @param {Subscription} sub */
  remove(sub) {
    this.subs.delete(sub);
    if (this.subs.size === 0) {
      if (this.wire !== "idle") this.conn._send({ type: "unsubscribe", stream: this.stream });
      this.dispose();
      if (this.conn._channels.get(this.stream) === this) this.conn._channels.delete(this.stream);
    }
  }

  dispose() {
    clearTimeout(this.retryTimer);
    this.wire = "idle";
    this.ready = false;
    this.queue = [];
  }

  scheduleSync() {
    if (this.syncQueued) return;
    this.syncQueued = true;
    // Subscribers created in the same task (a dashboard's table, value, controls...) share
    // one subscribe message.
    queueMicrotask(() => {
      this.syncQueued = false;
      this.sync();
    });
  }

  /** Bring the server subscription in line with the local subscribers. */
  sync() {
    if (this.subs.size === 0 || this.conn.status !== "open" || this.wire === "pending") return;
    const unjoined = [...this.subs].filter((s) => s._request === null);
    const columns = this._wantedColumns();
    const covered = this.wireColumns === null || (columns !== null && columns.every((c) => this.wireColumns?.includes(c)));
    if (this.wire === "active" && unjoined.length === 0 && covered) return;

    /** @type {{type: string} & Record<string, unknown>} */
    const msg = { type: "subscribe", stream: this.stream, credit: INITIAL_CREDIT, format: this._format() };
    if (columns !== null) msg.columns = columns;
    /** @type {number | undefined} how many rows before wireNext the new subscribers want */
    let back;
    if (this.wireNext !== null && this.epoch !== null) {
      // Resume: from where the page is, or further back for subscribers that want history.
      let since = this.wireNext;
      for (const s of unjoined) since = Math.min(since, s.options.last === undefined ? 0 : Math.max(0, this.wireNext - s.options.last));
      back = this.wireNext - since;
      msg.since = since;
      msg.epoch = this.epoch;
    } else {
      const lasts = [...this.subs].map((s) => s.options.last);
      if (!lasts.includes(undefined)) {
        back = Math.max(...lasts.map((n) => /** @type {number} */ (n)));
        msg.last = back;
      }
    }
    if (this.wire === "active") this.conn._send({ type: "unsubscribe", stream: this.stream });
    const id = this.conn._nextId++;
    msg.id = id;
    if (!this.conn._send(msg)) return;
    this.requestId = id;
    this.wire = "pending";
    this.ready = false;
    this.wireColumns = columns;
    for (const s of unjoined) {
      s._request = id;
      // Everything a new subscriber will see from the server's first frame is history: trim
      // it to the `last` rows it asked for.
      s._trim = s.options.last !== undefined && (back === undefined || s.options.last < back) ? s.options.last : null;
    }
  }

  /** @returns {string[] | null} the union of the subscribers' columns, or null for all */
  _wantedColumns() {
    /** @type {Set<string>} */
    const wanted = new Set();
    for (const s of this.subs) {
      if (!s.options.columns) return null;
      for (const c of s.options.columns) wanted.add(c);
    }
    return wanted.size ? [...wanted] : null;
  }

  _format() {
    for (const s of this.subs) if (s.options.format === "json") return "json";
    return "binary";
  }

  onSocketOpen() {
    this.wire = "idle";
    this.ready = false;
    for (const s of this.subs) if (s._request !== null && s.nextOffset === null) s._request = null; // never activated: join again
    this.sync();
  }

  onSocketClosed() {
    this.wire = "idle";
    this.ready = false;
    clearTimeout(this.retryTimer);
  }

  /** @param {Batch} batch @param {number} generation */
  onData(batch, generation) {
    const end = batch.offset + batch.rows;
    this.wireNext = this.wireNext === null ? end : Math.max(this.wireNext, end);
    // Only frames of the current server subscription earn it credit back.
    this.queue.push({ kind: "data", batch, request: this.ready ? this.requestId : null, generation });
    requestFrame(this.flush);
  }

  /** @param {SubscribedInfo & {id?: number}} msg */
  onSubscribed(msg) {
    if (msg.id !== undefined && msg.id !== this.requestId) return; // answer to a superseded request
    const request = this.requestId ?? -1;
    this.wire = "active";
    this.ready = true;
    if (this.epoch !== null && msg.epoch !== this.epoch) this.wireNext = null; // a restarted stream
    this.epoch = msg.epoch;
    this.schema = msg.schema ?? {};
    this.info = msg;
    this.state = msg.state ?? this.state;
    if (this.wireNext === null) this.wireNext = msg.offset;
    this.queue.push({ kind: "subscribed", msg, request });
    requestFrame(this.flush);
    this.scheduleSync(); // subscribers that arrived while this request was in flight
  }

  /** @param {ResetMessage} msg */
  onReset(msg) {
    if (this.epoch !== msg.epoch) this.wireNext = null;
    this.epoch = msg.epoch;
    if (this.wire === "pending") {
      // Some servers may answer an out-of-history `since` with `reset` alone.
      this.wire = "active";
      this.ready = true;
    }
    this.wireNext = this.wireNext === null ? msg.offset : Math.max(msg.offset, this.wireNext);
    this.queue.push({ kind: "reset", msg });
    requestFrame(this.flush);
  }

  /** @param {StreamState} state */
  onState(state) {
    if (!isObject(state)) return;
    this.state = state;
    if (this.info) this.info = { ...this.info, state };
    for (const s of this.subs) if (s.nextOffset !== null || s._info) s._emit("onState", state);
  }

  /** @param {LivestreamError} err */
  onSubscribeError(err) {
    this.wire = "idle";
    this.ready = false;
    const request = this.requestId;
    for (const s of this.subs) {
      if (s._request === request) {
        s._request = null;
        s._emit("onError", err);
      }
    }
    if (err.code === "unknown_stream") {
      // The producer may not have started yet: look again in a while.
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.sync(), 3000);
    }
  }

  /** @param {LivestreamError} err */
  fail(err) {
    for (const s of this.subs) s._emit("onError", err);
  }

  _flush() {
    const events = this.queue;
    this.queue = [];
    if (events.length === 0) return;
    /** @type {Map<Subscription, Batch[]>} */
    const pending = new Map();
    let credit = 0;
    const deliver = (/** @type {Subscription} */ s) => {
      const parts = pending.get(s);
      if (parts && parts.length) s._deliver(mergeBatches(parts.splice(0)));
    };
    for (const ev of events) {
      if (ev.kind === "subscribed") {
        // A `state` that came after this answer but before this frame went only to the
        // subscribers already started (onState): give the others the newest state, not
        // the one the answer carried, or a producer's error could stay unseen.
        const msg = this.state ? { ...ev.msg, state: this.state } : ev.msg;
        for (const s of this.subs) {
          if (s._request === ev.request && s.nextOffset === null) {
            s.nextOffset = msg.offset;
            s.epoch = msg.epoch;
            s._info = msg;
            s._emit("onSubscribed", msg);
            if (msg.state) s._emit("onState", msg.state);
          } else if (s.nextOffset !== null) {
            if (s.epoch !== msg.epoch) {
              // The stream was recreated (server restart): what this subscriber holds is void.
              deliver(s);
              s.nextOffset = msg.offset;
              s.epoch = msg.epoch;
              s._emit("onReset", { type: "reset", stream: this.stream, epoch: msg.epoch, offset: msg.offset, reason: "restart" });
            }
            const changed = JSON.stringify([s._info?.schema, s._info?.controls]) !== JSON.stringify([msg.schema, msg.controls]);
            s._info = msg;
            if (changed) s._emit("onSubscribed", msg);
            if (msg.state) s._emit("onState", msg.state);
          }
        }
      } else if (ev.kind === "reset") {
        const { msg } = ev;
        for (const s of this.subs) {
          if (s.nextOffset === null) {
            if (s._request === this.requestId) {
              // Joined a request the server answered with reset alone: start at the window.
              s.nextOffset = msg.offset;
              s.epoch = msg.epoch;
            }
            continue;
          }
          if (s.epoch !== msg.epoch || s.nextOffset < msg.offset) {
            deliver(s);
            s.nextOffset = msg.offset;
            s.epoch = msg.epoch;
            s._trim = null;
            s._emit("onReset", msg);
          }
          // Otherwise the subscriber has every row up to the new window already: no gap.
        }
      } else {
        const { batch } = ev;
        if (ev.request !== null && ev.request === this.requestId && ev.generation === this.conn._socketGeneration) credit++;
        const end = batch.offset + batch.rows;
        for (const s of this.subs) {
          if (s.nextOffset === null || end <= s.nextOffset) continue;
          if (batch.offset > s.nextOffset) {
            console.warn(`livestream: rows ${s.nextOffset}..${batch.offset - 1} of "${this.stream}" never arrived`);
            deliver(s);
          }
          let part = sliceBatch(batch, Math.max(0, s.nextOffset - batch.offset));
          if (s._trim !== null) {
            part = sliceBatch(part, part.rows - s._trim);
            s._trim = null;
          }
          s.nextOffset = end;
          if (part.rows === 0) continue;
          let parts = pending.get(s);
          if (!parts) pending.set(s, (parts = []));
          const prev = parts[parts.length - 1];
          if (prev && prev.offset + prev.rows !== part.offset) deliver(s);
          parts.push(part);
        }
      }
    }
    for (const s of pending.keys()) deliver(s);
    if (credit > 0 && this.wire === "active" && this.subs.size > 0) {
      this.conn._send({ type: "credit", stream: this.stream, frames: credit });
    }
  }
}

/** One subscriber's view of a stream. Create it with {@link Connection.subscribe}. */
export class Subscription {
  /** @param {Channel} channel @param {SubscribeOptions} options */
  constructor(channel, options) {
    /** @private */ this._channel = channel;
    /** @readonly */ this.stream = channel.stream;
    /** @readonly */ this.options = { ...options };
    /** @type {number | null} offset of the next row this subscriber wants (null: not started) */
    this.nextOffset = null;
    /** @type {string | null} */ this.epoch = null;
    /** @type {number | null} subscribe request this subscriber joined */
    this._request = null;
    /** @type {number | null} keep only this many rows of the first frame (history) */
    this._trim = null;
    /** @type {SubscribedInfo | null} */ this._info = null;
    this._closed = false;
    this._rows = 0;
    /** @type {number | null} */ this._lastOffset = null;
    /** @type {number | null} */ this._lastFrameAt = null;
    /** @type {number | null} */ this._lastTime = null;
    /** @type {Array<[number, number]>} (time, rows) of recent deliveries, for the rate */
    this._recent = [];
    /** @type {number | null} */ this._firstAt = null;
  }

  /** The `subscribed` reply (schema, controls, state, epoch), once it arrived. */
  get info() {
    return this._info;
  }
  /** @returns {Record<string, string> | null} */
  get schema() {
    return this._info?.schema ?? null;
  }
  /** @returns {ControlsSpec | null} */
  get controls() {
    return this._info?.controls ?? null;
  }
  /** @returns {StreamState | null} the latest broadcast state */
  get state() {
    return this._channel.state;
  }
  /** The connection this subscription runs on. */
  get connection() {
    return this._channel.conn;
  }

  /** @returns {SubscriptionStats} */
  stats() {
    const now = Date.now();
    while (this._recent.length && now - this._recent[0][0] > RATE_WINDOW_MS) this._recent.shift();
    let rate = 0;
    if (this._recent.length) {
      const rows = this._recent.reduce((n, [, r]) => n + r, 0);
      // Over the whole window once it is full; over the time since the first delivery before.
      const span = Math.max(1000, Math.min(RATE_WINDOW_MS, now - (this._firstAt ?? now)));
      rate = (rows * 1000) / span;
    }
    const lag = this._lastTime !== null ? now - this._lastTime : this._lastFrameAt !== null ? now - this._lastFrameAt : null;
    return { rows: this._rows, rate, lastOffset: this._lastOffset, lag, lastFrameAt: this._lastFrameAt };
  }

  /** Control this subscription's stream (see {@link Connection.control}). */
  /** @param {string} action @param {Record<string, unknown>} [params] */
  control(action, params = {}) {
    return this._channel.conn.control(this.stream, action, params);
  }

  /** Stop receiving; the server subscription ends with the page's last subscriber. */
  unsubscribe() {
    if (this._closed) return;
    this._closed = true;
    this._channel.remove(this);
  }

  /** @param {Batch} batch */
  _deliver(batch) {
    if (this._closed) return;
    const wanted = this.options.columns;
    if (wanted) {
      /** @type {Record<string, Column>} */
      const columns = {};
      for (const c of wanted) if (c in batch.columns) columns[c] = batch.columns[c];
      batch = { ...batch, columns };
    }
    const now = Date.now();
    this._rows += batch.rows;
    this._lastOffset = batch.offset + batch.rows - 1;
    this._lastFrameAt = now;
    this._firstAt ??= now;
    this._recent.push([now, batch.rows]);
    for (const name of TIME_COLUMNS) {
      const col = batch.columns[name];
      if (col && !Array.isArray(col) && col.length && (col instanceof Float64Array)) {
        const t = col[col.length - 1];
        // Only a plausible epoch time (after 2001) counts as a clock for the lag.
        this._lastTime = t > 1e12 ? t : null;
        break;
      }
    }
    this._emit("onData", batch);
  }

  /**
   * @template {keyof SubscribeOptions & `on${string}`} K
   * @param {K} name @param {any} arg
   */
  _emit(name, arg) {
    if (this._closed) return;
    const cb = /** @type {((arg: any, sub: Subscription) => void) | undefined} */ (this.options[name]);
    if (!cb) {
      if (name === "onError") console.warn(`livestream: ${this.stream}: ${arg?.message ?? arg}`);
      return;
    }
    try {
      cb(arg, this);
    } catch (err) {
      console.error(`livestream: ${name} callback for "${this.stream}" failed`, err);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// BokehJS
// ---------------------------------------------------------------------------------------------

const BOKEH_KEY = Symbol.for("livestream.bokeh.v1");
/** @type {Map<string, Promise<void>>} script URL → load, shared by every copy of this module */
const scriptLoads = /** @type {any} */ (globalThis)[BOKEH_KEY] ??= new Map();

/** @param {string} src @returns {Promise<void>} */
function loadScript(src) {
  let p = scriptLoads.get(src);
  if (!p) {
    p = new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.async = false;
      s.crossOrigin = "anonymous";
      s.onload = () => resolve();
      s.onerror = () => {
        scriptLoads.delete(src);
        reject(new LivestreamError(`could not load ${src}; is the livestream server running, and does it serve /static/js?`, "unreachable"));
      };
      document.head.appendChild(s);
    });
    scriptLoads.set(src, p);
  }
  return p;
}

/**
 * Load BokehJS from the livestream server once per page (a shared promise), unless the page
 * already has the wanted version, and return that version's `Bokeh` object.
 * @param {string} httpBase  the server's HTTP base, e.g. "http://127.0.0.1:8765"
 * @param {{version?: string, gl?: boolean, widgets?: boolean, tables?: boolean, load?: (path: string) => Promise<void>}} [options]
 *   `version`: the version the plot was built with (json_item's `version`); `gl`: also load
 *   bokeh-gl for WebGL output; `widgets`, `tables`: the matching bundles; `load`: how to load
 *   a script of the server by its path (default: a script tag at `httpBase` + path; a
 *   connection's `loadScript` follows its route)
 * @returns {Promise<any>}
 */
export async function ensureBokeh(httpBase, { version, gl = false, widgets = false, tables = false, load } = {}) {
  const loadPath = load ?? ((/** @type {string} */ path) => loadScript(`${httpBase}${path}`));
  const w = /** @type {any} */ (globalThis);
  const pick = () => {
    const B = w.Bokeh;
    if (!B) return null;
    if (!version || B.version === version) return B;
    return B[version] ?? null;
  };
  if (!pick()) await loadPath("/static/js/bokeh.min.js");
  const bokeh = pick();
  if (!bokeh) {
    throw new LivestreamError(`BokehJS ${version ?? ""} did not register itself after loading ${httpBase}/static/js/bokeh.min.js`, "bokeh_missing");
  }
  const extras = [];
  if (gl) extras.push("bokeh-gl");
  if (widgets) extras.push("bokeh-widgets");
  if (tables) extras.push("bokeh-tables");
  for (const name of extras) await loadPath(`/static/js/${name}.min.js`);
  return bokeh;
}

/**
 * @typedef {object} PlotSpec  What `GET /api/streams/<name>/plot` returns (livestream/plots.py).
 * @property {{doc: any, root_id: string, target_id: string | null, version?: string}} item
 *   `bokeh.embed.json_item` of a figure or a layout
 * @property {string} source_id  the ColumnDataSource the stream feeds (one per plot)
 * @property {Record<string, string>} columns  stream column → source column; for `ohlc`, the
 *   two stream columns read: `{[x]: "time", [price]: "close"}`
 * @property {number} rollover  rows (for `ohlc`: bars) kept in the browser
 * @property {string | null} [x]  null for a figure of the user's own (`kind` "custom")
 * @property {string[]} [y]
 * @property {string} [kind]  line, scatter, step, area, bar, ohlc, or custom
 * @property {number} [interval]  `ohlc`: x units (ms on a time axis) per bar
 * @property {{up: string, down: string}} [colors]  `ohlc`: candle colours
 */

/**
 * @typedef {{time: number, open: number, high: number, low: number, close: number}} OhlcBar
 *   One candlestick: `time` is the start of its interval.
 */

/**
 * Fold ticks into OHLC bars of `interval` x units (milliseconds on a time axis). A bar
 * covers `[k * interval, (k + 1) * interval)`; its open is its first tick, close its last,
 * high and low the extremes. `bars` (oldest first, as `source` holds them) is updated in
 * place: a tick in the newest bar's interval updates it, a later one starts a new bar, a
 * late tick updates high and low of the older bar it belongs to (dropped when that bar is
 * no longer held). Ticks whose time or price is not finite are skipped.
 * @param {OhlcBar[]} bars  the bars so far, oldest first (changed in place)
 * @param {ArrayLike<number>} times @param {ArrayLike<number>} prices
 * @param {number} interval
 * @returns {{changed: Set<number>, added: number}} `changed`: indices of bars that existed
 *   before the call and changed; `added`: how many bars were appended at the end
 */
export function foldTicks(bars, times, prices, interval) {
  const before = bars.length;
  /** @type {Set<number>} */
  const changed = new Set();
  for (let i = 0; i < times.length; i++) {
    const t = Number(times[i]);
    const p = Number(prices[i]);
    if (!Number.isFinite(t) || !Number.isFinite(p)) continue;
    const start = Math.floor(t / interval) * interval;
    const last = bars.length - 1;
    if (last < 0 || start > bars[last].time) {
      bars.push({ time: start, open: p, high: p, low: p, close: p });
      continue;
    }
    let at = last;
    if (start < bars[last].time) {
      // A late tick: find its bar (binary search: bars are in time order).
      let lo = 0;
      let hi = last - 1;
      at = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        const bt = bars[mid].time;
        if (bt === start) {
          at = mid;
          break;
        }
        if (bt < start) lo = mid + 1;
        else hi = mid - 1;
      }
      if (at < 0) continue; // older than the bars held, or in a gap between them
    }
    const bar = bars[at];
    if (p > bar.high) bar.high = p;
    if (p < bar.low) bar.low = p;
    if (at === last) bar.close = p;
    if (at < before) changed.add(at);
  }
  return { changed, added: bars.length - before };
}

/**
 * @typedef {object} PlotHandle
 * @property {(batch: Batch) => void} append  queue rows; streamed into the source once per frame
 * @property {() => void} clear  empty the source (after a reset)
 * @property {() => void} dispose  close the views and drop the document
 * @property {any} source  the BokehJS ColumnDataSource
 * @property {any} document  the BokehJS Document
 * @property {any} views  the ViewManager
 * @property {PlotSpec} spec
 */

const PLOT_COLORS = {
  light: { text: "#57606a", line: "#d0d7de", surface: "#ffffff" },
  dark: { text: "#9ea7b3", line: "#3d444d", surface: "#151b23" },
};

/**
 * Recolour a plot's text and rules for a light or dark page (the figure itself is transparent).
 * @param {any} doc @param {"light"|"dark"} theme
 */
export function applyPlotTheme(doc, theme) {
  const c = PLOT_COLORS[theme];
  for (const m of doc.all_models) {
    const props = m.properties ?? {};
    /** @type {Record<string, unknown>} */
    const attrs = {};
    const setIf = (/** @type {string} */ name, /** @type {unknown} */ value) => {
      if (name in props && m[name] !== null) attrs[name] = value;
    };
    setIf("major_label_text_color", c.text);
    setIf("axis_label_text_color", c.text);
    setIf("axis_line_color", c.line);
    setIf("major_tick_line_color", c.line);
    setIf("grid_line_color", c.line);
    setIf("label_text_color", c.text);
    if (m.type === "Title") setIf("text_color", c.text);
    if (m.type === "Legend") {
      setIf("background_fill_color", c.surface);
      setIf("inactive_fill_color", c.surface);
    }
    if (Object.keys(attrs).length) m.setv(attrs);
  }
}

/** @param {HTMLElement} el @returns {"light"|"dark"} */
function pageTheme(el) {
  const explicit = el.closest("[data-theme]")?.getAttribute("data-theme");
  if (explicit === "dark" || explicit === "light") return explicit;
  if (document.body?.dataset.jpThemeLight === "false") return "dark"; // JupyterLab dark themes
  return typeof matchMedia === "function" && matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

/**
 * Embed a plot built by livestream/plots.py into `el` and return a handle that streams batches
 * into its ColumnDataSource (`source.stream(columns, rollover)`, at most once per animation
 * frame). `el.dataset.sourceId` is set to the source's id.
 *
 * The spec's `kind` decides how rows become source rows: most kinds copy the mapped columns
 * (`spec.columns`, stream → source; `__offset__` is made from each batch's offset); `ohlc`
 * folds ticks into candlesticks (see {@link foldTicks}): the newest bar is patched in place
 * (`source.patch`) while its ticks arrive, and new bars are streamed with `rollover`;
 * `custom` (a figure or layout of the user's own) keeps the figure's own look. BokehJS is
 * loaded from the server first, with bokeh-gl when the item draws with WebGL.
 * @param {HTMLElement} el
 * @param {PlotSpec} spec
 * @param {{httpBase?: string, loadScript?: (path: string) => Promise<void>, theme?: "light"|"dark"|"auto", autoHide?: boolean, htmlLegend?: boolean}} [options]
 *   `httpBase`: where to load BokehJS from when the page lacks it (default: this module's
 *   server), or `loadScript`: how to load it by path (a connection's, which follows its
 *   route); `autoHide`: when the first rows arrive, hide y columns whose scale is over 10×
 *   off the first one's (they stay in the legend: click to show); `htmlLegend`: replace the
 *   figure's legend with one above the plot, in the page's style (default true); `theme`:
 *   recolour axes and text for a light or dark page (default "auto"; a custom figure is
 *   only recoloured when a theme is named)
 * @returns {Promise<PlotHandle>}
 */
export async function embedPlot(el, spec, { httpBase = defaultHttpBase(), loadScript: load, theme = "auto", autoHide = false, htmlLegend = true } = {}) {
  const gl = usesWebgl(spec);
  const bokeh = await ensureBokeh(httpBase, { version: spec.item.version, gl, load });
  const custom = spec.kind === "custom";
  const ohlc = spec.kind === "ohlc";
  const interval = Number(spec.interval ?? 1000);
  if (ohlc && !(interval > 0)) throw new LivestreamError(`an ohlc plot needs a positive interval, got ${spec.interval}`, "bad_plot");
  el.dataset.sourceId = spec.source_id;
  el.dataset.kind = spec.kind ?? "";
  el.classList.add("ls-plot-target");
  const legendEl = h("div", { class: "ls-legend", role: "group", "aria-label": "Series", hidden: true });
  const target = h("div", { class: "ls-plot-root" });
  el.replaceChildren(legendEl, target);
  const views = await bokeh.embed.embed_item(spec.item, target);
  const document_ = views.roots[0]?.model.document;
  const source = document_?.get_model_by_id(spec.source_id);
  if (!source) {
    views.clear();
    forgetDocument(bokeh, document_);
    throw new LivestreamError(`the plot has no ColumnDataSource with id ${spec.source_id}`, "bad_plot");
  }
  const colorScheme = typeof matchMedia === "function" && !(custom && theme === "auto") ? matchMedia("(prefers-color-scheme: dark)") : null;
  const restyle = () => applyPlotTheme(document_, theme === "auto" ? pageTheme(el) : theme);
  if (!custom || theme !== "auto") restyle();
  colorScheme?.addEventListener?.("change", restyle);
  // Fewer x ticks on narrow screens, so time labels never overlap (our own figures only).
  // At least 3: with the tickers of plots.py (steps at most 2x apart) a window then always
  // holds two ticks or more; a lone tick would get a year-only label from Bokeh.
  const figure = custom ? null : views.roots[0]?.model;
  const fitTicks = () => {
    const n = Math.max(3, Math.min(8, Math.floor(el.clientWidth / 110)));
    for (const axis of figure?.below ?? []) {
      if (axis?.ticker && "desired_num_ticks" in (axis.ticker.properties ?? {}) && axis.ticker.desired_num_ticks !== n) {
        axis.ticker.desired_num_ticks = n;
      }
    }
  };
  fitTicks();
  const resizes = figure && typeof ResizeObserver === "function" ? new ResizeObserver(() => fitTicks()) : null;
  resizes?.observe(el);
  const several = !custom && !ohlc && (spec.y?.length ?? 0) > 1;
  let hidePending = autoHide && several;
  const legend = htmlLegend && several ? buildLegend(legendEl, document_, source, spec) : null;
  for (const legendView of visibleLegends(views)) paintSwatchesOnRebuild(legendView);

  const mapping = Object.entries(spec.columns);
  const colors = spec.colors ?? { up: "#16a34a", down: "#dc2626" };
  const xColumn = spec.x ?? OFFSET_COLUMN;
  const priceColumn = spec.y?.[0] ?? "price";
  /** @type {OhlcBar[]} the bars the source holds, oldest first (ohlc only) */
  let bars = [];
  /** @type {Batch[]} */
  let queued = [];
  let disposed = false;
  /** rows the source holds (at most `spec.rollover`), which set how often it is redrawn */
  let held = 0;
  let lastFlush = -Infinity;
  /** @type {ReturnType<typeof setTimeout> | null} */
  let paceTimer = null;

  /** @param {Batch} batch @param {string} name @returns {ArrayLike<number> | null} */
  const numbers = (batch, name) => {
    if (name === OFFSET_COLUMN) {
      const offsets = new Float64Array(batch.rows);
      for (let i = 0; i < batch.rows; i++) offsets[i] = batch.offset + i;
      return offsets;
    }
    const col = batch.columns[name];
    return col === undefined ? null : /** @type {ArrayLike<number>} */ (col);
  };
  /** @param {Batch} batch */
  const streamBars = (batch) => {
    const times = numbers(batch, xColumn);
    const prices = numbers(batch, priceColumn);
    if (!times || !prices) {
      console.warn(`livestream: the ohlc plot needs columns "${xColumn}" and "${priceColumn}"; the data of "${batch.stream}" lacks one`);
      return;
    }
    const held = bars.length;
    const { changed, added } = foldTicks(bars, times, prices, interval);
    const color = (/** @type {OhlcBar} */ b) => (b.close >= b.open ? colors.up : colors.down);
    if (changed.size) {
      /** @type {Record<string, Array<[number, unknown]>>} */
      const patches = { open: [], high: [], low: [], close: [], color: [] };
      for (const i of changed) {
        const b = bars[i];
        patches.open.push([i, b.open]);
        patches.high.push([i, b.high]);
        patches.low.push([i, b.low]);
        patches.close.push([i, b.close]);
        patches.color.push([i, color(b)]);
      }
      source.patch(patches);
    }
    if (added) {
      const fresh = bars.slice(held);
      source.stream({
        time: Float64Array.from(fresh, (b) => b.time),
        open: Float64Array.from(fresh, (b) => b.open),
        high: Float64Array.from(fresh, (b) => b.high),
        low: Float64Array.from(fresh, (b) => b.low),
        close: Float64Array.from(fresh, (b) => b.close),
        color: fresh.map(color),
      }, spec.rollover);
      if (bars.length > spec.rollover) bars = bars.slice(bars.length - spec.rollover);
    }
  };
  const flush = () => {
    if (disposed || queued.length === 0) return;
    const batch = mergeBatches(queued);
    queued = [];
    if (ohlc) {
      streamBars(batch);
      return;
    }
    /** @type {Record<string, Column>} */
    const data = {};
    for (const [streamColumn, sourceColumn] of mapping) {
      const col = streamColumn === OFFSET_COLUMN ? numbers(batch, streamColumn) : batch.columns[streamColumn];
      if (col === undefined || col === null) {
        console.warn(`livestream: plot column "${streamColumn}" is missing from the data of "${batch.stream}"`);
        return;
      }
      data[sourceColumn] = /** @type {Column} */ (col);
    }
    if (hidePending) {
      hidePending = false;
      hideOffScale(document_, source, spec, batch);
      legend?.sync();
    }
    source.stream(data, spec.rollover);
    held = Math.min(spec.rollover, held + batch.rows);
  };
  const flushNow = () => {
    lastFlush = performance.now();
    flush();
  };
  /**
   * Stream into the source in the next animation frame, but not more often than every
   * `held / 1000` ms (at most {@link PLOT_MAX_INTERVAL_MS}): BokehJS re-indexes and redraws
   * every point at each `stream`, so a large window redrawn at every frame saturates the
   * page (100,000 points: about 10 fps and a lag of a quarter second) while a paced one
   * keeps it near 60 fps and the lag near 15 ms (docs/benchmarks.md, section 7). Rows that
   * arrive meanwhile wait in `queued` and go in together.
   */
  const schedule = () => {
    if (paceTimer !== null) return;
    const wait = lastFlush + Math.min(PLOT_MAX_INTERVAL_MS, held / 1000) - performance.now();
    if (wait <= 0) {
      requestFrame(flushNow);
      return;
    }
    paceTimer = setTimeout(() => {
      paceTimer = null;
      requestFrame(flushNow);
    }, wait);
  };
  const stopPacing = () => {
    if (paceTimer !== null) clearTimeout(paceTimer);
    paceTimer = null;
  };
  return {
    spec,
    source,
    document: document_,
    views,
    append(batch) {
      if (disposed || batch.rows === 0) return;
      const last = queued[queued.length - 1];
      if (last && last.offset + last.rows !== batch.offset) flush();
      queued.push(batch);
      schedule();
    },
    clear() {
      queued = [];
      bars = [];
      held = 0;
      /** @type {Record<string, unknown[]>} */
      const empty = {};
      for (const name of Object.keys(source.data ?? {})) empty[name] = [];
      for (const [, sourceColumn] of mapping) empty[sourceColumn] ??= [];
      source.data = empty;
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      stopPacing();
      queued = [];
      bars = [];
      colorScheme?.removeEventListener?.("change", restyle);
      resizes?.disconnect();
      try {
        views.clear();
      } catch (err) {
        console.warn("livestream: closing plot views failed", err);
      }
      forgetDocument(bokeh, document_);
      el.replaceChildren();
      delete el.dataset.sourceId;
      delete el.dataset.kind;
    },
  };
}

/**
 * Whether a plot spec draws with WebGL (then BokehJS needs its bokeh-gl bundle): a model's
 * `output_backend` says "webgl" (not merely a column or a label that spells it).
 * @param {PlotSpec} spec
 */
export function usesWebgl(spec) {
  const pending = [spec.item?.doc];
  while (pending.length) {
    const v = pending.pop();
    if (!v || typeof v !== "object") continue;
    if (!Array.isArray(v) && v.output_backend === "webgl") return true;
    for (const x of Object.values(v)) if (x && typeof x === "object") pending.push(x);
  }
  return false;
}

/**
 * The views of the visible legends of an embedded item (a layout's figures included).
 * @param {any} views  the ViewManager `embed_item` returned
 * @returns {any[]}
 */
function visibleLegends(views) {
  /** @type {any[]} */
  const found = [];
  const seen = new Set();
  const queue = [...(views?.roots ?? [])];
  while (queue.length) {
    const view = queue.shift();
    if (!view || seen.has(view)) continue;
    seen.add(view);
    if (view.model?.type === "Legend" && view.model.visible) found.push(view);
    if (typeof view.children === "function") queue.push(...view.children());
  }
  return found;
}

/**
 * Keep a BokehJS legend's swatches painted while its source streams. BokehJS rebuilds a
 * legend's items, with blank swatch canvases, on every change of its renderers' data (one
 * of those changes comes from an async step after the plot's paint), and paints them only
 * with the plot's next paint: over a streaming source the swatches are blank in about one
 * frame out of three, and stay blank when the stream stops between the two. So paint them
 * right after each rebuild (they are tiny canvases). This leans on BokehJS 3 internals;
 * without them the legend behaves as before.
 * @param {any} legendView
 */
function paintSwatchesOnRebuild(legendView) {
  const rebuild = legendView._render_items;
  const paint = legendView._paint_glyphs;
  if (typeof rebuild !== "function" || typeof paint !== "function") return;
  legendView._render_items = function (/** @type {unknown[]} */ ...args) {
    const result = rebuild.apply(this, args);
    try {
      paint.call(this);
    } catch {
      // Not laid out yet: the plot's own paint draws them.
    }
    return result;
  };
}

/**
 * Drop a document from `Bokeh.documents`: BokehJS has no API to forget one, and without this
 * every re-rendered plot leaks its document and models.
 * @param {any} bokeh @param {any} doc
 */
function forgetDocument(bokeh, doc) {
  const docs = bokeh?.documents;
  const i = Array.isArray(docs) && doc ? docs.indexOf(doc) : -1;
  if (i >= 0) docs.splice(i, 1);
}

/**
 * The glyph renderers drawing each y column of a plot's source.
 * @param {any} doc @param {any} source @returns {Map<string, any[]>}
 */
function renderersByColumn(doc, source) {
  /** @type {Map<string, any[]>} */
  const out = new Map();
  for (const m of doc.all_models) {
    if (m.type !== "GlyphRenderer" || m.data_source !== source) continue;
    const g = m.glyph;
    const field = g?.y?.field ?? g?.top?.field ?? g?.y2?.field;
    if (typeof field !== "string") continue;
    if (!out.has(field)) out.set(field, []);
    /** @type {any[]} */ (out.get(field)).push(m);
  }
  return out;
}

/**
 * An HTML legend above the plot (chips with the series colours; click one to hide or show
 * its series), replacing the figure's own legend.
 * @param {HTMLElement} el @param {any} doc @param {any} source @param {PlotSpec} spec
 */
function buildLegend(el, doc, source, spec) {
  const byColumn = renderersByColumn(doc, source);
  for (const m of doc.all_models) if (m.type === "Legend") m.visible = false;
  /** @type {Array<[HTMLElement, any[]]>} */
  const chips = [];
  for (const y of spec.y ?? []) {
    const renderers = byColumn.get(y) ?? [];
    if (!renderers.length) continue;
    const g = renderers[renderers.length - 1].glyph;
    const color = g?.line_color?.value ?? g?.fill_color?.value ?? "currentColor";
    const swatch = h("span", { class: "ls-legend-swatch", "aria-hidden": "true" });
    swatch.style.background = String(color);
    const chip = h("button", { type: "button", class: "ls-legend-item", dataset: { column: y } }, swatch, y);
    chip.addEventListener("click", () => {
      const visible = !renderers[0].visible;
      for (const r of renderers) r.visible = visible;
      sync();
    });
    chips.push([chip, renderers]);
  }
  const sync = () => {
    for (const [chip, renderers] of chips) {
      const on = renderers.some((r) => r.visible);
      chip.setAttribute("aria-pressed", String(on));
      chip.title = on ? "Click to hide" : "Click to show";
    }
  };
  el.replaceChildren(...chips.map(([c]) => c));
  el.hidden = chips.length === 0;
  sync();
  return { sync };
}

/**
 * Hide the renderers of y columns whose typical magnitude is over 10× off the first y's, so
 * that, say, a volume in thousands does not flatten a price near 100. They stay in the legend.
 * @param {any} doc @param {any} source @param {PlotSpec} spec @param {Batch} batch
 */
function hideOffScale(doc, source, spec, batch) {
  const ys = spec.y ?? [];
  const magnitude = (/** @type {string} */ name) => {
    const col = batch.columns[name];
    if (!col || Array.isArray(col)) return NaN;
    let m = 0;
    for (let i = 0; i < col.length; i++) if (Number.isFinite(col[i])) m = Math.max(m, Math.abs(col[i]));
    return m;
  };
  const ref = magnitude(ys[0]);
  if (!(ref > 0)) return;
  const hide = new Set(ys.slice(1).filter((y) => {
    const m = magnitude(y);
    return m > 0 && (m / ref > 10 || ref / m > 10);
  }));
  if (hide.size === 0) return;
  for (const [field, renderers] of renderersByColumn(doc, source)) {
    if (hide.has(field)) for (const r of renderers) r.visible = false;
  }
}

// ---------------------------------------------------------------------------------------------
// DOM helpers and formatting
// ---------------------------------------------------------------------------------------------

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
function formatDuration(ms) {
  if (ms === null || !Number.isFinite(ms)) return "—";
  const a = Math.abs(ms);
  if (a < 1000) return `${Math.round(ms)} ms`;
  if (a < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (a < 3600000) return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

/** A bar length for a label: 250 ms, 1 s, 1.5 min, 4 h. @param {number} ms */
function formatInterval(ms) {
  const trim = (/** @type {number} */ v) => String(Number(v.toFixed(1)));
  if (ms < 1000) return `${trim(ms)} ms`;
  if (ms < 60000) return `${trim(ms / 1000)} s`;
  if (ms < 3600000) return `${trim(ms / 60000)} min`;
  return `${trim(ms / 3600000)} h`;
}

/** @param {number} rate */
function formatRate(rate) {
  if (!Number.isFinite(rate) || rate <= 0) return "0/s";
  return `${formatNumber(rate, { digits: rate < 10 ? 1 : 0 })}/s`;
}

/** @param {unknown} v @param {string} name @param {string | undefined} dtype */
function formatCell(v, name, dtype) {
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
function icon(name) {
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
function pill(status, text = status) {
  return h("span", { class: "ls-pill", dataset: { status } }, h("span", { class: "ls-pill-dot", "aria-hidden": "true" }), text);
}

/** @param {HTMLElement} el @param {string} status @param {string} [text] */
function setPill(el, status, text = status) {
  el.dataset.status = status;
  const label = el.lastChild;
  if (label && label.nodeType === 3) label.textContent = text;
  else el.append(text);
}

const STATUS_TEXT = {
  connecting: "Connecting", open: "Live", reconnecting: "Reconnecting", closed: "Closed", error: "Error",
};

/**
 * @typedef {object} Handle
 * @property {() => void} dispose  unsubscribe, stop timers, empty the element
 */

/** @param {LivestreamError} err  whether the error is about the connection, not the stream */
function isConnectionError(err) {
  return ["token_rejected", "closed", "unreachable", "timeout"].includes(err.code) || err.status === 401 || err.status === 403;
}

/**
 * Whether a part of a larger view (`quietErrors`) should leave `err` to its container: a
 * refused token, a lost server or a missing stream concern the whole dashboard, said once.
 * @param {LivestreamError} err
 */
function isSharedError(err) {
  return isConnectionError(err) || err.code === "unknown_stream" || err.status === 404;
}

/** "server_room" → "Server room": a label for a name that has none. @param {string} name */
export function prettify(name) {
  const words = name.replace(/[_-]+/g, " ").trim();
  return words ? words[0].toUpperCase() + words.slice(1) : name;
}

/** @param {Record<string, string> | null} schema */
function firstValueColumn(schema) {
  if (!schema) return undefined;
  return Object.entries(schema).find(([n, d]) => isNumericDtype(d) && !isTimeColumn(n, d))?.[0];
}

// ---------------------------------------------------------------------------------------------
// Renderers
// ---------------------------------------------------------------------------------------------

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
  const render = () => {
    empty.hidden = rows.length > 0;
    const trs = [];
    for (let i = rows.length - 1; i >= 0; i--) {
      const row = rows[i];
      const tr = h("tr", { class: row.offset > lastRendered && lastRendered >= 0 ? "ls-new" : "" },
        h("td", { class: "ls-num ls-offset", text: formatNumber(row.offset) }));
      names.forEach((n, j) => {
        const dtype = schema[n];
        const numeric = isNumericDtype(dtype ?? "") && !isTimeColumn(n, dtype ?? "");
        tr.append(h("td", { class: numeric ? "ls-num" : "", text: formatCell(row.values[j], n, dtype) }));
      });
      trs.push(tr);
    }
    tbody.replaceChildren(...trs);
    lastRendered = rows.length ? rows[rows.length - 1].offset : lastRendered;
  };

  const subscription = conn.subscribe(stream, {
    last: limit,
    columns,
    onSubscribed(info) {
      schema = info.schema ?? {};
      names = columns ?? Object.keys(schema);
      renderHead();
    },
    onData(batch) {
      const start = Math.max(0, batch.rows - limit);
      const cols = names.map((n) => batch.columns[n]);
      for (let i = start; i < batch.rows; i++) {
        rows.push({ offset: batch.offset + i, values: cols.map((c) => (c ? c[i] : undefined)) });
      }
      if (rows.length > limit) rows = rows.slice(rows.length - limit);
      render();
    },
    onReset() {
      rows = [];
      lastRendered = -1;
      render();
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
      el.replaceChildren();
      el.classList.remove("ls-table-view");
    },
  };
}

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

  const subscription = conn.subscribe(stream, {
    last: history,
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
      render();
    },
    onReset() {
      values = [];
      render();
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
      el.replaceChildren();
      el.classList.remove("ls-value");
      delete el.dataset.alarm;
      el.title = "";
    },
  };
}

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

/** @param {number} span */
function niceStep(span) {
  if (!(span > 0)) return 0.01;
  const raw = span / 200;
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? raw;
}

/**
 * Controls for a stream, generated from the `controls` its producer declared: Pause/Resume,
 * one input per parameter, one button per action. They follow the broadcast state (another
 * viewer's pause shows here), and show the server's message when a control is refused.
 * @param {HTMLElement} el @param {Connection} conn @param {string} stream
 * @param {{quietErrors?: boolean}} [options]  `quietErrors`: leave connection and
 *   unknown-stream errors to the container (see renderDashboard)
 * @returns {Handle & {subscription: Subscription}}
 */
export function renderControls(el, conn, stream, { quietErrors = false } = {}) {
  el.classList.add("ls-controls");
  const pauseBtn = h("button", { type: "button", class: "ls-btn", dataset: { action: "pause" } }, icon("pause"), "Pause");
  const resumeBtn = h("button", { type: "button", class: "ls-btn", dataset: { action: "resume" } }, icon("play"), "Resume");
  const runRow = h("div", { class: "ls-segmented", role: "group", "aria-label": "Producer" }, pauseBtn, resumeBtn);
  const paramsEl = h("div", { class: "ls-params" });
  const actionsEl = h("div", { class: "ls-actions" });
  const alert = h("div", { class: "ls-alert", role: "alert", hidden: true, dataset: { level: "error" } });
  const note = h("div", { class: "ls-note", hidden: true });
  el.replaceChildren(runRow, alert, paramsEl, actionsEl, note);

  /** @type {StreamState | null} */
  let state = null;
  /** @type {string | null} message of the last refused control (shown for a few seconds) */
  let refused = null;
  /** @type {any} */
  let refusedTimer = null;
  /** @type {Map<string, {spec: ParamSpec, set: (v: unknown) => void, busy: () => boolean}>} */
  const inputs = new Map();
  /** @type {Map<string, any>} */
  const debounce = new Map();

  const showAlert = () => {
    const text = refused ?? (state?.status === "error" ? `Stream error: ${state.error ?? "the producer failed"}` : "");
    alert.hidden = !text;
    alert.textContent = text;
  };
  const reflect = () => {
    const paused = !!state?.paused || state?.status === "paused";
    pauseBtn.setAttribute("aria-pressed", String(!paused));
    resumeBtn.setAttribute("aria-pressed", String(paused));
    pauseBtn.classList.toggle("ls-active", !paused);
    resumeBtn.classList.toggle("ls-active", paused);
    for (const [name, input] of inputs) {
      if (state?.params && name in state.params && !input.busy()) input.set(state.params[name]);
    }
    showAlert();
    el.dataset.status = state?.status ?? "";
  };
  /** @param {string} action @param {Record<string, unknown>} [params] @param {HTMLElement} [button] */
  const send = async (action, params = {}, button) => {
    if (button) button.setAttribute("aria-busy", "true");
    try {
      const ack = await conn.control(stream, action, params);
      refused = null;
      if (ack && isObject(ack.state)) state = /** @type {StreamState} */ (ack.state);
      reflect();
      return true;
    } catch (err) {
      refused = /** @type {Error} */ (err).message;
      clearTimeout(refusedTimer);
      refusedTimer = setTimeout(() => {
        refused = null;
        showAlert();
      }, 8000);
      reflect(); // back to the state the server holds
      return false;
    } finally {
      button?.removeAttribute("aria-busy");
    }
  };
  pauseBtn.addEventListener("click", () => void send("pause", {}, pauseBtn));
  resumeBtn.addEventListener("click", () => void send("resume", {}, resumeBtn));

  /** @param {string} name @param {ParamSpec} spec */
  const buildParam = (name, spec) => {
    const id = `ls-${stream}-${name}-${Math.random().toString(36).slice(2, 8)}`;
    const labelText = spec.label ?? prettify(name);
    const row = h("div", { class: "ls-param", dataset: { param: name, type: spec.type } });
    let focused = false;
    let dragging = false;
    const busy = () => focused || dragging || debounce.has(name);
    /** @param {unknown} value @param {number} [delay] */
    const setParam = (value, delay = 0) => {
      clearTimeout(debounce.get(name));
      const go = () => {
        debounce.delete(name);
        void send("set", { [name]: value });
      };
      if (delay) debounce.set(name, setTimeout(go, delay));
      else go();
    };
    if (spec.type === "bool") {
      const input = /** @type {HTMLInputElement} */ (h("input", { type: "checkbox", id, role: "switch", class: "ls-switch" }));
      input.addEventListener("change", () => setParam(input.checked));
      row.append(h("label", { class: "ls-param-label ls-switch-label", for: id }, input, h("span", { text: labelText })));
      inputs.set(name, { spec, set: (v) => { input.checked = !!v; }, busy: () => false });
    } else if (spec.type === "choice") {
      const choices = Array.isArray(spec.choices) ? spec.choices : [];
      const select = /** @type {HTMLSelectElement} */ (h("select", { id, class: "ls-input" }));
      choices.forEach((c, i) => select.append(h("option", { value: String(i), text: String(c) })));
      select.addEventListener("change", () => setParam(choices[Number(select.value)]));
      select.addEventListener("focus", () => { focused = true; });
      select.addEventListener("blur", () => { focused = false; });
      row.append(h("label", { class: "ls-param-label", for: id, text: labelText }), select);
      inputs.set(name, {
        spec,
        set: (v) => {
          const i = choices.findIndex((c) => c === v);
          if (i >= 0) select.value = String(i);
        },
        busy,
      });
    } else {
      const isInt = spec.type === "int";
      const hasRange = typeof spec.min === "number" && typeof spec.max === "number";
      const step = typeof spec.step === "number" && spec.step > 0
        ? spec.step
        : isInt ? 1 : hasRange ? niceStep(/** @type {number} */ (spec.max) - /** @type {number} */ (spec.min)) : "any";
      const parse = (/** @type {string} */ s) => (isInt ? Math.round(Number(s)) : Number(s));
      const number = /** @type {HTMLInputElement} */ (h("input", {
        type: "number", id, class: "ls-input ls-number", step: String(step), inputmode: isInt ? "numeric" : "decimal",
        min: spec.min ?? undefined, max: spec.max ?? undefined,
      }));
      row.append(h("label", { class: "ls-param-label", for: id, text: labelText }));
      /** @type {HTMLInputElement | null} */
      let range = null;
      if (hasRange) {
        range = /** @type {HTMLInputElement} */ (h("input", {
          type: "range", class: "ls-range", min: String(spec.min), max: String(spec.max), step: String(step), "aria-label": labelText,
        }));
        const r = range;
        r.addEventListener("pointerdown", () => { dragging = true; });
        const up = () => { dragging = false; };
        r.addEventListener("pointerup", up);
        r.addEventListener("pointercancel", up);
        r.addEventListener("input", () => {
          number.value = r.value;
          setParam(parse(r.value), 120); // live while dragging, without a message per pixel
        });
        row.append(h("div", { class: "ls-range-row" }, r, number));
      } else {
        row.append(number);
      }
      number.addEventListener("focus", () => { focused = true; });
      number.addEventListener("blur", () => { focused = false; });
      number.addEventListener("change", () => {
        if (number.value === "" || !Number.isFinite(Number(number.value))) return;
        if (range) range.value = number.value;
        setParam(parse(number.value));
      });
      number.addEventListener("keydown", (e) => {
        if (/** @type {KeyboardEvent} */ (e).key === "Enter") number.blur();
      });
      inputs.set(name, {
        spec,
        set: (v) => {
          if (typeof v !== "number") return;
          number.value = String(v);
          if (range) range.value = String(v);
        },
        busy,
      });
    }
    return row;
  };

  /** @param {ControlsSpec | null | undefined} controls */
  const build = (controls) => {
    inputs.clear();
    const params = controls?.params ?? {};
    const actions = controls?.actions ?? {};
    paramsEl.replaceChildren(...Object.entries(params).map(([n, s]) => buildParam(n, s)));
    paramsEl.hidden = Object.keys(params).length === 0;
    actionsEl.replaceChildren(...Object.entries(actions).map(([n, a]) => {
      const b = h("button", { type: "button", class: "ls-btn", dataset: { action: n } }, a?.label ?? prettify(n));
      b.addEventListener("click", () => void send(n, {}, b));
      return b;
    }));
    actionsEl.hidden = Object.keys(actions).length === 0;
    for (const [n, input] of inputs) input.set(state?.params?.[n] ?? input.spec.default);
    const allowed = conn.canControl;
    for (const c of el.querySelectorAll("button, input, select")) /** @type {HTMLInputElement} */ (c).disabled = !allowed;
    note.hidden = allowed;
    note.textContent = allowed ? "" : "This token may watch but not control this stream.";
  };

  const subscription = conn.subscribe(stream, {
    last: 0,
    onSubscribed(info) {
      state = info.state ?? state;
      refused = null;
      build(info.controls); // (re-)enables the inputs the token may use
      reflect();
    },
    onState(s) {
      state = s;
      reflect();
    },
    onError(err) {
      if (isConnectionError(err) || err.code === "unknown_stream") {
        for (const c of el.querySelectorAll("button, input, select")) /** @type {HTMLInputElement} */ (c).disabled = true;
      }
      if (quietErrors && isSharedError(err)) return;
      refused = err.message;
      showAlert();
    },
  });
  reflect();
  return {
    subscription,
    dispose() {
      clearTimeout(refusedTimer);
      for (const t of debounce.values()) clearTimeout(t);
      subscription.unsubscribe();
      el.replaceChildren();
      el.classList.remove("ls-controls");
    },
  };
}

/**
 * @typedef {object} PlotOptions
 * @property {PlotSpec} [spec]  a plot spec; default: fetched from the server's plot endpoint
 * @property {string} [x] @property {string | string[]} [y] @property {string} [kind]
 * @property {number} [window]  passed to the plot endpoint when `spec` is not given
 * @property {number} [interval]  `ohlc`: x units (ms) per bar, for the plot endpoint
 * @property {number} [height]  pixels, for the plot endpoint
 * @property {boolean} [webgl]  draw a fetched spec with WebGL
 * @property {string} [title]  a title for a fetched spec's figure
 * @property {"light"|"dark"|"auto"} [theme]
 * @property {boolean} [autoHide]  hide y columns on a very different scale at first (see embedPlot)
 * @property {boolean} [quietErrors]  leave connection and unknown-stream errors to the container
 */

/**
 * A live Bokeh plot of a stream: fetches the plot spec (unless given), embeds it, subscribes
 * for the plotted columns and streams them in. `onReady` and the returned promise give the
 * {@link PlotHandle}.
 * @param {HTMLElement} el @param {Connection} conn @param {string} stream
 * @param {PlotOptions} [options]
 * @returns {Handle & {ready: Promise<PlotHandle>, subscription: () => Subscription | null}}
 */
export function renderPlot(el, conn, stream, options = {}) {
  el.classList.add("ls-plot");
  const placeholder = h("div", { class: "ls-plot-placeholder" }, h("span", { class: "ls-spinner", "aria-hidden": "true" }), "Loading plot…");
  el.replaceChildren(placeholder);
  let disposed = false;
  /** @type {Subscription | null} */
  let subscription = null;
  /** @type {Subscription | null} waits for the stream to exist or to get rows */
  let waiter = null;
  /** @type {PlotHandle | null} */
  let plot = null;
  /** @param {LivestreamError} err */
  const showError = (err) => {
    const quiet = options.quietErrors === true && isSharedError(err);
    el.replaceChildren(h("div", { class: `ls-plot-placeholder${quiet ? "" : " ls-error-text"}` },
      quiet ? "Plot unavailable" : `Cannot show the plot: ${err.message}`));
  };
  const fetchSpec = () => {
    const y = Array.isArray(options.y) ? options.y.join(",") : options.y;
    return /** @type {Promise<PlotSpec>} */ (conn.getJSON(`/api/streams/${encodeURIComponent(stream)}/plot`, {
      x: options.x, y, kind: options.kind, window: options.window, interval: options.interval, height: options.height,
    }));
  };
  /** @param {"exists" | "rows"} what @returns {Promise<void>} */
  const waitFor = (what) => new Promise((resolve) => {
    const done = () => {
      waiter?.unsubscribe();
      waiter = null;
      resolve();
    };
    waiter = conn.subscribe(stream, {
      last: 1,
      onSubscribed: (info) => {
        if (what === "exists" || Object.keys(info.schema ?? {}).length) done();
      },
      onData: (batch) => {
        if (batch.rows) done();
      },
    });
  });
  const ready = (async () => {
    let spec = options.spec;
    let badRequests = 0;
    while (!spec) {
      try {
        spec = await fetchSpec();
      } catch (err) {
        const e = /** @type {LivestreamError} */ (err);
        if (disposed) throw e;
        // A page opened before its producer started: wait for the stream, or for its first
        // rows (no schema, nothing to plot yet), then ask again.
        if (e.status === 404 && !isConnectionError(e)) {
          showError(e);
          await waitFor("exists");
        } else if (e.status === 400 && badRequests++ < 2) {
          showError(e);
          await waitFor("rows");
        } else {
          throw e;
        }
        if (disposed) throw new LivestreamError("the plot was disposed", "disposed");
      }
    }
    if (disposed) throw new LivestreamError("the plot was disposed", "disposed");
    if (!options.spec) spec = withFigureOptions(spec, options);
    const target = h("div", { class: "ls-plot-canvas" });
    el.replaceChildren(target);
    const handle = await embedPlot(target, spec, { loadScript: (path) => conn.loadScript(path), theme: options.theme, autoHide: options.autoHide });
    if (disposed) {
      handle.dispose();
      throw new LivestreamError("the plot was disposed", "disposed");
    }
    plot = handle;
    el.dataset.sourceId = spec.source_id;
    subscription = conn.subscribe(stream, {
      // Candles are built from ticks: take every tick the server holds, since how many
      // make `rollover` bars is unknown. Other kinds take the rows they keep.
      last: spec.kind === "ohlc" ? undefined : spec.rollover,
      columns: Object.keys(spec.columns).filter((c) => c !== OFFSET_COLUMN),
      onData: (batch) => handle.append(batch),
      onReset: () => handle.clear(),
    });
    return handle;
  })();
  ready.catch((err) => {
    if (!disposed) showError(err);
  });
  return {
    ready,
    subscription: () => subscription,
    dispose() {
      disposed = true;
      waiter?.unsubscribe();
      subscription?.unsubscribe();
      plot?.dispose();
      el.replaceChildren();
      el.classList.remove("ls-plot");
      delete el.dataset.sourceId;
    },
  };
}

/**
 * A fetched plot spec with the options the plot endpoint does not take: WebGL output and a
 * title, set on the JSON of the item's figure before it is embedded.
 * @param {PlotSpec} spec @param {PlotOptions} options @returns {PlotSpec}
 */
function withFigureOptions(spec, options) {
  if (!options.webgl && !options.title) return spec;
  const doc = structuredClone(spec.item.doc);
  for (const root of doc?.roots ?? []) {
    const attrs = root?.attributes;
    if (!attrs || root.name !== "Figure") continue;
    if (options.webgl) attrs.output_backend = "webgl";
    if (options.title) {
      // A PlainText model, not a string: BokehJS reads a string title for TeX delimiters.
      const text = { type: "object", name: "PlainText", id: `${root.id}-title-text`, attributes: { text: String(options.title) } };
      const title = attrs.title;
      if (isObject(title) && isObject(title.attributes)) title.attributes.text = text;
      else {
        attrs.title = {
          type: "object", name: "Title", id: `${root.id}-title`,
          attributes: { text, text_font_size: "14px", text_font_style: "bold", text_color: PLOT_COLORS.light.text },
        };
      }
    }
  }
  return { ...spec, item: { ...spec.item, doc } };
}

/**
 * A card: a titled box. Returns the card and its body.
 * @param {string} title @param {string} [extraClass]
 */
function card(title, extraClass = "") {
  const body = h("div", { class: "ls-card-body" });
  const header = h("div", { class: "ls-card-header" }, h("h2", { class: "ls-card-title", text: title }));
  const el = h("section", { class: `ls-card ${extraClass}`.trim() }, header, body);
  return { el, header, body };
}

/**
 * A whole dashboard for one stream: plot, big value, controls, status and table in cards,
 * laid out for a phone up to a wide monitor.
 * @param {HTMLElement} el @param {Connection} conn @param {string} stream
 * @param {PlotOptions & {rows?: number, value?: string, connectionAlert?: boolean}} [options]
 *   `rows`: table rows; `value`: the column of the big value (default: the plot's first y);
 *   `connectionAlert`: false when the page itself shows connection problems
 * @returns {Handle & {plot: ReturnType<typeof renderPlot>, table: ReturnType<typeof renderTable>, controls: ReturnType<typeof renderControls>, status: ReturnType<typeof renderStatus>, value: ReturnType<typeof renderValue>}}
 */
export function renderDashboard(el, conn, stream, options = {}) {
  el.classList.add("ls-dashboard");
  const plotCard = card("Live plot", "ls-area-plot");
  const valueCard = card("Latest", "ls-area-value");
  const controlsCard = card("Controls", "ls-area-controls");
  const statusCard = card("Status", "ls-area-status");
  const tableCard = card("Newest rows", "ls-area-table");
  const main = h("div", { class: "ls-dashboard-main" }, plotCard.el, tableCard.el);
  const side = h("div", { class: "ls-dashboard-side" }, valueCard.el, controlsCard.el, statusCard.el);
  // Connection problems (a refused token, a lost server) are said once, above the cards.
  const alert = h("div", { class: "ls-alert ls-dashboard-alert", role: "alert", hidden: true });
  el.replaceChildren(alert, main, side);
  const showAlert = options.connectionAlert ?? true;
  let connectionMessage = "";
  let connectionLevel = "error";
  let streamMessage = "";
  const updateAlert = () => {
    const text = connectionMessage || streamMessage;
    alert.hidden = !text;
    alert.textContent = text;
    alert.dataset.level = connectionMessage ? connectionLevel : "error";
  };
  const stopStatus = conn.onStatus((s, message) => {
    connectionMessage = showAlert && (s === "error" || s === "reconnecting") ? message : "";
    connectionLevel = s === "error" ? "error" : "warning";
    el.dataset.connection = s;
    updateAlert();
  });
  // A missing stream is said once here too (the parts stay quiet); it clears when the
  // stream appears, since subscriptions to an unknown stream keep retrying.
  const watch = conn.subscribe(stream, {
    last: 0,
    onError(err) {
      if (err.code === "unknown_stream") {
        streamMessage = err.message;
        updateAlert();
      }
    },
    onSubscribed() {
      streamMessage = "";
      updateAlert();
    },
  });

  const parts = { quietErrors: true };
  const plot = renderPlot(plotCard.body, conn, stream, { autoHide: !options.y, ...options, ...parts });
  const controls = renderControls(controlsCard.body, conn, stream, parts);
  const status = renderStatus(statusCard.body, conn, stream, { connectionAlert: false, quietErrors: true });
  tableCard.body.classList.add("ls-card-body-flush"); // the table runs to the card's edges
  const table = renderTable(tableCard.body, conn, stream, { rows: options.rows ?? 15, ...parts });
  // The plot's first y by default, which is also renderValue's own default (the first
  // numeric non-time column) unless y was given.
  const valueColumn = options.value ?? (Array.isArray(options.y) ? options.y[0] : options.y);
  const value = renderValue(valueCard.body, conn, stream, { column: valueColumn, ...parts });
  plot.ready.then((p) => {
    const what = p.spec.kind === "ohlc"
      ? `${formatInterval(p.spec.interval ?? 1000)} candles`
      : `last ${formatNumber(p.spec.rollover)} rows`;
    const sub = `${p.spec.y?.length === 1 ? `${p.spec.y[0]} · ` : ""}${what}`;
    plotCard.header.append(h("span", { class: "ls-card-subtitle", text: sub }));
  }, () => {});
  return {
    plot, table, controls, status, value,
    dispose() {
      stopStatus();
      watch.unsubscribe();
      plot.dispose();
      table.dispose();
      controls.dispose();
      status.dispose();
      value.dispose();
      el.replaceChildren();
      el.classList.remove("ls-dashboard");
    },
  };
}

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
