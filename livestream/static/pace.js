// @ts-check
// pace.js — paced: redraw a card in an animation frame, at most every so many ms, however
// often its data changes (a table of a stream at 100,000 rows/s need not be rebuilt 60
// times a second, and doing so costs the page a third of its frames).
import { requestFrame } from "./schedule.js";

/** How often a card (table, value) redraws at most, by default (ms): 10 times a second. */
export const CARD_INTERVAL_MS = 100;

/**
 * A pacer for `render`: `request()` asks for a redraw; it runs in the next animation frame
 * once `interval` ms passed since the previous one (requests meanwhile are merged).
 * `now()` redraws at once (a reset, a schema); `cancel()` drops a pending redraw.
 * @param {() => void} render @param {number} [interval]
 * @returns {{request: () => void, now: () => void, cancel: () => void}}
 */
export function paced(render, interval = CARD_INTERVAL_MS) {
  let last = -Infinity;
  /** @type {ReturnType<typeof setTimeout> | null} */
  let timer = null;
  let queued = false;
  let cancelled = false;
  const run = () => {
    queued = false;
    if (cancelled) return;
    last = performance.now();
    render();
  };
  return {
    request() {
      cancelled = false;
      if (queued || timer !== null) return;
      const wait = last + interval - performance.now();
      if (wait <= 0) {
        queued = true;
        requestFrame(run);
        return;
      }
      timer = setTimeout(() => {
        timer = null;
        queued = true;
        requestFrame(run);
      }, wait);
    },
    now() {
      if (timer !== null) clearTimeout(timer);
      timer = null;
      queued = false;
      cancelled = false;
      last = performance.now();
      render();
    },
    cancel() {
      cancelled = true;
      if (timer !== null) clearTimeout(timer);
      timer = null;
    },
  };
}
