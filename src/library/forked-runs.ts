import { type Kysely, sql } from 'kysely';
import type { Chunk } from '../peer-log/chunk.js';
import { runCovering, runsReaching, type SignStoredRun } from '../peer-log/log-store.js';
import { MAX_VECTOR_ORIGINS } from '../peer-log/types.js';
import { packRun, sameRun, unpackRun } from '../peer-log/signed-runs.js';
import { equalBytes } from '../util/bytes.js';
import type { OriginFork } from './status.js';
import { isWriterOf } from './writers.js';
import type { InternalTables } from '../storage/schema.js';

/**
 * The runs of forked origins: what makes members that took different branches of a fork
 * converge (docs/protocol.md, "Fork evidence"). Once an origin forked, every member applies
 * every signed run of it that any member applied (the conflict rules are joins, so the order and
 * the branch do not matter), and relays them with the evidence of the fork to each partner.
 * A member holds them in its log (the branch it took, up to where it closed the origin) and, for
 * the others, here. A run is never applied twice: it is held if its log holds it or this table
 * has its id.
 */

type Db = Kysely<InternalTables>;

/** A run whose signature was checked, with its id. */
interface SignedRun {
  readonly chunk: Chunk;
  readonly id: Uint8Array;
}

/**
 * Two runs an origin's author signed for one place in its log: the one held here (in the log)
 * and another that came. An honest author never signs both, so the pair proves a fork.
 */
export interface Fork {
  readonly origin: string;
  /** The first position the two disagree on (or may: the runs cover it differently). */
  readonly seq: number;
  readonly held: Chunk;
  readonly other: Chunk;
}

/**
 * Runs of one forked origin this table keeps at most. A device that signs more off the branch a
 * member holds is hostile or broken beyond repair (remove it): its further runs are refused,
 * and members that took different ones of them may then differ in what they show of it.
 */
export const MAX_FORKED_RUNS = 4096;

/** Whether `b` proves that `a`'s author forked: both its, other runs for one place, or `b` follows `a`'s place but not `a`. */
export function provesFork(a: SignedRun, b: SignedRun): boolean {
  if (a.chunk.origin !== b.chunk.origin || equalBytes(a.id, b.id)) return false;
  const overlap = a.chunk.firstSeq <= b.chunk.lastSeq && b.chunk.firstSeq <= a.chunk.lastSeq;
  const follows = (x: SignedRun, y: SignedRun) => y.chunk.firstSeq === x.chunk.lastSeq + 1 && !equalBytes(y.chunk.prev, x.id);
  return overlap || follows(a, b) || follows(b, a);
}

/** The first position two runs that prove a fork disagree on. */
export function forkSeq(a: Chunk, b: Chunk): number {
  const overlap = a.firstSeq <= b.lastSeq && b.firstSeq <= a.lastSeq;
  return overlap ? Math.max(a.firstSeq, b.firstSeq) : Math.min(a.lastSeq, b.lastSeq);
}

/** Whether this device holds `run` already (in its log, or as a forked run). */
export async function holdsRun(db: Db, sign: SignStoredRun, run: SignedRun): Promise<boolean> {
  const logged = await runCovering(db, sign, run.chunk.origin, run.chunk.firstSeq);
  if (logged && sameRun(logged, run.chunk)) return true;
  return (await db.selectFrom('sync_forked_runs').select('id').where('id', '=', run.id).executeTakeFirst()) !== undefined;
}

/** Forked runs held of `origin`: what `MAX_FORKED_RUNS` bounds (history that extends the log is not one). */
export async function forkedRunCount(db: Db, origin: string): Promise<number> {
  const row = await db.selectFrom('sync_forked_runs').select((eb) => eb.fn.countAll<number>().as('n')).where('origin', '=', origin).executeTakeFirstOrThrow();
  return Number(row.n);
}

export async function storeForkedRun(db: Db, run: SignedRun): Promise<void> {
  const { origin, firstSeq, lastSeq, entries, prev, sig, author } = run.chunk;
  await db.insertInto('sync_forked_runs').values({ id: run.id, origin, first_seq: firstSeq, last_seq: lastSeq, entries, prev, sig, author }).execute();
}

/** Runs read per query while relaying: memory stays bounded whatever a fork holds. */
const RELAY_READ_RUNS = 16;

/**
 * What this device relays of a forked origin to a partner that holds it through `after`, a few
 * runs at a time: the runs of its log from the fork (`seq`) on, or from further back where its
 * forked runs reach or the partner holds less, then its forked runs, each as signed.
 */
export async function* forkedRunsFor(db: Db, sign: SignStoredRun, origin: string, seq: number, after: number): AsyncGenerator<Chunk[]> {
  // The branches may part below the recorded fork: from the run before the lowest forked run on
  // (what the walk-back found), the log's runs are the other side of that branch.
  const lowest = await db.selectFrom('sync_forked_runs').select((eb) => eb.fn.min<number>('first_seq').as('first')).where('origin', '=', origin).executeTakeFirst();
  const from = Math.min(seq, after + 1, lowest?.first == null ? seq : Math.max(1, Number(lowest.first) - 1));
  for (let next = from; ; ) {
    const logged = await runsReaching(db, sign, origin, next, RELAY_READ_RUNS);
    if (logged.length === 0) break;
    yield logged;
    next = logged.at(-1)!.lastSeq + 1;
  }
  for (let from: Uint8Array | undefined; ; ) {
    let query = db.selectFrom('sync_forked_runs').selectAll().where('origin', '=', origin);
    if (from) query = query.where('id', '>', from);
    const rows = await query.orderBy('id').limit(RELAY_READ_RUNS).execute();
    if (rows.length === 0) break;
    yield rows.map((r) => ({ origin, firstSeq: r.first_seq, lastSeq: r.last_seq, entries: r.entries, prev: r.prev, sig: r.sig, author: r.author }));
    from = rows.at(-1)!.id;
  }
}

/** The fork recorded of `origin` (the first found here), with its evidence, if it forked. */
export async function recordedFork(db: Db, origin: string): Promise<Fork | undefined> {
  const row = await db.selectFrom('sync_forks').select(['seq', 'held', 'other']).where('origin', '=', origin).executeTakeFirst();
  return row && { origin, seq: row.seq, held: unpackRun(row.held), other: unpackRun(row.other) };
}

/** The origins recorded as forked here. */
export async function forkedOrigins(db: Db): Promise<string[]> {
  return (await db.selectFrom('sync_forks').select('origin').execute()).map((r) => r.origin);
}

/**
 * Records the first fork found of each origin, in the caller's transaction; returns the ones new
 * here (to report once it commits). At most `MAX_VECTOR_ORIGINS` origins are recorded forked, as
 * a library holds at most that many: a fork of one more is not recorded (nor relayed).
 */
export async function recordForks(db: Db, forks: readonly Fork[], detectedAt: number): Promise<OriginFork[]> {
  const recorded: OriginFork[] = [];
  if (forks.length === 0) return recorded;
  // The member list is a model table (`MEMBERS_MODEL`), not one of the typed internal tables.
  const { rows: members } = await sql<{ id: string }>`SELECT id FROM sync_members`.execute(db);
  let count = (await forkedOrigins(db)).length;
  for (const fork of forks) {
    if (count >= MAX_VECTOR_ORIGINS) break;
    const device = members.find((m) => isWriterOf(fork.origin, m.id))?.id ?? null;
    const inserted = await db
      .insertInto('sync_forks')
      .values({ origin: fork.origin, seq: fork.seq, device, detected_at: detectedAt, held: packRun(fork.held), other: packRun(fork.other) })
      .onConflict((oc) => oc.column('origin').doNothing())
      .executeTakeFirst();
    if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 0) continue;
    count += 1;
    recorded.push({ origin: fork.origin, device, seq: fork.seq, detectedAt });
  }
  return recorded;
}
