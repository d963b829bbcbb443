// A child workflow in awaitly 1.35 (step.workflow over its own durable.run), twin of
// child.py.
//   node child.mjs '{"url": ..., "table": ..., "id": ..., "crashIn": "crash-here"|null}'
// The child's step notes that Node ran it (interop_effects, "c1").
import pg from "pg";
import { ok } from "awaitly";
import { durable } from "awaitly/durable";
import { tableStore } from "./pg_store.mjs";

const config = JSON.parse(process.argv[2]);
const pool = new pg.Pool({ connectionString: config.url, max: 4 });
const store = tableStore(pool, config.table);

const note = (key) =>
  pool.query("INSERT INTO interop_effects (workflow_id, step, runtime) VALUES ($1, $2, 'node')", [config.id, key]);

const child = async ({ step }) => await step("c1", async () => { await note("c1"); return ok({ total: 12 }); });

const parent = async ({ step }) => {
  const bill = await step.workflow("sub", () => durable.run({}, child, {
    id: `${config.id}:sub`, store, lockTtlMs: 1000, idempotencyKey: `${config.id}:sub`,
  }), { key: "sub" });
  await step("crash-here", async () => {
    if (config.crashIn === "crash-here") process.kill(process.pid, "SIGKILL");
    return ok("crossed");
  });
  return await step("final", async () => ok(bill));
};

let result;
for (let attempt = 0; attempt < 100; attempt++) {
  result = await durable.run({}, parent, { id: config.id, store, lockTtlMs: 1000 });
  if (!(result.ok === false && result.error?.type === "CONCURRENT_EXECUTION")) break;
  await new Promise((r) => setTimeout(r, 100)); // a killed holder's lease: wait it out
}
console.log(JSON.stringify(result.ok ? { ok: true, value: result.value } : { ok: false, error: result.error }));
await pool.end();
