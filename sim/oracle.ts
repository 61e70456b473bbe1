/**
 * An oracle for the simulator: the rows every member must hold once every acknowledged write
 * reached it, computed from the conflict rules as docs/models.md documents them. Written apart
 * from the engine's merge (src/models/merge.ts) on purpose, and working on whole histories
 * rather than merging state by state: if both agree, the engine follows the documented rules.
 */
import { v5 as uuidv5 } from 'uuid';
import type { Model } from '../src/models/define.js';
import type { FieldValue } from '../src/models/types.js';
import type { Library } from '../src/library/library.js';
import type { AcknowledgedWrite, OwnedWrite, SharedWrite, SimValues } from './workload.js';

/**
 * A removal as every member holds it (`lib.removals()`): the removed device and its cutoff, the
 * clock of the earliest removal of it (docs/architecture.md, "The cutoff rule").
 */
export interface RemovalCut {
  readonly device: string;
  readonly cutoff: string;
}

export interface OracleInput {
  readonly writes: readonly AcknowledgedWrite[];
  readonly models: readonly Model[];
  /** The namespace of `union` ids. */
  readonly libraryId: string;
  readonly removals?: readonly RemovalCut[];
}

/** A live row's field values (host form), without its id. */
export type ExpectedRow = Readonly<SimValues>;

export interface ExpectedState {
  /** Per model (every model of the input), the live rows by id. */
  readonly rows: ReadonlyMap<string, ReadonlyMap<string, ExpectedRow>>;
  /**
   * Rows the writes alone do not determine, with what a member may hold of each (null: no live
   * row): a removed device's own (device-owned) row that it wrote again after its cutoff. Such
   * rows sync by state, so the later write replaced the earlier ones on the removed device, and
   * members hold the newest version at or before the cutoff that reached one of them before,
   * or none. (Shared changes sync by log: every change before the cutoff still arrives.)
   */
  readonly undetermined: ReadonlyMap<string, ReadonlyMap<string, readonly (ExpectedRow | null)[]>>;
  /** Acknowledged writes no member keeps: a removed device's, stamped after its cutoff. */
  readonly excluded: readonly AcknowledgedWrite[];
}

/**
 * The rows every member holds once `writes` all reached it. Conflict rules (docs/models.md):
 * - `lww`: of all writes of a row, the one with the greatest HLC decides it whole (every `lww`
 *   write is a whole row; a delete leaves no live row).
 * - `lww-field` and `union`: each field holds the value of its newest write (upsert or update);
 *   the row is live iff its newest upsert is newer than its newest delete (a partial update
 *   never revives a row). `union` ids are UUID v5 of `[model, ...natural key]` in the library's
 *   namespace.
 * - device-owned: the owner's newest write of the row (its clock; the owner's versions follow
 *   the same order, and a row's clock never changes when its version is moved on restore).
 * HLCs are compared as encoded strings, which orders by wall time, counter, then writer id (the
 * documented tie-break; two distinct writes never share one).
 * Removed members: a write of a removed device stamped after the earliest cutoff of it is not
 * admitted anywhere (`removals`); it is listed in `excluded`.
 */
export function expectedState(input: OracleInput): ExpectedState {
  const cutoffs = earliestCutoffs(input.removals ?? []);
  const admitted: AcknowledgedWrite[] = [];
  const excluded: AcknowledgedWrite[] = [];
  for (const write of input.writes) {
    const cutoff = cutoffs.get(write.kind === 'shared' ? write.device : write.owner);
    (cutoff !== undefined && write.hlc > cutoff ? excluded : admitted).push(write);
  }
  const rows = new Map<string, Map<string, ExpectedRow>>();
  const undetermined = new Map<string, Map<string, (ExpectedRow | null)[]>>();
  for (const model of input.models) {
    const histories = new Map<string, AcknowledgedWrite[]>();
    for (const write of admitted) {
      if (write.model !== model.name) continue;
      const id = recordId(model, write, input.libraryId);
      const history = histories.get(id);
      if (history) history.push(write);
      else histories.set(id, [write]);
    }
    const live = new Map<string, ExpectedRow>();
    const open = new Map<string, (ExpectedRow | null)[]>();
    for (const [id, history] of histories) {
      const ordered = distinctInClockOrder(model, id, history);
      if (model.ownership === 'device' && excluded.some((w) => w.model === model.name && w.id === id)) {
        open.set(id, [null, ...ordered.map((w) => (w.op === 'delete' ? null : { ...w.fields }))]);
        continue;
      }
      const row = resolve(model, id, ordered);
      if (row) live.set(id, row);
    }
    rows.set(model.name, live);
    undetermined.set(model.name, open);
  }
  return { rows, undetermined, excluded };
}

function earliestCutoffs(removals: readonly RemovalCut[]): Map<string, string> {
  const cutoffs = new Map<string, string>();
  for (const { device, cutoff } of removals) {
    const held = cutoffs.get(device);
    if (held === undefined || cutoff < held) cutoffs.set(device, cutoff);
  }
  return cutoffs;
}

/** A `union` record's id comes from its natural key, whatever id the write reported. */
function recordId(model: Model, write: AcknowledgedWrite, libraryId: string): string {
  if (model.ownership !== 'shared' || model.conflict !== 'union') return write.id;
  const key = write.kind === 'shared' ? write.key : null;
  if (!key) throw new Error(`oracle: a ${model.name} write of ${write.id} names no natural key`);
  return uuidv5(JSON.stringify([model.name, ...model.naturalKey.map((k) => storedKeyValue(model, k, key[k]))]), libraryId);
}

/** Natural-key values as stored (the id hashes stored values): booleans as 0/1. */
function storedKeyValue(model: Model, field: string, value: FieldValue | undefined): string | number {
  if (typeof value === 'boolean') return value ? 1 : 0;
  if (typeof value === 'string' || typeof value === 'number') return value;
  throw new Error(`oracle: natural key ${model.name}.${field} must be text, integer, real or boolean, got ${printValue(value)}`);
}

/** The writes in clock order, each once (a write reported twice is one change). */
function distinctInClockOrder<W extends AcknowledgedWrite>(model: Model, id: string, history: readonly W[]): W[] {
  const byHlc = new Map<string, W>();
  for (const write of history) {
    const seen = byHlc.get(write.hlc);
    if (seen && (seen.op !== write.op || printRow(seen.fields) !== printRow(write.fields))) {
      throw new Error(`oracle: two different writes of ${model.name} ${id} carry one HLC ${write.hlc}`);
    }
    byHlc.set(write.hlc, write);
  }
  return [...byHlc.values()].sort((a, b) => (a.hlc < b.hlc ? -1 : 1));
}

function resolve(model: Model, id: string, history: readonly AcknowledgedWrite[]): ExpectedRow | undefined {
  if (model.ownership === 'device') return newestOwned(model, id, history as OwnedWrite[]);
  const shared = history as SharedWrite[];
  return model.conflict === 'lww' ? newestWhole(shared) : fieldByField(model, shared);
}

/** Row-level LWW: the newest write, whole. */
function newestWhole(history: readonly SharedWrite[]): ExpectedRow | undefined {
  const newest = history[history.length - 1]!;
  return newest.op === 'delete' ? undefined : { ...newest.fields };
}

/** Field-level LWW (also `union`): live only after an upsert newer than every delete. */
function fieldByField(model: Model, history: readonly SharedWrite[]): ExpectedRow | undefined {
  let newestUpsert: string | undefined;
  let newestDelete: string | undefined;
  const values: Record<string, FieldValue> = {};
  for (const write of history) {
    if (write.op === 'delete') {
      newestDelete = write.hlc;
      continue;
    }
    if (write.op === 'upsert') newestUpsert = write.hlc;
    // In clock order, so a later assignment is a newer write of that field.
    for (const field of model.fields) if (write.fields && field.name in write.fields) values[field.name] = write.fields[field.name]!;
  }
  if (newestUpsert === undefined || (newestDelete !== undefined && newestDelete > newestUpsert)) return undefined;
  return values;
}

/** Device-owned: only its owner writes a row, and the owner's newest write is what replicas hold. */
function newestOwned(model: Model, id: string, history: readonly OwnedWrite[]): ExpectedRow | undefined {
  const owners = new Set(history.map((w) => w.owner));
  if (owners.size > 1) throw new Error(`oracle: ${model.name} ${id} was written by several owners (${[...owners].join(', ')})`);
  const newest = history[history.length - 1]!;
  return newest.op === 'delete' ? undefined : { ...newest.fields };
}

/** One way a library differs from the oracle. `field` null: the row as a whole (one side has none). */
export interface Difference {
  readonly model: string;
  readonly id: string;
  readonly field: string | null;
  readonly expected: string;
  readonly actual: string;
}

const LIST_PAGE = 1_000;
const NO_ROW = 'no live row';

/**
 * How `lib`'s live rows (read through the user API, `list`) differ from `expected`, for every
 * model the oracle covers: missing and unexpected rows, and each field whose value differs.
 * Empty when they agree.
 */
export async function compareWithOracle(expected: ExpectedState, lib: Library): Promise<Difference[]> {
  const differences: Difference[] = [];
  for (const [model, rows] of expected.rows) {
    const actual = await liveRows(lib, model);
    const open = expected.undetermined.get(model) ?? new Map<string, readonly (ExpectedRow | null)[]>();
    const ids = [...new Set([...rows.keys(), ...open.keys(), ...actual.keys()])].sort();
    for (const id of ids) {
      const want = rows.get(id);
      const have = actual.get(id);
      const choices = open.get(id);
      if (choices) {
        const held = have ? printRow(have) : NO_ROW;
        const allowed = [...new Set(choices.map((c) => (c ? printRow(c) : NO_ROW)))];
        if (!allowed.includes(held)) differences.push({ model, id, field: null, expected: `one of ${allowed.join(' | ')}`, actual: held });
        continue;
      }
      if (!want || !have) {
        differences.push({ model, id, field: null, expected: want ? printRow(want) : NO_ROW, actual: have ? printRow(have) : NO_ROW });
        continue;
      }
      for (const field of [...new Set([...Object.keys(want), ...Object.keys(have)])].sort()) {
        const [e, a] = [printValue(want[field]), printValue(have[field])];
        if (e !== a) differences.push({ model, id, field, expected: e, actual: a });
      }
    }
  }
  return differences;
}

async function liveRows(lib: Library, model: string): Promise<Map<string, SimValues>> {
  const rows = new Map<string, SimValues>();
  let after: string | undefined;
  for (;;) {
    const page = await lib.list(model, after === undefined ? { limit: LIST_PAGE } : { limit: LIST_PAGE, after });
    for (const { id, ...fields } of page) rows.set(id, fields);
    if (page.length < LIST_PAGE) return rows;
    after = page[page.length - 1]!.id;
  }
}

/** One line per difference, for a failing seed's report. */
export function formatDifferences(differences: readonly Difference[]): string {
  return differences
    .map((d) => `${d.model} ${d.id}${d.field === null ? '' : `.${d.field}`}: expected ${d.expected}, actual ${d.actual}`)
    .join('\n');
}

/**
 * A value in a form that is equal exactly when the values are: JSON with sorted object keys
 * (json fields read back canonical), blobs as hex, absent fields as `(absent)`.
 */
export function printValue(value: FieldValue | undefined): string {
  if (value === undefined) return '(absent)';
  if (value instanceof Uint8Array) return `0x${Array.from(value, (b) => b.toString(16).padStart(2, '0')).join('')}`;
  return JSON.stringify(sortedKeys(value));
}

function sortedKeys(value: FieldValue): unknown {
  if (Array.isArray(value)) return value.map((v) => sortedKeys(v));
  if (value === null || typeof value !== 'object' || value instanceof Uint8Array) return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((k) => [k, sortedKeys((value as Record<string, FieldValue>)[k]!)]),
  );
}

function printRow(fields: Readonly<SimValues> | null): string {
  if (fields === null) return 'null';
  return `{${Object.keys(fields)
    .sort()
    .map((k) => `${k}: ${printValue(fields[k])}`)
    .join(', ')}}`;
}
