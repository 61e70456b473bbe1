import { OwnershipError, ProtocolError, ValidationError } from '../errors.js';
import { decodeHlc, isDeviceId, isHlcOf, type Hlc } from '../hlc/index.js';
import type { SharedModel } from '../models/define.js';
import type { ChangeOp, SharedRowState, StoredValues } from '../models/types.js';
import { checkRecordId, checkRecordSize, checkStored } from '../models/values.js';
import { type Chunk, decodeChunk, MAX_CHUNK_BYTES, MAX_CHUNK_ENTRIES } from '../peer-log/chunk.js';
import type { LogEntry } from '../peer-log/types.js';
import { naturalKeyId, type WriteContext } from './local-writes.js';
import { countChange, type RemoteCounts } from './counts.js';
import type { WriteBatch } from './write-batch.js';
import { appendedWriter } from './writers.js';
import type { ModelTable } from '../storage/model-table.js';
import { REMOVALS_MODEL } from '../models/system.js';
import { putMeta } from '../storage/meta.js';
import { CLOSED_ORIGINS_META_KEY, type Removals } from './removals.js';

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
}

const OPS: ReadonlySet<string> = new Set<ChangeOp>(['upsert', 'update', 'delete']);

export interface ValidatedEntries {
  /** The entries in normal form: exactly the `LogEntry` fields, `fields` null for a delete. */
  entries: LogEntry[];
  /** The newest clock among them (for the drift check), if any. */
  newest: Hlc | undefined;
}

/**
 * Checks the shape of entries that came from a peer, against the models. Throws
 * `ValidationError` naming the first bad entry; nothing is applied from a batch that fails.
 */
export function validateRemoteEntries(ctx: WriteContext, entries: readonly unknown[]): ValidatedEntries {
  if (!Array.isArray(entries)) throw new ValidationError('entries must be an array');
  let newest = '';
  const valid = entries.map((raw, index) =>
    naming(`entry ${index}`, () => {
      if (raw === null || typeof raw !== 'object') throw new ValidationError('entry must be an object');
      const e = raw as Record<string, unknown>;
      if (!isDeviceId(e.origin)) throw new ValidationError('origin must be a device uuid');
      if (typeof e.seq !== 'number' || !Number.isSafeInteger(e.seq) || e.seq < 1) {
        throw new ValidationError('seq must be a positive integer');
      }
      if (decodeHlc(e.hlc).deviceId !== e.origin) throw new ValidationError('hlc was not issued by the entry origin');
      if ((e.hlc as string) > newest) newest = e.hlc as string;
      return checkChange(ctx, e.origin, e.seq, e.hlc as string, e);
    }),
  );
  return { entries: valid, newest: newest === '' ? undefined : decodeHlc(newest) };
}

/**
 * `validateRemoteEntries` for entries decoded from received chunks (`decodeChunk` checked their
 * framing). A chunk's entries share its origin, so the origin is checked once per chunk and each
 * entry's clock only for its time part.
 */
export function validateRemoteChunks(ctx: WriteContext, chunks: readonly Chunk[]): ValidatedEntries {
  const valid: LogEntry[] = [];
  let newest = '';
  for (const chunk of chunks) {
    if (!isDeviceId(chunk.origin)) throw new ValidationError('chunk origin must be a device uuid');
    const decoded = decodeChunk(chunk);
    let seq = chunk.firstSeq;
    try {
      for (const { entry } of decoded) {
        seq = entry.seq;
        if (!isHlcOf(entry.hlc, chunk.origin)) throw new ValidationError('malformed hlc');
        if (entry.hlc > newest) newest = entry.hlc;
        valid.push(checkChange(ctx, entry.origin, entry.seq, entry.hlc, entry));
      }
    } catch (err) {
      throw prefixed(`entry ${chunk.origin}#${seq}`, err);
    }
  }
  return { entries: valid, newest: newest === '' ? undefined : decodeHlc(newest) };
}

/** Runs `check`, prefixing the message of an error it throws with `where`. */
function naming<T>(where: string, check: () => T): T {
  try {
    return check();
  } catch (err) {
    throw prefixed(where, err);
  }
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
 * Applies validated entries inside the caller's transaction. Per origin, only entries that
 * extend the held contiguous prefix are applied; duplicates are skipped; anything after a gap
 * is reported and left for a later pull. The conflict rules make the outcome independent of
 * the order entries arrive in.
 */
export async function applyRemoteEntries(
  ctx: WriteContext,
  batch: WriteBatch,
  entries: readonly LogEntry[],
  counts?: RemoteCounts,
  received: readonly Chunk[] = [],
): Promise<ApplyResult> {
  const result: ApplyResult = { applied: 0, duplicates: 0, gaps: [], refused: 0 };
  const accepted: LogEntry[] = [];
  const sorted = isInOriginSeqOrder(entries) ? entries : [...entries].sort(byOriginSeq);
  let blockedOrigin: string | undefined;
  const expected = new Map<string, number>();
  // Only this device appends to the writer it appends to: a position of it beyond what it wrote
  // would be one its next write skips or reuses (a retired writer's tail is an origin like any).
  const ownWriter = appendedWriter(batch.currentWriter);
  const removals = batch.removals;
  const batchRemovals = removalsIn(sorted, removals);
  let closedAny = false;
  for (const entry of sorted) {
    if (entry.origin === blockedOrigin) continue;
    const held = expected.get(entry.origin) ?? batch.seqOf(entry.origin);
    const closedThrough = removals.closedThrough(entry.origin);
    if (closedThrough !== undefined && entry.seq > closedThrough) {
      result.refused += 1;
    } else if (entry.seq <= held) {
      result.duplicates += 1;
    } else if (entry.seq === held + 1 && removals.refuses(entry, batchRemovals)) {
      // Stamped after its device's removal: this position and every later one of the origin
      // carry later clocks, so the origin is closed here for good.
      removals.close(entry.origin, held);
      closedAny = true;
      result.refused += 1;
    } else if (entry.origin === ownWriter) {
      throw new ProtocolError(
        `entry ${entry.origin}#${entry.seq} claims a position of the log this device appends to that it never wrote (it holds ${held})`,
      );
    } else if (entry.seq === held + 1) {
      expected.set(entry.origin, entry.seq);
      accepted.push(entry);
    } else {
      result.gaps.push({ origin: entry.origin, heldSeq: held, firstReceivedSeq: entry.seq });
      blockedOrigin = entry.origin;
    }
  }

  const byModel = new Map<SharedModel, LogEntry[]>();
  for (const entry of accepted) {
    const model = ctx.registry.shared(entry.model);
    const list = byModel.get(model) ?? [];
    list.push(entry);
    byModel.set(model, list);
  }
  for (const [model, modelEntries] of byModel) await applyToModel(ctx, batch, model, modelEntries, counts);
  // Log entries are appended in per-origin sequence order, as the batch requires. The batch
  // makes the clock receive their clocks (and those of the rows) before the transaction ends.
  appendAccepted(batch, accepted, received);
  if (closedAny) await putMeta(batch.db, CLOSED_ORIGINS_META_KEY, removals.closedValue());
  if (batch.full) await batch.flush();
  result.applied = accepted.length;
  return result;
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

/** Whether entries are grouped by origin in ascending order and by seq within an origin. */
function isInOriginSeqOrder(entries: readonly LogEntry[]): boolean {
  for (let i = 1; i < entries.length; i++) if (byOriginSeq(entries[i - 1]!, entries[i]!) > 0) return false;
  return true;
}

function byOriginSeq(a: LogEntry, b: LogEntry): number {
  return a.origin !== b.origin ? (a.origin < b.origin ? -1 : 1) : a.seq - b.seq;
}

/**
 * Appends accepted entries (sorted by origin and seq) to the log. A received chunk whose
 * entries were all accepted, and which fits the stored-chunk bounds, is stored as received;
 * the other entries are encoded into new chunks.
 */
function appendAccepted(batch: WriteBatch, accepted: readonly LogEntry[], received: readonly Chunk[]): void {
  const acceptedRange = new Map<string, { first: number; last: number }>();
  for (const entry of accepted) {
    const range = acceptedRange.get(entry.origin);
    if (range) range.last = entry.seq;
    else acceptedRange.set(entry.origin, { first: entry.seq, last: entry.seq });
  }
  const whole = new Map<string, Chunk>();
  for (const chunk of received) {
    const range = acceptedRange.get(chunk.origin);
    const fits = chunk.lastSeq - chunk.firstSeq < MAX_CHUNK_ENTRIES && chunk.entries.byteLength <= MAX_CHUNK_BYTES;
    if (range && fits && range.first <= chunk.firstSeq && chunk.lastSeq <= range.last) {
      whole.set(`${chunk.origin}:${chunk.firstSeq}`, chunk);
    }
  }
  for (let i = 0; i < accepted.length; ) {
    const entry = accepted[i]!;
    const chunk = whole.get(`${entry.origin}:${entry.seq}`);
    if (!chunk) {
      batch.appendLog(entry);
      i += 1;
      continue;
    }
    // The chunk's entries are the next ones of `accepted` (one origin, consecutive seqs).
    const end = i + chunk.lastSeq - chunk.firstSeq + 1;
    let newest = entry.hlc;
    for (let k = i + 1; k < end; k++) if (accepted[k]!.hlc > newest) newest = accepted[k]!.hlc;
    batch.appendChunk(chunk, newest);
    i = end;
  }
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
  const result: OwnedApplyResult = { applied: 0, stale: 0, advanced: false };
  if (coverage) checkCoverage(rows, coverage);
  for (const row of rows) {
    const model = ctx.registry.get(row.model);
    const table = ctx.tables.get(model.name)!;
    const current = await batch.loadOwned(table, row.id);
    if (current && current.owner !== row.owner) {
      throw new OwnershipError(`${model.name} ${row.id} is owned by ${current.owner}, not ${row.owner}`);
    }
    // A removed device's rows written after its removal are refused; the cursor still moves.
    const afterRemoval = batch.removals.refuses({ origin: row.owner, hlc: row.hlc });
    if (row.owner === ctx.deviceId || (current && current.version >= row.version) || afterRemoval) {
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
