import { type Kysely, sql } from 'kysely';
import type { InternalTables } from '../storage/schema.js';
import { type Chunk, CHUNK_OVERHEAD_BYTES, type ChunksAfterResult, decodeChunk } from './chunk.js';
import { packProof, proofOf, type RunProof, unpackProof } from './signed-runs.js';
import type { Signatures } from '../runtime/signatures.js';
import { runSql } from '../util/sql.js';
import type { EntriesAfterResult, LogEntry, ReadLimits, VersionVector } from './types.js';

type Db = Kysely<InternalTables>;

/** A run of this device's as a write stores it: its signature comes later (`own-run-signatures.ts`). */
export type UnsignedRun = Omit<Chunk, 'sig'>;

/** A run as the log stores it: signed, or this device's own run not signed yet (`sig` null). */
export type StoredRun = UnsignedRun & { sig: Uint8Array | null };

/**
 * The signature of a stored run of this device's that is not signed yet: the log's readers call
 * it, so a run always leaves the log signed.
 */
export type SignStoredRun = (run: UnsignedRun) => Uint8Array;

/** `sync_log.sig` of a run not signed yet (the column predates unsigned runs, and is NOT NULL). */
const NOT_SIGNED = new Uint8Array(0);

/** Appends runs (each extending its origin's prefix); call inside the write transaction. */
export async function appendChunks(db: Db, chunks: readonly StoredRun[]): Promise<void> {
  if (chunks.length === 0) return;
  await db
    .insertInto('sync_log')
    .values(chunks.map((c) => ({ origin: c.origin, first_seq: c.firstSeq, last_seq: c.lastSeq, entries: c.entries, prev: c.prev, sig: c.sig ?? NOT_SIGNED, author: c.author })))
    .execute();
}

/** A signature of a run stored unsigned, to store with it (`storeRunSignatures`). */
export interface RunSignature {
  origin: string;
  lastSeq: number;
  sig: Uint8Array;
}

/**
 * Stores the signatures of runs stored unsigned, in one statement; a run pruned or signed
 * meanwhile is left as it is.
 */
export async function storeRunSignatures(db: Db, signatures: readonly RunSignature[]): Promise<void> {
  for (let from = 0; from < signatures.length; from += SIGNATURES_PER_STATEMENT) {
    const some = signatures.slice(from, from + SIGNATURES_PER_STATEMENT);
    await runSql(
      db,
      `UPDATE sync_log SET sig = signed.column3 FROM (VALUES ${some.map(() => '(?, ?, ?)').join(', ')}) AS signed ` +
        'WHERE sync_log.origin = signed.column1 AND sync_log.last_seq = signed.column2 AND length(sync_log.sig) = 0',
      some.flatMap((s) => [s.origin, s.lastSeq, s.sig]),
    );
  }
}

/** Well inside SQLite's bound on a statement's parameters. */
const SIGNATURES_PER_STATEMENT = 1_000;

/** Per origin: the last seq held, the prefix pruned, and the id of the run ending at `seq` (null: not known, see `heads`). */
export interface HeldOrigin {
  seq: number;
  prunedThrough: number;
  head: Uint8Array | null;
}

export async function readVector(db: Db): Promise<Map<string, HeldOrigin>> {
  const rows = await db.selectFrom('sync_vector').selectAll().execute();
  return new Map(rows.map((r) => [r.origin, { seq: r.seq, prunedThrough: r.pruned_through, head: r.head }]));
}

/** Writes the origins' new positions with the id of the run each now ends at. */
export async function writeVector(db: Db, changed: ReadonlyMap<string, { seq: number; head: Uint8Array | null }>): Promise<void> {
  if (changed.size === 0) return;
  await db
    .insertInto('sync_vector')
    .values([...changed].map(([origin, { seq, head }]) => ({ origin, seq, pruned_through: 0, head })))
    .onConflict((oc) => oc.column('origin').doUpdateSet((eb) => ({ seq: eb.ref('excluded.seq'), head: eb.ref('excluded.head') })))
    .execute();
}

/** The verified proof of the run an origin ends at, and that run's id. */
export interface ProvenHead {
  proof: RunProof;
  id: Uint8Array;
}

/**
 * Records `origin` as held and pruned through `through` (a snapshot covered it); drops its older
 * chunks. With `proven`, the run ending there is known by its proof: the next run must follow
 * it, and the proof is kept to prove the position to others. Without (a position nobody signed:
 * held from before 2.0), the next run of the origin is taken on its signature alone.
 */
export async function holdPrunedPrefix(db: Db, origin: string, through: number, proven: ProvenHead | null): Promise<void> {
  await db.deleteFrom('sync_log').where('origin', '=', origin).where('last_seq', '<=', through).execute();
  const head = proven?.id ?? null;
  const proof = proven ? packProof(proven.proof) : null;
  await db
    .insertInto('sync_vector')
    .values({ origin, seq: through, pruned_through: through, head, proof })
    .onConflict((oc) => oc.column('origin').doUpdateSet({ seq: through, pruned_through: through, head, proof }))
    .execute();
}

/**
 * Proofs of the positions `vector` names (`proofOf` the run of the log ending there, else the
 * proof kept with a prefix adopted from a snapshot); a position this device cannot prove (held
 * from before 2.0, or adopted before 3.2) is left out.
 */
export async function readProofs(db: Db, signatures: Signatures, sign: SignStoredRun, vector: VersionVector): Promise<RunProof[]> {
  const proofs: RunProof[] = [];
  for (const [origin, seq] of Object.entries(vector)) {
    const [run] = await runsReaching(db, sign, origin, seq, 1);
    if (run?.lastSeq === seq) {
      proofs.push(proofOf(signatures, run));
      continue;
    }
    const kept = await db.selectFrom('sync_vector').select('proof').where('origin', '=', origin).executeTakeFirst();
    const proof = kept?.proof ? unpackProof(kept.proof) : undefined;
    if (proof?.lastSeq === seq) proofs.push(proof);
  }
  return proofs;
}

/**
 * Signed runs holding the entries the holder of `after` lacks, bounded by entry count and bytes.
 * Runs come grouped by origin in sequence order, so every prefix of the result keeps each
 * origin gap-free, and whole, as their author signed them: a page ends before a run that does
 * not fit, except that it always carries its first run, so a single large run still moves. A
 * position inside a stored run (no honest holder has one: runs are applied whole) gets that run
 * whole, which shows the holder the fork it is on.
 */
export async function chunksAfter(db: Db, sign: SignStoredRun, after: VersionVector, limits: ReadLimits): Promise<ChunksAfterResult> {
  const held = await readVector(db);
  const result: ChunksAfterResult = { chunks: [], entries: 0, hasMore: false, pruned: [] };
  let bytes = 0;
  let full = false;
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
      // A few runs at a time: bounded memory whatever the limits.
      const stored = await runsReaching(db, sign, origin, next, 4);
      reading = stored.length > 0;
      for (const run of stored) {
        if (run.firstSeq > next) {
          // Nothing stored at `next`: the vector is ahead of the log.
          reading = false;
          break;
        }
        const entries = run.lastSeq - run.firstSeq + 1;
        const size = run.entries.byteLength + CHUNK_OVERHEAD_BYTES;
        const fits = result.entries + entries <= limits.maxRecords && bytes + size <= limits.maxBytes;
        if (!fits && result.chunks.length > 0) {
          full = true;
          reading = false;
          break;
        }
        result.chunks.push(run);
        result.entries += entries;
        bytes += size;
        next = run.lastSeq + 1;
      }
    }
    if (next <= heldSeq) result.hasMore = true;
  }
  return result;
}

/** The stored run of `origin` that holds position `seq`, if the log holds one. */
export async function runCovering(db: Db, sign: SignStoredRun, origin: string, seq: number): Promise<Chunk | undefined> {
  const [run] = await runsReaching(db, sign, origin, seq, 1);
  return run && run.firstSeq <= seq ? run : undefined;
}

/** The stored runs of `origin` that end at `seq` or later (up to `limit` of them), in seq order, each signed. */
export async function runsReaching(db: Db, sign: SignStoredRun, origin: string, seq: number, limit?: number): Promise<Chunk[]> {
  return (await storedRunsReaching(db, origin, seq, limit)).map((run) => (run.sig === null ? { ...run, sig: sign(run) } : { ...run, sig: run.sig }));
}

async function storedRunsReaching(db: Db, origin: string, seq: number, limit?: number): Promise<StoredRun[]> {
  const query = db
    .selectFrom('sync_log')
    .select(['first_seq', 'last_seq', 'entries', 'prev', 'sig', 'author'])
    .where('origin', '=', origin)
    .where('last_seq', '>=', seq)
    .orderBy('last_seq');
  const rows = await (limit === undefined ? query : query.limit(limit)).execute();
  return rows.map((row) => ({
    origin,
    firstSeq: row.first_seq,
    lastSeq: row.last_seq,
    entries: row.entries,
    prev: row.prev,
    sig: row.sig.byteLength === 0 ? null : row.sig,
    author: row.author,
  }));
}

/** The entry of `origin` at `seq`, if the log holds it (not pruned). */
export async function entryAt(db: Db, origin: string, seq: number): Promise<LogEntry | undefined> {
  const [chunk] = await storedRunsReaching(db, origin, seq, 1);
  if (!chunk || chunk.firstSeq > seq) return undefined;
  return decodeChunk(chunk).find((d) => d.entry.seq === seq)?.entry;
}

/** `chunksAfter`, decoded into entries. */
export async function entriesAfter(db: Db, sign: SignStoredRun, after: VersionVector, limits: ReadLimits): Promise<EntriesAfterResult> {
  const { chunks, hasMore, pruned } = await chunksAfter(db, sign, after, limits);
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
 * origin: past the bound it must catch up from a snapshot (see docs/protocol.md). The last run
 * of each origin is kept, and a forked origin's log whole. Returns the number of entries deleted.
 */
export async function pruneAcknowledged(
  db: Db,
  partners: readonly string[],
  retainEntries = Number.POSITIVE_INFINITY,
): Promise<number> {
  const held = await readVector(db);
  const acks = await readAcks(db);
  // A forked origin's runs are its fork evidence, relayed to every partner: kept.
  const forked = new Set((await db.selectFrom('sync_forks').select('origin').execute()).map((r) => r.origin));
  let deleted = 0;
  for (const [origin, { seq: heldSeq, prunedThrough }] of held) {
    if (forked.has(origin)) continue;
    let through = heldSeq;
    for (const partner of partners) through = Math.min(through, acks.get(partner)?.[origin] ?? 0);
    through = Math.max(through, heldSeq - retainEntries);
    if (through <= prunedThrough) continue;
    // Whole chunks only: a chunk that reaches past `through` stays until all of it is acked.
    // The run the origin ends at always stays: a partner's `heads` naming another run there is
    // a fork this device must be able to prove (docs/protocol.md, "Fork evidence").
    const gone = await db
      .deleteFrom('sync_log')
      .where('origin', '=', origin)
      .where('last_seq', '<=', through)
      .where('last_seq', '<', heldSeq)
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
