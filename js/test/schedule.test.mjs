// schedule.js: requestFrame runs the tasks asked for before a frame together, and a task that
// a frame task asks for in that same frame (a Channel's delivery, then the plot's stream),
// not one frame later. Node has no requestAnimationFrame: its timer stands in for the frame.
// Run: `npm test --prefix js`.
import assert from "node:assert/strict";
import { test } from "node:test";

import { requestFrame } from "../../livestream/static/schedule.js";

/** Resolves after the frame that runs the tasks asked for now. */
const nextFrame = () => new Promise((resolve) => requestFrame(() => resolve(undefined)));

test("tasks asked for before a frame run once, together, in that frame", async () => {
  const log = [];
  const task = () => log.push("a");
  requestFrame(task);
  requestFrame(task); // the same task twice: once
  requestFrame(() => log.push("b"));
  await nextFrame();
  assert.deepEqual(log, ["a", "b"]);
});

test("a task asked for by a frame task runs in the same frame, before its microtasks", async () => {
  const log = [];
  requestFrame(() => {
    log.push("channel");
    queueMicrotask(() => log.push("after the frame"));
    requestFrame(() => log.push("plot"));
  });
  await nextFrame();
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(log, ["channel", "plot", "after the frame"]);
});

test("a task that keeps asking for itself goes on in later frames, not forever in one", async () => {
  let runs = 0;
  const again = () => {
    runs++;
    if (runs < 10) requestFrame(again);
  };
  requestFrame(again);
  await nextFrame();
  const inFirstFrame = runs;
  assert.ok(inFirstFrame > 1 && inFirstFrame < 10, `ran ${inFirstFrame} times in the first frame`);
  // Node's stand-in for a frame is a 16 ms timer: the rest follow within a few frames.
  const deadline = Date.now() + 5000;
  while (runs < 10 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(runs, 10);
});
