import type { Kysely } from 'kysely';
import { KEPT_MODEL, keptRowId, keptWriters } from '../models/system.js';
import { entryAt } from '../peer-log/log-store.js';
import type { ModelTable, SqlRow } from '../storage/model-table.js';
import type { InternalTables } from '../storage/schema.js';
import { runSql } from '../util/sql.js';
import type { LocalWriter } from './local-writes.js';
import type { Kept, Removal } from './removals.js';
import type { WriteBatch } from './write-batch.js';
import { isWriterOf } from './writers.js';

/**
 * Changes of a removed device that members took after its cutoff, before they learned of the
 * removal (docs/architecture.md, "The cutoff rule"). A member that learns of a removal records
 * what it holds of the device beyond the cutoff (`recordKept`, in the transaction that brought
 * the removal), and every member keeps the device's changes through the greatest position any
 * member recorded (`Removals.refuses`): so the members that took them and those that refused
 * them end up with the same set, and the device's later changes are refused by all.
 */

const KEPT_PAGE = 1_000;

/** The `sync_removal_kept` rows held, merged per removed device (greatest position per writer, greatest version). */
export async function readKept(db: Kysely<InternalTables>, table: ModelTable): Promise<Map<string, Kept>> {
  const kept = new Map<string, { writers: Map<string, number>; owned: number }>();
  for (let after: string | undefined; ; ) {
    const rows = await runSql<SqlRow>(db, table.liveRowsSql(after !== undefined), after === undefined ? [KEPT_PAGE] : [after, KEPT_PAGE]);
    for (const row of rows) {
      const { id, values } = table.sharedFromRow(row);
      after = id;
      const device = values.device as string;
      const merged = kept.get(device) ?? { writers: new Map<string, number>(), owned: 0 };
      for (const [writer, seq] of keptWriters(values)) merged.writers.set(writer, Math.max(seq, merged.writers.get(writer) ?? 0));
      merged.owned = Math.max(merged.owned, values.owned as number);
      kept.set(device, merged);
    }
    if (rows.length < KEPT_PAGE) return kept;
  }
}

/**
 * Writes this device's kept row of each removed device (but itself) of which it holds changes
 * stamped after the cutoff beyond what its row already says: the positions of the device's
 * writers whose held entry there is after the cutoff (a writer's clocks grow with its
 * positions; an entry no longer held was acknowledged by every partner, the remover included,
 * so it came before the cutoff), and the version of its device-owned rows if one of them was
 * written after the cutoff.
 */
export async function recordKept(
  batch: WriteBatch,
  writer: LocalWriter,
  removals: readonly Removal[],
  self: string,
  tables: { kept: ModelTable; owned: readonly ModelTable[] },
): Promise<void> {
  const { vector, ownerVersions } = batch.counters();
  for (const removal of removals) {
    if (removal.device === self) continue;
    const writers: Record<string, number> = {};
    for (const [origin, seq] of vector) {
      if (!isWriterOf(origin, removal.device) || seq === 0) continue;
      const last = await entryAt(batch.db, origin, seq);
      if (last && last.hlc > removal.cutoff) writers[origin] = seq;
    }
    let owned = 0;
    for (const table of tables.owned) {
      const [after] = await runSql<SqlRow>(batch.db, table.ownedAfterClockSql(), [removal.device, removal.cutoff]);
      if (after) owned = ownerVersions.get(removal.device) ?? 0;
    }
    const id = keptRowId(removal.device, self);
    const held = (await batch.loadShared(tables.kept, id))?.values;
    const heldWriters = held ? keptWriters(held) : new Map<string, number>();
    const more = Object.entries(writers).some(([origin, seq]) => seq > (heldWriters.get(origin) ?? 0)) || owned > ((held?.owned as number | undefined) ?? 0);
    // The row's merge keeps the greater of what it held and this (`joinKept`).
    if (more) await writer.upsert(KEPT_MODEL.name, { id, device: removal.device, member: self, writers, owned });
  }
}
