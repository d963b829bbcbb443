// Values awaitly 1.35 stores that Python must carry through unchanged.
//   node values.mjs '{"url": ..., "table": ..., "id": ..., "phase": "write" | "check"}'
// write: records one step per value, then SIGKILLs itself before "python-step".
// check: replays every step (Python has rewritten the row since) and compares each
// value with what was stored, by deep strict equality; prints one JSON line.
import assert from "node:assert/strict";
import pg from "pg";
import { ok } from "awaitly";
import { durable } from "awaitly/durable";
import { tableStore } from "./pg_store.mjs";

const config = JSON.parse(process.argv[2]);
const pool = new pg.Pool({ connectionString: config.url, max: 4 });
const store = tableStore(pool, config.table);

const nested = (n) => {
  let v = "bottom";
  for (let i = 0; i < n; i++) v = [v];
  return v;
};
const VALUES = {
  cut: "Zoë 😀".slice(0, 5), // ends in a lone surrogate
  big: 2 ** 60,
  huge: 12345678901234567890, // past 2**53: JavaScript keeps its nearest double
  floats: [1e21, 5e-324, -0.5],
  deep: nested(3000), // past the ~1,000 levels Python's json module follows
};

const ran = [];
const replayed = {};
const workflow = async ({ step }) => {
  for (const [key, value] of Object.entries(VALUES)) {
    replayed[key] = await step(key, () => {
      ran.push(key);
      return ok(value);
    });
  }
  if (config.phase === "write") process.kill(process.pid, "SIGKILL");
  const python = await step("python-step", () => {
    ran.push("python-step");
    return ok("from node");
  });
  return python;
};

let result;
for (let attempt = 0; attempt < 100; attempt++) {
  result = await durable.run({}, workflow, { id: config.id, store, lockTtlMs: 1000 });
  if (!(result.ok === false && result.error?.type === "CONCURRENT_EXECUTION")) break;
  await new Promise((r) => setTimeout(r, 100)); // a killed holder's lease: wait it out
}
for (const [key, value] of Object.entries(VALUES)) {
  if (key === "deep") {
    // deepStrictEqual recurses past Node's stack at this depth; equal JSON text of
    // nested arrays and strings is the same equality.
    assert.equal(JSON.stringify(replayed[key]), JSON.stringify(value), key);
  } else {
    assert.deepStrictEqual(replayed[key], value, key);
  }
}
console.log(JSON.stringify({ ok: result.ok, value: result.value, ran }));
await pool.end();
