/**
 * The simulator's workload: models covering every conflict rule and both ownerships, a seeded
 * generator of operations, and `perform`, which runs one operation on a library through the
 * user API and reports the writes it acknowledged, with what the oracle (`oracle.ts`) needs to
 * recompute the result independently of the engine's merge code.
 */
import { type Library, type LibraryTransaction, type Row, type FieldValue, SyncError, defineModel } from '../src/index.js';
import type { SharedModel } from '../src/models/define.js';
import { naturalKeyId } from '../src/library/local-writes.js';
import type { LogEntry } from '../src/peer-log/types.js';
import type { SeededRandom } from '../src/sim/prng.js';
import { engineOf } from '../src/library/library.js';
import { SYSTEM_MODELS } from '../src/models/system.js';

/** Host values of some fields of one model. */
export type SimValues = Record<string, FieldValue>;

const NOTE = defineModel({
  name: 'note',
  ownership: 'shared',
  conflict: 'lww',
  fields: { title: 'text', body: { type: 'text', nullable: true }, stars: { type: 'integer', nullable: true }, done: 'boolean' },
});
const CARD = defineModel({
  name: 'card',
  ownership: 'shared',
  conflict: 'lww-field',
  fields: {
    title: 'text',
    body: { type: 'text', nullable: true },
    weight: { type: 'real', nullable: true },
    meta: { type: 'json', nullable: true },
    pinned: 'boolean',
    thumb: { type: 'blob', nullable: true },
  },
});
const TAG = defineModel({
  name: 'tag',
  ownership: 'shared',
  conflict: 'union',
  naturalKey: ['label', 'group'],
  fields: { label: 'text', group: 'integer', color: { type: 'text', nullable: true }, uses: { type: 'integer', nullable: true } },
});
const VOLUME = defineModel({
  name: 'volume',
  ownership: 'device',
  fields: { path: 'text', bytes: 'integer', info: { type: 'json', nullable: true }, mounted: 'boolean' },
});

/** Every conflict rule (`lww`, `lww-field`, `union` with a two-field natural key) and a device-owned model. */
export const simModels = [NOTE, CARD, TAG, VOLUME];

/** Shared models whose rows the workload addresses by id (not by natural key). */
export type SimRowModel = 'note' | 'card';
/** A `tag` row's natural key. */
export interface TagKey {
  label: string;
  group: number;
}

/** One write through the user API; a `transaction` runs several atomically. */
export type SimWriteOp =
  /** Upsert with no id: the engine generates one (a row nobody else writes). */
  | { kind: 'insert'; model: SimRowModel; values: SimValues }
  /** Upsert of a hot id (`hotId`): creates, overwrites, or re-creates a deleted row. */
  | { kind: 'upsert'; model: SimRowModel; slot: number; values: SimValues }
  /** Partial update of a hot id: some fields only. */
  | { kind: 'update'; model: SimRowModel; slot: number; values: SimValues }
  | { kind: 'delete'; model: SimRowModel; slot: number }
  /** Union upserts: devices pick keys from a small set, so they create "the same" tag. */
  | { kind: 'tag-upsert'; key: TagKey; values: SimValues }
  | { kind: 'tag-update'; key: TagKey; values: SimValues }
  | { kind: 'tag-delete'; key: TagKey }
  /** The writing device's own `volume` row `ownedId(device, slot)`. */
  | { kind: 'owned-upsert'; slot: number; values: SimValues }
  | { kind: 'owned-delete'; slot: number };

export type SimOp = SimWriteOp | { kind: 'transaction'; ops: SimWriteOp[] };

function rowModel(model: SimRowModel) {
  return model === 'note' ? NOTE : CARD;
}

/** The id of hot row `slot` of `model`: every device writes the same few. */
export function hotId(model: SimRowModel, slot: number): string {
  return `${model}-hot-${slot}`;
}

/** The id of device-owned row `slot` of `device`: only that device writes it. */
export function ownedId(device: string, slot: number): string {
  return `${device}-vol-${slot}`;
}

export interface WorkloadOptions {
  /** Hot ids per row model (default 4): small, so devices collide. */
  hotRows?: number;
  /** Distinct tag labels (default 3) and groups (default 2). */
  tagLabels?: number;
  tagGroups?: number;
  /** Owned row slots per device (default 3). */
  ownedRows?: number;
  /** Probability of a multi-op transaction (default 0.15), of 2 to `maxTransactionOps` (default 4) ops. */
  transactionChance?: number;
  maxTransactionOps?: number;
}

const WORDS = ['alpha', 'beta', 'gamma', 'delta', 'milk', 'bread', 'home', '2024'];
const COLORS = ['red', 'green', 'blue'];

/** A seeded stream of operations: the same seed gives the same operations. */
export class Workload {
  private readonly hotRows: number;
  private readonly tagLabels: number;
  private readonly tagGroups: number;
  private readonly ownedRows: number;
  private readonly transactionChance: number;
  private readonly maxTransactionOps: number;

  constructor(
    private readonly random: SeededRandom,
    options: WorkloadOptions = {},
  ) {
    this.hotRows = options.hotRows ?? 4;
    this.tagLabels = options.tagLabels ?? 3;
    this.tagGroups = options.tagGroups ?? 2;
    this.ownedRows = options.ownedRows ?? 3;
    this.transactionChance = options.transactionChance ?? 0.15;
    this.maxTransactionOps = Math.max(2, options.maxTransactionOps ?? 4);
  }

  next(): SimOp {
    if (!this.random.chance(this.transactionChance)) return this.write();
    const count = 2 + this.random.int(this.maxTransactionOps - 1);
    const ops: SimWriteOp[] = [];
    const ownedSlots = new Set<number>();
    while (ops.length < count) {
      const op = this.write();
      // `perform` finds an owned write's version in the owner's rows: a second write of the same
      // owned row in one transaction would hide the first one's.
      if (op.kind === 'owned-upsert' || op.kind === 'owned-delete') {
        if (ownedSlots.has(op.slot)) continue;
        ownedSlots.add(op.slot);
      }
      ops.push(op);
    }
    return { kind: 'transaction', ops };
  }

  private write(): SimWriteOp {
    const r = this.random;
    const roll = r.int(100);
    const model: SimRowModel = r.chance(0.5) ? 'note' : 'card';
    const slot = r.int(this.hotRows);
    if (roll < 8) return { kind: 'insert', model, values: this.fullValues(model) };
    if (roll < 28) return { kind: 'upsert', model, slot, values: this.fullValues(model) };
    if (roll < 50) return { kind: 'update', model, slot, values: this.partialValues(model) };
    if (roll < 60) return { kind: 'delete', model, slot };
    const key: TagKey = { label: WORDS[r.int(this.tagLabels)]!, group: r.int(this.tagGroups) };
    if (roll < 72) return { kind: 'tag-upsert', key, values: { ...key, ...this.tagValues(true) } };
    if (roll < 80) return { kind: 'tag-update', key, values: this.tagValues(false) };
    if (roll < 84) return { kind: 'tag-delete', key };
    const ownedSlot = r.int(this.ownedRows);
    if (roll < 95) return { kind: 'owned-upsert', slot: ownedSlot, values: this.volumeValues() };
    return { kind: 'owned-delete', slot: ownedSlot };
  }

  /** Every required field; each nullable one given, null or left out. */
  private fullValues(model: SimRowModel): SimValues {
    const all = this.fieldValues(model);
    const values: SimValues = {};
    for (const [name, value] of Object.entries(all)) {
      if (!rowModel(model).fieldsByName.get(name)!.nullable) values[name] = value;
      else if (this.random.chance(0.6)) values[name] = value;
      else if (this.random.chance(0.5)) values[name] = null;
    }
    return values;
  }

  /** A non-empty subset of the fields, nullable ones sometimes set to null. */
  private partialValues(model: SimRowModel): SimValues {
    const entries = Object.entries(this.fieldValues(model));
    const values: SimValues = {};
    for (const [name, value] of entries) if (this.random.chance(0.35)) values[name] = value;
    if (Object.keys(values).length === 0) {
      const [name, value] = this.random.pick(entries);
      values[name] = value;
    }
    for (const name of Object.keys(values)) {
      if (rowModel(model).fieldsByName.get(name)!.nullable && this.random.chance(0.15)) values[name] = null;
    }
    return values;
  }

  private fieldValues(model: SimRowModel): SimValues {
    const r = this.random;
    if (model === 'note') {
      return { title: r.pick(WORDS), body: `${r.pick(WORDS)} ${r.int(100)}`, stars: r.int(6) - 1, done: r.chance(0.5) };
    }
    return {
      title: r.pick(WORDS),
      body: r.pick(WORDS),
      weight: r.int(1000) / 8,
      // Keys in a random order: stored as canonical JSON, read back equal.
      meta: r.chance(0.5) ? { b: r.int(3), a: [r.pick(WORDS)] } : { a: [], z: { y: r.chance(0.5) } },
      pinned: r.chance(0.5),
      thumb: r.bytes(1 + r.int(6)),
    };
  }

  /** `tag` values besides the key: all of them for an upsert, some for an update. */
  private tagValues(full: boolean): SimValues {
    const values: SimValues = {};
    const color = this.random.chance(0.8) ? this.random.pick(COLORS) : null;
    const uses = this.random.chance(0.8) ? this.random.int(10) : null;
    if (full || this.random.chance(0.5)) values.color = color;
    if (full || this.random.chance(0.5) || Object.keys(values).length === 0) values.uses = uses;
    return values;
  }

  private volumeValues(): SimValues {
    const r = this.random;
    return {
      path: `/mnt/${r.pick(WORDS)}`,
      bytes: r.int(1 << 20),
      info: r.chance(0.7) ? { fs: r.pick(['ext4', 'apfs']), free: r.int(100) } : null,
      mounted: r.chance(0.5),
    };
  }
}

/** A write to a shared model that returned to the caller, with the clock the engine stamped. */
export interface SharedWrite {
  readonly kind: 'shared';
  readonly model: string;
  readonly id: string;
  /** As the caller made it: an `lww` update is still `update` here, its `fields` the whole row. */
  readonly op: 'upsert' | 'update' | 'delete';
  /**
   * Host values written: an upsert's every field (left-out nullable ones as null); an update's
   * named fields, or under `lww` the whole row after it (what the docs say it logs); null for a
   * delete.
   */
  readonly fields: SimValues | null;
  /** `union` only: the natural-key values the caller named the record by (the oracle derives the id). */
  readonly key: SimValues | null;
  /** Encoded HLC of the change, read from the writer's own log entry. */
  readonly hlc: string;
  /** The log origin (the device id, or a writer derived from it) and the writing device. */
  readonly origin: string;
  readonly device: string;
}

/** A write of the writing device's own device-owned row. */
export interface OwnedWrite {
  readonly kind: 'owned';
  readonly model: string;
  readonly id: string;
  readonly op: 'upsert' | 'delete';
  /** Every field (host values); null for a delete. */
  readonly fields: SimValues | null;
  /** HLC and per-owner version of the row as written, read from the owner's own rows. */
  readonly hlc: string;
  readonly version: number;
  readonly owner: string;
}

export type AcknowledgedWrite = SharedWrite | OwnedWrite;

export type PerformOutcome =
  | { readonly kind: 'acknowledged'; readonly writes: readonly AcknowledgedWrite[] }
  /**
   * The library refused the operation as a whole (a transaction rolls back): an update or delete
   * of a row that is not live here (`NOT_FOUND`), or a device that is no longer a member
   * (`REMOVED`). Nothing was written.
   */
  | { readonly kind: 'refused'; readonly code: string; readonly message: string };

/** Refusals that a random workload provokes on purpose; any other error is a finding. */
const EXPECTED_REFUSALS = new Set(['NOT_FOUND', 'REMOVED']);
const READ_ALL = { maxRecords: 100_000, maxBytes: 1 << 30 };

/** What one op of a transaction did, before the clocks are read back. */
type Planned =
  | { kind: 'shared'; model: string; id: string; op: SharedWrite['op']; fields: SimValues | null; key: SimValues | null }
  | { kind: 'owned'; model: string; id: string; op: OwnedWrite['op']; fields: SimValues | null };

/**
 * Runs `op` on `lib` through the user API (`transaction`, whose `tx` has the same calls as the
 * library) and returns what it acknowledged. The clocks are read back right after the commit:
 * shared writes' from this device's own log (entries after the writer's position before the
 * write, in order), device-owned writes' from its own rows (`ownedAfter` its version before).
 * So calls on one library must not overlap, and the library's own entries must not be pruned
 * between the commit and that read (it follows at once; pruning needs every partner's ack).
 */
export async function perform(lib: Library, op: SimOp): Promise<PerformOutcome> {
  const vectorBefore = lib.versionVector();
  const ownedBefore = engineOf(lib).ownedVector()[lib.deviceId] ?? 0;
  let planned: Planned[];
  try {
    planned = await lib.transaction(async (tx) => {
      const done: Planned[] = [];
      for (const write of op.kind === 'transaction' ? op.ops : [op]) done.push(await run(lib, tx, write));
      return done;
    });
  } catch (error) {
    if (error instanceof SyncError && EXPECTED_REFUSALS.has(error.code)) {
      return { kind: 'refused', code: error.code, message: error.message };
    }
    throw error;
  }
  // The writer is known only now: a write may start a fresh one (the first write of a run before
  // any partner confirmed the current one, or after a partner claimed more of it than it wrote).
  const writer = lib.writer();
  const entries = await ownEntries(lib, writer, vectorBefore[writer] ?? 0, planned.filter((p) => p.kind === 'shared').length);
  const ownedRows = await engineOf(lib).ownedAfter(lib.deviceId, ownedBefore, READ_ALL);
  const writes: AcknowledgedWrite[] = [];
  let ownedCount = 0;
  for (const p of planned) {
    if (p.kind === 'shared') {
      const entry = entries.shift()!;
      if (entry.model !== p.model || entry.id !== p.id) {
        throw new Error(`perform: log entry ${entry.origin}/${entry.seq} is ${entry.model} ${entry.id}, the write was ${p.model} ${p.id}`);
      }
      writes.push({ ...p, hlc: entry.hlc, origin: writer, device: lib.deviceId });
      continue;
    }
    ownedCount += 1;
    const version = ownedBefore + ownedCount;
    const row = ownedRows.rows.find((r) => r.version === version);
    if (!row || row.model !== p.model || row.id !== p.id) {
      throw new Error(`perform: no own ${p.model} row ${p.id} at version ${version} after the write`);
    }
    writes.push({ ...p, hlc: row.hlc, version, owner: lib.deviceId });
  }
  return { kind: 'acknowledged', writes };
}

/**
 * The first `count` entries of `writer` after `after`, less the library's own system writes
 * (a member row refresh may commit right before or after the operation's transaction): exactly
 * `count` of them, or the read is not what was written.
 */
async function ownEntries(lib: Library, writer: string, after: number, count: number): Promise<LogEntry[]> {
  if (count === 0) return [];
  const read = await engineOf(lib).entriesAfter({ ...lib.versionVector(), [writer]: after }, READ_ALL);
  const own = read.entries
    .filter((e) => e.origin === writer && !SYSTEM_MODEL_NAMES.has(e.model))
    .sort((a, b) => a.seq - b.seq)
    .slice(0, count);
  if (own.length !== count || read.pruned.some((p) => p.origin === writer)) {
    throw new Error(`perform: expected ${count} own log entries of ${writer} after ${after}, read ${own.length}`);
  }
  return own;
}

const SYSTEM_MODEL_NAMES: ReadonlySet<string> = new Set(SYSTEM_MODELS.map((m) => m.name));

async function run(lib: Library, tx: LibraryTransaction, op: SimWriteOp): Promise<Planned> {
  switch (op.kind) {
    case 'insert': {
      const row = await tx.upsert(op.model, op.values);
      return { kind: 'shared', model: op.model, id: row.id, op: 'upsert', fields: fieldsOf(row), key: null };
    }
    case 'upsert': {
      const row = await tx.upsert(op.model, { ...op.values, id: hotId(op.model, op.slot) });
      return { kind: 'shared', model: op.model, id: row.id, op: 'upsert', fields: fieldsOf(row), key: null };
    }
    case 'update': {
      const row = await tx.update(op.model, hotId(op.model, op.slot), op.values);
      // Row-level LWW logs the whole row after the update (docs/models.md, `lww`).
      const fields = op.model === 'note' ? fieldsOf(row) : op.values;
      return { kind: 'shared', model: op.model, id: row.id, op: 'update', fields, key: null };
    }
    case 'delete':
      await tx.delete(op.model, hotId(op.model, op.slot));
      return { kind: 'shared', model: op.model, id: hotId(op.model, op.slot), op: 'delete', fields: null, key: null };
    case 'tag-upsert': {
      const row = await tx.upsert('tag', op.values);
      return { kind: 'shared', model: 'tag', id: row.id, op: 'upsert', fields: fieldsOf(row), key: { ...op.key } };
    }
    case 'tag-update': {
      const id = tagId(lib, op.key);
      await tx.update('tag', id, op.values);
      return { kind: 'shared', model: 'tag', id, op: 'update', fields: op.values, key: { ...op.key } };
    }
    case 'tag-delete': {
      const id = tagId(lib, op.key);
      await tx.delete('tag', id);
      return { kind: 'shared', model: 'tag', id, op: 'delete', fields: null, key: { ...op.key } };
    }
    case 'owned-upsert': {
      const row = await tx.upsert('volume', { ...op.values, id: ownedId(lib.deviceId, op.slot) });
      return { kind: 'owned', model: 'volume', id: row.id, op: 'upsert', fields: fieldsOf(row) };
    }
    case 'owned-delete':
      await tx.delete('volume', ownedId(lib.deviceId, op.slot));
      return { kind: 'owned', model: 'volume', id: ownedId(lib.deviceId, op.slot), op: 'delete', fields: null };
  }
}

/**
 * The id a tag's natural key maps to, for addressing it in an update or delete (the host would
 * have it from the upsert). The oracle derives ids on its own, from the docs.
 */
function tagId(lib: Library, key: TagKey): string {
  return naturalKeyId(lib.id, TAG as SharedModel, { label: key.label, group: key.group });
}

function fieldsOf(row: Row): SimValues {
  const { id: _id, ...fields } = row;
  return fields;
}
