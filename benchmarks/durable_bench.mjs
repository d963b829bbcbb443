// awaitly 1.35's durable.run over sqlalchemy-awaitly's table: N trivial steps per
// workflow. Prints one JSON line: {"<N>": [seconds per workflow, ...], ...}.
//   node durable_bench.mjs URL TABLE '{"10": 20, "100": 5}' TAG
import pg from "pg";
import { ok } from "awaitly";
import { durable } from "awaitly/durable";
import { tableStore } from "./pg_store.mjs";

const [url, table, plan, tag] = process.argv.slice(2);
const pool = new pg.Pool({ connectionString: url, max: 2 });
const store = tableStore(pool, table);
const out = {};
for (const [size, repeats] of Object.entries(JSON.parse(plan))) {
  const n = Number(size);
  const workflow = async ({ step }) => {
    let last = 0;
    for (let i = 0; i < n; i++) last = await step(`step-${i}`, () => ok(i));
    return last;
  };
  out[size] = [];
  for (let r = 0; r < repeats; r++) {
    const started = process.hrtime.bigint();
    const result = await durable.run({}, workflow, { id: `node-${tag}-${n}-${r}`, store });
    if (!result.ok) throw new Error(JSON.stringify(result.error));
    out[size].push(Number(process.hrtime.bigint() - started) / 1e9);
  }
}
console.log(JSON.stringify(out));
await pool.end();
