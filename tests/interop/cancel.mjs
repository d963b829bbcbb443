// Cancellation in awaitly 1.35 (an AbortSignal), run by its own durable.run; twin of
// cancel.py.
//   node cancel.mjs '{"url": ..., "table": ..., "id": ..., "cancelAfter": "s1"|null}'
// Each step notes that Node ran it; with cancelAfter the run is cancelled as that step
// ends, so the next one never starts.
import pg from "pg";
import { ok } from "awaitly";
import { durable } from "awaitly/durable";
import { tableStore } from "./pg_store.mjs";

const config = JSON.parse(process.argv[2]);
const pool = new pg.Pool({ connectionString: config.url, max: 4 });
const store = tableStore(pool, config.table);
const controller = new AbortController();

const note = (key) =>
  pool.query("INSERT INTO interop_effects (workflow_id, step, runtime) VALUES ($1, $2, 'node')", [config.id, key]);

const stepOf = (step, key) => step(key, async () => {
  await note(key);
  if (config.cancelAfter === key) controller.abort("operator");
  return ok(key.toUpperCase());
});

const flow = async ({ step }) => {
  await stepOf(step, "s1");
  await stepOf(step, "s2");
  return await stepOf(step, "s3");
};

const result = await durable.run({}, flow, { id: config.id, store, lockTtlMs: 1000, signal: controller.signal });
const cause = result.ok ? null : result.cause;
console.log(JSON.stringify(result.ok ? { ok: true, value: result.value } : { ok: false, cancelled: cause?.type ?? null }));
await pool.end();
