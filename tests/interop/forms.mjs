// The step forms of awaitly 1.35 (retry, timeout, sleep, try, fromResult), run by its own
// durable.run; twin of forms.py.
//   node forms.mjs '{"url": ..., "table": ..., "id": ..., "crashIn": "crash-here"|null,
//                    "failing": "timeout"|"exhausted"|null}'
// Each call of a step's function notes that Node ran it (interop_effects); crashIn
// SIGKILLs this process as that step starts. Prints the run's result as one JSON line.
import pg from "pg";
import { ok, err } from "awaitly";
import { durable } from "awaitly/durable";
import { tableStore } from "./pg_store.mjs";

const config = JSON.parse(process.argv[2]);
const pool = new pg.Pool({ connectionString: config.url, max: 4 });
const store = tableStore(pool, config.table);

const note = (key) =>
  pool.query("INSERT INTO interop_effects (workflow_id, step, runtime) VALUES ($1, $2, 'node')", [config.id, key]);

let flakyCalls = 0;
const forms = async ({ step }) => {
  await step("flaky", async () => {
    await note("flaky");
    flakyCalls += 1;
    return flakyCalls < 2 ? err({ type: "BUSY" }) : ok("ok-after-retry");
  }, { retry: { attempts: 3, backoff: "fixed", initialDelay: 10, jitter: false } });
  await step("slow", async () => {
    await note("slow");
    await new Promise((r) => setTimeout(r, 500));
    return ok("late");
  }, { timeout: { ms: 50, onTimeout: "option" } });
  await step.sleep("nap", "10ms", { key: "nap" });
  await step.try("parsed", async () => { await note("parsed"); return JSON.parse("42"); }, { error: "PARSE" });
  await step.fromResult("found", async () => { await note("found"); return ok("v"); }, { error: "NOT_FOUND" });
  await step("crash-here", async () => {
    if (config.crashIn === "crash-here") process.kill(process.pid, "SIGKILL");
    await note("crash-here");
    return ok("crossed");
  });
  return await step("final", async () => { await note("final"); return ok("done"); });
};

const failing = async ({ step }) => {
  if (config.failing === "timeout") {
    return await step("slow-err", async () => {
      await new Promise((r) => setTimeout(r, 500));
      return ok("late");
    }, { timeout: { ms: 50 } });
  }
  return await step("exhausted", async () => err({ type: "BOOM" }),
    { retry: { attempts: 2, backoff: "fixed", initialDelay: 10, jitter: false } });
};

let result;
for (let attempt = 0; attempt < 100; attempt++) {
  result = await durable.run({}, config.failing ? failing : forms, { id: config.id, store, lockTtlMs: 1000 });
  if (!(result.ok === false && result.error?.type === "CONCURRENT_EXECUTION")) break;
  await new Promise((r) => setTimeout(r, 100)); // a killed holder's lease: wait it out
}
console.log(JSON.stringify(result.ok ? { ok: true, value: result.value } : { ok: false, error: result.error }));
await pool.end();
process.exit(0);
