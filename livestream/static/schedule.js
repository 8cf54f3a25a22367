// @ts-check
// schedule.js — requestFrame: work that touches the DOM or BokehJS runs at most once per
// animation frame (a timer stands in for a hidden tab).

/** The longest a plot waits between two `stream` calls (ms); see `embedPlot`. */
export const PLOT_MAX_INTERVAL_MS = 100;

/** How many rounds of tasks one animation frame runs (see requestFrame). */
const FRAME_ROUNDS = 3;

/** @type {Set<() => void>} */
const frameTasks = new Set();
let frameScheduled = false;

/**
 * Run `task` in the next animation frame (tasks added before then run once, together; a
 * task asked for by one of them runs in the same frame). In a hidden tab, where
 * requestAnimationFrame does not fire, a 250 ms timer runs them instead.
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
    // Tasks that tasks of this frame ask for (rows a Channel delivered, which a plot then
    // streams in) run in this frame too, not one frame later; a few rounds at most.
    for (let round = 0; round < FRAME_ROUNDS && frameTasks.size; round++) {
      const tasks = [...frameTasks];
      frameTasks.clear();
      for (const t of tasks) {
        try {
          t();
        } catch (err) {
          console.error("livestream: a frame task failed", err);
        }
      }
    }
    frameScheduled = false;
    if (frameTasks.size) {
      // Still asked for after the last round: the next frame.
      const rest = [...frameTasks];
      frameTasks.clear();
      for (const t of rest) requestFrame(t);
    }
  };
  if (typeof requestAnimationFrame === "function") raf = requestAnimationFrame(run);
  timer = setTimeout(run, typeof requestAnimationFrame === "function" ? 250 : 16);
}
