import type { Kysely } from 'kysely';
import { MAX_SIGNED_ROWS, signOwnedRows } from '../models/signed-owned-rows.js';
import type { Signatures } from '../runtime/signatures.js';
import type { ModelTable, SqlRow } from '../storage/model-table.js';
import type { InternalTables } from '../storage/schema.js';
import { runSql } from '../util/sql.js';

/**
 * This device's device-owned rows are signed when they are first read to leave the device, not
 * when they are written: a local write does not wait for Ed25519, and the rows of many writes
 * (a burst of single-row writes, a device offline for a while) share one signature. A row
 * without a certificate is never served (`readOwnedAfter`), so the engine signs before it reads
 * its own rows for a partner (`LibraryEngine.ownedAfter`, `ownedDigests`).
 */

/**
 * Signs up to `MAX_SIGNED_ROWS` of this device's rows without a certificate from version `from`
 * on, in version order, one tree per table; returns the version to go on from, null when none
 * is left (a table that filled its tree may hold more from its last version signed).
 */
export async function signOwnRowsFrom(
  db: Kysely<InternalTables>,
  tables: readonly ModelTable[],
  self: string,
  library: string,
  signatures: Signatures,
  from: number,
): Promise<number | null> {
  let next: number | null = null;
  for (const table of tables) {
    const rows = await runSql<SqlRow>(db, `SELECT * FROM ${table.table} WHERE _owner = ? AND _version >= ? AND _cert IS NULL ORDER BY _version LIMIT ?`, [
      self,
      from,
      MAX_SIGNED_ROWS,
    ]);
    if (rows.length === 0) continue;
    const states = rows.map((row) => table.ownedFromRow(row));
    const certs = signOwnedRows(signatures, library, self, states.map((state) => ({ ...state, model: table.model.name })));
    for (const [i, state] of states.entries()) await runSql(db, `UPDATE ${table.table} SET _cert = ? WHERE id = ?`, [certs[i]!, state.id]);
    const last = states[states.length - 1]!.version;
    if (rows.length === MAX_SIGNED_ROWS && (next === null || last < next)) next = last;
  }
  return next;
}

/** The lowest version of this device's rows without a certificate (left so by a stop before they were served), if any. */
export async function lowestUnsignedOwnVersion(db: Kysely<InternalTables>, tables: readonly ModelTable[], self: string): Promise<number | null> {
  let lowest: number | null = null;
  for (const table of tables) {
    const [row] = await runSql<{ v: number | null }>(db, `SELECT min(_version) AS v FROM ${table.table} WHERE _owner = ? AND _cert IS NULL`, [self]);
    if (row?.v != null && (lowest === null || row.v < lowest)) lowest = row.v;
  }
  return lowest;
}
