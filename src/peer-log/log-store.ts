import { type Kysely, sql } from 'kysely';
import type { InternalTables } from '../storage/schema.js';
import { type Chunk, CHUNK_OVERHEAD_BYTES, type ChunksAfterResult, decodeChunk, encodeChunks } from './chunk.js';
import { exceedsRecordLimit, MAX_RECORD_BYTES } from '../models/values.js';
import type { EntriesAfterResult, LogEntry, ReadLimits, VersionVector } from './types.js';

type Db = Kysely<InternalTables>;

/**
 * Appends entries (grouped by origin, already sequenced) and chunks kept in their received
 * encoding; call inside the write transaction.
 */
export async function appendEntries(db: Db, entries: readonly LogEntry[], chunks: readonly Chunk[] = []): Promise<void> {
  const rows = [...encodeChunks(entries), ...chunks];
  if (rows.length === 0) return;
  await db
    .insertInto('sync_log')
    .values(rows.map((c) => ({ origin: c.origin, first_seq: c.firstSeq, last_seq: c.lastSeq, entries: c.entries })))
    .execute();
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

/** Records `origin` as held and pruned through `through` (a snapshot covered it); drops its older chunks. */
export async function holdPrunedPrefix(db: Db, origin: string, through: number): Promise<void> {
  await db.deleteFrom('sync_log').where('origin', '=', origin).where('last_seq', '<=', through).execute();
  await db
    .insertInto('sync_vector')
    .values({ origin, seq: through, pruned_through: through })
    .onConflict((oc) => oc.column('origin').doUpdateSet({ seq: through, pruned_through: through }))
    .execute();
}

/**
 * Log chunks holding the entries the holder of `after` lacks, bounded by entry count and bytes.
 * Chunks come grouped by origin in sequence order, so every prefix of the result keeps each
 * origin gap-free. Stored chunks are handed out as they are, without decoding; a chunk is cut
 * only where the vector or the limits fall inside it. At least one entry is returned when any
 * is missing, so a single large entry still moves.
 */
export async function chunksAfter(db: Db, after: VersionVector, limits: ReadLimits): Promise<ChunksAfterResult> {
  const held = await readVector(db);
  const result: ChunksAfterResult = { chunks: [], entries: 0, hasMore: false, pruned: [] };
  let bytes = 0;
  let full = false;
  const room = (entries: number, size: number) =>
    result.entries + entries <= limits.maxRecords && bytes + size + CHUNK_OVERHEAD_BYTES <= limits.maxBytes;
  const take = (chunk: Chunk) => {
    result.chunks.push(chunk);
    result.entries += chunk.lastSeq - chunk.firstSeq + 1;
    bytes += chunk.entries.byteLength + CHUNK_OVERHEAD_BYTES;
  };
  for (const origin of [...held.keys()].sort()) {
    const { seq: heldSeq, prunedThrough } = held.get(origin)!;
    const from = after[origin] ?? 0;
    if (heldSeq <= from) continue;
    if (from < prunedThrough) {
      result.pruned.push({ origin, requestedAfter: from, prunedThrough });
      continue;
    }
    if (full) {
      result.hasMore = true;
      continue;
    }
    let next = from + 1;
    let reading = true;
    while (reading && next <= heldSeq) {
      // A few chunks at a time: bounded memory whatever the limits.
      const stored = await chunksReaching(db, origin, next, 4);
      reading = stored.length > 0;
      for (const storedChunk of stored) {
        // Nothing stored at `next`: the vector is ahead of the log.
        if (storedChunk.firstSeq > next) reading = false;
        if (!reading) break;
        // Only a chunk larger than the record limit can hold an entry over it.
        const unservable = storedChunk.entries.byteLength > MAX_RECORD_BYTES ? firstOverLimit(storedChunk, next) : undefined;
        if (unservable === next) {
          // Held from before the record limit: a partner would refuse it, so this log cannot
          // serve past it; reported like a pruned position, the requester takes a snapshot.
          if (next === from + 1) result.pruned.push({ origin, requestedAfter: from, prunedThrough: next });
          reading = false;
          break;
        }
        const chunk = unservable === undefined ? storedChunk : sliceChunk(storedChunk, next, unservable - 1);
        const whole = chunk.firstSeq === next && room(chunk.lastSeq - chunk.firstSeq + 1, chunk.entries.byteLength);
        const part = whole ? chunk : cutChunk(chunk, next, room, result.entries === 0);
        if (part) {
          take(part);
          next = part.lastSeq + 1;
        }
        if (next <= chunk.lastSeq) {
          full = true;
          reading = false;
        }
        // The next page starts at the unservable entry and reports it.
        if (unservable !== undefined) reading = false;
      }
    }
    if (next <= heldSeq) result.hasMore = true;
  }
  return result;
}

/**
 * The longest part of `chunk` starting at seq `from` that `room` allows (at least one entry
 * when `atLeastOne`), sliced from the stored bytes; undefined when nothing fits.
 */
function cutChunk(
  chunk: Chunk,
  from: number,
  room: (entries: number, bytes: number) => boolean,
  atLeastOne: boolean,
): Chunk | undefined {
  const decoded = decodeChunk(chunk).filter((d) => d.entry.seq >= from);
  let count = 0;
  while (count < decoded.length) {
    const size = decoded[count]!.end - decoded[0]!.start;
    if (!room(count + 1, size) && !(atLeastOne && count === 0)) break;
    count += 1;
  }
  if (count === 0) return undefined;
  const first = decoded[0]!;
  const last = decoded[count - 1]!;
  return { origin: chunk.origin, firstSeq: first.entry.seq, lastSeq: last.entry.seq, entries: chunk.entries.subarray(first.start, last.end) };
}

/** The seq of the first entry from seq `from` on whose fields exceed the record limit, if any. */
function firstOverLimit(chunk: Chunk, from: number): number | undefined {
  return decodeChunk(chunk).find(({ entry }) => entry.seq >= from && entry.fields !== null && exceedsRecordLimit(entry.fields))
    ?.entry.seq;
}

/** The entries `first` … `last` of `chunk`, sliced from its bytes. */
function sliceChunk(chunk: Chunk, first: number, last: number): Chunk {
  const decoded = decodeChunk(chunk);
  const start = decoded[first - chunk.firstSeq]!.start;
  const end = decoded[last - chunk.firstSeq]!.end;
  return { origin: chunk.origin, firstSeq: first, lastSeq: last, entries: chunk.entries.subarray(start, end) };
}

/** Up to `limit` stored chunks of `origin` that end at `seq` or later, in seq order. */
async function chunksReaching(db: Db, origin: string, seq: number, limit: number): Promise<Chunk[]> {
  const rows = await db
    .selectFrom('sync_log')
    .select(['first_seq', 'last_seq', 'entries'])
    .where('origin', '=', origin)
    .where('last_seq', '>=', seq)
    .orderBy('last_seq')
    .limit(limit)
    .execute();
  return rows.map((row) => ({ origin, firstSeq: row.first_seq, lastSeq: row.last_seq, entries: row.entries }));
}

/** The entry of `origin` at `seq`, if the log holds it (not pruned). */
export async function entryAt(db: Db, origin: string, seq: number): Promise<LogEntry | undefined> {
  const [chunk] = await chunksReaching(db, origin, seq, 1);
  if (!chunk || chunk.firstSeq > seq) return undefined;
  return decodeChunk(chunk).find((d) => d.entry.seq === seq)?.entry;
}

/** `chunksAfter`, decoded into entries. */
export async function entriesAfter(db: Db, after: VersionVector, limits: ReadLimits): Promise<EntriesAfterResult> {
  const { chunks, hasMore, pruned } = await chunksAfter(db, after, limits);
  return { entries: chunks.flatMap((c) => decodeChunk(c).map((d) => d.entry)), hasMore, pruned };
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
 * it has). With `retainEntries`, a lagging partner holds back at most that many entries per
 * origin: past the bound it must catch up from a snapshot (see docs/protocol.md). Returns the
 * number of entries deleted.
 */
export async function pruneAcknowledged(
  db: Db,
  partners: readonly string[],
  retainEntries = Number.POSITIVE_INFINITY,
): Promise<number> {
  const held = await readVector(db);
  const acks = await readAcks(db);
  let deleted = 0;
  for (const [origin, { seq: heldSeq, prunedThrough }] of held) {
    let through = heldSeq;
    for (const partner of partners) through = Math.min(through, acks.get(partner)?.[origin] ?? 0);
    through = Math.max(through, heldSeq - retainEntries);
    if (through <= prunedThrough) continue;
    // Whole chunks only: a chunk that reaches past `through` stays until all of it is acked.
    const gone = await db
      .deleteFrom('sync_log')
      .where('origin', '=', origin)
      .where('last_seq', '<=', through)
      .returning(['first_seq', 'last_seq'])
      .execute();
    if (gone.length === 0) continue;
    deleted += gone.reduce((n, c) => n + c.last_seq - c.first_seq + 1, 0);
    const newPrunedThrough = Math.max(...gone.map((c) => c.last_seq));
    await db
      .updateTable('sync_vector')
      .set({ pruned_through: newPrunedThrough })
      .where('origin', '=', origin)
      .execute();
  }
  return deleted;
}

export async function countEntries(db: Db): Promise<number> {
  const row = await db
    .selectFrom('sync_log')
    .select(sql<number>`coalesce(sum(last_seq - first_seq + 1), 0)`.as('entries'))
    .executeTakeFirstOrThrow();
  return Number(row.entries);
}
