// @ts-check
// channel.js — one stream on one connection: the Channel (the page's single server subscription
// to a stream, shared by its local subscribers: resume by offset and epoch, credit, one merged
// delivery per animation frame) and each subscriber's Subscription. connection.js owns the
// socket, routes, reconnect and failover, and calls a Channel when the socket opens or closes and
// when a frame for its stream arrives; a Channel sends through its Connection (`conn._send`).
// May import codec.js and schedule.js; connection.js only for types (it imports this module).
import { TIME_COLUMNS, isObject, mergeBatches, sliceBatch } from "./codec.js";
import { requestFrame } from "./schedule.js";
/** @typedef {import("./codec.js").Batch} Batch */
/** @typedef {import("./codec.js").Column} Column */
/** @typedef {import("./codec.js").ControlsSpec} ControlsSpec */
/** @typedef {import("./codec.js").ResetMessage} ResetMessage */
/** @typedef {import("./codec.js").StreamState} StreamState */
/** @typedef {import("./codec.js").SubscribedInfo} SubscribedInfo */
/** @typedef {import("./connection.js").Connection} Connection */
/** @typedef {import("./errors.js").LivestreamError} LivestreamError */

/**
 * @typedef {object} SubscribeOptions
 * @property {number} [last]  how many of the newest rows to start with (default: the whole
 *   history window the server holds)
 * @property {string[]} [columns]  only these columns (default: all)
 * @property {number} [tail]  each delivery holds only its newest `tail` rows (for a
 *   subscriber that keeps no more than that: a table of the newest rows, a sparkline);
 *   `stats()` still counts every row. Default: every row
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

const RATE_WINDOW_MS = 5000;
/** Data frames in flight before the page grants more (up to 256 KiB of rows each). Two
 * capped a page at about half of 1 M rows/s into a small window. */
const INITIAL_CREDIT = 4;
/**
 * How many received frames a Channel credits back on arrival, before the animation frame
 * that applies them: beyond this many waiting in the page, credit waits for that frame.
 * Granting only at the animation frame made the server wait, at 1 M rows/s, for the frame
 * (up to 16 ms) on top of the round trip, and fall out of its history (`reset`); granting
 * on arrival, bounded, keeps the page paced by its main thread (a busy one reads its
 * messages late) and holds at most this many frames plus those in flight.
 */
const EARLY_CREDIT = 4;

/**
 * The page side of one stream on one connection: a single server subscription shared by every
 * local {@link Subscription}. It resumes by offset, grants credit, and delivers each local
 * subscriber the rows it has not seen yet, merged, once per animation frame.
 */
export class Channel {
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
    /** @type {Array<{kind: "data", batch: Batch, request: number | null, generation: number, credited: boolean} | {kind: "reset", msg: ResetMessage} | {kind: "subscribed", msg: SubscribedInfo, request: number}>} */
    this.queue = [];
    /** frames of `queue` already credited on arrival (see EARLY_CREDIT) */
    this.earlyCredited = 0;
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
    this.earlyCredited = 0;
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

  /**
   * Bring the server subscription in line with the local subscribers.
   * @returns {({type: string} & Record<string, unknown>) | null} the subscribe sent, if any
   */
  sync() {
    if (this.subs.size === 0 || this.conn.status !== "open" || this.wire === "pending") return null;
    const unjoined = [...this.subs].filter((s) => s._request === null);
    const columns = this._wantedColumns();
    const covered = this.wireColumns === null || (columns !== null && columns.every((c) => this.wireColumns?.includes(c)));
    if (this.wire === "active" && unjoined.length === 0 && covered) return null;

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
    if (!this.conn._send(msg)) return null;
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
    return msg;
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
    const msg = this.sync();
    if (msg && msg.since !== undefined) {
      this.conn._event("resubscribed", this.conn.url, "", { stream: this.stream, offset: /** @type {number} */ (msg.since), epoch: /** @type {string} */ (msg.epoch) });
    }
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
    // Only frames of the current server subscription earn it credit back: at once while
    // few frames wait in the page, else with the animation frame that applies them.
    const request = this.ready ? this.requestId : null;
    let credited = false;
    if (request !== null && this.earlyCredited < EARLY_CREDIT && this.wire === "active" && generation === this.conn._socketGeneration) {
      credited = this.conn._send({ type: "credit", stream: this.stream, frames: 1 });
      if (credited) this.earlyCredited++;
    }
    this.queue.push({ kind: "data", batch, request, generation, credited });
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
    this.conn._event("reset", this.conn.url, msg.reason, { stream: this.stream, offset: msg.offset, epoch: msg.epoch });
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
    this.earlyCredited = 0;
    if (events.length === 0) return;
    /** @type {Map<Subscription, Batch[]>} */
    const pending = new Map();
    let credit = 0;
    const deliver = (/** @type {Subscription} */ s) => {
      const parts = pending.get(s);
      if (parts && parts.length) s._deliver(parts.splice(0));
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
        if (!ev.credited && ev.request !== null && ev.request === this.requestId && ev.generation === this.conn._socketGeneration) credit++;
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

  /**
   * Deliver contiguous parts (oldest first) as one batch: only the columns and the `tail`
   * rows this subscriber asked for are merged (copied), and nothing at all for a
   * subscriber without `onData`: at 1 M rows/s a page's six subscribers each merging every
   * column of every frame cost it more than decoding them.
   * @param {Batch[]} parts
   */
  _deliver(parts) {
    if (this._closed || parts.length === 0) return;
    const wanted = this.options.columns;
    const pick = (/** @type {Batch} */ b) => {
      if (!wanted) return b;
      /** @type {Record<string, Column>} */
      const columns = {};
      for (const c of wanted) if (c in b.columns) columns[c] = b.columns[c];
      return { ...b, columns };
    };
    const first = parts[0].offset;
    const newest = pick(parts[parts.length - 1]);
    const rows = newest.offset + newest.rows - first;
    const now = Date.now();
    this._rows += rows;
    this._lastOffset = first + rows - 1;
    this._lastFrameAt = now;
    this._firstAt ??= now;
    this._recent.push([now, rows]);
    for (const name of TIME_COLUMNS) {
      const col = newest.columns[name];
      if (col && !Array.isArray(col) && col.length && (col instanceof Float64Array)) {
        const t = col[col.length - 1];
        // Only a plausible epoch time (after 2001) counts as a clock for the lag.
        this._lastTime = t > 1e12 ? t : null;
        break;
      }
    }
    if (!this.options.onData) return;
    const tail = this.options.tail;
    let keep = parts;
    if (tail !== undefined && tail >= 0 && rows > tail) {
      // The newest `tail` rows: the parts they span, the oldest of them cut.
      const from = first + rows - tail;
      let i = parts.length - 1;
      while (i > 0 && parts[i].offset > from) i--;
      keep = parts.slice(i);
      keep[0] = sliceBatch(keep[0], from - keep[0].offset);
    }
    this._emit("onData", mergeBatches(keep.map(pick)));
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
