// A saga in awaitly 1.35 (compensate on steps), run by its own durable.run; twin of saga.py.
//   node saga.mjs '{"url": ..., "table": ..., "id": ..., "crashIn": "crash-here"|null}'
// Each compensation notes that Node ran it (interop_effects, "undo-<step>").
import pg from "pg";
import { ok, err } from "awaitly";
import { durable } from "awaitly/durable";
import { tableStore } from "./pg_store.mjs";

const config = JSON.parse(process.argv[2]);
const pool = new pg.Pool({ connectionString: config.url, max: 4 });
const store = tableStore(pool, config.table);

const note = (key) =>
  pool.query("INSERT INTO interop_effects (workflow_id, step, runtime) VALUES ($1, $2, 'node')", [config.id, key]);

const saga = async ({ step }) => {
  await step("reserve", async () => ok({ room: 7 }), { compensate: () => note("undo-reserve") });
  await step("charge", async () => ok("ch_1"), { compensate: () => note("undo-charge") });
  await step("crash-here", async () => {
    if (config.crashIn === "crash-here") process.kill(process.pid, "SIGKILL");
    return ok("crossed");
  });
  return await step("ship", async () => err({ type: "NO_COURIER" }));
};

let result;
for (let attempt = 0; attempt < 100; attempt++) {
  result = await durable.run({}, saga, { id: config.id, store, lockTtlMs: 1000 });
  if (!(result.ok === false && result.error?.type === "CONCURRENT_EXECUTION")) break;
  await new Promise((r) => setTimeout(r, 100)); // a killed holder's lease: wait it out
}
console.log(JSON.stringify(result.ok ? { ok: true, value: result.value } : { ok: false, error: result.error }));
await pool.end();
