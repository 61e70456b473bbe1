import { maxEncodedHlc } from '../hlc/hlc.js';
import { type Model, type SharedModel, usesFieldClocks } from './define.js';
import type { Change, SharedRowState, StoredValue, StoredValues } from './types.js';

/**
 * Built-in conflict rules. Each is a join: the resulting state depends only on the *set* of
 * changes applied, not on their order or on duplicates, which is what makes replicas converge.
 */

function nullValues(model: Model): StoredValues {
  const values: StoredValues = {};
  for (const field of model.fields) values[field.name] = null;
  return values;
}

/**
 * Row-level last writer wins: the change with the greatest HLC decides the whole row. A delete
 * that wins leaves a tombstone; a later `upsert` (which always carries the full row) wins over
 * the tombstone and brings the row back; an older one never does.
 */
export function mergeRowLww(model: Model, current: SharedRowState | undefined, change: Change): SharedRowState {
  if (current !== undefined && change.hlc < current.hlc) return current;
  if (current !== undefined && change.hlc === current.hlc && compareContent(model, current, changeContent(change)) >= 0) return current;
  if (change.op === 'delete') {
    return {
      id: change.id,
      values: nullValues(model),
      hlc: change.hlc,
      deleted: true,
      fieldHlcs: null,
      upsertHlc: null,
      deleteHlc: change.hlc,
    };
  }
  return {
    id: change.id,
    // An upsert carries every field (validated), and states are never mutated: share it.
    values: change.fields ?? nullValues(model),
    hlc: change.hlc,
    deleted: false,
    fieldHlcs: null,
    upsertHlc: change.hlc,
    deleteHlc: null,
  };
}

/**
 * Field-level last writer wins (also used by `union`). Each field keeps the value of its
 * newest write. The row is live once a full write (`upsert`) is newer than every delete; values
 * written at or before the newest delete are cleared, so a delete is never undone by an older
 * write, and a partial `update` newer than a delete does not resurrect the row on its own.
 *
 * Field clocks are kept sparse: a field without an entry in `fieldHlcs` has the clock
 * `upsertHlc` (every upsert writes every field, so after the newest one a field's clock is that
 * upsert's unless a newer write touched the field). Entries equal to `upsertHlc` are dropped,
 * so equal states have equal representations.
 */
export function mergeFieldLww(model: Model, current: SharedRowState | undefined, change: Change): SharedRowState {
  if (current === undefined && change.op === 'upsert') return firstUpsert(model, change);
  const values: StoredValues = current ? { ...current.values } : nullValues(model);
  const fieldHlcs: Record<string, string> = current?.fieldHlcs ? { ...current.fieldHlcs } : {};
  const previousUpsert = current?.upsertHlc ?? null;
  let upsertHlc = previousUpsert;
  let deleteHlc = current?.deleteHlc ?? null;

  if (change.op === 'delete') {
    deleteHlc = maxEncodedHlc(deleteHlc, change.hlc);
  } else {
    if (change.op === 'upsert') upsertHlc = maxEncodedHlc(upsertHlc, change.hlc);
    for (const [name, value] of Object.entries(change.fields ?? {})) {
      const fieldHlc = fieldHlcs[name] ?? previousUpsert;
      if (fieldHlc === null || change.hlc > fieldHlc || (change.hlc === fieldHlc && compareStored(value, values[name] ?? null) > 0)) {
        fieldHlcs[name] = change.hlc;
        values[name] = value;
      }
    }
    // A field written at the upsert clock is implied (also by a second change at that clock, a fork's).
    if (upsertHlc !== previousUpsert || change.hlc === upsertHlc) {
      for (const name of Object.keys(fieldHlcs)) if (fieldHlcs[name] === upsertHlc) delete fieldHlcs[name];
    }
  }
  if (deleteHlc !== null) {
    for (const field of model.fields) {
      const fieldHlc = fieldHlcs[field.name] ?? upsertHlc;
      if (fieldHlc !== null && fieldHlc <= deleteHlc) values[field.name] = null;
    }
  }
  const live = upsertHlc !== null && (deleteHlc === null || upsertHlc > deleteHlc);
  return {
    id: change.id,
    values,
    hlc: maxEncodedHlc(current?.hlc ?? null, change.hlc)!,
    deleted: !live,
    fieldHlcs,
    upsertHlc,
    deleteHlc,
  };
}

const NO_FIELD_CLOCKS: Readonly<Record<string, string>> = Object.freeze({});

/** The common case of a new record: every field at the upsert's clock, nothing to copy. */
function firstUpsert(model: Model, change: Change): SharedRowState {
  // An upsert carries every field (validated), and states are never mutated: share it.
  const values = change.fields ?? nullValues(model);
  return {
    id: change.id,
    values,
    hlc: change.hlc,
    deleted: false,
    fieldHlcs: NO_FIELD_CLOCKS,
    upsertHlc: change.hlc,
    deleteHlc: null,
  };
}

/**
 * The join of two states of the same row under the model's rule: what a replica holding the
 * changes of both would hold. Used to merge snapshot rows, whose changes are no longer in any
 * log. Row-level LWW keeps the state with the newer clock; the field rules keep each field's
 * newest value, the newest upsert and the newest delete, then apply the delete as
 * `mergeFieldLww` does. A custom apply function has no state join (unless a system model gives one): the newer clock wins.
 */
export function mergeStates(model: SharedModel, a: SharedRowState, b: SharedRowState): SharedRowState {
  if (model.join) return model.join(a, b);
  if (!usesFieldClocks(model) || model.apply) return newerState(model, a, b);
  const upsertHlc = maxEncodedHlc(a.upsertHlc, b.upsertHlc);
  const deleteHlc = maxEncodedHlc(a.deleteHlc, b.deleteHlc);
  const values: StoredValues = {};
  const fieldHlcs: Record<string, string> = {};
  for (const field of model.fields) {
    const clockA = a.fieldHlcs?.[field.name] ?? a.upsertHlc;
    const clockB = b.fieldHlcs?.[field.name] ?? b.upsertHlc;
    const fromB =
      clockB !== null && (clockA === null || clockB > clockA || (clockB === clockA && compareStored(b.values[field.name] ?? null, a.values[field.name] ?? null) > 0));
    const clock = fromB ? clockB : clockA;
    values[field.name] = (fromB ? b.values[field.name] : a.values[field.name]) ?? null;
    if (clock !== null && clock !== upsertHlc) fieldHlcs[field.name] = clock;
    const effective = clock ?? upsertHlc;
    if (deleteHlc !== null && effective !== null && effective <= deleteHlc) values[field.name] = null;
  }
  const live = upsertHlc !== null && (deleteHlc === null || upsertHlc > deleteHlc);
  const merged = { id: a.id, values, hlc: maxEncodedHlc(a.hlc, b.hlc)!, deleted: !live, fieldHlcs, upsertHlc, deleteHlc };
  // Unchanged: keep `a` itself, so callers can tell that nothing needs writing.
  return sameState(a, merged) ? a : merged;
}

/**
 * Of two states, the one with the newer clock (`a` when both are alike). Two different changes
 * with one clock come only from a device that signed two histories (a fork, whose runs every
 * member applies): their content decides, so each replica keeps the same one whatever the order.
 */
export function newerState(model: Model, a: SharedRowState, b: SharedRowState): SharedRowState {
  if (a.hlc !== b.hlc) return a.hlc > b.hlc ? a : b;
  return compareContent(model, a, b) >= 0 ? a : b;
}

interface RowContent {
  readonly deleted: boolean;
  readonly values: StoredValues;
}

function changeContent(change: Change): RowContent {
  return { deleted: change.op === 'delete', values: change.fields ?? {} };
}

/** A total order of row contents: a delete above a write, then the values field by field. */
function compareContent(model: Model, a: RowContent, b: RowContent): number {
  if (a.deleted !== b.deleted) return a.deleted ? 1 : -1;
  if (a.deleted) return 0;
  for (const field of model.fields) {
    const order = compareStored(a.values[field.name] ?? null, b.values[field.name] ?? null);
    if (order !== 0) return order;
  }
  return 0;
}

/** null, number, string, bytes. */
const kindOf = (v: StoredValue) => (v === null ? 0 : typeof v === 'number' ? 1 : typeof v === 'string' ? 2 : 3);

/** A total order of stored values (by kind, then value; bytes by length, then byte by byte). */
export function compareStored(a: StoredValue, b: StoredValue): number {
  const [kindA, kindB] = [kindOf(a), kindOf(b)];
  if (kindA !== kindB) return kindA - kindB;
  if (a === null || b === null) return 0;
  if (a instanceof Uint8Array && b instanceof Uint8Array) {
    if (a.byteLength !== b.byteLength) return a.byteLength - b.byteLength;
    for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
    return 0;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The newest of every clock a row state holds (row, upsert, delete and field clocks). Built-in
 * rules keep `hlc` the newest, but a snapshot row or a custom apply's result may not, and every
 * stored clock bounds what this device may issue next. String comparisons only: encoded clocks
 * sort as their values.
 */
export function newestClockOf(state: SharedRowState): string {
  let newest = state.hlc;
  if (typeof state.upsertHlc === 'string' && state.upsertHlc > newest) newest = state.upsertHlc;
  if (typeof state.deleteHlc === 'string' && state.deleteHlc > newest) newest = state.deleteHlc;
  const fieldHlcs = state.fieldHlcs;
  if (fieldHlcs) {
    for (const name in fieldHlcs) {
      const hlc = fieldHlcs[name];
      if (typeof hlc === 'string' && hlc > newest) newest = hlc;
    }
  }
  return newest;
}

function sameState(a: SharedRowState, b: SharedRowState): boolean {
  if (a.hlc !== b.hlc || a.deleted !== b.deleted || a.upsertHlc !== b.upsertHlc || a.deleteHlc !== b.deleteHlc) return false;
  const clocksA = Object.entries(a.fieldHlcs ?? {});
  if (clocksA.length !== Object.keys(b.fieldHlcs ?? {}).length) return false;
  if (clocksA.some(([name, hlc]) => b.fieldHlcs?.[name] !== hlc)) return false;
  return Object.keys(b.values).every((name) => sameValue(a.values[name] ?? null, b.values[name] ?? null));
}

function sameValue(x: unknown, y: unknown): boolean {
  if (x instanceof Uint8Array && y instanceof Uint8Array) return x.length === y.length && x.every((byte, i) => byte === y[i]);
  return x === y;
}
