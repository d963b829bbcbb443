// Keyed parallel groups of awaitly 1.35 (step.all, step.map), run by its own durable.run;
// twin of groups.py.
//   node groups.mjs '{"url": ..., "table": ..., "id": ..., "crashIn": "group"|"crash-here"|null,
//                     "failing": true|null}'
// Each member notes that Node ran it (interop_effects); crashIn "group" SIGKILLs this
// process in member b once member a has ended, "crash-here" after both groups.
import pg from "pg";
import { ok, err } from "awaitly";
import { durable } from "awaitly/durable";
import { tableStore } from "./pg_store.mjs";

const config = JSON.parse(process.argv[2]);
const pool = new pg.Pool({ connectionString: config.url, max: 4 });
const store = tableStore(pool, config.table);

const note = (key) =>
  pool.query("INSERT INTO interop_effects (workflow_id, step, runtime) VALUES ($1, $2, 'node')", [config.id, key]);

const groups = async ({ step }) => {
  let aDone;
  const aEnded = new Promise((resolve) => { aDone = resolve; });
  const both = await step.all("both", {
    a: async () => { await note("a"); aDone(); return ok(1); },
    b: async () => {
      await aEnded;
      if (config.crashIn === "group") process.kill(process.pid, "SIGKILL");
      await note("b");
      return ok("two");
    },
  }, { key: "both" });
  const tens = await step.map("tens", [1, 2, 3], async (x) => { await note(`m${x}`); return ok(x * 10); },
    { key: "tens", concurrency: 2 });
  await step("crash-here", async () => {
    if (config.crashIn === "crash-here") process.kill(process.pid, "SIGKILL");
    await note("crash-here");
    return ok("crossed");
  });
  return await step("final", async () => ok({ both, tens }));
};

const failing = async ({ step }) =>
  await step.map("m", [1, 2, 3], async (x) => (x === 2 ? err({ type: "TWO" }) : ok(x)), { key: "m" });

let result;
for (let attempt = 0; attempt < 100; attempt++) {
  result = await durable.run({}, config.failing ? failing : groups, { id: config.id, store, lockTtlMs: 1000 });
  if (!(result.ok === false && result.error?.type === "CONCURRENT_EXECUTION")) break;
  await new Promise((r) => setTimeout(r, 100)); // a killed holder's lease: wait it out
}
console.log(JSON.stringify(result.ok ? { ok: true, value: result.value } : { ok: false, error: result.error }));
await pool.end();
