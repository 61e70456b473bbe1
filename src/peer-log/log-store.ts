import type { Kysely } from 'kysely';
import { ENCODED_HLC_LENGTH } from '../hlc/hlc.js';
import type { InternalTables } from '../storage/schema.js';
import type { ChangeOp, StoredValues } from '../models/types.js';
import { pack, unpack } from '../util/msgpack.js';
import { runSql } from '../util/sql.js';
import type { EntriesAfterResult, LogEntry, ReadLimits, VersionVector } from './types.js';

type Db = Kysely<InternalTables>;

/** Bytes an entry costs besides its fields: ids, clock and framing, rounded up. */
const ENTRY_OVERHEAD_BYTES = 160;
/**
 * An entry's HLC was issued by its origin (checked on receipt), so the log stores only the
 * time part (wall + counter) and appends the origin when reading.
 */
const HLC_TIME_LENGTH = ENCODED_HLC_LENGTH - 36;
const LOG_COLUMNS = 7;
const ENTRIES_PER_STATEMENT = Math.floor(8_000 / LOG_COLUMNS);

/** Appends entries (already sequenced) to the log; call inside the write transaction. */
export async function appendEntries(db: Db, entries: readonly LogEntry[]): Promise<void> {
  for (let start = 0; start < entries.length; start += ENTRIES_PER_STATEMENT) {
    const chunk = entries.slice(start, start + ENTRIES_PER_STATEMENT);
    const params: unknown[] = [];
    for (const e of chunk) {
      params.push(e.origin, e.seq, e.hlc.slice(0, HLC_TIME_LENGTH), e.model, e.id, e.op, e.fields === null ? null : pack(e.fields));
    }
    await runSql(
      db,
      `INSERT INTO sync_log (origin, seq, hlc, model, record_id, op, fields) VALUES ${chunk
        .map(() => '(?, ?, ?, ?, ?, ?, ?)')
        .join(', ')}`,
      params,
    );
  }
}

export async function readVector(db: Db): Promise<Map<string, { seq: number; prunedThrough: number }>> {
  const rows = await db.selectFrom('sync_vector').selectAll().execute();
  return new Map(rows.map((r) => [r.origin, { seq: r.seq, prunedThrough: r.pruned_through }]));
}

export async function writeVector(db: Db, changed: ReadonlyMap<string, number>): Promise<void> {
  if (changed.size === 0) return;
  await db
    .insertInto('sync_vector')
    .values([...changed].map(([origin, seq]) => ({ origin, seq, pruned_through: 0 })))
    .onConflict((oc) => oc.column('origin').doUpdateSet((eb) => ({ seq: eb.ref('excluded.seq') })))
    .execute();
}

/**
 * Entries the holder of `after` lacks, bounded by record count and bytes. Entries come grouped
 * by origin in sequence order, so every prefix of the result keeps each origin gap-free.
 * At least one entry is returned when any is missing, so a single large entry still moves.
 */
export async function entriesAfter(db: Db, after: VersionVector, limits: ReadLimits): Promise<EntriesAfterResult> {
  const held = await readVector(db);
  const result: EntriesAfterResult = { entries: [], hasMore: false, pruned: [] };
  let bytes = 0;
  const origins = [...held.keys()].sort();
  for (const origin of origins) {
    const { seq: heldSeq, prunedThrough } = held.get(origin)!;
    const from = after[origin] ?? 0;
    if (heldSeq <= from) continue;
    if (from < prunedThrough) {
      result.pruned.push({ origin, requestedAfter: from, prunedThrough });
      continue;
    }
    if (result.entries.length >= limits.maxRecords || bytes >= limits.maxBytes) {
      result.hasMore = true;
      continue;
    }
    const rows = await db
      .selectFrom('sync_log')
      .selectAll()
      .where('origin', '=', origin)
      .where('seq', '>', from)
      .orderBy('seq')
      .limit(limits.maxRecords - result.entries.length)
      .execute();
    for (const row of rows) {
      const size = ENTRY_OVERHEAD_BYTES + (row.fields?.byteLength ?? 0);
      if (result.entries.length > 0 && bytes + size > limits.maxBytes) {
        result.hasMore = true;
        break;
      }
      bytes += size;
      result.entries.push({
        origin: row.origin,
        seq: row.seq,
        hlc: row.hlc + row.origin,
        model: row.model,
        id: row.record_id,
        op: row.op as ChangeOp,
        fields: row.fields === null ? null : (unpack(row.fields) as StoredValues),
      });
    }
    if (from + rows.length < heldSeq) result.hasMore = true;
  }
  return result;
}

/** Records what `partner` (an authenticated device) holds; acks only ever move forward. */
export async function recordAck(db: Db, partner: string, vector: VersionVector): Promise<void> {
  const rows = Object.entries(vector).map(([origin, seq]) => ({ partner, origin, seq }));
  if (rows.length === 0) return;
  await db
    .insertInto('sync_acks')
    .values(rows)
    .onConflict((oc) =>
      oc.columns(['partner', 'origin']).doUpdateSet((eb) => ({
        seq: eb.fn('max', [eb.ref('sync_acks.seq'), eb.ref('excluded.seq')]),
      })),
    )
    .execute();
}

export async function readAcks(db: Db): Promise<Map<string, VersionVector>> {
  const rows = await db.selectFrom('sync_acks').selectAll().execute();
  const acks = new Map<string, VersionVector>();
  for (const r of rows) {
    const vector = acks.get(r.partner) ?? {};
    vector[r.origin] = r.seq;
    acks.set(r.partner, vector);
  }
  return acks;
}

/**
 * Deletes the entries every partner in `partners` has acknowledged. A partner that never acked
 * counts as holding nothing, so it blocks pruning (unlike a system that only looks at the acks
 * it has). Returns the number of entries deleted.
 */
export async function pruneAcknowledged(db: Db, partners: readonly string[]): Promise<number> {
  const held = await readVector(db);
  const acks = await readAcks(db);
  let deleted = 0;
  for (const [origin, { seq: heldSeq, prunedThrough }] of held) {
    let through = heldSeq;
    for (const partner of partners) through = Math.min(through, acks.get(partner)?.[origin] ?? 0);
    if (through <= prunedThrough) continue;
    const result = await db
      .deleteFrom('sync_log')
      .where('origin', '=', origin)
      .where('seq', '<=', through)
      .executeTakeFirst();
    deleted += Number(result.numDeletedRows);
    await db.updateTable('sync_vector').set({ pruned_through: through }).where('origin', '=', origin).execute();
  }
  return deleted;
}

export async function countEntries(db: Db): Promise<number> {
  const row = await db
    .selectFrom('sync_log')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}
