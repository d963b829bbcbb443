// awaitly 1.35's store interface over sqlalchemy-awaitly's table: the rows Python
// reads and writes. key = prefix + id, value = JSON text; leases are rows under
// workflow:lock:<id> with value {"ownerToken": ...} and expiry by the database clock.
import { randomUUID } from "node:crypto";

export function tableStore(pool, table, { prefix = "workflow:state:", lockPrefix = "workflow:lock:" } = {}) {
  const live = "(expires_at IS NULL OR expires_at > now())";
  return {
    async save(id, snapshot) {
      await pool.query(
        `INSERT INTO ${table} (key, value, expires_at) VALUES ($1, $2, NULL)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = NULL`,
        [prefix + id, JSON.stringify(snapshot)],
      );
    },
    async load(id) {
      const { rows } = await pool.query(`SELECT value FROM ${table} WHERE key = $1 AND ${live}`, [prefix + id]);
      return rows.length ? JSON.parse(rows[0].value) : null;
    },
    async delete(id) {
      await pool.query(`DELETE FROM ${table} WHERE key = $1`, [prefix + id]);
    },
    async list() {
      return [];
    },
    async close() {},
    async tryAcquire(id, { ttlMs = 60000 } = {}) {
      const ownerToken = randomUUID().replaceAll("-", "");
      const { rowCount } = await pool.query(
        `INSERT INTO ${table} AS cur (key, value, expires_at)
         VALUES ($1, $2, now() + $3::float8 * interval '1 millisecond')
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
           WHERE cur.expires_at IS NOT NULL AND cur.expires_at <= now()
         RETURNING key`,
        [lockPrefix + id, JSON.stringify({ ownerToken }), ttlMs],
      );
      return rowCount === 1 ? { ownerToken } : null;
    },
    async release(id, ownerToken) {
      await pool.query(`DELETE FROM ${table} WHERE key = $1 AND value = $2`, [
        lockPrefix + id,
        JSON.stringify({ ownerToken }),
      ]);
    },
    async renew(id, ownerToken, { ttlMs = 60000 } = {}) {
      const { rowCount } = await pool.query(
        `UPDATE ${table} SET expires_at = now() + $3::float8 * interval '1 millisecond'
         WHERE key = $1 AND value = $2 AND ${live}`,
        [lockPrefix + id, JSON.stringify({ ownerToken }), ttlMs],
      );
      return rowCount > 0;
    },
  };
}
