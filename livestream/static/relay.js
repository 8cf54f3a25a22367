// @ts-check
// relay.js — the relay route's transport: RelaySocket, a WebSocket look-alike whose frames
// travel through a widget's comm to the kernel (livestream/relay.py), and relayGet.
import { isObject } from "./codec.js";
import { LivestreamError } from "./errors.js";
import { RELAY_GET_MS } from "./routes.js";
/** @typedef {import("./routes.js").Carrier} Carrier */

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
export class RelaySocket {
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
export function relayGet(carrier, path) {
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
