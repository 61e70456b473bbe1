import type { Kysely } from 'kysely';
import type { ModelTable } from '../storage/model-table.js';
import type { InternalTables } from '../storage/schema.js';
import { runSql } from '../util/sql.js';

/**
 * Device-owned rows are signed since protocol 3.0 (`models/signed-owned-rows.ts`); a table from
 * before holds them without certificates. When its `_cert` column is added (in the transaction
 * that upgrades the library, so a crash leaves it as it was; also at a later open, for a model
 * not registered at the first 3.0 open):
 * - this device's own rows stay as they are (same versions) until they are first served, when
 *   it signs them like the rows of any write (`sign-own-rows.ts`): partners that hold them
 *   unsigned take the signed ones when they next pull them;
 * - another owner's rows are kept as they are (adopted as trusted, as the unsigned log was at
 *   2.0) but nobody can check them, so they are never served, and the owner's cursor goes back
 *   to the start: the owner's rows are pulled again, signed, from whoever holds them so, and
 *   each replaces the unsigned one it matches.
 */
export async function adoptUnsignedOwnedRows(
  db: Kysely<InternalTables>,
  /** Device-owned tables whose `_cert` column was just added. */
  tables: readonly ModelTable[],
  self: string,
): Promise<void> {
  const unsignedOwners = new Set<string>();
  for (const table of tables) {
    const others = await runSql<{ owner: string }>(db, `SELECT DISTINCT _owner AS owner FROM ${table.table} WHERE _cert IS NULL AND _owner != ?`, [self]);
    for (const { owner } of others) unsignedOwners.add(owner);
  }
  if (unsignedOwners.size > 0) await db.deleteFrom('sync_owner_versions').where('owner', 'in', [...unsignedOwners]).execute();
}
