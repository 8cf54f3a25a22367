// renderers/streamlist.js: how many nodes a list names (a backplane fills `nodes` in; a
// single server leaves it out, and the home page then shows no Nodes figure).
// Run: `npm test --prefix js` (tests/test_js.py runs it in the suite).
import assert from "node:assert/strict";
import { test } from "node:test";

import { countNodes } from "../../livestream/static/renderers/streamlist.js";

test("a single server names no nodes", () => {
  assert.equal(countNodes({ streams: [] }, []), null);
  assert.equal(countNodes({}, [{ name: "a" }, { name: "b", nodes: null }]), null);
});

test("entries that count nodes: the most any stream is served by", () => {
  assert.equal(countNodes({}, [{ nodes: 2 }, { nodes: 3 }, { name: "c" }]), 3);
});

test("entries that name nodes: every node named", () => {
  assert.equal(countNodes({}, [{ nodes: ["n1", "n2"] }, { nodes: ["n2", "n3"] }]), 3);
});

test("a count for the whole list wins", () => {
  assert.equal(countNodes({ nodes: 4 }, [{ nodes: 2 }]), 4);
  assert.equal(countNodes({ nodes: ["a", "b"] }, []), 2);
});

test("what is not a count is ignored", () => {
  assert.equal(countNodes({}, [{ nodes: -1 }, { nodes: "3" }, { nodes: Number.NaN }]), null);
  assert.equal(countNodes({}, [{ nodes: 2.7 }]), 2);
});
