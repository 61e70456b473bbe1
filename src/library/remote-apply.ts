import { OwnershipError, ProtocolError, ValidationError } from '../errors.js';
import { decodeHlc, isDeviceId, isHlcOf, type Hlc } from '../hlc/index.js';
import type { SharedModel } from '../models/define.js';
import type { ChangeOp, SharedRowState, StoredValues } from '../models/types.js';
import { checkRecordId, checkRecordSize, checkStored } from '../models/values.js';
import { type Chunk, decodeChunk, MAX_CHUNK_ENTRIES } from '../peer-log/chunk.js';
import { runCovering, runsReaching } from '../peer-log/log-store.js';
import { sameRun, verifyRun } from '../peer-log/signed-runs.js';
import { OriginAuthors } from './origin-authors.js';
import { equalBytes } from '../util/bytes.js';
import type { LogEntry } from '../peer-log/types.js';
import type { Signatures } from '../runtime/signatures.js';
import { naturalKeyId, type WriteContext } from './local-writes.js';
import { countChange, type RemoteCounts } from './counts.js';
import type { WriteBatch } from './write-batch.js';
import { appendedWriter, isWriterOf } from './writers.js';
import type { ModelTable } from '../storage/model-table.js';
import { MEMBERS_MODEL, REMOVALS_MODEL } from '../models/system.js';
import { putMeta } from '../storage/meta.js';
import { CLOSED_ORIGINS_META_KEY, type Removals } from './removals.js';
import { type Fork, forkedRunCount, holdsRun, MAX_FORKED_RUNS, recordedFork, recordForks, storeForkedRun } from './forked-runs.js';
import type { OriginFork } from './status.js';

export interface GapReport {
  origin: string;
  /** Last seq of `origin` held here: the puller should ask for entries after it. */
  heldSeq: number;
  /** First seq of `origin` in the batch that could not be applied. */
  firstReceivedSeq: number;
}

export interface ApplyResult {
  /** Entries applied and appended to the local log. */
  applied: number;
  /** Entries already held (or repeated within the batch): ignored. */
  duplicates: number;
  /** Origins whose entries did not extend the held prefix; those entries were not applied. */
  gaps: GapReport[];
  /**
   * Entries refused because a removed device stamped them after its removal (their origin is
   * closed from there on: see `Removals`). Not an error of the partner that relayed them.
   */
  refused: number;
  /**
   * Runs that fork their origin (another run of its author holds their place here): applied off
   * the log (`forkedRuns`), and the origin closed here from then on, like a removed device's.
   */
  forks: Fork[];
  /** Entries of runs left out because their author is not known here yet (`verifyRuns`). */
  withheld: number;
  /**
   * Runs of forked origins to relay (`forked-runs.ts`): those newly held off the log (applied),
   * and the runs of this device's log they contradict.
   */
  forkedRuns: Chunk[];
}

/** A received run whose entries were validated, and whose signature was checked (`id`). */
export interface VerifiedRun {
  readonly chunk: Chunk;
  readonly entries: readonly LogEntry[];
  readonly id: Uint8Array;
  /** The newest clock of its entries. */
  readonly newest: string;
}

const OPS: ReadonlySet<string> = new Set<ChangeOp>(['upsert', 'update', 'delete']);

/** A received run whose entries were validated (`validateRemoteChunks`), not yet verified. */
export interface ValidatedRun {
  readonly chunk: Chunk;
  readonly entries: readonly LogEntry[];
  readonly newest: string;
}

/**
 * Checks received runs: their framing (`decodeChunk`), their bounds (at most `MAX_CHUNK_ENTRIES`
 * entries, as every author makes them) and every entry's shape against the models. A run's
 * entries share its origin, so the origin is checked once per run and each entry's clock only
 * for its time part. Throws `ValidationError` naming the first bad entry.
 */
export function validateRemoteChunks(ctx: WriteContext, chunks: readonly Chunk[]): { runs: ValidatedRun[]; newest: Hlc | undefined } {
  const runs: ValidatedRun[] = [];
  let newestOfAll = '';
  for (const chunk of chunks) {
    if (!isDeviceId(chunk.origin)) throw new ValidationError('chunk origin must be a device uuid');
    if (chunk.lastSeq - chunk.firstSeq + 1 > MAX_CHUNK_ENTRIES) {
      throw new ValidationError(`run ${chunk.origin}#${chunk.firstSeq}..${chunk.lastSeq} holds more than ${MAX_CHUNK_ENTRIES} entries`);
    }
    const entries: LogEntry[] = [];
    let newest = '';
    let seq = chunk.firstSeq;
    try {
      for (const { entry } of decodeChunk(chunk)) {
        seq = entry.seq;
        if (!isHlcOf(entry.hlc, chunk.origin)) throw new ValidationError('malformed hlc');
        if (entry.hlc > newest) newest = entry.hlc;
        entries.push(checkChange(ctx, entry.origin, entry.seq, entry.hlc, entry));
      }
    } catch (err) {
      throw prefixed(`entry ${chunk.origin}#${seq}`, err);
    }
    if (newest > newestOfAll) newestOfAll = newest;
    runs.push({ chunk, entries, newest });
  }
  return { runs, newest: newestOfAll === '' ? undefined : decodeHlc(newestOfAll) };
}

/** Passes over a message's runs at most, each taking authors the previous one introduced (`verifyRuns`). */
const MAX_INTRODUCTION_PASSES = 3;

/**
 * Checks each run's signature against its `author` PeerId, and that the author may sign for the
 * run's origin (`OriginAuthors`): for an origin of a random (pre-2.0) device id, by the member
 * rows `members` holds (device -> PeerId) or the message introduces: a member row carried by a
 * run already verified, or the author's own row in its own run. A run of an origin that is no
 * one's (two members' ids made up to share its first three groups) is left out, never taken as
 * bad input of the honest member that relays it.
 * A run whose author cannot be placed yet is left out, like a gap (a later pull brings it once
 * the member row has arrived); a run signed by a key that may not sign for its origin, or whose
 * signature does not verify, is a `ProtocolError`, and nothing of the message is applied. Each
 * pass is linear in the runs, and there are at most `MAX_INTRODUCTION_PASSES`, whatever the
 * message holds.
 */
export function verifyRuns(
  signatures: Signatures,
  library: string,
  runs: readonly ValidatedRun[],
  members: ReadonlyMap<string, string>,
): { verified: VerifiedRun[]; withheld: number } {
  const authors = new OriginAuthors(members);
  const introduce = (run: ValidatedRun, from: (entry: LogEntry) => boolean) => {
    for (const entry of run.entries) {
      const peer = entry.fields?.peer;
      if (entry.model !== MEMBERS_MODEL.name || typeof peer !== 'string' || !from(entry)) continue;
      authors.introduce(entry.id, peer);
    }
  };
  const verified = new Map<ValidatedRun, VerifiedRun>();
  for (let pass = 0, progress = true; progress && pass < MAX_INTRODUCTION_PASSES; pass++) {
    progress = false;
    for (const run of runs) {
      if (verified.has(run)) continue;
      const { origin, author } = run.chunk;
      // The author's own member row in its own run names the key that must sign the run.
      if (authors.authority(origin, author) === 'unknown') introduce(run, (entry) => isWriterOf(origin, entry.id) && entry.fields?.peer === author);
      const may = authors.authority(origin, author);
      if (may === 'unknown') continue;
      if (may === 'no') throw new ProtocolError(`run ${origin}#${run.chunk.firstSeq}..${run.chunk.lastSeq} is not signed by its author's key (${author} may not sign for ${origin})`);
      verified.set(run, { ...run, id: verifyRun(signatures, library, run.chunk) });
      introduce(run, () => true);
      progress = true;
    }
  }
  const left = runs.filter((run) => !verified.has(run));
  return {
    verified: runs.filter((run) => verified.has(run)).map((run) => verified.get(run)!),
    withheld: left.reduce((n, run) => n + run.entries.length, 0),
  };
}

function prefixed(where: string, err: unknown): unknown {
  if (err instanceof Error) err.message = `${where}: ${err.message}`;
  return err;
}

/** The model, id, op and fields of an entry whose origin, seq and clock were checked. */
function checkChange(
  ctx: WriteContext,
  origin: string,
  seq: number,
  hlc: string,
  e: { model?: unknown; id?: unknown; op?: unknown; fields?: unknown },
): LogEntry {
  if (typeof e.op !== 'string' || !OPS.has(e.op)) throw new ValidationError('op must be upsert, update or delete');
  const op = e.op as ChangeOp;
  const model = ctx.registry.shared(e.model as string);
  const id = checkRecordId(model, e.id);
  const fields = e.fields;
  if (op === 'delete') {
    if (fields !== null && fields !== undefined) throw new ValidationError('a delete carries no fields');
    return { origin, seq, hlc, model: model.name, id, op, fields: null };
  }
  if (fields === null || typeof fields !== 'object' || Array.isArray(fields)) {
    throw new ValidationError('fields must be an object');
  }
  const values = checkFields(model, fields as Record<string, unknown>, op === 'upsert');
  checkRecordSize(model.name, values);
  model.checkRecord?.(values, op === 'upsert', id);
  if (op === 'update') {
    if (model.conflict === 'lww') throw new ValidationError(`${model.name}: row-level LWW takes no partial updates`);
    if (model.naturalKey.some((k) => k in values)) throw new ValidationError(`${model.name}: natural key fields never change`);
  } else if (model.conflict === 'union' && naturalKeyId(ctx.libraryId, model, values) !== id) {
    throw new ValidationError(`${model.name}: id does not match the natural key`);
  }
  return { origin, seq, hlc, model: model.name, id, op, fields: values };
}

function checkFields(model: SharedModel, fields: Record<string, unknown>, full: boolean): StoredValues {
  const names = Object.keys(fields);
  const values: StoredValues = {};
  for (const name of names) {
    const field = model.fieldsByName.get(name);
    if (!field) throw new ValidationError(`${model.name}: unknown field "${name}"`);
    values[name] = checkStored(model, field, fields[name]);
  }
  // A system model's upsert written by an older protocol version lacks the nullable fields added
  // since (a 1.1 member row has no `name`): they are null, the same on every receiver.
  if (full && model.system) {
    for (const field of model.fields) if (!(field.name in values) && field.nullable) values[field.name] = null;
  }
  // Every name is a distinct known field: as many names as fields means all are there.
  if (full && Object.keys(values).length !== model.fields.length) {
    const missing = model.fields.find((field) => !(field.name in values))!;
    throw new ValidationError(`${model.name}: upsert lacks field "${missing.name}"`);
  }
  if (names.length === 0) throw new ValidationError(`${model.name}: update names no fields`);
  return values;
}

/**
 * Applies verified runs inside the caller's transaction, each whole or not at all (a run is
 * stored and relayed as its author signed it). Per origin, only a run that extends the held
 * contiguous prefix is applied, and only if it follows the run held there (`prev` is the held
 * head, where known); a run already held is a duplicate, and one that takes the place of
 * another run of its author is a fork (applied off the log, reported). Anything after a gap is reported
 * and left for a later pull. The conflict rules make the outcome independent of the order
 * runs arrive in.
 */
export async function applyRemoteEntries(
  ctx: WriteContext,
  batch: WriteBatch,
  runs: readonly VerifiedRun[],
  counts?: RemoteCounts,
  withheld = 0,
): Promise<ApplyResult> {
  const result: ApplyResult = { applied: 0, duplicates: 0, gaps: [], refused: 0, forks: [], withheld, forkedRuns: [] };
  const accepted: VerifiedRun[] = [];
  const sorted = [...runs].sort((a, b) => byOriginSeq(a.chunk, b.chunk));
  const blocked = new Set<string>();
  const removals = batch.removals;
  const batchRemovals = removalsIn(sorted.flatMap((run) => run.entries), removals);
  let closedAny = false;
  // Runs appended by this batch, not flushed yet: a later run of the batch may fork them.
  const appended = new Map<string, Chunk[]>();
  // The other runs of forks found: applied like any, and kept off the log (`forked-runs.ts`).
  const forking: VerifiedRun[] = [];
  const fork = (found: Fork, run: VerifiedRun) => {
    // An origin with two histories: this device keeps the one it holds in its log, applies the
    // other run too, and takes the rest of either only as fork evidence (the session that
    // brought it goes on: its sender may be any honest relay).
    result.forks.push(found);
    forking.push(run);
    closeForkedOrigin(batch, found.origin);
    closedAny = true;
    blocked.add(found.origin);
  };
  for (const run of sorted) {
    const { origin, firstSeq, lastSeq } = run.chunk;
    const size = lastSeq - firstSeq + 1;
    if (blocked.has(origin)) continue;
    const held = batch.seqOf(origin);
    const closedThrough = removals.closedThrough(origin);
    if (closedThrough !== undefined && lastSeq > closedThrough) {
      result.refused += size;
    } else if (firstSeq <= held) {
      // Positions held here: the same run (a duplicate), or another one of the author's there.
      const mine = appended.get(origin)?.find((c) => c.firstSeq <= lastSeq && firstSeq <= c.lastSeq) ?? (await runCovering(batch.db, batch.signStored, origin, firstSeq));
      if (mine && !sameRun(mine, run.chunk)) fork({ origin, seq: Math.max(firstSeq, mine.firstSeq), held: mine, other: run.chunk }, run);
      else if (lastSeq <= held) result.duplicates += size;
      else throw new ProtocolError(`run ${origin}#${firstSeq}..${lastSeq} overlaps the positions held here (through ${held}), which the log no longer holds`);
    } else if (firstSeq === held + 1 && run.entries.some((entry) => removals.refuses(entry, batchRemovals))) {
      // Stamped (in part) after its device's removal: every later run of the origin carries
      // later clocks, so the origin is closed here for good, before this run.
      removals.close(origin, held);
      closedAny = true;
      result.refused += size;
    } else if (firstSeq === held + 1) {
      // Of the writer this device appends to too: a run of it beyond what it holds is signed by
      // this device's key, so it is its own, a tail it lost (the run follows its head: taken)
      // or another copy's branch (a fork: the writer is retired, `closeForkedOrigin`).
      const head = batch.headOf(origin);
      if (head !== undefined && !equalBytes(head, run.chunk.prev)) {
        const mine = appended.get(origin)?.at(-1) ?? (await runCovering(batch.db, batch.signStored, origin, held));
        if (mine) {
          fork({ origin, seq: held, held: mine, other: run.chunk }, run);
        } else {
          // The head is a snapshot's proof of a prefix held without its runs: the author signed
          // two histories there, and this device holds no run to show it. Closed like a fork (no
          // later run of either branch follows here), so no relay is pulled for it in vain.
          removals.close(origin, held);
          closedAny = true;
          result.refused += size;
        }
        continue;
      }
      batch.appendChunk(run.chunk, run.id, run.newest);
      appended.set(origin, [...(appended.get(origin) ?? []), run.chunk]);
      accepted.push(run);
    } else {
      result.gaps.push({ origin, heldSeq: held, firstReceivedSeq: firstSeq });
      blocked.add(origin);
    }
  }

  const forkSeqs = new Map(result.forks.map((f) => [f.origin, f.seq]));
  const taken = await takeForkedRuns(batch, forking, async (origin) => forkSeqs.get(origin) ?? (await recordedFork(batch.db, origin))?.seq ?? 1, batchRemovals);
  result.refused += taken.refused;
  result.forkedRuns = [...taken.runs.map((run) => run.chunk), ...taken.contradicted];
  if (closedAny || taken.runs.length > 0) await putMeta(batch.db, CLOSED_ORIGINS_META_KEY, removals.closedValue());
  result.applied = await applyRuns(ctx, batch, [...accepted, ...taken.runs], counts);
  return result;
}

/** Applies the entries of runs taken (log or forked runs) to their models; returns how many. */
async function applyRuns(ctx: WriteContext, batch: WriteBatch, runs: readonly VerifiedRun[], counts: RemoteCounts | undefined): Promise<number> {
  const entries = runs.flatMap((run) => run.entries);
  const byModel = new Map<SharedModel, LogEntry[]>();
  for (const entry of entries) {
    const model = ctx.registry.shared(entry.model);
    const list = byModel.get(model) ?? [];
    list.push(entry);
    byModel.set(model, list);
  }
  for (const [model, modelEntries] of byModel) await applyToModel(ctx, batch, model, modelEntries, counts);
  if (batch.full) await batch.flush();
  return entries.length;
}

/**
 * Closes a forked origin here, at the positions held: its log takes no more runs of it, so no
 * partner is pulled for it again; what either branch holds comes as fork evidence. If it is the
 * writer this device appends to, another copy of it wrote there: the next write goes to a fresh
 * writer, as after a restore, since a closed origin is advertised no further.
 */
function closeForkedOrigin(batch: WriteBatch, origin: string): void {
  if (origin === appendedWriter(batch.currentWriter)) batch.setWriter({ ...batch.currentWriter, retired: true });
  if (batch.removals.closedThrough(origin) === undefined) batch.removals.close(origin, batch.seqOf(origin));
}

/**
 * Takes runs of a forked origin (its fork at `forkAt(origin)`) not held here yet (`holdsRun`),
 * unless a removal refuses them (stamped after the device's cutoff). A run of the history before
 * the fork that extends the log (a member that was behind) is appended to it, as any run; the
 * others are stored as forked runs, at most `MAX_FORKED_RUNS` of the origin. Returns the runs
 * taken, to apply and relay, and with them the runs of this device's log that a forked run
 * contradicts (`contradictedRuns`): relayed too, so that where two branches share a prefix,
 * each side walks the other back to where they part.
 */
async function takeForkedRuns(
  batch: WriteBatch,
  runs: readonly VerifiedRun[],
  forkAt: (origin: string) => Promise<number>,
  batchRemovals?: ReadonlyMap<string, string>,
): Promise<{ runs: VerifiedRun[]; refused: number; contradicted: Chunk[] }> {
  const taken: VerifiedRun[] = [];
  const contradicted: Chunk[] = [];
  let refused = 0;
  const counts = new Map<string, number>();
  const seen: Uint8Array[] = [];
  for (const run of runs) {
    const { origin, firstSeq, lastSeq, prev } = run.chunk;
    if (seen.some((id) => equalBytes(id, run.id)) || (await holdsRun(batch.db, batch.signStored, run))) continue;
    seen.push(run.id);
    if (run.entries.some((entry) => batch.removals.refuses(entry, batchRemovals))) {
      refused += run.entries.length;
      continue;
    }
    const at = await forkAt(origin);
    const head = batch.headOf(origin);
    if (firstSeq === batch.seqOf(origin) + 1 && lastSeq < at && (head === undefined || equalBytes(head, prev))) {
      batch.appendChunk(run.chunk, run.id, run.newest);
      batch.removals.close(origin, lastSeq);
      taken.push(run);
      continue;
    }
    const count = counts.get(origin) ?? (await forkedRunCount(batch.db, origin));
    if (count >= MAX_FORKED_RUNS) {
      refused += run.entries.length;
      continue;
    }
    counts.set(origin, count + 1);
    await storeForkedRun(batch.db, run);
    taken.push(run);
    for (const logged of await contradictedRuns(batch, run)) {
      if (!contradicted.some((c) => c.origin === logged.origin && c.lastSeq === logged.lastSeq)) contradicted.push(logged);
    }
  }
  return { runs: taken, refused, contradicted };
}

/**
 * The runs of this device's log that `run` (of another branch) contradicts: those over its
 * positions, and the one right before it if `run` follows another. A partner that holds `run`
 * in its log lacks them (the fork may have begun before `run`: members that share a prefix and
 * hold one position each have found only its end), so they are relayed with the taken runs.
 */
async function contradictedRuns(batch: WriteBatch, run: VerifiedRun): Promise<Chunk[]> {
  const { origin, firstSeq, lastSeq } = run.chunk;
  const found = (await runsReaching(batch.db, batch.signStored, origin, firstSeq - 1)).filter((logged) => logged.firstSeq <= lastSeq);
  return found.filter((logged) =>
    logged.lastSeq === firstSeq - 1 ? !equalBytes(batch.runIdOf(logged), run.chunk.prev) : !sameRun(logged, run.chunk),
  );
}

/** What fork evidence changed here (`applyForkEvidence`). */
export interface ForkEvidenceResult {
  /** The runs taken off the log (applied; to relay). */
  taken: Chunk[];
  /** Runs of this device's log the taken ones contradict (`contradictedRuns`): to relay too. */
  relay: Chunk[];
  /** Entries refused (after a removal's cutoff, or beyond `MAX_FORKED_RUNS`). */
  refused: number;
  /** The fork, if it was new here (to report once committed). */
  recorded: OriginFork[];
}

/**
 * Applies fork evidence inside the caller's transaction: runs of `origin`, verified, that
 * another member holds of it from its fork on. A fork not known here (`evidence`, checked by the
 * caller with `provesFork`) is recorded (`recordForks`) and the origin closed first. Every run
 * not held yet is taken (`takeForkedRuns`) and applied.
 */
export async function applyForkEvidence(
  ctx: WriteContext,
  batch: WriteBatch,
  origin: string,
  runs: readonly VerifiedRun[],
  evidence: Fork | undefined,
  detectedAt: number,
  counts?: RemoteCounts,
): Promise<ForkEvidenceResult> {
  const known = await recordedFork(batch.db, origin);
  const recorded = known || !evidence ? [] : await recordForks(batch.db, [evidence], detectedAt);
  const fork = known ?? (recorded.length > 0 ? evidence : undefined);
  // Not known here, and no evidence of it (or one forked origin more than a library holds).
  if (!fork) return { taken: [], relay: [], refused: 0, recorded };
  if (!known) closeForkedOrigin(batch, origin);
  const entries = runs.flatMap((run) => run.entries);
  const taken = await takeForkedRuns(batch, runs, async () => fork.seq, removalsIn(entries, batch.removals));
  await putMeta(batch.db, CLOSED_ORIGINS_META_KEY, batch.removals.closedValue());
  await applyRuns(ctx, batch, taken.runs, counts);
  return { taken: taken.runs.map((run) => run.chunk), relay: taken.contradicted, refused: taken.refused, recorded };
}

/**
 * Removals among the entries themselves (device -> earliest clock), so a batch that carries a
 * removal and changes the removed device made after it refuses those changes too. A removal
 * written by a device already removed before it wrote it counts for nothing, also when that
 * earlier removal is in the batch: taken in clock order, each is judged by the earlier ones
 * (only an earlier removal of its writer can void a removal).
 */
function removalsIn(entries: readonly LogEntry[], removals: Removals): Map<string, string> {
  const found = new Map<string, string>();
  const candidates = entries.filter((e) => e.model === REMOVALS_MODEL.name && e.op === 'upsert');
  for (const entry of candidates.sort((a, b) => (a.hlc < b.hlc ? -1 : a.hlc > b.hlc ? 1 : 0))) {
    if (removals.refuses(entry, found)) continue;
    if (!found.has(entry.id)) found.set(entry.id, entry.hlc);
  }
  return found;
}

/** Applies one model's accepted entries (in order per row), recording events and counts. */
async function applyToModel(
  ctx: WriteContext,
  batch: WriteBatch,
  model: SharedModel,
  entries: readonly LogEntry[],
  counts: RemoteCounts | undefined,
): Promise<void> {
  const table = ctx.tables.get(model.name)!;
  const byId = new Map<string, LogEntry[]>();
  for (const entry of entries) {
    const list = byId.get(entry.id);
    if (list) list.push(entry);
    else byId.set(entry.id, [entry]);
  }
  const record = (entry: LogEntry, before: SharedRowState | undefined, after: SharedRowState) => {
    if (counts) countChange(counts, before, after);
    batch.events.push({ model: model.name, id: entry.id, op: entry.op, origin: 'remote' });
  };
  const inserted = await insertNewRows(ctx, batch, model, table, byId);
  for (const [id, state] of inserted) record(byId.get(id)![0]!, undefined, state);
  const rest = inserted.size === 0 ? [...byId.keys()] : [...byId.keys()].filter((id) => !inserted.has(id));
  const states = await batch.loadManyShared(table, rest);
  for (const id of rest) {
    const before = states.get(id);
    let state = before;
    for (const entry of byId.get(id)!) {
      const after = ctx.registry.applyShared(model, state, entry);
      if (after === state) continue;
      record(entry, state, after);
      state = after;
    }
    if (state !== before) batch.putShared(table, state!);
  }
}

/**
 * Most remote changes create rows this device does not hold yet (all of them in a backfill).
 * Under the built-in rules such a row is the change applied to nothing, so it is inserted
 * without reading first; rows whose insert meets an id the database holds (see
 * `WriteBatch.insertIfAbsent`) take the read-merge-write path. Only rows with a single change in
 * the batch and nothing pending in this transaction qualify, and no model with a custom apply
 * (host code runs exactly once per change). Returns the rows inserted.
 */
async function insertNewRows(
  ctx: WriteContext,
  batch: WriteBatch,
  model: SharedModel,
  table: ModelTable,
  byId: ReadonlyMap<string, readonly LogEntry[]>,
): Promise<Map<string, SharedRowState>> {
  const candidates: SharedRowState[] = [];
  if (!model.apply) {
    for (const [id, list] of byId) {
      if (list.length === 1 && !batch.hasPendingShared(table, id)) {
        candidates.push(ctx.registry.applyShared(model, undefined, list[0]!));
      }
    }
  }
  const inserted = new Map<string, SharedRowState>();
  for (const state of candidates) inserted.set(state.id, state);
  if (candidates.length > 0) for (const state of await batch.insertIfAbsent(table, candidates)) inserted.delete(state.id);
  return inserted;
}

function byOriginSeq(a: Chunk, b: Chunk): number {
  return a.origin !== b.origin ? (a.origin < b.origin ? -1 : 1) : a.firstSeq - b.firstSeq;
}

/** A device-owned row as replicated from its owner (state-based sync). */
export interface OwnedRowUpdate {
  readonly model: string;
  readonly id: string;
  readonly owner: string;
  readonly version: number;
  readonly hlc: string;
  readonly deleted: boolean;
  /** Every field when live; ignored for a tombstone. */
  readonly values: StoredValues | null;
  /** The owner's proof of the write (`signed-owned-rows.ts`), checked before the row is applied. */
  readonly cert: Uint8Array;
}

/**
 * What a batch of owned rows vouches for: every row of `owner` with a version in
 * `(from, to]` is in it. A receiver holding `owner` through `from` or later then holds it
 * through `to`; one further behind keeps its cursor (it must pull the versions it lacks).
 */
export interface OwnedCoverage {
  readonly owner: string;
  readonly from: number;
  readonly to: number;
}

export interface OwnedApplyResult {
  applied: number;
  /** Rows at or below the version already held: ignored. */
  stale: number;
  /** Whether the coverage extended this device's cursor for the owner. */
  advanced: boolean;
  /** Rows left out because their owner's key is not known here yet (nothing applied, cursor kept). */
  withheld: number;
}

/** Owned rows as a message carries them: all of one owner, signed by `author` (a PeerId). */
export interface SignedOwnedRows {
  readonly author: string | null;
  readonly rows: readonly unknown[];
}

export function validateOwnedRows(ctx: WriteContext, rows: readonly unknown[]): Hlc[] {
  if (!Array.isArray(rows)) throw new ValidationError('rows must be an array');
  return rows.map((raw, index) => {
    const where = `row ${index}`;
    if (raw === null || typeof raw !== 'object') throw new ValidationError(`${where} must be an object`);
    const r = raw as Record<string, unknown>;
    const model = ctx.registry.get(r.model as string);
    if (model.ownership !== 'device') throw new ValidationError(`${where}: model "${model.name}" is not device-owned`);
    checkRecordId(model, r.id);
    if (!isDeviceId(r.owner)) throw new ValidationError(`${where}: owner must be a device uuid`);
    if (typeof r.version !== 'number' || !Number.isSafeInteger(r.version) || r.version < 1) {
      throw new ValidationError(`${where}: version must be a positive integer`);
    }
    if (typeof r.deleted !== 'boolean') throw new ValidationError(`${where}: deleted must be a boolean`);
    const hlc = decodeHlc(r.hlc);
    if (hlc.deviceId !== r.owner) throw new ValidationError(`${where}: hlc was not issued by the owner`);
    if (!r.deleted) {
      const values = r.values;
      if (values === null || typeof values !== 'object') throw new ValidationError(`${where}: values must be an object`);
      for (const name of Object.keys(values)) {
        if (!model.fieldsByName.has(name)) throw new ValidationError(`${where}: unknown field "${name}"`);
      }
      for (const field of model.fields) checkStored(model, field, (values as Record<string, unknown>)[field.name]);
      checkRecordSize(`${where}: ${model.name}`, values as StoredValues);
    }
    return hlc;
  });
}

/**
 * Applies replicated device-owned rows: a row replaces the held one only if its version is
 * newer. A row claiming an id held under another owner is refused with `OwnershipError`
 * (the whole batch, since the caller's transaction rolls back).
 */
export async function applyRemoteOwned(
  ctx: WriteContext,
  batch: WriteBatch,
  rows: readonly OwnedRowUpdate[],
  coverage?: OwnedCoverage,
  counts?: RemoteCounts,
): Promise<OwnedApplyResult> {
  const result: OwnedApplyResult = { applied: 0, stale: 0, advanced: false, withheld: 0 };
  if (coverage) checkCoverage(rows, coverage);
  for (const row of rows) {
    const model = ctx.registry.get(row.model);
    const table = ctx.tables.get(model.name)!;
    const current = await batch.loadOwned(table, row.id);
    if (current && current.owner !== row.owner) {
      throw new OwnershipError(`${model.name} ${row.id} is owned by ${current.owner}, not ${row.owner}`);
    }
    // A removed device's rows written after its removal are refused (unless a member kept them:
    // they come again when summaries are compared); the cursor still moves.
    const afterRemoval = batch.removals.refusesOwned(row);
    // A row held from before owned rows were signed gives way to the owner's signed one.
    const held = current && (current.version > row.version || (current.version === row.version && current.cert !== null));
    if (row.owner === ctx.deviceId || held || afterRemoval) {
      result.stale += 1;
      continue;
    }
    const values: StoredValues = {};
    for (const field of model.fields) values[field.name] = row.deleted ? null : (row.values?.[field.name] ?? null);
    if (counts) countChange(counts, current, row);
    batch.putOwned(table, {
      id: row.id,
      values,
      owner: row.owner,
      version: row.version,
      hlc: row.hlc,
      deleted: row.deleted,
      cert: row.cert,
    });
    batch.events.push({ model: model.name, id: row.id, op: row.deleted ? 'delete' : 'upsert', origin: 'remote' });
    if (batch.full) await batch.flush();
    result.applied += 1;
  }
  if (coverage && coverage.owner !== ctx.deviceId && coverage.from <= batch.versionOf(coverage.owner)) {
    result.advanced = coverage.to > batch.versionOf(coverage.owner);
    batch.setVersion(coverage.owner, coverage.to);
  }
  return result;
}

/** Every row of a coverage is the covered owner's, with a version in its range `(from, to]`. */
export function checkCoverage(rows: readonly OwnedRowUpdate[], coverage: OwnedCoverage): void {
  if (rows.some((r) => r.owner !== coverage.owner || r.version <= coverage.from || r.version > coverage.to)) {
    throw new ValidationError(`rows fall outside the covered versions (${coverage.from}, ${coverage.to}] of ${coverage.owner}`);
  }
}
