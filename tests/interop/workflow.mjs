// The interop checkout workflow, run by awaitly 1.35's own durable.run.
//   node workflow.mjs '{"url": ..., "table": ..., "id": ..., "crashIn": "create-order"|null,
//                       "idempotencyKey": ..., "input": ..., "lockTtlMs": 1000,
//                       "metadata": {...}}'
// Each step notes that Node ran it (interop_effects); crashIn SIGKILLs this process
// as that step starts. Prints the run's result as one JSON line.
import pg from "pg";
import { ok } from "awaitly";
import { durable } from "awaitly/durable";
import { tableStore } from "./pg_store.mjs";

const config = JSON.parse(process.argv[2]);
const pool = new pg.Pool({ connectionString: config.url, max: 4 });
const store = tableStore(pool, config.table);

const effect = async (key, value) => {
  if (config.crashIn === key) process.kill(process.pid, "SIGKILL");
  await pool.query("INSERT INTO interop_effects (workflow_id, step, runtime) VALUES ($1, $2, 'node')", [config.id, key]);
  return ok(value);
};

const checkout = async ({ step }) => {
  const user = await step("fetch-user", () => effect("fetch-user", { id: "123", name: "Alice" }));
  const order = await step("create-order", () => effect("create-order", { id: "order-1", userId: user.id }));
  const mail = await step("send-email", () => effect("send-email", { to: user.name, order: order.id }));
  return { user, order, mail };
};

let result;
for (let attempt = 0; attempt < 100; attempt++) {
  result = await durable.run({}, checkout, {
    id: config.id,
    store,
    lockTtlMs: config.lockTtlMs ?? 1000,
    idempotencyKey: config.idempotencyKey ?? undefined,
    input: config.input ?? undefined,
    metadata: config.metadata ?? undefined, // what makes the run recoverable by Python
  });
  if (!(result.ok === false && result.error?.type === "CONCURRENT_EXECUTION")) break;
  await new Promise((r) => setTimeout(r, 100)); // a killed holder's lease: wait it out
}
console.log(JSON.stringify(result.ok ? { ok: true, value: result.value } : { ok: false, error: result.error }));
await pool.end();
