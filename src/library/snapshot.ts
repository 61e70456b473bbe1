import { decodeHlc, type Hlc } from '../hlc/index.js';
import type { SharedModel } from '../models/define.js';
import { mergeStates } from '../models/merge.js';
import type { SharedRowState, StoredValues } from '../models/types.js';
import { checkRecordId, checkRecordSize, checkStored, encodedSizeBound, exceedsRecordLimit } from '../models/values.js';
import type { ReadLimits, VersionVector } from '../peer-log/types.js';
import type { ModelTable, SqlRow } from '../storage/model-table.js';
import { runSql } from '../util/sql.js';
import type { Kysely } from 'kysely';
import type { InternalTables } from '../storage/schema.js';
import { naturalKeyId, type WriteContext } from './local-writes.js';
import type { WriteBatch } from './write-batch.js';
import { countChange, type RemoteCounts } from './counts.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { ProtocolError, ValidationError } from '../errors.js';
import { isKeyDerivedId } from '../membership/device-id.js';
import type { ProvenHead } from '../peer-log/log-store.js';
import { packProof, proofId, type RunProof, unpackProof, verifyProof } from '../peer-log/signed-runs.js';
import type { Signatures } from '../runtime/signatures.js';
import type { OriginAuthors } from './origin-authors.js';

/**
 * Snapshots: the current state of every shared row, tombstones included, with the clocks its
 * conflict rule keeps. A device whose log position was pruned away on its partners catches up
 * from a snapshot, then from the log after the snapshot's vector.
 */

/**
 * Where a snapshot read stands: the vector it covers, the proofs of it that its first page
 * brought and that verified there (`proveVector`), and the position of the next page.
 */
export interface SnapshotCheckpoint {
  vector: VersionVector;
  proofs: RunProof[];
  next: SnapshotPosition | null;
}

/** A checkpoint as `sync_meta` stores it: JSON, each proof `packProof`'s bytes in hex. */
export function checkpointValue(checkpoint: SnapshotCheckpoint): string {
  return JSON.stringify({ vector: checkpoint.vector, proofs: checkpoint.proofs.map((p) => bytesToHex(packProof(p))), next: checkpoint.next });
}

/** A stored checkpoint; one stored before 3.2 holds no proofs, so its snapshot starts again (undefined). */
export function parseCheckpoint(value: string): SnapshotCheckpoint | undefined {
  const stored = JSON.parse(value) as { vector: VersionVector; next: SnapshotPosition | null; proofs?: string[] };
  if (stored.proofs === undefined) return undefined;
  return { vector: stored.vector, proofs: stored.proofs.map((hex) => unpackProof(hexToBytes(hex))), next: stored.next };
}

/** What a snapshot's proofs show of its vector (`proveVector`). */
export interface VectorProof {
  /** The verified heads of the positions proven, by origin. */
  heads: Map<string, ProvenHead>;
  /** Origins claimed beyond what is held here without the proof they need: the partner cannot serve this snapshot. */
  unproven: string[];
}

/**
 * Checks the proofs of a snapshot's vector (docs/protocol.md, "Snapshot proofs") for the
 * positions it holds beyond `held`, which the receiver would adopt without their entries. Each
 * needs the proof of the run ending exactly there, signed by a key that may sign for its origin
 * (`authors`): a member could otherwise claim an honest device's origin further than it wrote,
 * and the receiver would skip its real entries there. A proof that is wrong (another position,
 * another key, a bad signature) is a `ProtocolError`. A missing one makes the origin `unproven`
 * (an honest partner may hold a position it cannot prove: adopted from a snapshot before 3.2),
 * except for a random-id (pre-2.0) origin of which this device holds no signed run yet
 * (`knownHeads`): its history before 2.0 was never signed, so no one may be able to prove it.
 * A proof whose author's member row is not held here yet proves nothing and is left out.
 */
export function proveVector(
  signatures: Signatures,
  library: string,
  vector: VersionVector,
  proofs: readonly RunProof[],
  held: VersionVector,
  knownHeads: ReadonlySet<string>,
  authors: OriginAuthors,
): VectorProof {
  const byOrigin = new Map(proofs.map((proof) => [proof.origin, proof]));
  const result: VectorProof = { heads: new Map(), unproven: [] };
  for (const [origin, through] of Object.entries(vector)) {
    if (through <= (held[origin] ?? 0)) continue;
    const proof = byOrigin.get(origin);
    if (!proof) {
      if (isKeyDerivedId(origin) || knownHeads.has(origin)) result.unproven.push(origin);
      continue;
    }
    if (proof.lastSeq !== through) throw new ProtocolError(`snapshot claims ${origin} through ${through}, but its proof is of a run ending at ${proof.lastSeq}`);
    const may = authors.authority(origin, proof.author);
    if (may === 'no') throw new ProtocolError(`snapshot proof of ${origin} is signed by ${proof.author}, who may not sign for it`);
    if (may === 'unknown') continue;
    result.heads.set(origin, { proof, id: verifyProof(signatures, library, proof) });
  }
  return result;
}

/** The heads of proofs verified before (a checkpoint's, by `proveVector`): their ids, not checked again. */
export function headsOf(signatures: Signatures, library: string, proofs: readonly RunProof[]): Map<string, ProvenHead> {
  return new Map(proofs.map((proof) => [proof.origin, { proof, id: proofId(signatures, library, proof) }]));
}

export type SnapshotPosition = [model: string, id: string];

export interface SnapshotRow {
  model: string;
  state: SharedRowState;
}

export interface SnapshotPage {
  rows: SnapshotRow[];
  /** Where the next page starts; null when every shared row was read. */
  next: SnapshotPosition | null;
}

/**
 * Bytes a snapshot-row tuple costs at most besides its id, values and field clocks: array
 * header 1, model name (at most 63 ASCII characters) 65, three HLCs of 54 (52 characters and
 * header), deleted 1, field-clock map header 5; rounded up. The id counts 3 + 3 bytes per UTF-16
 * unit, so the estimate is an upper bound of the encoding and a page fits its byte limit.
 */
const ROW_OVERHEAD_BYTES = 240;
/** Bytes of one field clock at most (a name of up to 63 ASCII characters, and an HLC), rounded up. */
const FIELD_CLOCK_BYTES = 130;

/** Reads shared rows after `after`, models in name order and ids in order, within `limits`. */
export async function readSnapshot(
  db: Kysely<InternalTables>,
  tables: readonly ModelTable[],
  after: SnapshotPosition | null,
  limits: ReadLimits,
): Promise<SnapshotPage> {
  const rows: SnapshotRow[] = [];
  let bytes = 0;
  for (const table of tables) {
    const name = table.model.name;
    if (after && name < after[0]) continue;
    let afterId = after && name === after[0] ? after[1] : undefined;
    for (;;) {
      const wanted = limits.maxRecords - rows.length;
      const stored = await runSql<SqlRow>(
        db,
        table.allRowsSql(afterId !== undefined),
        afterId === undefined ? [Math.min(wanted, 1_000)] : [afterId, Math.min(wanted, 1_000)],
      );
      for (const row of stored) {
        const state = table.sharedFromRow(row);
        const clocks = Object.keys(state.fieldHlcs ?? {}).length;
        const size = ROW_OVERHEAD_BYTES + 3 * state.id.length + encodedSizeBound(state.values) + clocks * FIELD_CLOCK_BYTES;
        if (rows.length > 0 && bytes + size > limits.maxBytes) return { rows, next: [name, afterId ?? ''] };
        if (exceedsRecordLimit(state.values)) {
          // Held from before the record limit, or joined past it from concurrent partial writes:
          // a partner refuses it, so it is never sent (see docs/protocol.md, "Record size").
          afterId = state.id;
          continue;
        }
        rows.push({ model: name, state });
        bytes += size;
        afterId = state.id;
        if (rows.length >= limits.maxRecords) return { rows, next: [name, afterId] };
      }
      if (stored.length < Math.min(wanted, 1_000)) break;
    }
  }
  return { rows, next: null };
}

/** Checks snapshot rows a peer sent against the models; returns the clocks to drift-check. */
export function validateSnapshotRows(ctx: WriteContext, rows: readonly SnapshotRow[]): Hlc[] {
  const clocks: Hlc[] = [];
  rows.forEach(({ model: name, state }, index) => {
    try {
      const model = ctx.registry.shared(name);
      checkRecordId(model, state.id);
      if (typeof state.deleted !== 'boolean') throw new ValidationError('deleted must be a boolean');
      clocks.push(decodeHlc(state.hlc));
      if (state.values === null || typeof state.values !== 'object') throw new ValidationError('values must be an object');
      for (const key of Object.keys(state.values)) {
        if (!model.fieldsByName.has(key)) throw new ValidationError(`${model.name}: unknown field "${key}"`);
      }
      for (const field of model.fields) {
        const value = state.values[field.name] ?? null;
        // A delete clears fields, required ones included.
        if (value !== null || !state.deleted) checkStored(model, field, value);
      }
      if (model.conflict === 'union' && !state.deleted && naturalKeyId(ctx.libraryId, model, state.values) !== state.id) {
        throw new ValidationError(`${model.name}: id does not match the natural key`);
      }
      checkRecordSize(model.name, state.values);
      if (!state.deleted) model.checkRecord?.(state.values, true, state.id);
      for (const hlc of [state.upsertHlc, state.deleteHlc]) if (hlc !== null) clocks.push(decodeHlc(hlc));
      for (const [key, hlc] of Object.entries(state.fieldHlcs ?? {})) {
        if (!model.fieldsByName.has(key)) throw new ValidationError(`${model.name}: clock of unknown field "${key}"`);
        clocks.push(decodeHlc(hlc));
      }
    } catch (err) {
      if (err instanceof Error) err.message = `snapshot row ${index}: ${err.message}`;
      throw err;
    }
  });
  return clocks;
}

/** Merges validated snapshot rows into the held rows (the join of both states). */
export async function applySnapshotRows(
  ctx: WriteContext,
  batch: WriteBatch,
  rows: readonly SnapshotRow[],
  counts: RemoteCounts,
): Promise<void> {
  const byModel = new Map<SharedModel, SharedRowState[]>();
  for (const { model: name, state } of rows) {
    const model = ctx.registry.shared(name);
    let states = byModel.get(model);
    if (!states) byModel.set(model, (states = []));
    states.push(normalState(model, state));
  }
  for (const [model, states] of byModel) {
    const table = ctx.tables.get(model.name)!;
    const held = await batch.loadManyShared(
      table,
      states.map((s) => s.id),
    );
    for (const remote of states) {
      const before = held.get(remote.id);
      const after = before ? mergeStates(model, before, remote) : remote;
      if (after === before) continue;
      held.set(remote.id, after);
      batch.putShared(table, after);
      countChange(counts, before, after);
      batch.events.push({ model: model.name, id: remote.id, op: after.deleted ? 'delete' : 'upsert', origin: 'remote' });
    }
    if (batch.full) await batch.flush();
  }
}

/** Exactly the model's fields, and no field clocks for row-level LWW. */
function normalState(model: SharedModel, state: SharedRowState): SharedRowState {
  const values: StoredValues = {};
  for (const field of model.fields) values[field.name] = state.values[field.name] ?? null;
  return { ...state, values, fieldHlcs: model.conflict === 'lww' && !model.apply ? null : (state.fieldHlcs ?? {}) };
}
